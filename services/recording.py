"""Recordings: what the scanner publishes on ``prices`` and ``events``, in order, in msgpack segment files.

A recording is a folder of segments ``seg-000001.pbrec``, ``seg-000002.pbrec``... Each segment is a header
frame, then message frames; a frame is a 4-byte little-endian length and msgpack. The messages keep their own
timestamps (``ts_ns``, set by the scanner), which a replay uses as its clock.

The first segment starts with the scanner's snapshot (the markets, the stale set, the books), so a recording
stands alone. Each later segment restates the state at its start in its first ``restated`` messages, so it can
be replayed alone too; a replay of the whole folder skips those restatements. Segments rotate by size and by
age. A segment cut short by a crash reads up to its last whole frame.
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import msgspec

from . import messages as m
from .books import Books

VERSION = 1
SUFFIX = ".pbrec"
LENGTH = struct.Struct("<I")
MAX_FRAME = 64 << 20
Recorded = Union[m.BookSnapshot, m.BookDelta, m.LastTrade, m.MarketNew, m.TickSizeChange, m.MarketHalted,
                 m.MarketResolved, m.MarketStale]
RECORDED = m.members(Recorded)


class RecordingError(Exception):
    """A path that is not a recording, or a segment that is not one; the message says which."""


class SegmentHeader(msgspec.Struct, frozen=True, kw_only=True, tag="pbrec"):
    version: int = VERSION
    seq: int
    started_ns: int
    restated: int = 0  # the first messages restate the state at the start (skipped when replaying from before)


class State:
    """What a segment's start must restate: markets (with their current tick), halts and resolutions, the stale
    set and the books."""

    def __init__(self) -> None:
        self.markets: dict[str, m.MarketNew] = {}
        self.closed: dict[str, m.Message] = {}
        self.stale: set[str] = set()
        self.books = Books()
        self.token_market: dict[str, str] = {}
        self.ts_ns = 0

    def apply(self, msg: m.Message) -> None:
        self.ts_ns = max(self.ts_ns, msg.ts_ns)
        match msg:
            case m.MarketNew():
                self.markets[msg.market] = msg
                self.token_market.update((o.token_id, msg.market) for o in msg.outcomes)
            case m.TickSizeChange() if msg.market in self.markets:
                self.markets[msg.market] = msgspec.structs.replace(self.markets[msg.market],
                                                                   tick_size=msg.new_tick_size)
            case m.MarketHalted() | m.MarketResolved():
                self.closed[msg.market] = msg
            case m.MarketStale():
                (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
            case m.BookSnapshot() | m.BookDelta():
                self.books.apply(msg)

    def restatement(self) -> list[m.Message]:
        books = [m.Book(token_id=token, market=self.token_market.get(token, ""),
                        bids=[m.Level(p, s) for p, s in sorted(levels["BUY"].items(), reverse=True)],
                        asks=[m.Level(p, s) for p, s in sorted(levels["SELL"].items())])
                 for token, levels in sorted(self.books.levels.items())]
        return [*self.markets.values(), *self.closed.values(),
                m.MarketStale(ts_ns=self.ts_ns, markets=sorted(self.stale), stale=True, reason="restated"),
                m.BookSnapshot(ts_ns=self.ts_ns, books=books)]


class RecordingWriter:
    """Appends messages to a recording folder, rotating segments by size and age."""

    def __init__(self, folder: str | Path, rotate_bytes: int = 64 << 20, rotate_s: float = 3600.0,
                 flush_s: float = 0.5) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.rotate_ns = int(rotate_s * 1e9)
        self.encoder = msgspec.msgpack.Encoder()
        self.state = State()
        existing = sorted(self.folder.glob("seg-*" + SUFFIX))
        self.seq = int(existing[-1].stem.split("-")[1]) if existing else 0
        self.file = None
        self.size = 0
        self.started_ns = 0
        self.written = 0
        self.flush_s = flush_s
        self.flush_at = 0.0

    def write(self, msg: m.Message) -> None:
        if not isinstance(msg, RECORDED):
            return
        if self.file is None or self.size >= self.rotate_bytes or msg.ts_ns - self.started_ns >= self.rotate_ns:
            self._open(msg.ts_ns)
        self._frame(msg)
        self.state.apply(msg)
        self.written += 1
        if self.flush_s and time.monotonic() >= self.flush_at:  # readers see what was recorded, at most this late
            self.flush()
            self.flush_at = time.monotonic() + self.flush_s

    def write_all(self, msgs: list[m.Message]) -> None:
        for msg in msgs:
            self.write(msg)

    def _open(self, now_ns: int) -> None:
        """A new segment; after the first, it begins by restating the state (markets, books) at its start."""
        self.close()
        self.seq += 1
        restate = self.state.restatement() if self.state.markets or self.state.books.levels else []
        self.file = open(self.folder / f"seg-{self.seq:06d}{SUFFIX}", "xb")
        self.size = 0
        self.started_ns = now_ns
        self._frame(SegmentHeader(seq=self.seq, started_ns=now_ns, restated=len(restate)))
        for msg in restate:
            self._frame(msg)

    def _frame(self, obj: msgspec.Struct) -> None:
        data = self.encoder.encode(obj)
        self.file.write(LENGTH.pack(len(data)) + data)
        self.size += LENGTH.size + len(data)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tap:
    """A service's view of ``prices`` and ``events`` into a recording that starts from the scanner's snapshot:
    what arrives before the snapshot waits, and is written after it when it is newer."""

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.backlog: list[m.Message] | None = []

    def offer(self, msg: m.Message) -> None:
        if self.backlog is None:
            self.writer.write(msg)
        else:
            self.backlog.append(msg)

    def start(self, snapshot: list[m.Message], snapshot_ns: int) -> None:
        """Write the snapshot (``sync.snapshot_messages``), then what waited and is newer than it."""
        backlog, self.backlog = self.backlog or [], None
        self.writer.write_all(snapshot)
        self.writer.write_all([msg for msg in backlog if msg.ts_ns > snapshot_ns])


def segments(path: str | Path) -> list[Path]:
    """A recording's segment files in order: a folder's, or one segment file alone."""
    path = Path(path)
    if path.is_file() and path.suffix == SUFFIX:
        return [path]
    if not path.is_dir():
        raise RecordingError(f"{path} is neither a recording folder nor a {SUFFIX} segment")
    found = sorted(path.glob("seg-*" + SUFFIX))
    if not found:
        raise RecordingError(f"{path} holds no segments (seg-*{SUFFIX}); record one with `polybot record`")
    return found


_HEADER = msgspec.msgpack.Decoder(SegmentHeader)
_MESSAGE = msgspec.msgpack.Decoder(Recorded)


def _frames(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    at, end = 0, len(data)
    while at + LENGTH.size <= end:
        (size,) = LENGTH.unpack_from(data, at)
        if size > MAX_FRAME or at + LENGTH.size + size > end:
            return  # a frame cut short (a crash while writing): the segment ends at its last whole frame
        yield data[at + LENGTH.size:at + LENGTH.size + size]
        at += LENGTH.size + size


def _opened(path: Path) -> tuple[SegmentHeader, Iterator[bytes]]:
    """A segment's header and its message frames after it."""
    frames = _frames(path)
    try:
        return _HEADER.decode(next(frames)), frames
    except (StopIteration, msgspec.DecodeError, msgspec.ValidationError):
        raise RecordingError(f"{path} is not a recording segment (no header)") from None


