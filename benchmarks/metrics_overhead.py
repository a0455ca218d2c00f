"""What the metrics cost: per message on the runtime's delivery path, and per scrape.

The runtime hands each batch a reader thread decoded to ``Runner._deliver``, which now also counts the
message's lag into a histogram and the flow's depth. This measures that loop over decoded ``BookDelta``s
with a handler that does nothing (the worst case: every real handler costs more) with and without the
metrics' work, and the time to render ``/metrics`` for a service with five sockets and a few own series.

Run: ``python benchmarks/metrics_overhead.py [--messages N] [--repeat R]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from services import messages as m  # noqa: E402
from services.metrics import Flow, Metrics, RuntimeCollector  # noqa: E402

BATCH = 1024


def messages(count: int) -> list[m.BookDelta]:
    change = m.LevelChange(token_id="7" * 77, market="0x" + "ab" * 32, side="BUY", price=Decimal("0.45"),
                           size=Decimal("120"))
    return [m.BookDelta(changes=[change] * 8) for _ in range(count)]


def deliver_plain(batches: list[list[m.Message]], handle) -> None:
    """The delivery loop as it was before metrics."""
    handled = 0
    for batch in batches:
        for msg in batch:
            try:
                handle("prices", msg)
            except Exception:
                pass
        handled += len(batch)


def deliver_metered(batches: list[list[m.Message]], handle, flow: Flow) -> None:
    """The delivery loop as ``Runner._deliver`` runs it now."""
    handled = 0
    for batch in batches:
        flow.enqueued += len(batch)  # (done by the reader thread)
        flow.lag.observe(time.time_ns(), batch)
        for msg in batch:
            try:
                handle("prices", msg)
            except Exception:
                pass
        flow.handled += len(batch)
        handled += len(batch)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    msgs = messages(args.messages)
    batches = [msgs[i:i + BATCH] for i in range(0, len(msgs), BATCH)]

    def handle(socket: str, msg: m.Message) -> None:
        pass

    plain = best(lambda: deliver_plain(batches, handle), args.repeat)
    metered = best(lambda: deliver_metered(batches, handle, Flow()), args.repeat)
    n = len(msgs)
    print(f"delivery loop over {n:,} messages (handler does nothing), best of {args.repeat}:")
    print(f"  {'loop':<28}{'ns/message':>12}{'messages/s':>14}{'vs plain':>10}")
    for name, t in (("plain (before metrics)", plain), ("with lag histogram + depth", metered)):
        print(f"  {name:<28}{t / n * 1e9:>12.0f}{n / t:>14,.0f}{t / plain:>9.2f}x")
    added = (metered - plain) / n
    decoder, encoder = msgspec.msgpack.Decoder(m.PricesMsg), msgspec.msgpack.Encoder()
    frames = [encoder.encode(msg) for msg in msgs]
    decode = best(lambda: [decoder.decode(f) for f in frames], args.repeat) / n
    print(f"  metrics add {added * 1e9:.0f} ns per message; decoding one of these messages (which every receiver "
          f"does) takes {decode * 1e9:.0f} ns: the metrics are {added / decode:.0%} of it")

    metrics = Metrics()
    counters = {s: m.SocketCounters(sent=10**6, received=10**6) for s in
                ("prices", "events", "executions", "signals", "control")}
    flows = {s: Flow() for s in ("prices", "events", "executions", "signals")}
    for flow in flows.values():
        flow.lag.observe(time.time_ns(), messages(1000))
    metrics.add(RuntimeCollector(counters, flows, lambda: {"handled": 1.0, "handler_errors": 0.0, "halted": 0.0,
                                                           "uptime_seconds": 1.0}))
    own = metrics.counter("verdicts", "verdicts", ["verdict", "reason"])
    for reason in ("", "ORDER_NOTIONAL", "STALE_BOOK", "TICK_SIZE", "MIN_SIZE"):
        own.labels("rejected", reason).inc()
    latency = metrics.histogram("venue_request_seconds", "venue calls", ["op"])
    for op in ("place", "cancel", "trades", "open_orders", "prepare"):
        latency.labels(op).observe(0.05)
    rounds = 200
    scrape = best(lambda: [generate_latest(metrics.registry) for _ in range(rounds)], args.repeat) / rounds
    size = len(generate_latest(metrics.registry))
    print(f"one scrape (render /metrics, {size:,} bytes): {scrape * 1e3:.2f} ms, on the metrics thread")


if __name__ == "__main__":
    main()
