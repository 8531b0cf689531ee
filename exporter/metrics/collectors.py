"""The exporter's collectors: fresh families from the current snapshot, and two of its own."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter.collect import Snapshot, TaskSeries

PREFIX = "tasks_exporter"


def _gauge(name: str, help_text: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels; no sample when value is None (never a fake 0)."""
    return GaugeMetricFamily(name, help_text, value=value)


def families(snapshot: Snapshot, now: float, version: str) -> list[Metric]:
    """The exporter's metrics for one snapshot, seen at time `now` (a pure function)."""
    every = f"refreshed every {snapshot.interval:g}s by the collection loop, not per scrape"
    series = snapshot.fresh_series(now)
    if series is None:  # a snapshot made without series: one per status
        series = tuple(TaskSeries((), s, n, None) for s, n in snapshot.fresh_counts(now) or ())
    # label_columns: every series of a snapshot has the same label names, in config order.
    names = ["status", *(name for name, _ in series[0].labels)] if series else ["status"]
    tasks = GaugeMetricFamily(
        f"{PREFIX}_tasks",
        f"Tasks in the table per status, from the last successful collection ({every});"
        f" absent once older than {snapshot.staleness:g}s.",
        labels=names,
    )
    for one in series:
        tasks.add_metric([one.status, *(v for _, v in one.labels)], one.count)
    # A counter built here has no created timestamp, so no _created series is written.
    collections = CounterMetricFamily(
        f"{PREFIX}_collections",
        "Collections run, by result (success, error, timeout).",
        labels=["result"],
    )
    for result, n in snapshot.outcomes:
        collections.add_metric([result], n)
    return [
        tasks,
        *_time_and_load(snapshot, series, names, every),
        _gauge(
            f"{PREFIX}_up",
            f"1 if the last collection from the database succeeded, else 0 ({every}).",
            1 if snapshot.up else 0,
        ),
        _gauge(
            f"{PREFIX}_last_success_timestamp_seconds",
            "Unix time the last successful collection finished.",
            snapshot.last_success,
        ),
        _gauge(
            f"{PREFIX}_collection_duration_seconds",
            "Seconds the last collection took, successful or not.",
            snapshot.duration,
        ),
        collections,
        _gauge(
            f"{PREFIX}_folded_statuses",
            "Distinct statuses counted under other_status in the last successful collection,"
            " because the table holds more than max_statuses.",
            snapshot.folded,
        ),
        _gauge(
            f"{PREFIX}_collection_interval_seconds",
            "Seconds between collections (configured).",
            snapshot.interval,
        ),
        _gauge(
            f"{PREFIX}_staleness_seconds",
            "Age after which the counts of a failed collection are dropped (configured).",
            snapshot.staleness,
        ),
        InfoMetricFamily(
            f"{PREFIX}_build",
            "A constant 1, labelled with the exporter's version and the Python version it runs on.",
            value={"version": version, "pythonversion": platform.python_version()},
        ),
    ]


# --- issue 13: oldest task, window, load budget, EXPLAIN ---------------------------------------
def _time_and_load(
    snapshot: Snapshot, series: tuple[TaskSeries, ...], names: list[str], every: str
) -> list[Metric]:
    """The families of time_column, window, the load budget and the query's EXPLAIN."""
    out: list[Metric] = []
    if snapshot.oldest is not None:
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_task_timestamp_seconds",
            "Unix time of the oldest time_column value per status (and kind), in the"
            f" counting window ({every}); no series for a status without tasks or times."
            " The age is time() - this.",
            labels=names,
        )
        for one in series:
            if one.oldest is not None:
                oldest.add_metric([one.status, *(v for _, v in one.labels)], one.oldest)
        out.append(oldest)
    plan = snapshot.plan
    out += [
        _gauge(
            f"{PREFIX}_window_start_timestamp_seconds",
            f"Unix time the counting window of the task counts starts ({every}).",
            snapshot.window_start,
        ),
        _gauge(
            f"{PREFIX}_collection_effective_interval_seconds",
            "Seconds between collections now in force: the configured interval, or longer while"
            " slow queries are spaced out (load_budget) or cut off at the timeout.",
            snapshot.effective_interval or snapshot.interval,
        ),
        _gauge(
            f"{PREFIX}_folded_kinds",
            "Distinct label_columns combinations counted under other_status in the last"
            " successful collection, because the table holds more than max_kinds.",
            snapshot.folded_kinds,
        ),
        _gauge(
            f"{PREFIX}_query_unindexed",
            "1 when EXPLAIN, on the current database connection, found the query would scan"
            " more than scan_warning_rows rows without an index serving it, else 0.",
            None if plan is None else int(plan.unindexed),
        ),
        _gauge(
            f"{PREFIX}_query_estimated_rows",
            "Rows EXPLAIN estimated the query examines, on the current database connection.",
            None if plan is None else plan.estimated_rows,
        ),
    ]
    return out


# --- end of issue 13 ---------------------------------------------------------------------------


class SnapshotCollector(Collector):
    """The current snapshot's families, built afresh on every collect()."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._version = version
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        return families(self._snapshot(), self._clock(), self._version)

    def describe(self) -> Iterable[Metric]:
        """The names, for the registry's duplicate check: from an empty snapshot, so that
        registering reads nothing and queries nothing."""
        return families(Snapshot(interval=0.0, staleness=0.0), 0.0, self._version)


class RefusedConnections(Collector):
    """A counter of connections closed at accept because the client is not in web.allow."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def collect(self) -> Iterable[Metric]:
        return [
            CounterMetricFamily(
                f"{PREFIX}_allowlist_refused_connections",
                "Connections closed at accept because the client is not in web.allow.",
                value=self.value,
            )
        ]

    def describe(self) -> Iterable[Metric]:
        return self.collect()


class ReloadStatus(Collector):
    """The outcome of the last configuration load, as two gauges."""

    def __init__(self, loaded_at: float) -> None:
        self.state = (True, loaded_at)  # (applied, when the running configuration was loaded)

    def record(self, applied: bool, now: float) -> None:
        self.state = (True, now) if applied else (False, self.state[1])

    def collect(self) -> Iterable[Metric]:
        successful, loaded_at = self.state
        return [
            _gauge(
                f"{PREFIX}_config_last_reload_successful",
                "Whether the last configuration reload (SIGHUP) was applied: 1 yes,"
                " 0 refused (the previous configuration is still running). 1 at start.",
                float(successful),
            ),
            _gauge(
                f"{PREFIX}_config_last_reload_success_timestamp_seconds",
                "Unix time the running configuration was loaded: at start, or by the"
                " last reload that was applied.",
                loaded_at,
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return self.collect()
