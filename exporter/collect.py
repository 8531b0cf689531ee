"""The collection loop: one query per interval, published as an immutable Snapshot."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from exporter.config import CollectionConfig, TasksConfig
from exporter.source import QueryTimeout, Rows, Source, SourceError

OUTCOMES = ("success", "error", "timeout")


@dataclass(frozen=True)
class Snapshot:
    """Everything a scrape or the landing page shows, as of one moment. Never mutated."""

    interval: float
    staleness: float
    # Counts of the last successful collection, expected statuses first; None before the first.
    counts: tuple[tuple[str, int], ...] | None = None
    folded: int = 0  # distinct statuses folded into other_status in those counts
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


def label(value: object, null_status: str) -> str:
    """The label value for a status as the database returned it."""
    if value is None:
        return null_status
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def shape(rows: Rows, tasks: TasksConfig) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Counts per label: every expected status (0 when absent), then the others by name, capped.

    Beyond max_statuses label values, the least frequent extra statuses are folded into
    other_status; their names are returned so the folding can be reported.
    """
    totals = dict.fromkeys(tasks.expected_statuses, 0)
    for value, n in rows:
        key = label(value, tasks.null_status)
        totals[key] = totals.get(key, 0) + n
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
        logger: logging.Logger,
        clock: Callable[[], float] = time.time,
        on_collected: Callable[[Snapshot], None] = lambda _snapshot: None,
    ) -> None:
        self._source = source
        self._on_collected = on_collected  # told of each snapshot as it is published
        self._tasks = tasks
        self._collection = collection
        self._log = logger
        self._clock = clock
        self._snapshot = Snapshot(interval=collection.interval, staleness=collection.staleness)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop() and reconfigure(): end the wait early
        self._lock = threading.Lock()
        self._pending: tuple[Source, TasksConfig, CollectionConfig] | None = None
        self._thread: threading.Thread | None = None
        # The failure reason last logged (None: success); it starts as a value no collection
        # reports, so the first outcome is always logged.
        self._reported_reason: str | None = "not collected yet"
        self._reported_folded: tuple[str, ...] = ()

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
        )
        with contextlib.suppress(Exception):
            old.close()
        return True

    def collect_once(self) -> Snapshot:
        """Run one collection, publish its snapshot and return it."""
        self._take_pending()
        started = time.monotonic()
        outcome, error, reason, rows = "success", None, None, None
        try:
            rows = self._source.count()
        except QueryTimeout as exc:
            outcome, error, reason = "timeout", str(exc), exc.reason
        except SourceError as exc:
            outcome, error, reason = "error", str(exc), exc.reason
        except Exception as exc:  # a bug must not kill the loop: report it as a failed collection
            self._log.exception("unexpected error during collection")
            outcome, error = "error", f"unexpected {type(exc).__name__}: {exc}"
            reason = error
            with contextlib.suppress(Exception):
                self._source.close()
        duration = time.monotonic() - started
        previous = self._snapshot
        outcomes = tuple((o, n + (o == outcome)) for o, n in previous.outcomes)
        if rows is None:
            snapshot = replace(
                previous, up=False, duration=duration, outcomes=outcomes, error=error
            )
        else:
            counts, folded = shape(rows, self._tasks)
            snapshot = replace(
                previous,
                counts=counts,
                folded=len(folded),
                last_success=self._clock(),
                up=True,
                duration=duration,
                outcomes=outcomes,
                error=None,
            )
            self._report_folding(folded)
        self._snapshot = snapshot
        self._on_collected(snapshot)
        self._report(outcome, error, reason, duration)
        return snapshot

    def _report(self, outcome: str, error: str | None, reason: str | None, duration: float) -> None:
        """Log a failure once when its reason starts or changes, and once on recovery."""
        if reason == self._reported_reason:
            self._log.debug(
                "collection finished",
                extra={"kv": {"result": outcome, "duration_seconds": round(duration, 4)}},
            )
            return
        if error is None:
            self._log.info(
                "collection succeeded", extra={"kv": {"duration_seconds": round(duration, 4)}}
            )
        else:
            self._log.error("collection failed", extra={"kv": {"result": outcome, "err": error}})
        self._reported_reason = reason

    def _report_folding(self, folded: tuple[str, ...]) -> None:
        if folded == self._reported_folded:
            return
        if folded:
            self._log.warning(
                "too many distinct statuses; the least frequent are counted as other_status",
                extra={
                    "kv": {
                        "folded": len(folded),
                        "max_statuses": self._tasks.max_statuses,
                        "other_status": self._tasks.other_status,
                    }
                },
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
            next_at += self._collection.interval
            now = time.monotonic()
            if next_at < now:  # a run overlapped its slot: keep the cadence, never run twice
                next_at = now + self._collection.interval
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
