"""The collection loop: one query per interval, published as an immutable Snapshot."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from exporter.config import CollectionConfig, TasksConfig
from exporter.log import Logger
from exporter.sources.source import (
    Bounds,
    ConnectError,
    QueryPlan,
    QueryTimeout,
    Row,
    Rows,
    Source,
    SourceError,
    window_bounds,
)

# After a connection error the next attempt comes this soon, then twice as late each time, up
# to the interval: counts come back about a second after the database does.
FIRST_RETRY = 1.0

OUTCOMES = ("success", "error", "timeout")


@dataclass(frozen=True)
class TaskSeries:
    """One series of tasks_exporter_tasks: a kind (label_columns values) and a status."""

    labels: tuple[tuple[str, str], ...]  # (label name, value), in label_columns order
    status: str
    count: int
    oldest: float | None  # Unix time of the oldest time_column value; None: none known


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape or the landing page shows, as of one moment. Never mutated."""

    interval: float
    staleness: float
    # Counts of the last successful collection, expected statuses first; None before the first.
    counts: tuple[tuple[str, int], ...] | None = None
    folded: int = 0  # distinct statuses folded into other_status in those counts
    # The counts per kind (label_columns values) and status, with the oldest time of each, of
    # the last successful collection; `counts` are their sums per status. None before it.
    series: tuple[TaskSeries, ...] | None = None
    folded_kinds: int = 0  # distinct label_columns combinations folded into "other"
    effective_interval: float = 0.0  # seconds between collections now (0: the interval)
    plan: QueryPlan | None = None  # what EXPLAIN said on the current connection
    last_success: float | None = None  # unix time the last successful collection finished
    up: bool = False  # the last collection succeeded
    duration: float | None = None  # seconds the last collection took, success or not
    outcomes: tuple[tuple[str, int], ...] = tuple((o, 0) for o in OUTCOMES)
    error: str | None = None  # why the last collection failed
    # Per status, the oldest time_column value (Unix seconds) across all kinds, only statuses
    # that have one; None when no time_column is configured.
    oldest: tuple[tuple[str, float], ...] | None = None
    window_start: float | None = None  # start of the counting window, when one is configured

    def age(self, now: float) -> float | None:
        return None if self.last_success is None else max(0.0, now - self.last_success)

    def is_stale(self, now: float) -> bool:
        age = self.age(now)
        return age is None or age > self.staleness

    def fresh_counts(self, now: float) -> tuple[tuple[str, int], ...] | None:
        """The counts, or None once they are older than the staleness window."""
        return None if self.is_stale(now) else self.counts

    def fresh_oldest(self, now: float) -> tuple[tuple[str, float], ...] | None:
        """The oldest times per status, or None once they are stale (or not collected)."""
        return None if self.is_stale(now) else self.oldest

    def fresh_series(self, now: float) -> tuple[TaskSeries, ...] | None:
        """Every series, or None once stale."""
        return None if self.is_stale(now) else self.series


def label(value: object, null_status: str) -> str:
    """The label value for a status as the database returned it."""
    if value is None:
        return null_status
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True)
class Shaped:
    """The rows of one collection, as the snapshot shows them."""

    counts: tuple[tuple[str, int], ...]  # per status, expected first, capped
    folded: tuple[str, ...]  # statuses folded into other_status
    series: tuple[TaskSeries, ...]  # per kind and status
    folded_kinds: int  # kinds folded into "other"
    oldest: tuple[tuple[str, float], ...]  # per status, those with a time


