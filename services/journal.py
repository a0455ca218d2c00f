"""An append-only file of JSON lines whose records a service numbers as it publishes them: the executor's journal
(``executions``) and risk's (``decisions``) are both one.

A numbered record carries ``seq`` within ``stream``, the file's own name (made when the file is made: a service
whose file is lost starts a new stream, so no subscriber mistakes its numbers for the old ones). A subscriber that
missed some (analytics, down for a while) asks for those ``after`` the last it holds. A write is all or nothing: one
that fails (a full disk) leaves the file as it was and raises ``JournalError``. A line that cannot be trusted (cut
short by a crash, or corrupt) is skipped at replay with the reason, and the lines around it still count. ``rewrite``
replaces the file with the records given, atomically (compaction).
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from . import messages as m


class Numbering(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """The journal's stream name and the last seq numbered so far: first in a compacted journal (elsewhere the
    numbered records themselves say it)."""
    stream: str
    seq: int = 0


class JournalError(Exception):
    """A record could not be written (the disk is full, the file too big); the journal is as it was before."""


class Skipped(NamedTuple):
    line: int  # 1-based, in the file
    reason: str


def read(data: bytes, decoder: msgspec.json.Decoder, fault: Callable[[Any], str]) -> tuple[list[Any], list[Skipped]]:
    """The records of a journal's bytes, and the lines skipped with why (``fault``: why a decoded record cannot be
    trusted, or "")."""
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
        if why := fault(record):
            skipped.append(Skipped(n, f"{type(record).__name__} {why}"))
            continue
        records.append(record)
    return records, skipped


class Journal:
    """Append-only JSON lines of ``record_type``; the members of ``numbered`` are numbered as they are published."""

    def __init__(self, path: Path, record_type: Any, numbered: tuple[type, ...], fault: Callable[[Any], str],
                 fsync: bool = False) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        self.fsync = fsync
        self.numbered = numbered
        self.fault = fault
        self.skipped: list[Skipped] = []
        self.stream = ""  # this journal's name, made when it is created
        self.seq = 0  # the last number given
        self.write_errors = 0
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(record_type)
        self._fd = -1
        self._size = 0
        self._index = Index()

    @property
    def bad(self) -> int:
        """Lines skipped at replay."""
        return len(self.skipped)

    def replay(self) -> list[Any]:
        """Every record so far; a line that cannot be trusted is skipped, and in ``skipped`` with why."""
        if not self.path.exists():
            return []
        records, self.skipped = read(self.path.read_bytes(), self._decoder, self.fault)
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
        oldest first; and the first seq the journal still holds (0: none). Reads from the nearest place the index
        knows at or before ``seq``, not from the start: a subscriber catching up page by page reads the file about
        once in all."""
        if stream != self.stream:
            seq = 0
        index = self._index
        out: list[Any] = []
        with open(self.path, "rb") as f:
            index.extend(f, lambda line: rec.seq if (rec := self._numbered(line)) is not None else 0)
            f.seek(index.offset_before(seq + 1))
            for line in f:
                if len(out) >= limit:
                    break
                if (rec := self._numbered(line)) is not None and rec.seq > seq:
                    out.append(rec)
        out.sort(key=lambda rec: rec.seq)
        return out, index.first

    def _numbered(self, line: bytes) -> Any | None:
        """The record a line holds when it is a numbered one of this journal's stream; None for any other line."""
        if b'"seq"' not in line:
            return None
        try:
            rec = self._decoder.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return rec if isinstance(rec, self.numbered) and getattr(rec, "seq", 0) and rec.stream == self.stream else None

    def rewrite(self, records: list[Any]) -> int:
        """Replace the journal with ``records`` (after a ``Numbering`` that carries the counter on), atomically: a new
        file, synced, renamed over the old; returns the bytes it had before. An open journal appends to the new
        file from then on."""
        before = self.path.stat().st_size
        self.stream = self.stream or m.new_id()
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                for rec in [Numbering(stream=self.stream, seq=self.seq), *records]:
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
        self._index = Index()  # the offsets it knew are of the old file
        if self._fd >= 0:
            self.close()
            self.open()
        return before

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Index:
    """Where numbered records sit in the file, learned as ``after`` reads it: the offset of every ``EVERY``-th
    record that raised the highest seq so far (records are appended in seq order, so none before such a place has a
    higher seq), how far the file has been read, and the first seq it holds."""

    EVERY = 256

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.offsets: list[int] = []
        self.read_to = 0
        self.first = 0
        self.top = 0
        self.count = 0

    def extend(self, f: Any, seq_of: Callable[[bytes], int]) -> None:
        """Read the part of the file appended since last time."""
        f.seek(self.read_to)
        at = self.read_to
        for line in f:
            if not line.endswith(b"\n"):
                break  # a record being written: read it next time, whole
            n = seq_of(line)
            if n:
                self.first = min(self.first, n) if self.first else n
                if n > self.top:
                    if self.count % self.EVERY == 0:
                        self.seqs.append(n)
                        self.offsets.append(at)
                    self.top = n
                    self.count += 1
            at += len(line)
        self.read_to = at

    def offset_before(self, seq: int) -> int:
        """Where to start reading for the records from ``seq`` on."""
        i = bisect.bisect_right(self.seqs, seq) - 1
        return self.offsets[i] if i >= 0 else 0


CATCH_UP_PAGE = 1000  # the most records one CatchUpReply carries


def catch_up(journal: Journal, request: m.CatchUpRequest) -> m.CatchUpReply:
    """The answer to a subscriber that missed some of what was numbered: a page of the records after its last."""
    limit = max(0, min(request.max_records, CATCH_UP_PAGE))
    records, first = journal.after(request.stream, request.after_seq, limit)
    return m.CatchUpReply(stream=journal.stream, first_seq=first, last_seq=journal.seq, records=records)
