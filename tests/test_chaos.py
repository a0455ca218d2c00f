"""The chaos run, bounded for the suite: `polybot up` trades live on the local venue through a short seeded schedule
of faults (services killed, WebSockets dropped, the venue stalled, 425 and 429 windows, analytics stopped), then every
invariant holds against the venue's own records (benchmarks/chaos.py says which; the long run is in the README)."""
from __future__ import annotations

import sys
from pathlib import Path

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import chaos  # noqa: E402


def test_a_short_chaos_run_loses_nothing_sends_nothing_twice_and_ends_healthy(state_dir: Path) -> None:
    # Under the state_dir fixture's short folder: ipc socket paths must stay under 107 bytes.
    report = chaos.run(duration_s=20, seed=7, every_s=2.0, heal_s=45, root=state_dir.parent)
    assert sum(report.faults.values()) >= 8 and report.orders > 0, report.lines()
    assert report.ok, "\n".join(report.lines())
