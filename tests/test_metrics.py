"""/metrics as the exporter builds it on prometheus_client: its families, guards and cache."""

from __future__ import annotations

import gzip
import platform
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.registry import CollectorRegistry

from exporter.collect import Snapshot, shape
from exporter.config import TasksConfig
from exporter.metrics.collectors import SnapshotCollector, families
from exporter.metrics.exposition import TEXT_0_0_4, Exposition, accepts_gzip, negotiate
from exporter.metrics.registry import Metrics
from testing.exporter_process import Exporters, parse_metrics, task_counts, value

PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
FORMATS = (None, "text/plain;version=1.0.0", PROMETHEUS_2_ACCEPT, PROMETHEUS_3_ACCEPT)


def _snapshot(**kwargs: object) -> Snapshot:
    base = Snapshot(
        interval=15.0,
        staleness=60.0,
        counts=(("Success", 5), ("Pending", 3), ("Failed", 2)),
        last_success=1000.0,
        up=True,
        duration=0.0123,
        outcomes=(("success", 4), ("error", 1), ("timeout", 0)),
    )
    return replace(base, **kwargs)  # type: ignore[arg-type]


class _Clocks:
    """Wall-clock and monotonic time that a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.monotonic = 100.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.monotonic += seconds


def _metrics(
    snapshot: list[Snapshot], clocks: _Clocks, *, exporter_metrics: bool = True
) -> Metrics:
    return Metrics(
        lambda: snapshot[0],
        version="1.2.3",
        exporter_metrics=exporter_metrics,
        clock=lambda: clocks.now,
        monotonic=lambda: clocks.monotonic,
    )


def _text(metrics: Metrics, accept: str | None = None, encoding: str | None = None) -> str:
    body, _, gzipped = metrics.exposition.render(accept, encoding)
    return (gzip.decompress(body) if gzipped else body).decode("utf-8")


# -- the families ----------------------------------------------------------------------------


def test_every_family_is_shown_in_both_formats_with_its_type() -> None:
    """Counts, health, configuration, build info, the refused counter, the reload status and
    the process metrics all come out, each with the type Prometheus expects of it."""
    metrics = _metrics([_snapshot()], _Clocks(1010.0))
    types = {f.name: f.type for f in parse_om(_text(metrics, PROMETHEUS_2_ACCEPT))}  # type: ignore[no-untyped-call]
    assert types == {
        "tasks_exporter_tasks": "gauge",
        "tasks_exporter_up": "gauge",
        "tasks_exporter_last_success_timestamp_seconds": "gauge",
        "tasks_exporter_collection_duration_seconds": "gauge",
        "tasks_exporter_collections": "counter",
        "tasks_exporter_folded_statuses": "gauge",
        "tasks_exporter_window_start_timestamp_seconds": "gauge",
        "tasks_exporter_collection_effective_interval_seconds": "gauge",
        "tasks_exporter_folded_kinds": "gauge",
        "tasks_exporter_query_unindexed": "gauge",
        "tasks_exporter_query_estimated_rows": "gauge",
        "tasks_exporter_collection_interval_seconds": "gauge",
        "tasks_exporter_staleness_seconds": "gauge",
        "tasks_exporter_build": "info",
        "tasks_exporter_allowlist_refused_connections": "counter",
        "tasks_exporter_config_last_reload_successful": "gauge",
        "tasks_exporter_config_last_reload_success_timestamp_seconds": "gauge",
        "process_virtual_memory_bytes": "gauge",
        "process_resident_memory_bytes": "gauge",
        "process_start_time_seconds": "gauge",
        "process_cpu_seconds": "counter",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "python_info": "gauge",
    }
    samples = parse_metrics(_text(metrics))
    assert (
        samples[
            (
                "tasks_exporter_build_info",
                (("pythonversion", platform.python_version()), ("version", "1.2.3")),
            )
        ]
        == 1
    )
    assert samples[("tasks_exporter_allowlist_refused_connections_total", ())] == 0


def test_no_created_series_in_any_format() -> None:
    """No counter brings a _created series, in text or OpenMetrics: Prometheus would store
    each as a series of its own."""
    metrics = _metrics([_snapshot()], _Clocks(1010.0))
    metrics.refused.inc()
    for accept in FORMATS:
        text = _text(metrics, accept)
        assert "_total" in text
        assert "_created" not in text


def test_disabling_exporter_metrics_leaves_out_process_and_python_metrics() -> None:
    """With exporter metrics off (--web.disable-exporter-metrics), no process_* or python_*
    family is shown; the exporter's own are all still there."""
    on = parse_metrics(_text(_metrics([_snapshot()], _Clocks(1010.0))))
    off = parse_metrics(_text(_metrics([_snapshot()], _Clocks(1010.0), exporter_metrics=False)))
    assert {n for n, _ in on if n.startswith(("process_", "python_"))}
    assert {n for n, _ in off if n.startswith(("process_", "python_"))} == set()
    assert {k for k in on if k[0].startswith("tasks_exporter_")} == set(off)


