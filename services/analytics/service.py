"""The analytics service: records everything on the bus in DuckDB and answers queries over control.

Messages become rows as they arrive (on the event loop); a flusher thread appends what has piled up every
``flush_ms`` and the rest on stop, so a slow query never delays a flush. A row DuckDB cannot store (a NaN
price, a number out of range) is skipped, counted and logged; when the database itself fails the rows are
kept and tried again at the next flush.

What the executor publishes on ``executions`` and risk on ``decisions`` is numbered (``seq`` in its journal's
``stream``): analytics keeps which seqs it holds of each (``numbering``), and at start, and whenever it sees a gap,
asks the one that published them for the records it missed (``CatchUpRequest``), a page at a time; each record is
recorded once. While any is missing it says so: ``catching_up`` and ``behind`` in its status and in every query's
answer.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..bus import BusError, BusTimeout, Requester
from ..config import control_address
from ..runtime import Service, StartupError
from ..recording import RecordingWriter, Tap
from ..sync import scanner_snapshot, snapshot_messages
from . import queries
from .numbering import Numbering
from .rows import Recorder, TopsMode
from .store import QueryError, Store, StoreError, Table, read_only_statement

CATCH_UP_PAGE = 1000  # records asked for at a time (the executor sends at most this many)
CATCH_UP_TIMEOUT_MS = 5000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_INT = 2 ** 63


class AnalyticsOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    db: str = ""  # the DuckDB file; default <state_dir>/polybot.duckdb
    flush_ms: int = 50  # at most this long between a message's arrival and its rows being in the file (<= 100)
    book_tops: TopsMode = "changes"  # record a token's best bid/ask when it changes, on every update, or never
    scanner: str = "scanner"  # the service whose snapshot fills in markets and books from before we started
    executor: str = "executor"  # the service whose journal the executions missed while we were down come from
    risk: str = "risk"  # the service whose journal the verdicts (decisions) missed while we were down come from
    query_timeout_s: float = 2.0  # a query running longer is interrupted
    max_rows: int = 10_000  # the most rows any answer carries (a request may ask for fewer)
    # Always-on recording of prices and events for backtests: a folder (relative: under <state_dir>/recordings);
    # empty: off. Segments rotate by size and by market time.
    record: str = ""
    record_rotate_mb: float = 64.0
    record_rotate_s: float = 3600.0


Floors = dict[tuple[str, str], int]  # (socket, stream) -> the seq up to which every record is held


@dataclass(eq=False)
class Source:
    """A service that numbers what it publishes on ``socket`` (its members ``kinds``), and what we hold of it."""
    socket: str
    service: str  # asked for what we missed; "" or not enabled: none runs, nothing to catch up
    kinds: tuple[type, ...]
    what: str  # its records, as a log line names them
    numbering: Numbering = field(default_factory=Numbering)
    gap: asyncio.Event = field(default_factory=asyncio.Event)
    catching_up: bool = False
    duplicates: int = 0
    pid: int = 0  # of the process heard last (its heartbeats): a new one may have published before we heard it

    def floors(self) -> Floors:
        return {(self.socket, stream): floor for stream, floor in self.numbering.floors().items()}


class Pending:
    """Rows waiting for the next flush; filled by the event loop, taken by the flusher thread. With them, the
    numbered streams' floors as they stand once those rows are written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, list[tuple]] = {}
        self.floors: Floors = {}
        self.count = 0

    def add(self, rows: list[tuple[str, tuple]], floors: Floors | None = None) -> None:
        with self._lock:
            for table, row in rows:
                self._rows.setdefault(table, []).append(row)
            self.count += len(rows)
            if floors:
                self.floors.update(floors)

    def take_floors(self) -> Floors:
        with self._lock:
            floors, self.floors = self.floors, {}
            return floors

    def put_back_floors(self, floors: Floors) -> None:
        with self._lock:
            self.floors = {**floors, **self.floors}

    def put_back(self, table: str, rows: list[tuple]) -> None:
        with self._lock:
            self._rows[table] = rows + self._rows.get(table, [])
            self.count += len(rows)

    def take(self) -> dict[str, list[tuple]]:
        with self._lock:
            rows, self._rows, self.count = self._rows, {}, 0
            return rows


