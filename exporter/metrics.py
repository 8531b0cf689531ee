"""From a Snapshot to metric families (pure), and the parts of /metrics that the exporter owns."""

from __future__ import annotations

import platform
from collections.abc import Callable

from exporter.collect import Snapshot, TaskSeries
from exporter.exposition import Family, Rendered, gauge

PREFIX = "tasks_exporter"


def families(snapshot: Snapshot, now: float, version: str) -> list[Family]:
    """The exporter's own metrics for one snapshot, seen at time `now`."""
    every = f"refreshed every {snapshot.interval:g}s by the collection loop, not per scrape"
    series = snapshot.fresh_series(now)
    if series is None:  # a snapshot made without series: one per status
        series = tuple(TaskSeries((), s, n, None) for s, n in snapshot.fresh_counts(now) or ())
    return [
        Family(
            f"{PREFIX}_tasks",
            "gauge",
            f"Tasks in the table per status, from the last successful collection ({every});"
            f" absent once older than {snapshot.staleness:g}s.",
            tuple(((("status", one.status), *one.labels), one.count) for one in series),
        ),
        *_time_and_load(snapshot, series, every),
        gauge(
            f"{PREFIX}_up",
            f"1 if the last collection from the database succeeded, else 0 ({every}).",
            1 if snapshot.up else 0,
        ),
        gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time the last successful collection finished.",
            snapshot.last_success,
        ),
        gauge(
            f"{PREFIX}_collection_duration_seconds",
            "Seconds the last collection took, successful or not.",
            snapshot.duration,
        ),
        Family(
            f"{PREFIX}_collections",
            "counter",
            "Collections run, by result (success, error, timeout).",
            tuple(((("result", result),), n) for result, n in snapshot.outcomes),
        ),
        gauge(
            f"{PREFIX}_folded_statuses",
            "Distinct statuses counted under other_status in the last successful collection,"
            " because the table holds more than max_statuses.",
            snapshot.folded,
        ),
        gauge(
            f"{PREFIX}_collection_interval_seconds",
            "Seconds between collections (configured).",
            snapshot.interval,
        ),
        gauge(
            f"{PREFIX}_staleness_seconds",
            "Age after which the counts of a failed collection are dropped (configured).",
            snapshot.staleness,
        ),
        Family(
            f"{PREFIX}_build_info",
            "gauge",
            "A constant 1, labelled with the exporter's version and the Python version it runs on.",
            (((("version", version), ("pythonversion", platform.python_version())), 1),),
        ),
    ]


# --- issue 13: oldest task, window, load budget, EXPLAIN ---------------------------------------
def _time_and_load(snapshot: Snapshot, series: tuple[TaskSeries, ...], every: str) -> list[Family]:
    """The families of time_column, window, the load budget and the query's EXPLAIN."""
    out: list[Family] = []
    if snapshot.oldest is not None:
        out.append(
            Family(
                f"{PREFIX}_oldest_task_timestamp_seconds",
                "gauge",
                "Unix time of the oldest time_column value per status (and kind), in the"
                f" counting window ({every}); no series for a status without tasks or times."
                " The age is time() - this.",
                tuple(
                    ((("status", one.status), *one.labels), one.oldest)
                    for one in series
                    if one.oldest is not None
                ),
            )
        )
    out.append(
        gauge(
            f"{PREFIX}_window_start_timestamp_seconds",
            f"Unix time the counting window of the task counts starts ({every}).",
            snapshot.window_start,
        )
    )
    out.append(
        gauge(
            f"{PREFIX}_collection_effective_interval_seconds",
            "Seconds between collections now in force: the configured interval, or longer while"
            " slow queries are spaced out (load_budget) or cut off at the timeout.",
            snapshot.effective_interval or snapshot.interval,
        )
    )
    out.append(
        gauge(
            f"{PREFIX}_folded_kinds",
            "Distinct label_columns combinations counted under other_status in the last"
            " successful collection, because the table holds more than max_kinds.",
            snapshot.folded_kinds,
        )
    )
    plan = snapshot.plan
    out.append(
        gauge(
            f"{PREFIX}_query_unindexed",
            "1 when EXPLAIN, on the current database connection, found the query would scan"
            " more than scan_warning_rows rows without an index serving it, else 0.",
            None if plan is None else int(plan.unindexed),
        )
    )
    out.append(
        gauge(
            f"{PREFIX}_query_estimated_rows",
            "Rows EXPLAIN estimated the query examines, on the current database connection.",
            None if plan is None else plan.estimated_rows,
        )
    )
    return out


# --- end of issue 13 ---------------------------------------------------------------------------


class SnapshotMetrics:
    """The part of /metrics that shows the current snapshot.

    It renders once per snapshot (and once more if that snapshot goes stale), however many
    scrapes there are: the cache is keyed on the snapshot object itself, so it stays right
    whoever publishes a new one.
    """

    def __init__(self, snapshot: Callable[[], Snapshot], version: str) -> None:
        self._snapshot = snapshot
        self._version = version
        self._shown: tuple[Snapshot, bool] | None = None
        self._rendered = Rendered(())

    def __call__(self, now: float) -> Rendered:
        snapshot = self._snapshot()
        stale = snapshot.is_stale(now)
        shown = self._shown
        if shown is None or shown[0] is not snapshot or shown[1] is not stale:
            self._shown = (snapshot, stale)
            self._rendered = Rendered(families(snapshot, now, self._version))
        return self._rendered


class Counter:
    """A counter the exporter increments itself; its family is rendered again only on change."""

    def __init__(self, name: str, help_text: str) -> None:
        self._name = name
        self._help = help_text
        self.value = 0
        self._rendered: Rendered | None = None
        self._rendered_value = -1

    def inc(self) -> None:
        self.value += 1

    def __call__(self, _now: float) -> Rendered:
        if self._rendered is None or self._rendered_value != self.value:
            self._rendered_value = self.value
            self._rendered = Rendered(
                [Family(self._name, "counter", self._help, (((), self.value),))]
            )
        return self._rendered