def test_registering_the_snapshot_collector_reads_no_snapshot() -> None:
    """describe() names the families without a snapshot (so without a query): registering a
    collector whose snapshot cannot be read succeeds; only a scrape reads it."""
    reads: list[int] = []

    def snapshot() -> Snapshot:
        reads.append(1)
        return _snapshot()

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot, "v"))
    assert reads == []
    Exposition(registry, state=object).render(None, None)
    assert reads == [1]


def test_expected_statuses_show_as_zero_and_stale_counts_vanish() -> None:
    """An expected status with no rows is a 0 series; once the last success is older than
    the staleness window, the counts go and up stays as it is."""
    snapshot = [_snapshot(up=False, counts=(("Success", 0), ("Pending", 3), ("Failed", 0)))]
    clocks = _Clocks(1059.0)
    metrics = _metrics(snapshot, clocks)
    fresh = parse_metrics(_text(metrics))
    assert fresh[("tasks_exporter_tasks", (("status", "Success"),))] == 0
    assert fresh[("tasks_exporter_tasks", (("status", "Failed"),))] == 0
    clocks.advance(2)
    stale = parse_metrics(_text(metrics))
    assert not [k for k in stale if k[0] == "tasks_exporter_tasks"]
    assert stale[("tasks_exporter_up", ())] == 0


# -- negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "*/*",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "application/openmetrics-text;version=2.0.0;escaping=dots",
        "application/openmetrics-text;version=0.0.1,text/plain;version=1.0.0",
        "application/json, text/html",
        PROMETHEUS_2_ACCEPT,
        PROMETHEUS_3_ACCEPT,
    ],
)
def test_the_guard_leaves_well_formed_accept_headers_to_choose_encoder(accept: str | None) -> None:
    """A well-formed Accept header gets exactly the content type choose_encoder gives it."""
    assert negotiate(accept)[1] == choose_encoder(accept or "")[1]


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text;version=abc",
        "application/openmetrics-text;version=:",
        "text/plain;version=x.y",
        "application/openmetrics-text;version=1.0.0.\rSet-Cookie: a=b",
        "application/openmetrics-text;version=1.0.0<script>",
    ],
)
def test_a_malformed_accept_header_gets_the_text_format(accept: str) -> None:
    """An Accept header with a version that is not a number, or that carries control
    characters, is answered in the text format: no error, and none of it copied into a header."""
    body, content_type, _ = _metrics([_snapshot()], _Clocks(1010.0)).exposition.render(accept, None)
    assert content_type == TEXT_0_0_4
    assert b"tasks_exporter_up 1.0\n" in body


