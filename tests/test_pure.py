"""The pure parts: shaping rows into counts, snapshot to metrics, allowlist, page, logs."""

from __future__ import annotations

import io
import json
import logging
import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.registry import CollectorRegistry

from exporter import log as logs
from exporter.collect import Snapshot, shape
from exporter.config import DatabaseConfig, TasksConfig, parse_network
from exporter.metrics.collectors import SnapshotCollector, families
from exporter.metrics.exposition import Exposition, accepts_gzip
from exporter.sources.mysql import is_local
from exporter.web.allowlist import Allowlist, RefusalLog, client_address
from exporter.web.page import render
from exporter.web.parsing import _path
from testing.exporter_process import parse_metrics, task_counts, value

TASKS = TasksConfig()


def test_expected_statuses_absent_from_the_table_are_zero() -> None:
    """Success, Pending and Failed always appear, 0 when the table has none of them."""
    counts, folded = shape([("Success", 4)], TASKS)
    assert counts == (("Success", 4), ("Pending", 0), ("Failed", 0))
    assert folded == ()


def test_other_statuses_follow_expected_ones_by_name() -> None:
    """Statuses outside the expected list appear too, after the expected ones, sorted."""
    counts, _ = shape([("Retry", 2), ("Failed", 1), ("Archived", 7)], TASKS)
    assert counts == (
        ("Success", 0),
        ("Pending", 0),
        ("Failed", 1),
        ("Archived", 7),
        ("Retry", 2),
    )


def test_null_binary_and_numeric_statuses_get_defined_labels() -> None:
    """NULL becomes null_status, bytes are decoded as UTF-8, numbers become their text."""
    counts, _ = shape([(None, 3), (b"Caf\xc3\xa9", 1), (b"\xff", 1), (7, 2)], TASKS)
    assert dict(counts) == {
        "Success": 0,
        "Pending": 0,
        "Failed": 0,
        "NULL": 3,
        "Café": 1,
        "\ufffd": 1,
        "7": 2,
    }


def test_rows_that_map_to_one_label_are_summed() -> None:
    """A NULL status and a literal 'NULL' string end up in one series, summed."""
    counts, _ = shape([(None, 3), ("NULL", 2)], TASKS)
    assert dict(counts)["NULL"] == 5


def test_statuses_beyond_the_cap_fold_into_other() -> None:
    """Beyond max_statuses, the least frequent extra statuses are summed into 'other'."""
    tasks = TasksConfig(max_statuses=6)  # 3 expected + 2 extra + other
    rows = [("Success", 1), ("big", 50), ("mid", 20), ("small", 2), ("tiny", 1), ("other", 4)]
    counts, folded = shape(rows, tasks)
    assert counts == (
        ("Success", 1),
        ("Pending", 0),
        ("Failed", 0),
        ("big", 50),
        ("mid", 20),
        ("other", 7),
    )
    assert folded == ("small", "tiny")
    assert len(counts) == tasks.max_statuses


def test_no_folding_at_exactly_the_cap() -> None:
    """A table with exactly max_statuses distinct values folds nothing."""
    tasks = TasksConfig(max_statuses=5)
    counts, folded = shape([("a", 1), ("b", 1)], tasks)
    assert folded == ()
    assert len(counts) == 5


@given(st.lists(st.tuples(st.text(max_size=20), st.integers(0, 10**9)), max_size=80))
def test_shape_never_exceeds_the_cap_and_keeps_the_total(rows: list[tuple[str, int]]) -> None:
    """Whatever the table holds: at most max_statuses series, and no task lost or invented."""
    tasks = TasksConfig(max_statuses=10)
    counts, _ = shape(rows, tasks)
    assert len(counts) <= 10
    assert sum(n for _, n in counts) == sum(n for _, n in rows)
    assert [s for s, _ in counts[:3]] == list(tasks.expected_statuses)


def _snapshot(**kwargs: object) -> Snapshot:
    base: dict[str, object] = {
        "interval": 15.0,
        "staleness": 60.0,
        "counts": (("Success", 5), ("Pending", 3), ("Failed", 2)),
        "last_success": 1000.0,
        "up": True,
        "duration": 0.01,
        "outcomes": (("success", 4), ("error", 1), ("timeout", 0)),
    }
    base.update(kwargs)
    return Snapshot(**base)  # type: ignore[arg-type]


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
    counts, _ = shape([("Success", 1), (status, 2)], TASKS)
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
    ("client", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::ffff:127.0.0.1", True),  # IPv4 client on a dual-stack socket
        ("::1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("", False),
        ("not-an-ip", False),
    ],
)
def test_allowlist_matching(client: str, allowed: bool) -> None:
    """Clients match by network; IPv4-mapped IPv6 addresses match as IPv4."""
    networks = [parse_network(n) for n in ("127.0.0.0/8", "::1/128", "2001:db8::/32")]
    assert Allowlist(networks).allows(client_address(client)) is allowed


