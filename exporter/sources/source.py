"""What a task source is: one GROUP BY query, and the errors it can end in."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import NamedTuple, Protocol

from exporter.config import TasksConfig, Window


class Row(NamedTuple):
    """One group as the database returned it. The status and label values may be NULL, text,
    bytes (binary columns) or numbers; collect.shape turns them into labels. `oldest` is the
    smallest time_column value of the group as Unix seconds, None without time_column or when
    every time in the group is NULL."""

    status: object
    n: int  # rows in the group
    labels: tuple[object, ...] = ()
    oldest: float | None = None


Rows = Sequence[Row]


@dataclass(frozen=True)
class Bounds:
    """The counting window as Unix times: start <= time < end (no end: up to any time)."""

    start: float
    end: float | None = None


def window_bounds(window: Window, zone: tzinfo, now: float) -> Bounds:
    """The window in force at `now`. "today" runs from local midnight in `zone` to the next one,
    whatever the length of the day (23 or 25 hours across a daylight-saving change)."""
    if not window.today:
        return Bounds(now - window.seconds)
    day = datetime.fromtimestamp(now, zone).date()
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return Bounds(start.timestamp(), end.timestamp())


@dataclass(frozen=True)
class QueryPlan:
    """What EXPLAIN said about the query on a new connection."""

    estimated_rows: int  # rows the database expects to examine
    access: str  # how it reads the table: ALL (every row), index, range, ...
    unindexed: bool  # more than scan_warning_rows without an index serving the query
    create_index: str  # a statement creating the index that would serve it


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

    @property
    def plan(self) -> QueryPlan | None:
        """What EXPLAIN said on the current connection; None before it, or if not supported."""
        ...

    def count(self, bounds: Bounds | None = None) -> Rows:
        """Run the GROUP BY query once, on the rows whose time falls within `bounds` if given."""
        ...

    def close(self) -> None:
        """Drop the connection, if any; the next count() opens a fresh one."""
        ...


def build_query(
    tasks: TasksConfig,
    quote: Callable[[str], str],
    *,
    placeholder: str = "%s",
    oldest: Callable[[str], str] | None = None,
    bounds: Bounds | None = None,
) -> str:
    """The one query: identifiers validated by config and quoted here; the filter is trusted SQL.

    The window is a condition on the bare time column with the bounds as parameters, so that an
    index on that column serves it; `oldest` wraps MIN(time column) as the source needs to read it.
    """
    groups = [quote(tasks.status_column), *(quote(c) for _, c in tasks.label_columns)]
    table = ".".join(quote(part) for part in tasks.table)
    selected = [*groups, "COUNT(*)"]
    if tasks.time_column is not None and oldest is not None:
        selected.append(oldest(f"MIN({quote(tasks.time_column)})"))
    conditions = [f"({tasks.filter})"] if tasks.filter else []
    if bounds is not None and tasks.time_column is not None:
        conditions.append(f"{quote(tasks.time_column)} >= {placeholder}")
        if bounds.end is not None:
            conditions.append(f"{quote(tasks.time_column)} < {placeholder}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(selected)} FROM {table}{where} GROUP BY {', '.join(groups)}"


def index_statement(tasks: TasksConfig, quote: Callable[[str], str]) -> str:
    """The index that serves the query: with a window, the time column first (a range scan over
    the window); without, the status first (the groups in index order). Either covers the query."""
    status = [tasks.status_column, *(c for _, c in tasks.label_columns)]
    time = [tasks.time_column] if tasks.time_column else []
    columns = [*time, *status] if tasks.window is not None else [*status, *time]
    table = ".".join(quote(part) for part in tasks.table)
    name = quote(f"tasks_exporter_{'window' if tasks.window is not None else 'status'}")
    return f"CREATE INDEX {name} ON {table} ({', '.join(quote(c) for c in columns)})"


def is_unindexed(access: str, estimated_rows: int, tasks: TasksConfig, threshold: int) -> bool:
    """A large scan that no index serves: every row read (ALL), or, with a window, anything but
    a range over the window."""
    if estimated_rows <= threshold:
        return False
    return access.upper() == "ALL" or (tasks.window is not None and access.lower() != "range")


def local_naive(when: float, zone: tzinfo) -> datetime:
    """A Unix time as a wall-clock time in `zone`, as a DATETIME column holds it."""
    return datetime.fromtimestamp(when, zone).replace(tzinfo=None)


def utc_naive(when: float) -> datetime:
    return datetime.fromtimestamp(when, UTC).replace(tzinfo=None)


def unix_time(value: object, zone: tzinfo) -> float | None:
    """Unix seconds from a time as the driver returned it: a number (epoch, or UNIX_TIMESTAMP()),
    a naive date/time or text read in `zone`. Anything else, and NaN, is ignored (None)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return aware.timestamp()
    if isinstance(value, date):  # a DATE column: its midnight
        return datetime(value.year, value.month, value.day, tzinfo=zone).timestamp()
    if value is None or isinstance(value, bool):
        return None
    try:
        return _finite(float(value))  # type: ignore[arg-type]  # int, float, Decimal, text
    except (TypeError, ValueError, OverflowError):
        return None


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) else None