def test_a_range_that_choose_encoder_cannot_compare_is_passed_over() -> None:
    """Where choose_encoder raises (a version like 1.x), the next media range decides."""
    assert negotiate("application/openmetrics-text;version=x.1,text/plain")[1] == TEXT_0_0_4
    assert negotiate("text/plain;version=1.x,application/openmetrics-text")[1].startswith(
        "application/openmetrics-text; version=1.0.0"
    )


def test_gzip_and_identity_carry_the_same_text() -> None:
    """The gzip body decodes to exactly the identity body, in every format; gzip;q=0 is
    honoured."""
    metrics = _metrics([_snapshot()], _Clocks(1010.0))
    for accept in FORMATS:
        plain, plain_type, plain_gzipped = metrics.exposition.render(accept, "identity")
        packed, packed_type, gzipped = metrics.exposition.render(accept, "gzip")
        assert (plain_gzipped, gzipped) == (False, True)
        assert plain_type == packed_type
        assert gzip.decompress(packed) == plain
        assert metrics.exposition.render(accept, "gzip;q=0")[0] is plain


def test_openmetrics_ends_with_one_eof() -> None:
    """An OpenMetrics body has exactly one # EOF, as its last line; the text format has none."""
    metrics = _metrics([_snapshot()], _Clocks(1010.0))
    text = _text(metrics, PROMETHEUS_3_ACCEPT, "gzip")
    assert text.count("# EOF") == 1
    assert text.endswith("\n# EOF\n")
    assert "# EOF" not in _text(metrics)


# -- the cache -------------------------------------------------------------------------------


def test_a_scrape_gets_the_same_bytes_until_the_snapshot_changes() -> None:
    """Scrapes in between collections get the very same bytes object, in every format; a new
    snapshot gives new bytes that show it."""
    snapshot, clocks = [_snapshot()], _Clocks(1010.0)
    metrics = _metrics(snapshot, clocks, exporter_metrics=False)
    for accept in FORMATS:
        for encoding in (None, "gzip"):
            first = metrics.exposition.render(accept, encoding)[0]
            clocks.advance(5)
            assert metrics.exposition.render(accept, encoding)[0] is first
    before = metrics.exposition.render(None, None)[0]
    snapshot[0] = _snapshot(counts=(("Success", 6), ("Pending", 3), ("Failed", 2)))
    after = metrics.exposition.render(None, None)[0]
    assert after is not before
    assert b'tasks_exporter_tasks{status="Success"} 6.0' in after


def test_a_refused_connection_and_a_reload_show_on_the_next_scrape() -> None:
    """The refused-connections counter and the reload status are not hidden by the cache."""
    clocks = _Clocks(1010.0)
    metrics = _metrics([_snapshot()], clocks, exporter_metrics=False)
    _text(metrics)
    metrics.refused.inc()
    assert "tasks_exporter_allowlist_refused_connections_total 1.0\n" in _text(metrics)
    metrics.reload_status.record(applied=False, now=1020.0)
    assert "tasks_exporter_config_last_reload_successful 0.0\n" in _text(metrics)


def test_process_metrics_are_read_again_once_a_second() -> None:
    """With process metrics on, a scrape within the same second is a lookup; the next second
    renders again, with process figures read afresh."""
    clocks = _Clocks(1010.0)
    metrics = _metrics([_snapshot()], clocks)
    clocks.monotonic = 100.2
    first = metrics.exposition.render(None, None)[0]
    clocks.monotonic = 100.9
    assert metrics.exposition.render(None, None)[0] is first
    clocks.monotonic = 101.0
    assert metrics.exposition.render(None, None)[0] is not first


def test_the_flag_turns_off_exporter_metrics_on_a_live_scrape(
    exporters: Exporters, tmp_path: Path
) -> None:
    """tasks_exporter --web.disable-exporter-metrics serves no process_* or python_* series;
    without it they are there."""
    for flags, shown in (((), True), (("--web.disable-exporter-metrics",), False)):
        workdir = tmp_path / str(shown)
        workdir.mkdir()
        exporter = exporters(workdir, "", "--demo", *flags).start(ready=True)
        try:
            names = {name for name, _ in exporter.scrape()}
        finally:
            exporter.stop()
        assert ("process_resident_memory_bytes" in names) is shown
        assert ("python_info" in names) is shown
        assert "tasks_exporter_up" in names