def _cap_statuses(
    totals: dict[str, int], tasks: TasksConfig
) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Every expected status (0 when absent), then the others by name; beyond max_statuses the
    least frequent extra statuses are folded into other_status, and their names returned."""
    totals = {**dict.fromkeys(tasks.expected_statuses, 0), **totals}
    expected = [(s, totals.pop(s)) for s in tasks.expected_statuses]
    room = tasks.max_statuses - len(expected)
    if len(totals) <= room:
        return (*expected, *sorted(totals.items())), ()
    by_size = sorted(
        ((s, n) for s, n in totals.items() if s != tasks.other_status),
        key=lambda kv: (-kv[1], kv[0]),
    )
    kept = by_size[: room - 1]
    folded = by_size[room - 1 :]
    other = totals.get(tasks.other_status, 0) + sum(n for _, n in folded)
    return (*expected, *sorted(kept), (tasks.other_status, other)), tuple(s for s, _ in folded)


def _cap_kinds(totals: dict[tuple[str, ...], int], tasks: TasksConfig) -> set[tuple[str, ...]]:
    """The kinds kept under max_kinds: the most frequent, the others to be folded."""
    if len(totals) <= tasks.max_kinds:
        return set(totals)
    other_kind = tuple(tasks.other_status for _ in tasks.label_columns)
    by_size = sorted((k for k in totals if k != other_kind), key=lambda k: (-totals[k], k))
    return set(by_size[: tasks.max_kinds - 1])


def shape_rows(rows: Rows | Sequence[tuple[object, int]], tasks: TasksConfig) -> Shaped:
    """Counts per status and series per kind and status, both capped.

    Statuses are capped as a whole (max_statuses, the rarest folded into other_status in every
    kind), kinds too (max_kinds combinations of label_columns values, the rarest folded into a
    kind whose every label is other_status). Every kind that has rows gets every expected
    status, 0 when absent; a kind without rows has no series. Without label_columns there is
    one kind, always present.
    """
    null, other = tasks.null_status, tasks.other_status
    grouped = [Row(*row) for row in rows]
    status_totals: dict[str, int] = {}
    kind_totals: dict[tuple[str, ...], int] = {}
    for row in grouped:
        status = label(row.status, null)
        status_totals[status] = status_totals.get(status, 0) + row.n
        kind = tuple(label(v, null) for v in row.labels)
        kind_totals[kind] = kind_totals.get(kind, 0) + row.n
    counts, folded = _cap_statuses(status_totals, tasks)
    folded_set = set(folded)
    if not tasks.label_columns:
        kind_totals = {(): 0}
    kept_kinds = _cap_kinds(kind_totals, tasks)
    other_kind = tuple(other for _ in tasks.label_columns)
    cells: dict[tuple[tuple[str, ...], str], tuple[int, float | None]] = {}
    for row in grouped:
        kind = tuple(label(v, null) for v in row.labels)
        kind = kind if kind in kept_kinds else other_kind
        status = label(row.status, null)
        status = other if status in folded_set else status
        n, oldest = cells.get((kind, status), (0, None))
        if row.oldest is not None and (oldest is None or row.oldest < oldest):
            oldest = row.oldest
        cells[(kind, status)] = (n + row.n, oldest)
    kinds = sorted({k for k, _ in cells} | (kept_kinds if not tasks.label_columns else set()))
    names = [name for name, _ in tasks.label_columns]
    order = [s for s, _ in counts]
    series = []
    for kind in kinds:
        for status in order:
            n, oldest = cells.get((kind, status), (0, None))
            if (kind, status) in cells or status in tasks.expected_statuses:
                series.append(TaskSeries(tuple(zip(names, kind, strict=True)), status, n, oldest))
    oldest_by_status: dict[str, float] = {}
    for one in series:
        if one.oldest is not None:
            seen = oldest_by_status.get(one.status)
            oldest_by_status[one.status] = one.oldest if seen is None else min(seen, one.oldest)
    return Shaped(
        counts=counts,
        folded=folded,
        series=tuple(series),
        folded_kinds=len(kind_totals) - len(kept_kinds),
        oldest=tuple((s, oldest_by_status[s]) for s in order if s in oldest_by_status),
    )


def shape(
    rows: Rows | Sequence[tuple[object, int]], tasks: TasksConfig
) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Counts per label: every expected status (0 when absent), then the others by name, capped.

    Beyond max_statuses label values, the least frequent extra statuses are folded into
    other_status; their names are returned so the folding can be reported.
    """
    shaped = shape_rows(rows, tasks)
    return shaped.counts, shaped.folded


