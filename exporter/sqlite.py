"""SQLite task source: for applications that keep their tasks in SQLite, and the demo."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from exporter.config import TasksConfig
from exporter.source import ConnectError, QueryError, QueryTimeout, Rows, build_query

# How many SQLite virtual-machine steps between deadline checks.
_PROGRESS_STEPS = 1000


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteSource:
    """Counts tasks in a SQLite file, opened read-only, with the query bounded by a deadline."""

    def __init__(self, path: Path, tasks: TasksConfig, *, timeout: float) -> None:
        self._path = path
        self._query = build_query(tasks, quote)
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None

    def count(self) -> Rows:
        deadline = time.monotonic() + self._timeout
        conn = self._connect()
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
        try:
            rows = conn.execute(self._query).fetchall()
        except sqlite3.OperationalError as exc:
            self.close()
            if "interrupted" in str(exc) or "locked" in str(exc):
                raise QueryTimeout(f"query cut off after {self._timeout:g}s: {exc}") from None
            raise QueryError(f"query failed: {exc}") from None
        except sqlite3.Error as exc:
            self.close()
            raise QueryError(f"query failed: {exc}") from None
        return [(status, int(n)) for status, n in rows]

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
