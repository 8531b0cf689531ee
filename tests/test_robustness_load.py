"""Robustness: many scrapers, idle and trickling connections, and refused floods."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from testing import unwelcome_clients
from testing.exporter_process import (
    DEMO_COUNTS,
    Exporter,
    Exporters,
    collections,
    lines_matching,
    parse_metrics,
    task_counts,
    value,
    wait_for,
)
from testing.scrape_load import Failure, Scrape, describe, percentiles, scrape_concurrently
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.robustness

# What Prometheus sends (OpenMetrics, gzip), and a client that asks for nothing in particular.
PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "Accept-Encoding": "gzip",
}
PLAIN: dict[str, str] = {}

FLOOD_RATE = 1000  # connections a second from the refused address


def _what_it_says(scrape: Scrape) -> tuple[dict[str, int], float | None]:
    """The counts and up in a response, parsed as a scraper would; fails on anything invalid."""
    body = scrape.body
    if scrape.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    text = body.decode("utf-8")
    if scrape.headers["content-type"].startswith("application/openmetrics-text"):
        assert text.endswith("# EOF\n")
        families = list(parse_om(text))  # type: ignore[no-untyped-call]  # untyped upstream
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
        }
    else:
        samples = parse_metrics(text)
    return task_counts(samples), value(samples, "tasks_exporter_up")


def _right_after_a_collection(exporter: Exporter, db: TasksDB) -> tuple[float, int]:
    """(successful collections, the server's Com_select) read just after a collection, so
    that no collection runs between the two readings."""
    first = collections(exporter, "success")
    wait_for(lambda: collections(exporter, "success") > first, timeout=5, what="a collection")
    return collections(exporter, "success"), db.server.status("Com_select")


@pytest.mark.mariadb
@pytest.mark.parametrize("every", [None, 1.0], ids=["back to back", "each once a second"])
def test_200_concurrent_scrapers_get_valid_answers_and_cost_no_query(
    exporters: Exporters,
    tmp_path: Path,
    private_tasks_db: TasksDB,
    every: float | None,
    figure: Callable[[str], None],
) -> None:
    """200 concurrent keep-alive scrapers for 5 s, back to back or each once a second, half
    asking as Prometheus does (OpenMetrics, gzip): every response is complete and valid with
    the table's counts, every scraper is served, and the server's own counter shows one SELECT
    per collection, no more."""
    db = private_tasks_db
    interval, seconds = 1.0, 5.0
    exporter = exporters.on_db(
        tmp_path, db, interval="1s", timeout="0.5s", extra_web="max_connections = 400"
    )
    try:
        collections_before, selects_before = _right_after_a_collection(exporter, db)
        results = scrape_concurrently(
            (exporter.host, exporter.port),
            scrapers=200,
            seconds=seconds,
            every=every,
            headers=[PROMETHEUS, PLAIN],
        )
        collections_after, selects_after = _right_after_a_collection(exporter, db)
    finally:
        exporter.stop()
    assert [r for r in results if isinstance(r, Failure)] == []
    scrapes = [r for r in results if isinstance(r, Scrape)]
    assert {s.status for s in scrapes} == {200}
    assert {s.scraper for s in scrapes} == set(range(200))  # nobody starved
    checked: dict[bytes, tuple[dict[str, int], float | None]] = {}
    for s in scrapes:
        if s.body not in checked:
            checked[s.body] = _what_it_says(s)
        assert checked[s.body] == ({"Success": 5, "Pending": 3, "Failed": 2}, 1.0)
    assert {s.headers["content-type"].split(";")[0] for s in scrapes} == {
        "application/openmetrics-text",
        "text/plain",
    }
    collected = collections_after - collections_before
    assert seconds / interval - 1 <= collected <= seconds / interval + 3
    assert selects_after - selects_before == collected
    how = "back to back" if every is None else f"each once every {every:g} s"
    latency = describe([s.latency for s in scrapes])
    figure(
        f"200 concurrent scrapers {how}, {seconds:g} s: {len(scrapes)} responses"
        f" ({len(scrapes) / seconds:.0f}/s), all valid; latency {latency};"
        f" {selects_after - selects_before} SELECTs for {collected:.0f} collections"
    )


def _timed_scrapes(exporter: Exporter, n: int, every: float) -> list[float]:
    """n scrapes of /metrics, each on a new connection, one every `every` seconds: latencies."""
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        reply = exporter.get("/metrics")
        latencies.append(time.perf_counter() - started)
        assert reply.status == 200
        assert task_counts(parse_metrics(reply.text))["Success"] == DEMO_COUNTS["Success"]
        time.sleep(max(0.0, every - latencies[-1]))
    return latencies


def test_held_connections_and_a_refused_flood_leave_a_scraper_its_usual_latency(
    exporters: Exporters, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    """300 silent, 100 byte-trickling and 100 idle kept-alive connections from an allowed
    address, and a flood of connections from a refused one: a normal scraper keeps getting
    valid answers within its usual latency, every refused connection is counted and logged
    once, the held connections all stay open, and no thread is added for them."""
    config = '[web]\nallow = ["127.0.0.1/32"]\nmax_connections = 1000\nrequest_timeout = "60s"\n'
    exporter = exporters(tmp_path, config, "--demo").start(ready=True)
    attack: subprocess.Popen[str] | None = None
    try:
        usual = _timed_scrapes(exporter, 100, every=0.03)
        before = exporter.stats()
        attack = subprocess.Popen(
            [sys.executable, str(unwelcome_clients.__file__), str(exporter.port),
             "--idle", "300", "--trickle", "100", "--kept", "100",
             "--flood-from", "127.0.0.2", "--rate", str(FLOOD_RATE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert attack.stdin is not None
        assert attack.stdout is not None
        assert attack.stdout.readline() == "ready\n"
        under_attack = _timed_scrapes(exporter, 100, every=0.03)
        held = exporter.stats()
        attack.stdin.close()
        report = json.loads(attack.stdout.readline())
        assert attack.wait(10) == 0
    finally:
        if attack is not None and attack.poll() is None:
            attack.kill()
    try:
        flood = report["flood"]
        assert flood >= FLOOD_RATE  # a second's worth at least
        wait_for(
            lambda: (
                value(exporter.scrape(), "tasks_exporter_allowlist_refused_connections_total")
                == flood
            ),
            timeout=5,
            what=f"{flood} refusals counted",
        )
        refusals = lines_matching(exporter.log(), "refused by allowlist")
        assert len(refusals) == 1
        assert "client=127.0.0.2" in refusals[0]
        assert report["closed"] == {"idle": 0, "trickle": 0, "kept": 0}
        assert held.threads == before.threads
        assert held.fds >= before.fds + 500
    finally:
        exporter.stop()
    p_usual, p_attack = percentiles(usual), percentiles(under_attack)
    figure(
        f"scraper alone: {describe(usual)}; beside 500 held connections and a flood of"
        f" {flood} refused connections: {describe(under_attack)}; exporter {before} before,"
        f" {held} while holding them"
    )
    assert p_attack["p50"] <= 3 * p_usual["p50"] + 5
    assert p_attack["p99"] <= 3 * p_usual["p99"] + 20
