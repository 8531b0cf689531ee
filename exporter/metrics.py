"""From a Snapshot to metric families (pure), and the exposition of a registry."""

from __future__ import annotations

import gzip
import platform
import time
from collections.abc import Callable, Iterable

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.collect import Snapshot

PREFIX = "tasks_exporter"


def families(snapshot: Snapshot, now: float, version: str) -> list[Metric]:
    """The exporter's own metrics for one snapshot, seen at time `now`."""
    every = f"refreshed every {snapshot.interval:g}s by the collection loop, not per scrape"
    tasks = GaugeMetricFamily(
        f"{PREFIX}_tasks",
        f"Tasks in the table per status, from the last successful collection ({every});"
        f" absent once older than {snapshot.staleness:g}s.",
        labels=["status"],
    )
    for status, n in snapshot.fresh_counts(now) or ():
        tasks.add_metric([status], n)
    out: list[Metric] = [
        tasks,
        GaugeMetricFamily(
            f"{PREFIX}_up",
            f"1 if the last collection from the database succeeded, else 0 ({every}).",
            value=1 if snapshot.up else 0,
        ),
    ]
    last = GaugeMetricFamily(
        f"{PREFIX}_last_success_timestamp_seconds",
        "Unix time the last successful collection finished.",
    )
    if snapshot.last_success is not None:
        last.add_metric([], snapshot.last_success)
    duration = GaugeMetricFamily(
        f"{PREFIX}_collection_duration_seconds",
        "Seconds the last collection took, successful or not.",
    )
    if snapshot.duration is not None:
        duration.add_metric([], snapshot.duration)
    outcomes = CounterMetricFamily(
        f"{PREFIX}_collections",
        "Collections run, by result (success, error, timeout).",
        labels=["result"],
    )
    for result, n in snapshot.outcomes:
        outcomes.add_metric([result], n)
    out += [
        last,
        duration,
        outcomes,
        GaugeMetricFamily(
            f"{PREFIX}_folded_statuses",
            "Distinct statuses counted under other_status in the last successful collection,"
            " because the table holds more than max_statuses.",
            value=snapshot.folded,
        ),
        GaugeMetricFamily(
            f"{PREFIX}_collection_interval_seconds",
            "Seconds between collections (configured).",
            value=snapshot.interval,
        ),
        GaugeMetricFamily(
            f"{PREFIX}_staleness_seconds",
            "Age after which the counts of a failed collection are dropped (configured).",
            value=snapshot.staleness,
        ),
    ]
    build = GaugeMetricFamily(
        f"{PREFIX}_build_info",
        "A constant 1, labelled with the exporter's version and the Python version it runs on.",
        labels=["version", "pythonversion"],
    )
    build.add_metric([version, platform.python_version()], 1)
    out.append(build)
    return out


class SnapshotCollector(Collector):
    """A registry collector that turns whatever snapshot is current into fresh families."""

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
        """The families without reading the current snapshot, for registration."""
        return families(Snapshot(interval=0.0, staleness=0.0), 0.0, self._version)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when the Accept-Encoding header allows gzip (and does not give it q=0)."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


def _negotiate(accept: str) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """prometheus_client's choice of format, made safe for any Accept header a client sends.

    It compares a `version=` parameter with numbers, and raises when the version is not one
    (`version=abc`); and it copies the version into the Content-Type, control characters
    included. Either way the client gets the text format, as for a header naming nothing we
    serve, rather than a 500 or its own bytes back in a response header.
    """
    try:
        encoder, content_type = choose_encoder(accept)
    except TypeError:
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    if not content_type.isprintable():
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    return encoder, content_type


def expose(
    registry: CollectorRegistry, accept: str | None, accept_encoding: str | None
) -> tuple[bytes, str, bool]:
    """Render the registry in the format the scraper asked for: (body, content type, gzipped)."""
    encoder, content_type = _negotiate(accept or "")
    body = encoder(registry)
    if accepts_gzip(accept_encoding):
        return gzip.compress(body, compresslevel=6, mtime=0), content_type, True
    return body, content_type, False
