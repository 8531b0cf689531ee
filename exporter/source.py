"""What a task source is: one GROUP BY query, and the errors it can end in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from exporter.config import TasksConfig

# Raw rows as the database returns them: (status value, count). The status may be NULL, text,
# bytes (binary columns) or a number (integer status codes); collect.shape turns them into labels.
Rows = Sequence[tuple[object, int]]


class SourceError(Exception):
    """A collection failed; the message is safe to log and show (it never holds the password).

    `reason` names the condition, stable across collections (a timeout is a timeout whichever
    limit cut it off), so a failure that lasts is logged once, however its wording varies.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ConnectError(SourceError):
    """The database could not be reached, or refused the login."""


class QueryError(SourceError):
    """The query ran and failed: missing table or grant, bad filter, lost connection."""


class QueryTimeout(SourceError):
    """The query was cut off at the timeout (server-side limit, lock wait or client read)."""


class Source(Protocol):
    """A task store the collection loop can count; implementations own at most one connection."""

    def count(self) -> Rows:
        """Run the GROUP BY query once and return its rows."""
        ...

    def close(self) -> None:
        """Drop the connection, if any; the next count() opens a fresh one."""
        ...


def build_query(tasks: TasksConfig, quote: Callable[[str], str]) -> str:
    """The one query: identifiers validated by config and quoted here; the filter is trusted SQL."""
    column = quote(tasks.status_column)
    table = ".".join(quote(part) for part in tasks.table)
    where = f" WHERE ({tasks.filter})" if tasks.filter else ""
    return f"SELECT {column}, COUNT(*) FROM {table}{where} GROUP BY {column}"
