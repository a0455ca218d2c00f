"""The executor's journal: every order as taken, before it is sent, and what became of it, one JSON line each.

An order id in the journal is never sent again, across restarts too; replaying the journal rebuilds the order
desk as it was.
"""
from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

import msgspec

from .. import messages as m


class Taken(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order: m.Order


class Submitting(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order_id: str
    venue_order_id: str
    price: Decimal
    size: Decimal
    submitted_ts_ns: int


Record = Union[Taken, Submitting, m.OrderAck, m.OrderRejected, m.OrderCanceled, m.Fill, m.ResidualExposure,
               m.MarketResolved]


class Journal:
    """Append-only JSON lines: each order as taken, before it is sent, and what became of it."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        self.fsync = fsync
        self.bad = 0
        self._encoder = msgspec.json.Encoder()
        self._file: Any = None

    def replay(self) -> list[Any]:
        """Every record so far; a line that does not decode (a write cut short by a crash) is counted and skipped."""
        if not self.path.exists():
            return []
        decoder = msgspec.json.Decoder(Record)
        out = []
        for line in self.path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                out.append(decoder.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.bad += 1
        return out

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a+b")
        if self._file.seek(0, os.SEEK_END):
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")  # end a line a crash cut short, so the next record stands alone

    def write(self, record: Any) -> None:
        self._file.write(self._encoder.encode(record) + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
