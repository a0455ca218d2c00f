"""The executor's journal: every order as taken, before it is sent, and what became of it, one JSON line each.

An order id in the journal is never sent again, across restarts too; replaying the journal rebuilds the order
desk as it was. A line that cannot be trusted (cut short by a crash, or corrupt: it does not decode, or a number
in it is not finite or out of range) is skipped with the reason, and the lines around it still count.

What the executor publishes on ``executions`` is numbered here (``seq`` in ``stream``, the journal's own name), so a
subscriber that missed some (analytics, down for a while) asks for them again (``after``). A write that fails (a
full disk) leaves the file as it was and raises ``JournalError``: the caller refuses what it could not record.
``compact`` rewrites the journal as the records its state is rebuilt from, atomically.
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


class Numbering(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """The journal's stream name and the last seq numbered so far: first in a compacted journal (elsewhere the
    numbered records themselves say it)."""
    stream: str
    seq: int = 0


class JournalError(Exception):
    """A record could not be written (the disk is full, the file too big); the journal is as it was before."""


NUMBERED = m.members(m.Numbered)
# the positions (and how their fills settled), settlements, failed signals
ALWAYS_KEPT = (m.Fill, m.FillStatus, m.MarketResolved, m.Rebate, m.ResidualExposure)

Record = Union[Numbering, Taken, Submitting, m.OrderAck, m.OrderRejected, m.OrderCanceled, m.Fill, m.ResidualExposure,
               m.MarketResolved, m.Rebate, m.FillStatus]


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


def compact(records: list[Any], keep_orders: set[str], stream: str, seq: int, keep_numbered: int) -> list[Any]:
    """The records a journal's state is rebuilt from: every fill, settlement, rebate report and failed signal, the
    records of the orders in ``keep_orders`` (the open ones, the recent ones), and the last ``keep_numbered``
    numbered records (for subscribers catching up), after a ``Numbering`` that carries the counter on."""
    recent = seq - keep_numbered
    out: list[Any] = [Numbering(stream=stream, seq=seq)]
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


class Journal:
    """Append-only JSON lines: each order as taken, before it is sent, and what became of it; and the numbering of
    what is published on ``executions``."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        self.fsync = fsync
        self.skipped: list[Skipped] = []
        self.stream = ""  # this journal's name, made when it is created
        self.seq = 0  # the last number given
        self.write_errors = 0
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Record)
        self._fd = -1
        self._size = 0

    @property
    def bad(self) -> int:
        """Lines skipped at replay."""
        return len(self.skipped)

    def replay(self) -> list[Any]:
        """Every record so far; a line that cannot be trusted is skipped, and in ``skipped`` with why."""
        if not self.path.exists():
            return []
        records, self.skipped = read(self.path.read_bytes())
        for rec in records:
            if isinstance(rec, Numbering):
                self.stream, self.seq = rec.stream, max(self.seq, rec.seq)
            elif getattr(rec, "seq", 0):
                self.stream = self.stream or rec.stream
                if rec.stream == self.stream:
                    self.seq = max(self.seq, rec.seq)
        return records

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            self._append(b"\n")  # end a line a crash cut short, so the next record stands alone
        self.stream = self.stream or m.new_id()  # a new journal (or one from before numbering): name its stream

    def number(self, msg: Any) -> Any:
        """``msg`` with the next seq of this journal, written; JournalError when it could not be (not numbered then)."""
        numbered = msgspec.structs.replace(msg, seq=self.seq + 1, stream=self.stream)
        self.write(numbered)
        self.seq += 1
        return numbered

    def write(self, record: Any) -> None:
        self._append(self._encoder.encode(record) + b"\n")

    def _append(self, data: bytes) -> None:
        """All of ``data`` or nothing: a write cut short (the disk full) is taken back, and raises JournalError."""
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self.write_errors += 1
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass  # the next open ends the torn line, and replay skips it
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror or exc}") from None
        self._size += len(data)

    def after(self, stream: str, seq: int, limit: int) -> tuple[list[Any], int]:
        """The numbered records after ``seq`` of ``stream`` (another stream: from the first), at most ``limit``,
        oldest first; and the first seq the journal still holds (0: none)."""
        if stream != self.stream:
            seq = 0
        out, first = [], 0
        with open(self.path, "rb") as f:
            for line in f:
                if b'"seq"' not in line:
                    continue
                try:
                    rec = self._decoder.decode(line)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                n = getattr(rec, "seq", 0)
                if not isinstance(rec, NUMBERED) or not n or rec.stream != self.stream:
                    continue
                first = min(first, n) if first else n
                if n > seq and len(out) < limit:
                    out.append(rec)
        out.sort(key=lambda rec: rec.seq)
        return out, first

    def compact(self, records: list[Any], keep_orders: set[str], keep_numbered: int) -> int:
        """Rewrite the journal as ``compact`` says, atomically (a new file, synced, renamed over the old); returns
        the bytes it had before. Call it before ``open``."""
        before = self.path.stat().st_size
        self.stream = self.stream or m.new_id()
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for rec in compact(records, keep_orders, self.stream, self.seq, keep_numbered):
                    f.write(self._encoder.encode(rec) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return before

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