class CollectionLoop:
    """Runs the source on a fixed schedule in one thread and publishes a Snapshot after each run.

    Scrapes read `snapshot` (one attribute read, so always one whole snapshot) and never wait for
    the database. Every failure becomes a snapshot with up=False and one log line per change.
    """

    def __init__(
        self,
        source: Source,
        tasks: TasksConfig,
        collection: CollectionConfig,
        *,
        logger: Logger,
        clock: Callable[[], float] = time.time,
        on_collected: Callable[[Snapshot], None] = lambda _snapshot: None,
    ) -> None:
        self._source = source
        self._on_collected = on_collected  # told of each snapshot as it is published
        self._tasks = tasks
        self._collection = collection
        self._log = logger
        self._clock = clock
        self._snapshot = Snapshot(
            interval=collection.interval,
            staleness=collection.staleness,
            effective_interval=collection.interval,
        )
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and reconfigure(): end the wait early
        self._lock = threading.Lock()
        self._pending: tuple[Source, TasksConfig, CollectionConfig] | None = None
        self._thread: threading.Thread | None = None
        # The failure reason last logged (None: success); it starts as a value no collection
        # reports, so the first outcome is always logged.
        self._reported_reason: str | None = "not collected yet"
        self._reported_folded: tuple[str, ...] = ()
        self._reported_kinds = 0  # kinds folded, as last logged
        self._reported_unindexed = False
        self._reported_stretch: str | None = None  # "budget" or "timeout" while stretched
        # Seconds from the start of the last collection to the next one (a retry after a
        # connection error comes sooner than the interval).
        self.next_wait = collection.interval
        self._retry: float | None = None  # the delay of the last retry, during connection errors
        self._last_success_duration: float | None = None  # how long the last good query took
        self._last_outcome = "success"

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def reconfigure(self, source: Source, tasks: TasksConfig, collection: CollectionConfig) -> None:
        """Collect with a new source and settings from the next collection on, which starts now.

        A collection in flight finishes with the old source, whose snapshot is published as
        usual; the old source is then closed by the loop's thread. The snapshot being served is
        kept until the first collection with the new settings replaces it.
        """
        with self._lock:
            replaced, self._pending = self._pending, (source, tasks, collection)
        if replaced is not None:  # two reloads before the loop took the first: skip the first
            replaced[0].close()
        self._wake.set()

    def _take_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return False
        old = self._source
        self._source, self._tasks, self._collection = pending
        self._snapshot = replace(
            self._snapshot,
            interval=self._collection.interval,
            staleness=self._collection.staleness,
            effective_interval=self._collection.interval,
        )
        self._retry = None
        with contextlib.suppress(Exception):
            old.close()
        return True

    def collect_once(self) -> Snapshot:
        """Run one collection, publish its snapshot and return it."""
        self._take_pending()
        tasks = self._tasks
        bounds: Bounds | None = None
        if tasks.window is not None and tasks.time_column is not None:
            bounds = window_bounds(tasks.window, tasks.zone, self._clock())
        started = time.monotonic()
        outcome, error, reason, rows = "success", None, None, None
        connect_failed = False
        try:
            rows = self._source.count(bounds)
        except QueryTimeout as exc:
            outcome, error, reason = "timeout", str(exc), exc.reason
        except SourceError as exc:
            outcome, error, reason = "error", str(exc), exc.reason
            connect_failed = isinstance(exc, ConnectError)
        except Exception as exc:  # a bug must not kill the loop: report it as a failed collection
            self._log.exception("unexpected error during collection")
            outcome, error = "error", f"unexpected {type(exc).__name__}: {exc}"
            reason = error
            with contextlib.suppress(Exception):
                self._source.close()
        duration = time.monotonic() - started
        previous = self._snapshot
        outcomes = tuple((o, n + (o == outcome)) for o, n in previous.outcomes)
        plan = self._source.plan
        effective = self._effective_interval(outcome, duration, previous)
        if rows is None:
            snapshot = replace(
                previous,
                up=False,
                duration=duration,
                outcomes=outcomes,
                error=error,
                effective_interval=effective,
                plan=plan,
            )
        else:
            shaped = shape_rows(rows, tasks)
            snapshot = replace(
                previous,
                counts=shaped.counts,
                folded=len(shaped.folded),
                last_success=self._clock(),
                up=True,
                duration=duration,
                outcomes=outcomes,
                error=None,
                oldest=shaped.oldest if tasks.time_column is not None else None,
                series=shaped.series,
                folded_kinds=shaped.folded_kinds,
                window_start=None if bounds is None else bounds.start,
                effective_interval=effective,
                plan=plan,
            )
            self._report_folding(shaped.folded)
            self._report_kinds(shaped.folded_kinds)
        self._snapshot = snapshot
        self._on_collected(snapshot)
        self._report(outcome, error, reason, duration)
        self._report_plan(plan)
        self._report_stretch(outcome, duration, effective, plan)
        if outcome == "success":
            self._last_success_duration = duration
        self._last_outcome = outcome
        if connect_failed:
            self.next_wait = self._retry_delay(effective)
        else:
            self._retry = None
            self.next_wait = effective
        return snapshot

    def _effective_interval(self, outcome: str, duration: float, previous: Snapshot) -> float:
        """The interval now in force. A query over its share of the interval (load_budget)
        spaces the collections out so that it stays within that share; one cut off at the
        timeout doubles the interval while the timeouts last, from what the budget asks of a
        query that took the whole timeout. Never beyond max_interval; back to the configured
        interval as soon as a query is fast again."""
        collection = self._collection
        if outcome == "success":
            wanted = duration / collection.load_budget
        elif outcome == "timeout":
            wanted = collection.timeout / collection.load_budget
            if self._last_outcome == "timeout":
                wanted = max(wanted, 2 * previous.effective_interval)
        else:
            wanted = collection.interval
        return min(max(collection.interval, wanted), collection.max_interval)

    def _retry_delay(self, effective: float) -> float:
        self._retry = FIRST_RETRY if self._retry is None else 2 * self._retry
        return min(self._retry, effective)

    def _report_stretch(
        self, outcome: str, duration: float, effective: float, plan: QueryPlan | None
    ) -> None:
        """Log once when collections are spaced out (and why), and once when back to normal."""
        interval = self._collection.interval
        state = None if effective <= interval else ("timeout" if outcome == "timeout" else "budget")
        if outcome == "error":
            return  # neither fast nor slow: keep the state until a query says which
        if state == self._reported_stretch:
            return
        fields: dict[str, object] = {
            "interval_seconds": interval,
            "effective_interval_seconds": round(effective, 3),
        }
        if plan is not None:
            fields["estimated_rows"] = plan.estimated_rows
        if self._last_success_duration is not None:
            fields["last_successful_query_seconds"] = round(self._last_success_duration, 3)
        if state == "timeout":
            self._log.warning(
                "the query needs more than the timeout allows; collections are spaced out while"
                " it is cut off. Raise collection.timeout (and interval), narrow the query with"
                " a window, or create the index the EXPLAIN warning names",
                needed_seconds_at_least=self._collection.timeout,
                timeout_seconds=self._collection.timeout,
                **fields,
            )
        elif state == "budget":
            self._log.warning(
                "the query takes more than its share of the interval; collections are spaced"
                " out to keep the database's load within collection.load_budget",
                duration_seconds=round(duration, 3),
                load_budget=self._collection.load_budget,
                **fields,
            )
        else:
            self._log.info(
                "the query is fast again; collections are back at the configured interval",
                duration_seconds=round(duration, 3),
                **fields,
            )
        self._reported_stretch = state

    def _report_plan(self, plan: QueryPlan | None) -> None:
        """One warning when EXPLAIN finds a large scan no index serves, one line when fixed."""
        unindexed = plan is not None and plan.unindexed
        if plan is None or unindexed == self._reported_unindexed:
            return
        if unindexed:
            self._log.warning(
                "the query scans a large table without an index that serves it; create one",
                estimated_rows=plan.estimated_rows,
                access=plan.access,
                scan_warning_rows=self._collection.scan_warning_rows,
                create_index=plan.create_index,
            )
        else:
            self._log.info(
                "the query is now served by an index",
                estimated_rows=plan.estimated_rows,
                access=plan.access,
            )
        self._reported_unindexed = unindexed

    def _report_kinds(self, folded: int) -> None:
        if folded == self._reported_kinds:
            return
        if folded:
            self._log.warning(
                "too many kinds of tasks (label_columns values); the least frequent are counted"
                " as other_status",
                folded_kinds=folded,
                max_kinds=self._tasks.max_kinds,
            )
        else:
            self._log.info("kinds of tasks no longer folded")
        self._reported_kinds = folded

    def _report(self, outcome: str, error: str | None, reason: str | None, duration: float) -> None:
        """Log a failure once when its reason starts or changes, and once on recovery."""
        if reason == self._reported_reason:
            self._log.debug(
                "collection finished",
                result=outcome,
                duration_seconds=round(duration, 4),
            )
            return
        if error is None:
            self._log.info("collection succeeded", duration_seconds=round(duration, 4))
        else:
            self._log.error("collection failed", result=outcome, err=error)
        self._reported_reason = reason

    def _report_folding(self, folded: tuple[str, ...]) -> None:
        if folded == self._reported_folded:
            return
        if folded:
            self._log.warning(
                "too many distinct statuses; the least frequent are counted as other_status",
                folded=len(folded),
                max_statuses=self._tasks.max_statuses,
                other_status=self._tasks.other_status,
            )
        else:
            self._log.info("statuses no longer folded; every status has its own series")
        self._reported_folded = folded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="collection", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.collect_once()
            wait = self.next_wait
            next_at += wait
            now = time.monotonic()
            if next_at < now:  # a run overlapped its slot: keep the cadence, never run twice
                next_at = now + wait
            self._wake.wait(next_at - now)
            self._wake.clear()
            if self._pending is not None:  # reconfigured: collect with the new settings now
                next_at = time.monotonic()
        self._source.close()
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending[0].close()

    def stop(self, *, timeout: float = 2.0) -> None:
        """Ask the loop to stop; a query in flight is abandoned (bounded by its own timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
