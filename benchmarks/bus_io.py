"""Measure the receive-side I/O styles pynng offers, to choose the bus's.

Three ways for a service to receive from an NNG socket:
  thread  - blocking ``recv()`` on a dedicated thread (the GIL is released while blocked)
  arecv   - pynng's asyncio ``arecv()``
  fd      - asyncio ``add_reader`` on the socket's ``recv_fd``, then ``recv(block=False)`` until TryAgain
  bridge  - blocking ``recv()`` on a thread that drains each burst with ``recv(block=False)`` and hands
            the batch to an asyncio loop with ``call_soon_threadsafe`` (what ``services.bus`` does)

A sender process PUSHes N small frames over ipc as fast as it can; the receiver
counts them in each style. Run: ``python benchmarks/bus_io.py [--count N]``.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import threading
import time

import pynng

PAYLOAD = b"x" * 120


def _sender(address: str, count: int, ready, finished) -> None:
    with pynng.Push0(send_buffer_size=8192) as push:
        push.dial(address, block=True)
        ready.set()
        for _ in range(count):
            push.send(PAYLOAD)
        push.send(b"END")
        finished.wait(60)  # closing an NNG socket discards what it still has queued


def _recv_thread(pull: pynng.Pull0) -> int:
    received = 0

    def loop() -> None:
        nonlocal received
        while pull.recv() != b"END":
            received += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    worker.join()
    return received


async def _recv_arecv(pull: pynng.Pull0) -> int:
    received = 0
    while await pull.arecv() != b"END":
        received += 1
    return received


async def _recv_fd(pull: pynng.Pull0) -> int:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(pull.recv_fd, readable.set)
    received = 0
    try:
        while True:
            await readable.wait()
            readable.clear()
            while True:
                try:
                    frame = pull.recv(block=False)
                except pynng.TryAgain:
                    break
                if frame == b"END":
                    return received
                received += 1
    finally:
        loop.remove_reader(pull.recv_fd)


async def _recv_bridge(pull: pynng.Pull0) -> int:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[int] = loop.create_future()
    received = 0

    def deliver(batch: list[bytes]) -> None:
        nonlocal received
        for frame in batch:
            if frame == b"END":
                finished.set_result(received)
                return
            received += 1

    def reader() -> None:
        while True:
            batch = [pull.recv()]
            while len(batch) < 1024:
                try:
                    batch.append(pull.recv(block=False))
                except pynng.TryAgain:
                    break
            loop.call_soon_threadsafe(deliver, batch)
            if batch[-1] == b"END":
                return

    threading.Thread(target=reader, daemon=True).start()
    return await finished


def measure(style: str, count: int) -> float:
    folder = tempfile.mkdtemp(prefix="polybot-bench-")
    address = f"ipc://{folder}/bench.ipc"
    with pynng.Pull0(listen=address, recv_buffer_size=8192, recv_timeout=30_000) as pull:
        spawn = multiprocessing.get_context("spawn")  # nng panics in a forked child
        ready, finished = spawn.Event(), spawn.Event()
        sender = spawn.Process(target=_sender, args=(address, count, ready, finished))
        sender.start()
        ready.wait(10)
        start = time.perf_counter()
        if style == "thread":
            received = _recv_thread(pull)
        elif style == "arecv":
            received = asyncio.run(_recv_arecv(pull))
        elif style == "fd":
            received = asyncio.run(_recv_fd(pull))
        else:
            received = asyncio.run(_recv_bridge(pull))
        elapsed = time.perf_counter() - start
        finished.set()
        sender.join(10)
    os.rmdir(folder) if not os.listdir(folder) else None
    assert received == count, f"{style}: received {received} of {count}"
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for style in ("thread", "arecv", "fd", "bridge"):
        results[style] = max(measure(style, args.count) for _ in range(args.rounds))
    base = results["thread"]
    print(f"{'style':<8} {'msgs/s':>10} {'vs thread':>10}")
    for style, rate in results.items():
        print(f"{style:<8} {rate:>10,.0f} {rate / base:>9.2f}x")


if __name__ == "__main__":
    main()
