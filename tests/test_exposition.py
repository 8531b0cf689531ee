"""The bytes of /metrics: the same as prometheus_client writes, rendered once per change."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.collect import Snapshot
from exporter.exposition import (
    Exposition,
    Family,
    Part,
    Rendered,
    deflate,
    gzip_member,
    negotiate,
    render,
)
from exporter.metrics import Counter, SnapshotMetrics, families
from exporter.process import ProcessMetrics, python_info

ESCAPINGS = ("underscores", "allow-utf-8", "dots", "values")
PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


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


class _Fixed(Collector):
    """A prometheus_client collector serving the same families as ours."""

    def __init__(self, ours: Iterable[Family]) -> None:
        self._families: list[Metric] = []
        for family in ours:
            kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            names = [k for k, _ in family.samples[0][0]] if family.samples else []
            theirs = kind(family.name, family.help, labels=names)
            for labels, value in family.samples:
                theirs.add_metric([v for _, v in labels], value)
            self._families.append(theirs)

    def collect(self) -> Iterable[Metric]:
        return self._families


def _registry(ours: Iterable[Family]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Fixed(ours))
    return registry


STATUSES = st.text(max_size=30)


@given(st.lists(STATUSES, max_size=5, unique=True), st.sampled_from(ESCAPINGS))
def test_text_format_is_byte_for_byte_prometheus_clients(
    statuses: list[str], escaping: str
) -> None:
    """The text format of the exporter's families is exactly what prometheus_client writes."""
    ours = families(_snapshot(counts=tuple((s, 7) for s in statuses)), 1010.0, "1.2.3")
    theirs = generate_latest(_registry(ours), escaping=escaping)
    assert render(ours, openmetrics=False, escaping=escaping) == theirs


@given(st.lists(STATUSES, max_size=5, unique=True), st.sampled_from(ESCAPINGS[:3]))
def test_openmetrics_is_byte_for_byte_prometheus_clients(
    statuses: list[str], escaping: str
) -> None:
    """OpenMetrics of the exporter's families is what prometheus_client writes, # EOF apart.

    (Not compared for escaping=values: prometheus_client prefixes sample names with U__ there
    but not the HELP and TYPE lines, which no parser accepts; names valid in the legacy
    character set, as all of ours are, stay as they are, as Prometheus itself does.)
    """
    ours = families(_snapshot(counts=tuple((s, 7) for s in statuses)), 1010.0, "1.2.3")
    theirs = generate_openmetrics(_registry(ours), escaping=escaping)  # type: ignore[no-untyped-call]
    assert render(ours, openmetrics=True, escaping=escaping) + b"# EOF\n" == theirs


def test_process_metrics_are_named_and_described_as_prometheus_clients() -> None:
    """process_* and python_info come out with the names, types, help and labels that
    prometheus_client's ProcessCollector and PlatformCollector give them."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    ours = [*ProcessMetrics().read(), *python_info().families]

    def shape(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str]]]]]:
        return [
            (f.name, f.type, f.documentation, [(s.name, s.labels) for s in f.samples])
            for f in text_string_to_metric_families(text)
        ]

    theirs_text = generate_latest(registry).decode()
    assert shape(render(ours, openmetrics=False).decode()) == shape(theirs_text)
    python = [f for f in ours if f.name == "python_info"]
    assert render(python, openmetrics=False).decode() in theirs_text


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "*/*",
        "text/plain",
        "text/plain;version=0.0.4",
        "text/plain; version=1.0.0",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=bogus",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "application/openmetrics-text;version=2.0.0;escaping=dots",
        "application/openmetrics-text;version=0.0.1",
        "application/openmetrics-text;version=1",
        "application/openmetrics-text;version=0.0.1,text/plain;version=1.0.0",
        "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.1",
        "application/json, text/html",
        PROMETHEUS_2_ACCEPT,
        PROMETHEUS_3_ACCEPT,
    ],
)
def test_negotiation_follows_prometheus_clients_choose_encoder(accept: str | None) -> None:
    """Each Accept header gets the format and content type choose_encoder would give it."""
    encoder, content_type = choose_encoder(accept or "")
    fmt = negotiate(accept)
    assert fmt.content_type == content_type
    ours = families(_snapshot(), 1010.0, "v")
    expected = encoder(_registry(ours))
    eof = b"# EOF\n" if fmt.openmetrics else b""
    assert render(ours, openmetrics=fmt.openmetrics, escaping=fmt.escaping) + eof == expected


def test_a_version_that_does_not_compare_is_skipped_not_an_error() -> None:
    """Where choose_encoder raises (a version like 1.x), that media range is passed over."""
    assert negotiate("application/openmetrics-text;version=x.1,text/plain").openmetrics is False
    assert negotiate("text/plain;version=1.x,application/openmetrics-text").openmetrics is True


def test_gzip_of_parts_is_one_member_that_decoders_read() -> None:
    """Separately deflated parts joined into one gzip member decode to the joined text, with
    Python's gzip, zlib, and the gzip program."""
    texts = [b"# HELP a A.\n# TYPE a gauge\na 1.0\n" * 40, b"", b"b 2.0\n", b"# EOF\n"]
    member = gzip_member(texts, [deflate(t) for t in texts])
    joined = b"".join(texts)
    assert gzip.decompress(member) == joined
    assert zlib.decompress(member, wbits=zlib.MAX_WBITS | 16) == joined
    gzip_program = shutil.which("gzip")
    assert gzip_program is not None
    result = subprocess.run(
        [gzip_program, "-dc"], input=member, capture_output=True, check=True, timeout=10
    )
    assert result.stdout == joined
    assert len(member) < len(joined) / 4  # and it is compressed


