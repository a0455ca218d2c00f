"""How many book-level updates per second the local venue can generate, for load tests.

Steps the living markets on a simulated clock at several requote rates and
reports the level changes (what the market channel sends as price_change
items) produced per second of CPU, beside the rate asked for. Where the
produced rate falls short of what a requote rate implies, that rate is beyond
what the venue can serve on this machine.

Run: ``python benchmarks/venue_updates.py``.
"""
from __future__ import annotations

import time

from polybot_venue.life import LifeOptions
from polybot_venue.server import LocalVenue, VenueOptions

SIMULATED_S = 2.0
STEP_MS = 50


def measure(requotes_per_s: float) -> tuple[float, float]:
    now = [1_800_000_000_000]
    options = VenueOptions(seed=7, life=LifeOptions(requotes_per_s=requotes_per_s, trades_per_s=0, gaps_per_s=0,
                                                    resolutions_per_s=0))
    venue = LocalVenue(options, clock=lambda: now[0])
    venue.life.step(now[0])
    changes = 0
    start = time.process_time()
    for _ in range(int(SIMULATED_S * 1000 / STEP_MS)):
        now[0] += STEP_MS
        changes += venue.publish(venue.life.step(now[0]))
    cpu = time.process_time() - start
    return changes / cpu, changes / SIMULATED_S


def main() -> None:
    print(f"{'requotes/s asked':>16} {'updates/s of CPU':>17} {'updates per simulated s':>24} {'CPU per sim s':>14}")
    for rate in (10, 100, 1000):
        per_cpu, per_sim = measure(rate)
        print(f"{rate:>16} {per_cpu:>17,.0f} {per_sim:>24,.0f} {per_sim / per_cpu:>13.2f}s")


if __name__ == "__main__":
    main()
