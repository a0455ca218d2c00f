"""The DuckDB file: the only module of the mesh that imports duckdb.

One writer connection, used by the flusher alone, appends rows through DuckDB's appender (one statement per
table per flush: ~100x faster than row INSERTs, see ``benchmarks/analytics_ingest.py``). One reader cursor
answers queries inside read-only transactions, interrupted when they run too long; the database has no access
to files or the network (and that setting is locked), so a SELECT can read only what analytics recorded.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from . import schema

# A value DuckDB cannot store (NaN, out of range): the row is bad, the database is fine.
DATA_ERRORS = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException, TypeError, ValueError,
               OverflowError)


# Per socket whose records are numbered: the meta key prefix of its streams' floors (the seq up to which every record
# of the stream is held), and the tables whose rows carry the numbering.
NUMBERED: dict[str, tuple[str, tuple[str, ...]]] = {
    "executions": ("executions_floor:", ("executions", "rebates")),  # the executor's
    "decisions": ("decisions_floor:", ("verdicts", "strategy_approvals")),  # risk's
}


class StoreError(Exception):
    """The database failed (not the data); ``rest`` holds the rows of the call that were not written."""

    def __init__(self, message: str, rest: Sequence[tuple] = ()) -> None:
        super().__init__(message)
        self.rest = list(rest)


class QueryError(Exception):
    """A query was refused or failed; the message is meant for whoever asked."""


class Table:
    """A query's answer: column names, rows of Python values, and whether rows were left out."""

    __slots__ = ("columns", "rows", "truncated")

    def __init__(self, columns: list[str], rows: list[Sequence[Any]], truncated: bool = False) -> None:
        self.columns = columns
        self.rows = rows
        self.truncated = truncated


class Reader:
    """Selects inside one read-only transaction (so several selects see the same data)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor

    def select(self, sql: str, params: Sequence[Any] = (), max_rows: int | None = None) -> Table:
        cur = self._cursor.execute(sql, list(params))
        columns = [d[0] for d in cur.description or ()]
        if max_rows is None:
            return Table(columns, cur.fetchall())
        rows = cur.fetchmany(max_rows + 1)
        return Table(columns, rows[:max_rows], truncated=len(rows) > max_rows)


def read_only_statement(sql: str) -> str:
    """The one SELECT in ``sql``, or QueryError saying why it is refused (by DuckDB's own parse, not by pattern)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the SQL: {exc}") from None
    if len(statements) != 1:
        raise QueryError(f"send exactly one statement (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"only read-only SELECT statements are answered (this is {kind.name})")
    return statements[0].query


class Store:
    def __init__(self, path: Path) -> None:
        try:
            self._db = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise StoreError(f"cannot open {path}: {exc} (is another analytics process using it?)") from None
        for statement in schema.ddl():
            self._db.execute(statement)
        self._db.execute("SET enable_external_access = false")
        self._db.execute("SET lock_configuration = true")
        self._appenders = {table: self._db.appender(table) for table in schema.TABLES}
        self._reader = self._db.cursor()
        self.path = path

    def append(self, table: str, rows: Sequence[tuple]) -> tuple[int, list[str]]:
        """Write ``rows``; returns how many were written and why each skipped one could not be stored.

        Raises StoreError (with the rows not written) when the database itself fails.
        """
        appender = self._appenders[table]
        try:
            appender.append_rows(rows)
            appender.flush()
            return len(rows), []
        except DATA_ERRORS:
            appender.clear()
        except duckdb.Error as exc:
            appender.clear()
            raise StoreError(f"writing {table}: {exc}", rows) from None
        # One bad row spoils its batch: write the others one by one and say which ones could not be stored.
        written, bad = 0, []
        for i, row in enumerate(rows):
            try:
                appender.append_row(*row)
                appender.flush()
                written += 1
            except DATA_ERRORS as exc:
                appender.clear()
                bad.append(f"{table}: {exc}")
            except duckdb.Error as exc:
                appender.clear()
                raise StoreError(f"writing {table}: {exc}", rows[i:]) from None
        return written, bad

    def numbered(self, socket: str) -> dict[str, tuple[int, list[int]]]:
        """Per stream numbered on ``socket``: the seq up to which every record is held, and the seqs held above it."""
        prefix, tables = NUMBERED[socket]
        floors = {key.removeprefix(prefix): int(value) for key, value in self._db.execute(
            "SELECT key, value FROM meta WHERE starts_with(key, ?)", [prefix]).fetchall()}
        out: dict[str, tuple[int, list[int]]] = {stream: (floor, []) for stream, floor in floors.items()}
        held = (f"SELECT substr(key, {len(prefix) + 1}) AS stream, CAST(value AS BIGINT) AS floor FROM meta "
                "WHERE starts_with(key, ?)")
        for table in tables:
            for stream, seq in self._db.execute(
                    f"SELECT t.stream, t.seq FROM {table} t LEFT JOIN ({held}) f ON f.stream = t.stream "
                    "WHERE t.seq > coalesce(f.floor, 0)", [prefix]).fetchall():
                out.setdefault(stream, (0, []))[1].append(seq)
        return out

    def set_floors(self, floors: dict[tuple[str, str], int]) -> None:
        """Every record of each (socket, stream) up to its seq is in the file (called after the rows are)."""
        try:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [[NUMBERED[socket][0] + stream, str(floor)]
                                  for (socket, stream), floor in floors.items()])
        except duckdb.Error as exc:
            raise StoreError(f"writing meta: {exc}") from None

    @contextmanager
    def reading(self, timeout_s: float) -> Iterator[Reader]:
        """A read-only transaction, interrupted after ``timeout_s``; its failures come out as QueryError."""
        cursor = self._reader
        timer = threading.Timer(timeout_s, cursor.interrupt)
        timer.daemon = True
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        timer.start()
        try:
            yield Reader(cursor)
        except duckdb.InterruptException:
            raise QueryError(f"the query ran longer than {timeout_s:g} s and was stopped") from None
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip()) from None
        finally:
            timer.cancel()
            for _ in range(2):  # an interrupt meant for the query can land on the rollback: then roll back again
                try:
                    cursor.execute("ROLLBACK")
                    break
                except duckdb.Error:
                    continue

    def close(self) -> None:
        self._reader.close()
        self._db.close()