def _exposition(
    snapshot: list[Snapshot], now: list[float], refused: Counter | None = None
) -> tuple[Exposition, SnapshotMetrics]:
    part = SnapshotMetrics(lambda: snapshot[0], "v")
    constant = python_info()
    parts: list[Part] = [part, lambda _now: constant]
    if refused is not None:
        parts.append(refused)
    return Exposition(parts, clock=lambda: now[0]), part


def test_a_scrape_gets_the_same_bytes_until_the_snapshot_changes() -> None:
    """Scrapes in between collections get the very same bytes object, in every format; a new
    snapshot gives new bytes that show it."""
    snapshot, now = [_snapshot()], [1010.0]
    exposition, _ = _exposition(snapshot, now)
    for accept in (None, PROMETHEUS_2_ACCEPT):
        for encoding in (None, "gzip"):
            first = exposition.render(accept, encoding)[0]
            now[0] += 1
            assert exposition.render(accept, encoding)[0] is first
    before = exposition.render(None, None)[0]
    snapshot[0] = _snapshot(counts=(("Success", 6), ("Pending", 3), ("Failed", 2)))
    after = exposition.render(None, None)[0]
    assert after is not before
    assert b'tasks_exporter_tasks{status="Success"} 6.0' in after


def test_counts_go_when_the_snapshot_goes_stale() -> None:
    """The same snapshot is rendered again once it is stale, without its counts."""
    snapshot, now = [_snapshot(up=False)], [1059.0]
    exposition, _ = _exposition(snapshot, now)
    assert b"tasks_exporter_tasks{" in exposition.render(None, None)[0]
    now[0] = 1061.0
    assert b"tasks_exporter_tasks{" not in exposition.render(None, None)[0]


def test_gzip_and_identity_carry_the_same_text() -> None:
    """The gzip body decodes to exactly the identity body, in both formats."""
    snapshot, now = [_snapshot()], [1010.0]
    exposition, _ = _exposition(snapshot, now, Counter("x_refused", "Refused."))
    for accept in (None, PROMETHEUS_2_ACCEPT):
        plain, plain_type, plain_gzipped = exposition.render(accept, "identity")
        packed, packed_type, gzipped = exposition.render(accept, "gzip")
        assert (plain_gzipped, gzipped) == (False, True)
        assert plain_type == packed_type
        assert gzip.decompress(packed) == plain


def test_openmetrics_ends_with_one_eof() -> None:
    """An OpenMetrics body has exactly one # EOF, as its last line; the text format has none."""
    snapshot, now = [_snapshot()], [1010.0]
    exposition, _ = _exposition(snapshot, now, Counter("x_refused", "Refused."))
    for encoding in (None, "gzip"):
        body, content_type, gzipped = exposition.render(PROMETHEUS_2_ACCEPT, encoding)
        text = gzip.decompress(body) if gzipped else body
        assert content_type.startswith("application/openmetrics-text")
        assert text.count(b"# EOF") == 1
        assert text.endswith(b"\n# EOF\n")
        assert b"# EOF" not in exposition.render(None, encoding)[0]


def test_a_counter_change_shows_at_once_and_renders_only_the_counter() -> None:
    """A refused connection is counted on the very next scrape; the snapshot's families are
    not rendered again for it."""
    snapshot, now = [_snapshot()], [1010.0]
    refused = Counter("x_refused", "Refused.")
    exposition, part = _exposition(snapshot, now, refused)
    exposition.render(None, "gzip")
    snapshot_rendered = part(now[0])
    refused.inc()
    body = gzip.decompress(exposition.render(None, "gzip")[0])
    assert b"x_refused_total 1.0\n" in body
    assert part(now[0]) is snapshot_rendered


def test_process_metrics_are_read_at_most_once_per_refresh() -> None:
    """The process part keeps its rendering for `refresh` seconds, then reads /proc again."""
    clock = [0.0]
    process = ProcessMetrics(refresh=1.0, clock=lambda: clock[0])
    first = process(0.0)
    assert {f.name for f in first.families} >= {"process_cpu_seconds", "process_open_fds"}
    clock[0] = 0.9
    assert process(0.0) is first
    clock[0] = 1.0
    assert process(0.0) is not first


def test_rendered_parts_render_each_format_once() -> None:
    """A part's text and deflate blocks are made once per format and then reused."""
    rendered = Rendered(families(_snapshot(), 1010.0, "v"))
    text = rendered.text(openmetrics=False, escaping="underscores")
    assert rendered.text(openmetrics=False, escaping="underscores") is text
    blocks = rendered.deflated(openmetrics=True, escaping="dots")
    assert rendered.deflated(openmetrics=True, escaping="dots") is blocks
    assert rendered.text(openmetrics=True, escaping="underscores") != text
