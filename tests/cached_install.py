"""Official clients that do not belong in our virtual environment (the TypeScript client, the unified SDK with its
own pins), installed once into a cache folder outside the repo, keyed by what pins them, and reused."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


class StepFailed(Exception):
    def __init__(self, command: str, code: int, output: str) -> None:
        super().__init__(f"{command} failed (exit {code})")
        self.command, self.code, self.output = command, code, output


def step(command: list[str], timeout_s: float, **kwargs) -> None:
    """One install command; StepFailed with the end of its output when it exits non-zero."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if done.returncode != 0:
        name = " ".join(Path(command[0]).name.split() + command[1:3])
        raise StepFailed(name, done.returncode, (done.stdout + done.stderr)[-1500:])


def installed(name: str, pins: list[Path], build: Callable[[Path], None], what: str,
              network_failure: re.Pattern[str], timeout_s: float) -> Path:
    """``build(folder)`` run once per content of ``pins`` into ``~/.cache/polybot-tests/NAME/<digest>``. A registry
    out of reach (``network_failure`` in the output, or the time running out) skips the test with the reason; any
    other failure fails it."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in pins)).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polybot-tests" / name
    target = cache / digest
    if (target / ".installed").exists():
        return target
    # Build beside the target and rename into place, so a run cut short never leaves a half install to reuse.
    staging = cache / f"{digest}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip(f"installing {what} did not finish within {timeout_s:.0f} s: its registry is too slow or "
                    "unreachable")
    except StepFailed as failed:
        shutil.rmtree(staging, ignore_errors=True)
        if network_failure.search(failed.output):
            pytest.skip(f"the registry cannot be reached, so {what} cannot be installed:\n{failed.output}")
        pytest.fail(f"{failed}:\n{failed.output}")
    (staging / ".installed").touch()
    try:
        staging.rename(target)
    except OSError:  # another run got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target
