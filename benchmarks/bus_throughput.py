"""Book updates per second through the bus, against raw pynng moving frames of the same size.

A sender process publishes BookDelta messages of N level changes each on
``prices`` (PUB) through ``services.bus``; this process receives them on a SUB
with the bus (decode, gap and lag tracking). The same frames are then moved as
raw bytes with pynng alone, so the ratio is the cost of our framing and
decoding. The sender starts once both ends are connected and paces nothing; the SUB
buffer is NNG's maximum, and the drop counter is reported (non-zero means the
receiver fell behind and the publisher, as designed, did not wait for it).

Run: ``python benchmarks/bus_throughput.py [--messages N]``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from decimal import Decimal

import msgspec
import pynng

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load


def _delta(n: int) -> m.BookDelta:
    return m.BookDelta(changes=[
        m.LevelChange(token_id="71321045679252212594626385532706912750332728571942532289631379312455583992563",
                      market="0xdd22472e552920b8438158ea7238bfadfa4f736aa4cee91a6b86c39ead110917",
                      side="BUY" if i % 2 else "SELL", price=Decimal("0.52"), size=Decimal("1234.56"),
                      best_bid=Decimal("0.51"), best_ask=Decimal("0.53"), venue_ts_ms=1790658661234)
        for i in range(n)])


def _send_bus(state: str, per_msg: int, count: int, ready, done) -> None:
    config = load(None, {"POLYBOT_STATE_DIR": state, "HOME": state})
    bus = Bus(config)
    pub = bus.outbound("prices")
    ready.wait(30)
    _wait_connected(pub.socket)
    msg = _delta(per_msg)
    for _ in range(count):
        while not pub.send(msg):
            pass
    done.wait(60)  # NNG discards queued frames on close
    bus.close()


def _send_raw(address: str, frame: bytes, count: int, ready, done) -> None:
    with pynng.Pub0(listen=address, send_buffer_size=8192) as pub:
        ready.wait(30)
        _wait_connected(pub)
        for _ in range(count):
            pub.send(frame)
        done.wait(60)


def _wait_connected(sock: pynng.Socket) -> None:
    deadline = time.monotonic() + 10
    while not sock.pipes and time.monotonic() < deadline:
        pass


def run_bus(per_msg: int, count: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")  # nng panics in a forked child
    state = tempfile.mkdtemp(prefix="pbb-")
    config = load(None, {"POLYBOT_STATE_DIR": state, "HOME": state})
    ensure_state_dir(config)
    ready, done = ctx.Event(), ctx.Event()
    sender = ctx.Process(target=_send_bus, args=(state, per_msg, count, ready, done))
    sender.start()
    bus = Bus(config)
    sub = bus.inbound("prices", [m.BookDelta])
    _wait_connected(sub.socket)
    ready.set()
    got = 0
    start = last = time.perf_counter()
    while got + bus.counters["prices"].dropped < count:
        batch = sub.recv_batch(2000)
        if not batch:
            break  # the tail was dropped: the publisher does not wait for a slow subscriber
        got += len(batch)
        last = time.perf_counter()
    done.set()
    sender.join(10)
    bus.close()
    return got * per_msg / (last - start), count - got


def run_raw(per_msg: int, count: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")
    address = f"ipc://{tempfile.mkdtemp(prefix='pbr-')}/raw.ipc"
    frame = msgspec.msgpack.encode(_delta(per_msg)) + bytes(13)
    ready, done = ctx.Event(), ctx.Event()
    sender = ctx.Process(target=_send_raw, args=(address, frame, count, ready, done))
    sender.start()
    with pynng.Sub0(recv_buffer_size=8192, recv_timeout=2000) as sub:
        sub.subscribe(b"")
        sub.dial(address, block=False)  # the sender may not listen yet
        _wait_connected(sub)
        ready.set()
        got = 0
        start = last = time.perf_counter()
        try:
            while got < count:
                sub.recv_msg()
                got += 1
                last = time.perf_counter()
        except pynng.Timeout:
            pass  # the tail was dropped
    done.set()
    sender.join(10)
    return got * per_msg / (last - start), count - got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{'changes/msg':>11} {'messages':>9} {'bus updates/s':>14} {'lost':>6} {'raw updates/s':>14} {'lost':>6}"
          f" {'bus/raw':>8}")
    for per_msg in (1, 10, 100):
        count = max(1000, args.messages // per_msg)
        bus_rate, bus_lost = run_bus(per_msg, count)
        raw_rate, raw_lost = run_raw(per_msg, count)
        print(f"{per_msg:>11} {count:>9} {bus_rate:>14,.0f} {bus_lost:>6} {raw_rate:>14,.0f} {raw_lost:>6}"
              f" {bus_rate / raw_rate:>7.2f}x")


if __name__ == "__main__":
    main()