def _exposed(snapshot: Snapshot, now: float, accept: str | None = None) -> str:
    """/metrics for one snapshot alone, at time `now`, in the format `accept` asks for."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot, "1.2.3", clock=lambda: now))
    return Exposition(registry, state=object).render(accept, None)[0].decode()


def _samples(
    snapshot: Snapshot, now: float
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse_metrics(_exposed(snapshot, now))


def test_fresh_snapshot_exports_counts_and_health() -> None:
    """A fresh snapshot gives the counts per status, up=1, the last success time and outcomes."""
    samples = _samples(_snapshot(), now=1010.0)
    assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}
    assert value(samples, "tasks_exporter_up") == 1
    assert value(samples, "tasks_exporter_last_success_timestamp_seconds") == 1000.0
    assert value(samples, "tasks_exporter_collections_total", result="error") == 1
    assert (
        value(
            samples,
            "tasks_exporter_build_info",
            version="1.2.3",
            pythonversion=platform.python_version(),
        )
        == 1
    )


def test_failed_collection_keeps_counts_until_stale_then_drops_them() -> None:
    """After a failure the last counts stay for the staleness window, then vanish; up stays 0."""
    failed = _snapshot(up=False, error="boom")
    assert task_counts(_samples(failed, now=1059.0)) == {"Success": 5, "Pending": 3, "Failed": 2}
    late = _samples(failed, now=1061.0)
    assert task_counts(late) == {}
    assert value(late, "tasks_exporter_up") == 0
    assert value(late, "tasks_exporter_last_success_timestamp_seconds") == 1000.0


def test_before_first_collection_there_are_no_counts_and_no_timestamp() -> None:
    """Before any success: up=0, no counts, no last-success sample (never a fake 0 time)."""
    samples = _samples(Snapshot(interval=15, staleness=60), now=5.0)
    assert task_counts(samples) == {}
    assert value(samples, "tasks_exporter_up") == 0
    assert value(samples, "tasks_exporter_last_success_timestamp_seconds") is None


def test_help_text_says_counts_are_refreshed_on_a_schedule() -> None:
    """The HELP of the task gauge tells readers the values come from a scheduled collection."""
    (tasks,) = [f for f in families(_snapshot(), 1000.0, "v") if f.name == "tasks_exporter_tasks"]
    assert "refreshed every 15s" in tasks.documentation
    assert "not per scrape" in tasks.documentation


@settings(deadline=None)  # correctness, not speed: a loaded CI machine must not fail it
@given(st.text(min_size=0, max_size=300))
def test_any_status_string_round_trips_through_both_formats(status: str) -> None:
    """Any text the database holds comes out as valid exposition and parses back unchanged."""
    counts, _ = shape([("Success", 1), (status, 2)], TasksConfig())
    expected = dict(counts)[status]  # 2, or 3 when the status is "Success" itself
    shown = _snapshot(counts=counts)
    assert task_counts(parse_metrics(_exposed(shown, 1000.0)))[status] == expected
    om_text = _exposed(shown, 1000.0, "application/openmetrics-text")
    om_counts = {
        s.labels["status"]: s.value
        for f in parse_om(om_text)  # type: ignore[no-untyped-call]
        if f.name == "tasks_exporter_tasks"
        for s in f.samples
    }
    assert om_counts[status] == expected


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("gzip;q=0", False),
        ("identity", False),
        (None, False),
        ("GZIP", True),
    ],
)
def test_gzip_negotiation(header: str | None, gzip: bool) -> None:
    """gzip is used when Accept-Encoding allows it, and not when it gives it q=0."""
    assert accepts_gzip(header) is gzip