def read_segment(path: Path, restated: bool = True) -> Iterator[m.Message]:
    header, frames = _opened(path)
    for i, frame in enumerate(frames):
        if i < header.restated and not restated:
            continue
        yield _MESSAGE.decode(frame)


def read(path: str | Path) -> Iterator[m.Message]:
    """Every message of a recording in order; a later segment's restatement of the state is skipped."""
    for i, seg in enumerate(segments(path)):
        yield from read_segment(seg, restated=i == 0)


def count(path: str | Path) -> int:
    """How many messages ``read`` yields, from the frame lengths alone (nothing decoded)."""
    total = 0
    for i, seg in enumerate(segments(path)):
        header, frames = _opened(seg)
        total += sum(1 for _ in frames) - (header.restated if i else 0)
    return total


@dataclass
class RecordingInfo:
    path: str
    segments: int
    bytes: int
    started_ns: int
    ended_ns: int
    messages: int
    markets: int


def describe(path: str | Path) -> RecordingInfo:
    """What a recording holds (reads it whole)."""
    segs = segments(path)
    first = last = count = 0
    markets: set[str] = set()
    for msg in read(path):
        first = first or msg.ts_ns
        last = max(last, msg.ts_ns)
        count += 1
        if isinstance(msg, m.MarketNew):
            markets.add(msg.market)
    return RecordingInfo(path=str(path), segments=len(segs), bytes=sum(s.stat().st_size for s in segs),
                         started_ns=first, ended_ns=last, messages=count, markets=len(markets))


def find(root: str | Path) -> list[Path]:
    """The recording folders under ``root`` (itself included), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted({p.parent for p in root.rglob("seg-*" + SUFFIX)})
