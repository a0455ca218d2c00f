"""The analytics service: records everything on the bus in DuckDB and answers queries over control.

Messages become rows as they arrive (on the event loop); a flusher thread appends what has piled up every
``flush_ms`` and the rest on stop, so a slow query never delays a flush. A row DuckDB cannot store (a NaN
price, a number out of range) is skipped, counted and logged; when the database itself fails the rows are
kept and tried again at the next flush.
"""
from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..runtime import Service, StartupError
from ..recording import RecordingWriter, Tap
from ..sync import scanner_snapshot, snapshot_messages
from . import queries
from .rows import Recorder, TopsMode
from .store import QueryError, Store, StoreError, Table, read_only_statement

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_INT = 2 ** 63


class AnalyticsOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    db: str = ""  # the DuckDB file; default <state_dir>/polybot.duckdb
    flush_ms: int = 50  # at most this long between a message's arrival and its rows being in the file (<= 100)
    book_tops: TopsMode = "changes"  # record a token's best bid/ask when it changes, on every update, or never
    scanner: str = "scanner"  # the service whose snapshot fills in markets and books from before we started
    query_timeout_s: float = 2.0  # a query running longer is interrupted
    max_rows: int = 10_000  # the most rows any answer carries (a request may ask for fewer)
    # Always-on recording of prices and events for backtests: a folder (relative: under <state_dir>/recordings);
    # empty: off. Segments rotate by size and by market time.
    record: str = ""
    record_rotate_mb: float = 64.0
    record_rotate_s: float = 3600.0


class Pending:
    """Rows waiting for the next flush; filled by the event loop, taken by the flusher thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, list[tuple]] = {}
        self.count = 0

    def add(self, rows: list[tuple[str, tuple]]) -> None:
        with self._lock:
            for table, row in rows:
                self._rows.setdefault(table, []).append(row)
            self.count += len(rows)

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


def reply(table: Table, trace_id: str) -> m.QueryReply:
    return m.QueryReply(columns=table.columns, rows=[[cell(v) for v in row] for row in table.rows],
                        truncated=table.truncated, trace_id=trace_id)


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
        rows = self.recorder.rows(msg)
        if rows:
            self.pending.add(rows)
        if self.tap is not None and socket in ("prices", "events") and not isinstance(msg, m.Heartbeat):
            self.tap.offer(msg)

    async def run(self) -> None:
        """Record the markets and books from before we started, from the scanner's snapshot."""
        scanner = self.ctx.options.scanner
        if not scanner or scanner not in self.ctx.config.enabled_services:  # none runs: nothing to start from
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
            batch = self.pending.take()
            if not batch:
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
                    break
                written += done
                if bad:
                    self.bad_rows += len(bad)
                    self.ctx.log.warning("skipped %d rows that cannot be stored, e.g. %s", len(bad), bad[0])
            self.written += written
            self.flushes += 1
            self.flush_ms_max = max(self.flush_ms_max, (time.perf_counter() - started) * 1000)
            return written

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
                    return reply(db.select(sql, max_rows=max_rows), request.trace_id)
            if not request.name:
                raise QueryError(f"ask a named query ({', '.join(queries.NAMED)}) or read-only SQL")
            with self.store.reading(opts.query_timeout_s) as db:
                table = queries.run(db, request.name, request.params)
        except QueryError as exc:
            return m.Error(request_id=request.id, message=str(exc))
        if len(table.rows) > max_rows:
            table = Table(table.columns, table.rows[:max_rows], truncated=True)
        return reply(table, request.trace_id)

    def detail(self) -> dict[str, str]:
        return {"db": str(self.store.path), "rows": str(self.written), "pending": str(self.pending.count),
                "bad_rows": str(self.bad_rows), "flushes": str(self.flushes), "flush_errors": str(self.flush_errors),
                "flush_ms_max": f"{self.flush_ms_max:.1f}", "synced": str(self.synced),
                **({"recording": str(self.tap.writer.folder), "recorded": str(self.tap.writer.written)}
                   if self.tap is not None else {})}
