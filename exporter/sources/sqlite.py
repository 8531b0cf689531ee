"""SQLite task source: for applications that keep their tasks in SQLite, and the demo."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC
from pathlib import Path

from exporter.config import TasksConfig
from exporter.sources.source import (
    Bounds,
    ConnectError,
    QueryError,
    QueryPlan,
    QueryTimeout,
    Row,
    Rows,
    build_query,
    local_naive,
    unix_time,
    utc_naive,
)

# How many SQLite virtual-machine steps between deadline checks.
_PROGRESS_STEPS = 1000


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _declared_kind(declared: str) -> str:
    """How a time column of type "auto" is read, from its declared type (SQLite's affinity
    rules): numbers are epoch seconds; TIMESTAMP text is UTC, as CURRENT_TIMESTAMP writes it;
    other text is a wall-clock time in time_zone."""
    upper = declared.upper()
    if "TIMESTAMP" in upper:
        return "timestamp"
    if any(part in upper for part in ("INT", "REAL", "FLOA", "DOUB", "NUM", "DEC")):
        return "epoch"
    return "datetime"


class SQLiteSource:
    """Counts tasks in a SQLite file, opened read-only, with the query bounded by a deadline."""

    def __init__(self, path: Path, tasks: TasksConfig, *, timeout: float) -> None:
        self._path = path
        self._tasks = tasks
        self._zone = tasks.zone
        self._kind = None if tasks.time_column_type == "auto" else tasks.time_column_type
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None

    @property
    def plan(self) -> QueryPlan | None:
        return None  # SQLite's EXPLAIN QUERY PLAN gives no row estimate to judge a scan by

    def count(self, bounds: Bounds | None = None) -> Rows:
        deadline = time.monotonic() + self._timeout
        conn = self._connect()
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
        try:
            if self._tasks.time_column is not None and self._kind is None:
                self._kind = self._detect_kind(conn, self._tasks.time_column)
            query, params = self._statement(bounds)
            rows = conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            self.close()
            if "interrupted" in str(exc) or "locked" in str(exc):
                raise QueryTimeout(f"query cut off after {self._timeout:g}s: {exc}") from None
            raise QueryError(f"query failed: {exc}") from None
        except sqlite3.Error as exc:
            self.close()
            raise QueryError(f"query failed: {exc}") from None
        return [self._row(row) for row in rows]

    def _detect_kind(self, conn: sqlite3.Connection, column: str) -> str:
        schema, table = (
            self._tasks.table if len(self._tasks.table) == 2 else ("main", *self._tasks.table)
        )
        info = conn.execute(f"PRAGMA {quote(schema)}.table_info({quote(table)})").fetchall()
        declared = next((str(row[2]) for row in info if row[1] == column), None)
        if declared is None:
            raise QueryError(f"query failed: no column {column!r} in the table (tasks.time_column)")
        return _declared_kind(declared)

    def _statement(self, bounds: Bounds | None) -> tuple[str, list[object]]:
        kind = self._kind
        if self._tasks.window is None:
            bounds = None
        query = build_query(self._tasks, quote, placeholder="?", oldest=lambda m: m, bounds=bounds)
        params: list[object] = []
        if bounds is not None:
            for when in [bounds.start] if bounds.end is None else [bounds.start, bounds.end]:
                if kind == "epoch":
                    params.append(when)
                else:  # text, compared as text: the same layout as the column's values
                    naive = (
                        utc_naive(when) if kind == "timestamp" else local_naive(when, self._zone)
                    )
                    params.append(naive.isoformat(sep=" ", timespec="seconds"))
        return query, params

    def _row(self, row: tuple[object, ...]) -> Row:
        labels = len(self._tasks.label_columns)
        oldest = None
        if self._tasks.time_column is not None:
            oldest = unix_time(row[2 + labels], UTC if self._kind == "timestamp" else self._zone)
        return Row(row[0], int(row[1 + labels]), tuple(row[1 : 1 + labels]), oldest)  # type: ignore[call-overload]

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self._path.exists():
                raise ConnectError(f"sqlite database {self._path} does not exist")
            try:
                self._conn = sqlite3.connect(
                    f"{self._path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=self._timeout,
                    isolation_level=None,  # autocommit: every query sees what is committed now
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise ConnectError(f"cannot open sqlite database {self._path}: {exc}") from None
            # SQLite does not enforce UTF-8: a bad byte must not fail the whole collection.
            self._conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