@pytest.mark.parametrize(
    ("peer", "shown"),
    [("::ffff:192.0.2.1", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"), ("fe80::1%eth0", "fe80::1")],
)
def test_client_address_is_shown_as_it_is_matched(peer: str, shown: str) -> None:
    """A refused IPv4 client on a dual-stack socket is logged as IPv4, as it is matched."""
    assert str(client_address(peer)) == shown


def test_ipv4_mapped_client_does_not_match_an_ipv6_only_rule() -> None:
    """A mapped IPv4 client is judged by IPv4 rules only: ::/0 does not let it in."""
    assert not Allowlist([parse_network("::/0")]).allows(client_address("::ffff:192.0.2.1"))


def test_refusal_log_does_not_flood() -> None:
    """A flood of refusals logs each new address once, then one summary line per window."""
    stream = io.StringIO()
    logger = logs.setup("info", "logfmt", stream)
    now = [0.0]
    refusals = RefusalLog(logger, window=60, distinct=3, clock=lambda: now[0])
    flush_in = [refusals.refused(f"10.0.0.{i % 5}") for i in range(1000)]
    assert flush_in[3] == 60  # the first suppressed refusal asks for a summary at window end
    assert [d for d in flush_in if d is not None] == [60]
    assert len(stream.getvalue().splitlines()) == 3  # one line per new address, at most 3
    now[0] = 60.0
    refusals.flush()  # the server calls this when asked to, even if the flood has stopped
    now[0] = 61.0
    refusals.refused("10.0.0.1")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # 3 distinct, 1 summary of the other 997, 1 in the new window
    assert "count=997" in lines[3]


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


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/metrics", "/metrics"),
        ("/metrics?x=1", "/metrics"),
        ("http://host:1/metrics?x", "/metrics"),
        ("http://host", "/"),
        ("*", None),
        ("metrics", None),
    ],
)
def test_request_target_path(target: str, path: str | None) -> None:
    """The path is taken from origin- or absolute-form targets, without the query."""
    assert _path(target) == path


def test_landing_page_escapes_database_values() -> None:
    """A status holding HTML or script is shown as text on the landing page."""
    hostile = '<script>alert("x")</script>&'
    page = render(
        _snapshot(counts=((hostile, 1),)),
        1001.0,
        version="1",
        telemetry_path="/metrics",
        source="<b>",
    ).decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "<b>" not in page


def test_landing_page_says_when_data_is_stale_or_database_unreachable() -> None:
    """A failed collection shows its reason; stale data is replaced by a notice, not numbers."""
    page = render(
        _snapshot(up=False, error="cannot connect"),
        2000.0,
        version="1",
        telemetry_path="/m",
        source="s",
    ).decode()
    assert "The database could not be read." in page
    assert "cannot connect" in page
    assert "Data is stale." in page
    assert "<table" not in page


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_formats_carry_message_and_fields(fmt: str) -> None:
    """Both log formats write one line per event with the message and its fields, asyncio's
    own warnings included."""
    stream = io.StringIO()
    logger = logs.setup("info", fmt, stream)
    logger.info("collection failed", err='quote " and space')
    logger.debug("hidden at info")
    (line,) = stream.getvalue().splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert record["msg"] == "collection failed"
        assert record["err"] == 'quote " and space'
        assert record["level"] == "info"
    else:
        assert 'msg="collection failed"' in line
        assert 'err="quote \\" and space"' in line
        assert "level=info" in line
    logging.getLogger("asyncio").warning("socket.send() raised exception.")
    asyncio_line = stream.getvalue().splitlines()[-1]
    assert "socket.send() raised exception." in asyncio_line
    assert asyncio_line.startswith("{" if fmt == "json" else "ts=")
    for name in ("tasks_exporter", "asyncio"):
        logging.getLogger(name).handlers.clear()


@given(st.text(max_size=40))
def test_logfmt_values_that_need_quotes_are_json_strings(text: str) -> None:
    """A logfmt value is written bare when it can be, else exactly as JSON writes the string."""
    written = logs._logfmt_value(text)
    if written != text:
        assert written == json.dumps(text, ensure_ascii=False)


@pytest.mark.parametrize(
    ("host", "socket_path", "local"),
    [
        ("127.0.0.1", None, True),
        ("127.3.2.1", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("192.0.2.7", None, False),
        ("db.example.com", None, False),
        ("db.example.com", "/run/mysqld/mysqld.sock", True),
    ],
)
def test_tls_is_left_off_only_for_a_database_on_this_machine(
    host: str, socket_path: str | None, local: bool
) -> None:
    """A unix socket or a loopback address is local (no TLS); any other host is not."""
    assert is_local(DatabaseConfig(driver="mysql", host=host, socket=socket_path)) is local
