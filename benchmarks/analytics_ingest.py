"""Rows per second through the analytics service: bus in, DuckDB file out.

A real analytics process (``polybot run analytics``) subscribes to ``executions`` and ``prices``, which this
process binds as the executor and the scanner would. Each scenario publishes its messages as fast as the bus
takes them and times from the first send until every row is in the DuckDB file (asked over analytics'
control socket). Fills are one message each (as the executor sends them); book deltas carry one change for
each of K tokens (one bus message per venue frame) and every change moves its token's top, so each is a row.
A subscriber that falls behind loses frames (the publisher never waits for it), so this sender keeps at
most 4000 messages in flight (it asks analytics how many it received): the rate is what analytics sustains.
Anything still lost is counted as dropped, and the rows expected are those of the messages it received. ``store only`` is the DuckDB appender alone, with no bus, for the
split between decoding and writing.

Run: ``python benchmarks/analytics_ingest.py [--fills N] [--deltas N] [--tokens K] [--out FILE]``
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services import messages as m  # noqa: E402
from services.analytics.rows import Recorder  # noqa: E402
from services.analytics.store import Store  # noqa: E402
from services.bus import Bus  # noqa: E402
from services.config import ensure_state_dir, load  # noqa: E402

MARKET = "0xdd22472e552920b8438158ea7238bfadfa4f736aa4cee91a6b86c39ead110917"
WINDOW = 4000  # messages sent but not yet received by analytics (its SUB queue holds 8192)
CHECK_EVERY = 500
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"


def fills(n: int) -> list[m.Fill]:
    return [m.Fill(order_id=m.new_id(), venue_order_id="0x" + "ab" * 32, trade_id=m.new_id(), token_id=TOKEN,
                   market=MARKET, side="BUY", price=Decimal("0.45"), size=Decimal("12.5"), fee=Decimal("0.12375"),
                   signal_id=m.new_id(), source="strategy:arbitrage") for _ in range(n)]


def deltas(n: int, tokens: int) -> list[m.BookDelta]:
    """Every change moves its token's best bid (alternating 0.40 / 0.41), so every change is a top row."""
    return [m.BookDelta(changes=[
        m.LevelChange(token_id=f"{TOKEN[:-4]}{t:04d}", market=MARKET, side="BUY", price=Decimal("0.41"),
                      size=Decimal("100"), best_bid=Decimal("0.41") if i % 2 else Decimal("0.40"),
                      best_ask=Decimal("0.43")) for t in range(tokens)]) for i in range(n)]


class Mesh:
    def __init__(self, root: Path, flush_ms: int) -> None:
        config_file = root / "polybot.toml"
        config_file.write_text(f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n'
                               f'[services.analytics]\nkind = "services.analytics:Analytics"\n'
                               f"options = {{ flush_ms = {flush_ms}, scanner = \"\" }}\n")
        self.config = load(config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.out = {name: self.bus.outbound(name) for name in ("executions", "prices")}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost"}
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(config_file), "run",
                                      "analytics"], env=env, stderr=subprocess.DEVNULL)
        self.control = self.bus.requester("analytics", 5000)
        deadline = time.monotonic() + 30
        while not all(o.socket.pipes for o in self.out.values()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("analytics did not start")
            time.sleep(0.01)

    def rows(self) -> int:
        reply = self.control.request(m.QueryRequest(
            sql="SELECT (SELECT count(*) FROM executions) + (SELECT count(*) FROM book_tops)"))
        return reply.rows[0][0]

    def received(self) -> dict[str, m.SocketCounters]:
        return self.control.request(m.StatusRequest()).service.sockets

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.control.close()
        self.bus.close()


def scenario(mesh: Mesh, name: str, batches: list[tuple[str, m.Message, int]]) -> dict:
    """Publish (socket, message, rows it makes) in order; time until every received message's rows are stored."""
    before_rows = mesh.rows()
    before = {k: (c.received, c.dropped) for k, c in mesh.received().items()}
    start = time.perf_counter()
    for i, (socket, msg, _) in enumerate(batches):
        if i % CHECK_EVERY == 0:  # keep at most WINDOW messages in flight, so analytics' SUB queue never overflows
            while i - sum(c.received - before.get(k, (0, 0))[0] for k, c in mesh.received().items()) > WINDOW:
                time.sleep(0.001)
        while not mesh.out[socket].send(msg):  # our own queue is full: wait for it rather than lose the message
            pass
    sent_s = time.perf_counter() - start
    total = sum(rows for *_, rows in batches)
    per_msg = {socket: rows for socket, _, rows in batches}
    last, last_change = before_rows, time.perf_counter()
    while True:
        now_rows = mesh.rows()
        if now_rows != last:
            last, last_change = now_rows, time.perf_counter()
        if now_rows - before_rows >= total or time.perf_counter() - last_change > 2.0:
            break
        time.sleep(0.005)
    counters = mesh.received()
    got = {k: counters[k].received - before.get(k, (0, 0))[0] for k in per_msg}
    dropped = sum(counters[k].dropped - before.get(k, (0, 0))[1] for k in per_msg)
    stored = last - before_rows
    seconds = last_change - start
    return {"scenario": name, "messages": len(batches), "rows": stored,
            "expected_rows": sum(got[k] * per_msg[k] for k in per_msg), "dropped_messages": dropped,
            "publish_s": round(sent_s, 3), "seconds": round(seconds, 3), "rows_per_s": round(stored / seconds)}


def store_only(root: Path, n: int) -> dict:
    store = Store(root / "store-only.duckdb")
    recorder = Recorder()
    rows = [row for f in fills(n) for _, row in recorder.rows(f)]
    start = time.perf_counter()
    for i in range(0, n, 2000):  # the size of one flush at 40k rows/s and the default 50 ms
        store.append("executions", rows[i:i + 2000])
    seconds = time.perf_counter() - start
    store.close()
    return {"scenario": "store only (fills)", "messages": 0, "rows": n, "expected_rows": n, "dropped_messages": 0,
            "publish_s": 0.0, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--deltas", type=int, default=2_000)
    parser.add_argument("--tokens", type=int, default=10, help="changes (tokens) per book delta")
    parser.add_argument("--flush-ms", type=int, default=50)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "analytics_ingest.json"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pbai-", dir="/tmp"))
    results = []
    try:
        mesh = Mesh(root, args.flush_ms)
        try:
            f = [("executions", x, 1) for x in fills(args.fills)]
            d = [("prices", x, args.tokens) for x in deltas(args.deltas, args.tokens)]
            mixed = [x for pair in zip(f[: len(d)], d) for x in pair]
            results.append(scenario(mesh, "fills", f))
            results.append(scenario(mesh, f"book tops ({args.tokens}/delta)", d))
            results.append(scenario(mesh, "fills + book tops", mixed))
        finally:
            mesh.close()
        results.append(store_only(root, args.fills))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'scenario':<24} {'messages':>9} {'rows':>8} {'expected':>9} {'dropped':>8} {'seconds':>8} {'rows/s':>9}")
    for r in results:
        print(f"{r['scenario']:<24} {r['messages']:>9} {r['rows']:>8} {r['expected_rows']:>9} "
              f"{r['dropped_messages']:>8} {r['seconds']:>8.3f} {r['rows_per_s']:>9,}")
    Path(args.out).write_text(json.dumps({"flush_ms": args.flush_ms, "results": results}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
