"""The executor's journal: every order as taken, before it is sent, and what became of it, one JSON line each.

An order id in the journal is never sent again, across restarts too; replaying the journal rebuilds the order
desk as it was. A line that cannot be trusted (cut short by a crash, or corrupt: it does not decode, or a number
in it is not finite or out of range) is skipped with the reason, and the lines around it still count.

What the executor publishes on ``executions`` is numbered here (``seq`` in ``stream``, the journal's own name), so a
subscriber that missed some (analytics, down for a while) asks for them again (``after``); the file, its numbering
and its failed writes (``JournalError``: the caller refuses what it could not record) are ``services.journal``'s.
``compact`` rewrites the journal as the records its state is rebuilt from, atomically.
"""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

import msgspec

from .. import journal as log
from .. import messages as m
from ..journal import JournalError, Numbering, Skipped

__all__ = ["Journal", "JournalError", "Numbering", "Skipped", "Submitting", "Taken", "compact", "out_of_range", "read"]


class Taken(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order: m.Order


class Submitting(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order_id: str
    venue_order_id: str
    price: Decimal
    size: Decimal
    submitted_ts_ns: int


NUMBERED = m.members(m.Numbered)
# the positions (and how their fills settled), settlements, failed signals
ALWAYS_KEPT = (m.Fill, m.FillStatus, m.MarketResolved, m.Rebate, m.ResidualExposure)

Record = Union[Numbering, Taken, Submitting, m.OrderAck, m.OrderRejected, m.OrderCanceled, m.Fill, m.ResidualExposure,
               m.MarketResolved, m.Rebate, m.FillStatus]


_DECODER = msgspec.json.Decoder(Record)


def read(data: bytes) -> tuple[list[Any], list[Skipped]]:
    """The records of a journal's bytes, and the lines skipped with why."""
    return log.read(data, _DECODER, out_of_range)


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
        case m.FillStatus():
            if why := out_of_range(record.fill):
                return f"fill {why}"
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


def compact(records: list[Any], keep_orders: set[str], seq: int, keep_numbered: int) -> list[Any]:
    """The records a journal's state is rebuilt from: every fill, settlement, rebate report and failed signal, the
    records of the orders in ``keep_orders`` (the open ones, the recent ones), and the last ``keep_numbered``
    numbered records (for subscribers catching up)."""
    recent = seq - keep_numbered
    out: list[Any] = []
    for rec in records:
        match rec:
            case Numbering():
                continue
            case Taken(order=order):
                keep = order.id in keep_orders
            case _ if isinstance(rec, ALWAYS_KEPT):
                keep = True
            case _:
                keep = rec.order_id in keep_orders or getattr(rec, "seq", 0) > recent
        if keep:
            out.append(rec)
    return out


class Journal(log.Journal):
    """Append-only JSON lines: each order as taken, before it is sent, and what became of it; and the numbering of
    what is published on ``executions``."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        super().__init__(path, Record, NUMBERED, out_of_range, fsync)

    def compact(self, records: list[Any], keep_orders: set[str], keep_numbered: int) -> int:
        """Rewrite the journal as ``compact`` says, atomically (a new file, synced, renamed over the old); returns
        the bytes it had before. Call it before ``open``."""
        return self.rewrite(compact(records, keep_orders, self.seq, keep_numbered))
