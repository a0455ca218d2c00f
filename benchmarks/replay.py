"""Replay speed: book updates per second through the arbitrage strategy, beside a loop that only decodes.

The recording is the local venue's, simulated for a given seed (``polybot record --seed``), or ``--data``.
Three loops over the same recording, each timed over the whole of it, best of ``--repeat``:

- ``decode only``: read and decode every message, nothing else: the floor any replay pays;
- ``strategy``: every message into ``Arbitrage.on_message``, the strategy's own cost on top of decoding;
- ``backtest``: the whole in-process backtest: the strategy, risk's checks under its default limits, the
  executor's order desk, paper fills, the ledger, the equity curve;
- ``backtest quoter``: the same with the quoter, a strategy that signals and cancels on most book updates, so the
  order path (risk, desk, paper book, executions back to risk and the strategy) is most of the work.

A book update is one level change (a snapshot's book counts its levels). Figures, then ratios to decode only.

Run: ``python benchmarks/replay.py [--seconds 1800] [--seed 7] [--requotes-per-s 40] [--data DIR] [--out FILE]``
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services import messages as m  # noqa: E402
from services.backtest.engine import Replay  # noqa: E402
from services.recording import read  # noqa: E402
from services.strategies.arbitrage import Arbitrage  # noqa: E402


def updates(msg: m.Message) -> int:
    if isinstance(msg, m.BookDelta):
        return len(msg.changes)
    if isinstance(msg, m.BookSnapshot):
        return sum(len(b.bids) + len(b.asks) for b in msg.books)
    return 0


def decode_only(path: Path) -> int:
    return sum(updates(msg) for msg in read(path))


def strategy(path: Path) -> int:
    arb, n = Arbitrage(), 0
    for msg in read(path):
        arb.on_message(msg)
        n += updates(msg)
    return n


def backtest(path: Path, strategy: str = "arbitrage") -> int:
    replay, n = Replay(strategy), 0
    for msg in read(path):
        replay.on_message(msg)
        n += updates(msg)
    replay.result(str(path))
    return n


def best(fn, path: Path, repeat: int) -> tuple[int, float]:
    times, n = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        n = fn(path)
        times.append(time.perf_counter() - started)
    return n, min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a recording to replay (default: simulate the local venue)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1800.0, help="simulated seconds of market")
    parser.add_argument("--requotes-per-s", type=float, default=40.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="polybot-bench-replay-") as tmp:
        path = Path(args.data) if args.data else Path(tmp) / "rec"
        if not args.data:
            from polybot_venue.life import LifeOptions
            from services.backtest.simulated import generate

            started = time.perf_counter()
            generate(path, seed=args.seed, seconds=args.seconds,
                     life=LifeOptions(requotes_per_s=args.requotes_per_s, gaps_per_s=0.2))
            print(f"recording: seed {args.seed}, {args.seconds:g} s of market, made in "
                  f"{time.perf_counter() - started:.1f} s")
        messages = sum(1 for _ in read(path))
        size = sum(p.stat().st_size for p in path.glob("*.pbrec")) if path.is_dir() else path.stat().st_size
        print(f"{messages} messages, {size / 1e6:.1f} MB")
        figures = {}
        loops = (("decode only", decode_only), ("strategy", strategy), ("backtest", backtest),
                 ("backtest quoter", lambda p: backtest(p, "quoter")))
        for name, fn in loops:
            n, seconds = best(fn, path, args.repeat)
            figures[name] = {"updates": n, "seconds": round(seconds, 4), "updates_per_s": round(n / seconds),
                             "messages_per_s": round(messages / seconds)}
        floor = figures["decode only"]["updates_per_s"]
        print(f"{'loop':<16} {'updates/s':>12} {'messages/s':>12} {'vs decode':>10}")
        for name, f in figures.items():
            print(f"{name:<16} {f['updates_per_s']:>12,} {f['messages_per_s']:>12,} {f['updates_per_s'] / floor:>9.2f}x")
        if args.out:
            Path(args.out).write_text(json.dumps({"messages": messages, "bytes": size, "loops": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
