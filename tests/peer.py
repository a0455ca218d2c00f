"""A peer process for the bus tests: receives on one socket with the real bus, writes what it decoded to stdout.

    python -m tests.peer STATE_DIR SOCKET COUNT [TYPE ...]

Receives COUNT messages on SOCKET (the receiving end the taxonomy gives it;
``control`` means a REP socket answering each request with ``Ok``), filtered
to TYPEs when given, then writes each as a 4-byte length and its msgpack
encoding to stdout. Prints nothing else on stdout.
"""
from __future__ import annotations

import struct
import sys

import msgspec

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load


def main() -> None:
    state_dir, socket, count, *types = sys.argv[1:]
    config = load(None, {"POLYBOT_STATE_DIR": state_dir, "HOME": state_dir})
    ensure_state_dir(config)
    bus = Bus(config)
    received: list[m.Message] = []
    if socket == "control":
        done = __import__("threading").Event()

        def answer(request: m.Message) -> m.Message:
            received.append(request)
            if len(received) == int(count):
                done.set()
            return m.Ok(request_id=request.id, detail=type(request).__name__)

        rep = bus.replier("peer")
        rep.serve(answer)
        sys.stderr.write("READY\n")
        sys.stderr.flush()
        if not done.wait(30):
            sys.exit(f"peer: got {len(received)} of {count} requests")
        rep.close()
    else:
        only = [getattr(m, t) for t in types] or None
        inbound = bus.inbound(socket, only)
        sys.stderr.write("READY\n")
        sys.stderr.flush()
        while len(received) < int(count):
            received.append(inbound.recv(30_000))
    out = sys.stdout.buffer
    for msg in received:
        frame = msgspec.msgpack.encode(msg)
        out.write(struct.pack(">I", len(frame)) + frame)
    out.flush()
    bus.close()


if __name__ == "__main__":
    main()