def cell(value: Any) -> str | int | float | bool | None:
    """A value as a reply cell: exact numbers as decimal strings, times as int ns, the rest as text."""
    if value is None or isinstance(value, (bool, float, str)):
        return value
    if isinstance(value, int):
        return value if -MAX_INT <= value < MAX_INT else str(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1000
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple, dict)):
        return msgspec.json.encode(value, enc_hook=str).decode()
    return str(value)


def reply(table: Table, trace_id: str, catching_up: bool = False, behind: int = 0) -> m.QueryReply:
    return m.QueryReply(columns=table.columns, rows=[[cell(v) for v in row] for row in table.rows],
                        truncated=table.truncated, trace_id=trace_id, catching_up=catching_up, behind=behind)


class Analytics(Service):
    consumes = {"prices": None, "events": None, "executions": None, "decisions": None}
    Options = AnalyticsOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts: AnalyticsOptions = ctx.options
        if not 1 <= opts.flush_ms <= 100:
            raise StartupError(f"flush_ms must be between 1 and 100 (got {opts.flush_ms}): rows reach the file "
                               "at least every 100 ms")
        if not 0 < opts.query_timeout_s < 4:
            raise StartupError("query_timeout_s must be above 0 and below 4 (a control request waits 5 s)")
        path = Path(opts.db).expanduser() if opts.db else ctx.config.state_path / "polybot.duckdb"
        if not path.is_absolute():
            raise StartupError(f"db: {opts.db!r} must be an absolute path")
        try:
            self.store = Store(path)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        self.recorder = Recorder(opts.book_tops)
        self.tap: Tap | None = None
        if opts.record:
            folder = Path(opts.record).expanduser()
            folder = folder if folder.is_absolute() else ctx.config.state_path / "recordings" / folder
            self.tap = Tap(RecordingWriter(folder, int(opts.record_rotate_mb * (1 << 20)), opts.record_rotate_s))
        self.pending = Pending()
        watched = ctx.config.watched_services
        self.sources = {src.socket: src for src in (
            Source("executions", opts.executor, m.members(m.Numbered), "executions records"),
            Source("decisions", opts.risk, m.members(m.NumberedVerdict), "verdicts"))}
        for src in self.sources.values():
            for stream, (floor, seqs) in self.store.numbered(src.socket).items():
                src.numbering.load(stream, floor, seqs)
            src.service = src.service if src.service in watched else ""
            src.catching_up = bool(src.service)
        self.written = 0
        self.bad_rows = 0
        self.flushes = 0
        self.flush_errors = 0
        self.flush_ms_max = 0.0
        self.synced = False
        self._write_lock = threading.Lock()  # the final flush on stop must not overlap the flusher's last one
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="analytics-flusher", daemon=True)
        self._flusher.start()

    # ---------------------------------------------------------------- recording

    def handle(self, socket: str, msg: m.Message) -> None:
        src = self.sources.get(socket)
        if src is not None and isinstance(msg, m.Heartbeat) and msg.service == src.service:
            if src.pid and msg.pid != src.pid:  # restarted: what it published before we reconnected was missed
                src.gap.set()
            src.pid = msg.pid
        numbered = src is not None and isinstance(msg, src.kinds) and msg.seq > 0
        if numbered and not src.numbering.offer(msg.stream, msg.seq):
            src.duplicates += 1  # held already: heard live and again from the journal
            return
        rows = self.recorder.rows(msg)
        if rows or numbered:
            self.pending.add(rows, src.floors() if numbered else None)
        if numbered and src.numbering.missing:
            src.gap.set()
        if self.tap is not None and socket in ("prices", "events") and not isinstance(msg, m.Heartbeat):
            self.tap.offer(msg)

    async def run(self) -> None:
        await asyncio.gather(self._from_scanner(), *(self._catch_up_forever(src) for src in self.sources.values()))

    async def _from_scanner(self) -> None:
        """Record the markets and books from before we started, from the scanner's snapshot."""
        scanner = self.ctx.options.scanner
        if not scanner or scanner not in self.ctx.config.watched_services:  # none runs: nothing to start from
            if self.tap is not None:
                self.tap.start([], 0)
            return
        reply = await scanner_snapshot(self.ctx, scanner)
        opening = snapshot_messages(reply)
        for msg in opening:
            self.handle("snapshot", msg)
        if self.tap is not None:
            self.tap.start(opening, reply.ts_ns)
        self.synced = True
        self.ctx.log.info("recorded the scanner's snapshot", extra={"markets": len(reply.markets),
                                                                   "books": len(reply.books.books)})

    async def _catch_up_forever(self, src: Source) -> None:
        """Ask the source's service for what we missed: at start, then whenever a gap shows."""
        if not src.catching_up:  # it does not run: nothing is numbered
            return
        while not self.ctx.subscribed(src.socket):  # from then on nothing it publishes is missed
            await asyncio.sleep(0.05)
        with Requester(control_address(self.ctx.config, src.service), CATCH_UP_TIMEOUT_MS) as req:
            while True:
                if not await self._catch_up(req, src):
                    return
                await asyncio.to_thread(self.flush)  # caught up once the rows are in the file, not before
                src.catching_up = False
                await src.gap.wait()
                src.gap.clear()
                src.catching_up = bool(src.numbering.missing)

    async def _catch_up(self, req: Requester, src: Source) -> bool:
        """Page through the source's records after what we hold until none is missing; False when it does not
        number its records (an older version): nothing to catch up then."""
        numbering, name = src.numbering, src.service
        stream = numbering.current
        cursor, delay = numbering.floor(stream), 0.1
        while True:
            ask = m.CatchUpRequest(stream=stream, after_seq=cursor, max_records=CATCH_UP_PAGE if stream else 0)
            try:
                reply = await asyncio.to_thread(req.request, ask)
            except (BusTimeout, BusError) as exc:
                self.ctx.log.warning("cannot ask %s for the %s missed yet (%s); asking again", name, src.what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not isinstance(reply, m.CatchUpReply):
                self.ctx.log.warning("%s does not answer for the %s missed (%s): none can be caught up", name,
                                     src.what, reply)
                return False
            for record in reply.records:
                if isinstance(record, src.kinds):  # another's kind of record is not this source's to give
                    self.handle(src.socket, record)
            numbering.known(reply.stream, reply.last_seq)
            if reply.stream != stream:  # first contact, or its journal is another one now
                if stream and (gone := numbering.settle(stream, numbering.last(stream))):  # the old one is no more
                    self.ctx.log.warning("%d %s of %s's former journal were never recorded here", gone, src.what,
                                         name)
                stream, cursor = reply.stream, numbering.floor(reply.stream)
                continue
            if len(reply.records) >= ask.max_records > 0:
                cursor = reply.records[-1].seq
                continue
            if gone := numbering.settle(stream, reply.last_seq):
                self.ctx.log.warning("%d %s were compacted out of %s's journal before they were recorded here", gone,
                                     src.what, name)
            self.pending.add([], src.floors())
            self.ctx.log.info("caught up with %s's journal", name, extra={"stream": stream, "seq": reply.last_seq})
            return True

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.ctx.options.flush_ms / 1000):
            try:
                self.flush()
            except Exception as exc:  # the flusher must outlive any one bad flush, or nothing is written again
                self.flush_errors += 1
                self.ctx.log.error("flush failed: %s", exc, exc_info=exc)

    def flush(self) -> int:
        """Write every pending row; returns how many were written."""
        with self._write_lock:
            floors = self.pending.take_floors()  # before the rows: these floors hold once they are written
            batch = self.pending.take()
            if not batch:
                self._set_floors(floors)
                return 0
            started = time.perf_counter()
            written = 0
            tables = list(batch.items())
            for i, (table, rows) in enumerate(tables):
                try:
                    done, bad = self.store.append(table, rows)
                except StoreError as exc:
                    self.ctx.log.error("flush failed, keeping the rows for the next one: %s", exc)
                    self.pending.put_back(table, exc.rest)
                    for later, rest in tables[i + 1:]:
                        self.pending.put_back(later, rest)
                    self.pending.put_back_floors(floors)
                    floors = {}
                    break
                written += done
                if bad:
                    self.bad_rows += len(bad)
                    self.ctx.log.warning("skipped %d rows that cannot be stored, e.g. %s", len(bad), bad[0])
            self._set_floors(floors)
            self.written += written
            self.flushes += 1
            self.flush_ms_max = max(self.flush_ms_max, (time.perf_counter() - started) * 1000)
            return written

    def _set_floors(self, floors: Floors) -> None:
        if not floors:
            return
        try:
            self.store.set_floors(floors)
        except StoreError as exc:
            self.ctx.log.error("could not record how far the numbered records are held (%s); trying again", exc)
            self.pending.put_back_floors(floors)

    def on_stop(self) -> None:
        self._stop.set()
        self._flusher.join(timeout=30)
        written = self.flush()
        self.ctx.log.info("final flush", extra={"rows": written, "written": self.written})
        if self.pending.count:
            self.ctx.log.error("%d rows could not be written before stopping", self.pending.count)
        self.store.close()
        if self.tap is not None:
            self.tap.writer.close()

    # ---------------------------------------------------------------- queries

    def control(self, request: m.Message) -> m.Message | None:
        if not isinstance(request, m.QueryRequest):
            return None
        opts: AnalyticsOptions = self.ctx.options
        if request.max_rows < 1:
            return m.Error(request_id=request.id, message="max_rows must be at least 1")
        max_rows = min(request.max_rows, opts.max_rows)
        try:
            if request.sql and request.name:
                raise QueryError("ask a named query or SQL, not both")
            if request.sql:
                sql = read_only_statement(request.sql)
                with self.store.reading(opts.query_timeout_s) as db:
                    return reply(db.select(sql, max_rows=max_rows), request.trace_id, *self._behind())
            if not request.name:
                raise QueryError(f"ask a named query ({', '.join(queries.NAMED)}) or read-only SQL")
            with self.store.reading(opts.query_timeout_s) as db:
                table = queries.run(db, request.name, request.params)
        except QueryError as exc:
            return m.Error(request_id=request.id, message=str(exc))
        if len(table.rows) > max_rows:
            table = Table(table.columns, table.rows[:max_rows], truncated=True)
        return reply(table, request.trace_id, *self._behind())

    def _behind(self) -> tuple[bool, int]:
        """Whether any source is being caught up on or has records missing, and how many are missing in all."""
        missing = sum(src.numbering.missing for src in self.sources.values())
        return any(src.catching_up for src in self.sources.values()) or missing > 0, missing

    def detail(self) -> dict[str, str]:
        return {"db": str(self.store.path), "rows": str(self.written), "pending": str(self.pending.count),
                "bad_rows": str(self.bad_rows), "flushes": str(self.flushes), "flush_errors": str(self.flush_errors),
                "flush_ms_max": f"{self.flush_ms_max:.1f}", "synced": str(self.synced),
                "catching_up": str(self._behind()[0]), "behind": str(self._behind()[1]),
                **{f"{socket}_{k}": v for socket, src in self.sources.items() for k, v in (
                    ("catching_up", str(src.catching_up or src.numbering.missing > 0)),
                    ("behind", str(src.numbering.missing)), ("lost", str(src.numbering.lost)),
                    ("duplicates", str(src.duplicates)))},
                **({"recording": str(self.tap.writer.folder), "recorded": str(self.tap.writer.written)}
                   if self.tap is not None else {})}
