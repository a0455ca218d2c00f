"""The executor's journal: every order as taken, before it is sent, and what became of it, one JSON line each.

An order id in the journal is never sent again, across restarts too; replaying the journal rebuilds the order
desk as it was. A line that cannot be trusted (cut short by a crash, or corrupt: it does not decode, or a number
in it is not finite or out of range) is skipped with the reason, and the lines around it still count.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Union

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
               m.MarketResolved, m.Rebate]


class Skipped(NamedTuple):
    line: int  # 1-based, in the file
    reason: str


def read(data: bytes) -> tuple[list[Any], list[Skipped]]:
    """The records of a journal's bytes, and the lines skipped with why."""
    decoder = msgspec.json.Decoder(Record)
    records, skipped = [], []
    lines = data.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:  # not UTF-8: corrupt too
            torn = n == len(lines)  # no newline after it: the last write, cut short
            skipped.append(Skipped(n, f"{'cut short by a crash' if torn else 'corrupt'}: {exc}"))
            continue
        if why := out_of_range(record):
            skipped.append(Skipped(n, f"{type(record).__name__} {why}"))
            continue
        records.append(record)
    return records, skipped


def out_of_range(record: Any) -> str:
    """Why a record's numbers cannot be trusted, or "": every number finite, and those the desk rebuilds its
    state from in their range."""
    for path, value in _decimals(record, ""):
        if not value.is_finite():
            return f"has {path} = {value}, not a number"
    match record:
        case Taken(order=o):
            return _size("order.size", o.size) or _price("order.limit_price", o.limit_price)
        case Submitting():
            return _size("size", record.size) or _price("price", record.price)
        case m.Fill():
            # A fee is never more than a share can be worth (1 collateral each).
            fee_ok = 0 <= record.fee <= record.size
            if why := (_size("size", record.size) or _price("price", record.price)
                       or ("" if fee_ok else f"has fee {record.fee}, outside [0, its size {record.size}]")):
                return why
    why = m.number_fault(record)  # the sizes and prices of every other record, in the mesh's ranges
    return f"has {why}" if why else ""


def _size(name: str, value: Decimal) -> str:
    if value > m.MAX_QUANTITY:
        return f"has {name} {value}, more than any market holds (at most {m.MAX_QUANTITY:f})"
    return "" if value > 0 else f"has {name} {value}, not positive"


def _price(name: str, value: Decimal) -> str:
    return "" if 0 < value < 1 else f"has {name} {value}, outside (0, 1)"


def _decimals(value: Any, path: str) -> Iterator[tuple[str, Decimal]]:
    if isinstance(value, Decimal):
        yield path, value
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _decimals(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _decimals(item, f"{path}[{i}]")


class Journal:
    """Append-only JSON lines: each order as taken, before it is sent, and what became of it."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        self.fsync = fsync
        self.skipped: list[Skipped] = []
        self._encoder = msgspec.json.Encoder()
        self._file: Any = None

    @property
    def bad(self) -> int:
        """Lines skipped at replay."""
        return len(self.skipped)

    def replay(self) -> list[Any]:
        """Every record so far; a line that cannot be trusted is skipped, and in ``skipped`` with why."""
        if not self.path.exists():
            return []
        records, self.skipped = read(self.path.read_bytes())
        return records

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
