"""End to end, all real and on loopback: a private MariaDB with the seed table, the exporter, and
a Prometheus server scraping it with the example configuration and loading the alert rules;
then every query of the Grafana dashboard against what Prometheus stored."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.exporter_process import Exporter, Exporters, mysql_config, wait_for, write_secret
from testing.grafana_dashboard import Query, interpolate, load, queries
from testing.prometheus_example import JOB, Prometheus, example_config
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

INTERVAL = 1.0  # the exporter's collection interval, and Prometheus's scrape and rule interval
STALENESS = 3.0  # the exporter drops its counts after this long without a successful collection
# Grafana's $__rate_interval: max(4 x scrape interval, step + scrape interval), step 1 s here.
RATE_INTERVAL = "4s"
# Slack on top of "one interval plus one scrape" for the query loop and a loaded 2-core machine.
FOLLOW_SLACK = 1.0
# The seed's Pending tasks wait in the queue "reports" since this long; the rest are "email".
WAITING = 7200
# An age computed by PromQL's time() against the table's times: scrape and query delays.
AGE_SLACK = 5.0


@dataclass
class Stack:
    db: TasksDB
    exporter: Exporter
    prometheus: Prometheus

    @property
    def target(self) -> str:
        return f"{self.exporter.host}:{self.exporter.port}"

    def table(self) -> dict[str, int]:
        """The true counts per status, labelled as the exporter labels them."""
        return {"NULL" if s is None else s: n for s, n in self.db.rows().items()}

    def stored(self) -> dict[str, int]:
        """The counts per status Prometheus holds now (summed over the kinds)."""
        result = self.prometheus.query(f'sum by (status) (tasks_exporter_tasks{{job="{JOB}"}})')
        return {r["metric"]["status"]: int(float(r["value"][1])) for r in result}

    def kinds(self) -> dict[tuple[str, str], int]:
        """The true number of rows per (queue, status)."""
        rows = self.db.server.execute(
            f"SELECT task_queue, task_status, COUNT(*) FROM {self.db.qualified_table}"
            " GROUP BY task_queue, task_status"
        )
        return {(q, "NULL" if s is None else s): int(n) for q, s, n in rows}

    def oldest(self) -> dict[tuple[str, str], float]:
        """The true oldest created_at per (queue, status), in Unix seconds."""
        rows = self.db.server.execute(
            f"SELECT task_queue, task_status, MIN(UNIX_TIMESTAMP(created_at))"
            f" FROM {self.db.qualified_table} GROUP BY task_queue, task_status"
        )
        return {(q, "NULL" if s is None else s): float(t) for q, s, t in rows}


@pytest.fixture
def stack(exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB) -> Iterator[Stack]:
    db = private_tasks_db
    # A creation time and a kind: the seed's Pending tasks wait in "reports" since two hours.
    db.server.execute(
        f"ALTER TABLE {db.qualified_table}"
        " ADD COLUMN created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
        " ADD COLUMN task_queue VARCHAR(20) NOT NULL DEFAULT 'email'"
    )
    db.server.execute(
        f"UPDATE {db.qualified_table} SET task_queue = 'reports',"
        f" created_at = NOW() - INTERVAL {WAITING} SECOND WHERE task_status = 'Pending'"
    )
    config = mysql_config(
        socket_path=db.server.socket,
        user=db.user,
        database=db.database,
        password_file=write_secret(tmp_path / "password", db.password),
        interval=f"{INTERVAL:g}s",
        timeout="0.5s",
        staleness=f"{STALENESS:g}s",
        extra_tasks='time_column = "created_at"\nlabel_columns = { queue = "task_queue" }',
    )
    exporter = exporters(tmp_path / "exporter", config).start(ready=True)
    try:
        target = f"{exporter.host}:{exporter.port}"
        prometheus = Prometheus(tmp_path / "prometheus", example_config(target, INTERVAL))
        prometheus.start()
        try:
            yield Stack(db, exporter, prometheus)
        finally:
            prometheus.stop()
    finally:
        exporter.stop()


def _values(result: list[dict[str, Any]]) -> list[float]:
    """Every sample value of an instant or range query result."""
    samples = [pair for r in result for pair in (r["values"] if "values" in r else [r["value"]])]
    return [float(v) for _, v in samples]


def _run(stack: Stack, query: Query, *, concrete: bool) -> list[dict[str, Any]]:
    """A panel's query as Grafana runs it: All selected, or this job and instance selected."""
    expr = interpolate(
        query.expr,
        job=[JOB] if concrete else None,
        instance=[stack.target] if concrete else None,
        rate_interval=RATE_INTERVAL,
    )
    if query.instant:
        return stack.prometheus.query(expr)
    return stack.prometheus.query_range(expr, seconds=30, step=INTERVAL)


def _panel(title: str) -> Query:
    (query,) = [q for q in queries(load()) if q.panel == title]
    return query


def _now(stack: Stack, title: str) -> list[float]:
    """The current values of a panel's query (the last point of each series)."""
    query = _panel(title)
    return [
        float(r["value"][1])
        for r in stack.prometheus.query(
            interpolate(query.expr, job=None, instance=None, rate_interval=RATE_INTERVAL)
        )
    ]


def _alert_expr(stack: Stack, name: str) -> str:
    """An alert's expression as the running Prometheus loaded it from the rules file."""
    groups = stack.prometheus.api("rules", type="alert")["groups"]
    (expr,) = [r["query"] for g in groups for r in g["rules"] if r["name"] == name]
    return str(expr)


def _alert_state(stack: Stack, name: str) -> set[str]:
    alerts = stack.prometheus.api("alerts")["alerts"]
    return {a["state"] for a in alerts if a["labels"]["alertname"] == name}


def _follow_a_change(stack: Stack) -> None:
    """Change the table; Prometheus must hold the new counts within an interval and a scrape."""
    stack.db.insert("Pending", 4)
    stack.db.insert("Retry", 2)
    stack.db.server.execute(
        f"UPDATE {stack.db.qualified_table} SET task_status = 'Success'"
        " WHERE task_status = 'Failed'"
    )
    changed = time.monotonic()
    expected = stack.table()
    assert expected == {"Success": 7, "Pending": 7, "Retry": 2}
    wait_for(lambda: stack.stored() == {**expected, "Failed": 0}, timeout=10, what="new counts")
    elapsed = time.monotonic() - changed
    print(f"Prometheus followed the table in {elapsed:.2f} s")
    assert elapsed <= INTERVAL + INTERVAL + FOLLOW_SLACK


def _dashboard_shows_the_table(stack: Stack) -> None:
    """Every variable finds this job and instance; every panel's query returns data, with All
    or with them selected; the figures are the table's."""
    dashboard = load()
    for variable in dashboard["templating"]["list"][1:]:
        selector, label = re.fullmatch(
            r"label_values\((.*), (\w+)\)", variable["query"]["query"]
        ).groups()  # type: ignore[union-attr]
        selector = interpolate(selector, job=None, instance=None, rate_interval=RATE_INTERVAL)
        values = stack.prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert values == [{"job": JOB, "instance": stack.target}[label]]
    for query in queries(dashboard):
        for concrete in (False, True):
            result = _run(stack, query, concrete=concrete)
            assert result, f"{query.panel}: no data (concrete={concrete}) for {query.expr}"
            assert not any(map(math.isnan, _values(result))), f"{query.panel}: NaN"
    table = stack.table()
    total = sum(table.values())
    assert sorted(_now(stack, "Tasks per status")) == sorted([*table.values(), 0])  # Failed: 0
    assert _now(stack, "Total tasks") == [total]
    assert _now(stack, "Completed") == [pytest.approx(table["Success"] / total)]
    assert _now(stack, "Exporter reachable") == [1]
    assert _now(stack, "Database readable") == [1]
    assert _now(stack, "Age of the counts")[0] < 2 * INTERVAL + 1
    assert _now(stack, "Failed attempts to count the tasks, per minute") == [0, 0]
    _dashboard_shows_ages_and_kinds(stack)
    _dashboard_shows_the_query_load(stack)


def _by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in result}


def _panel_now(stack: Stack, title: str) -> list[dict[str, Any]]:
    query = _panel(title)
    expr = interpolate(query.expr, job=None, instance=None, rate_interval=RATE_INTERVAL)
    return stack.prometheus.query(expr)


def _dashboard_shows_ages_and_kinds(stack: Stack) -> None:
    """The new row's panels show the table's ages, failed share and kinds."""
    now = time.time()
    oldest = stack.oldest()
    pending = min(t for (_, s), t in oldest.items() if s == "Pending")
    (waited,) = _now(stack, "Oldest Pending task has waited")
    assert now - pending - AGE_SLACK <= waited <= now - pending + AGE_SLACK
    assert waited > WAITING - AGE_SLACK
    table = stack.table()
    (share,) = _now(stack, "Failed share of finished tasks")
    failed = table.get("Failed", 0)
    assert share == pytest.approx(failed / (table["Success"] + failed))
    per_status = _by(_panel_now(stack, "Age of the oldest task per status"), "status")
    assert per_status.keys() == {(status,) for status in table}
    for status in table:
        since = min(t for (_, s), t in oldest.items() if s == status)
        assert per_status[(status,)] == pytest.approx(now - since, abs=AGE_SLACK), status
    kinds = _by(_panel_now(stack, "Tasks per status and kind"), "queue", "status")
    expected = stack.kinds()
    # Every kind with tasks has every expected status, 0 when it has none of them.
    for queue in {q for q, _ in expected}:
        for status in ("Success", "Pending", "Failed"):
            expected.setdefault((queue, status), 0)
    assert kinds == {k: float(n) for k, n in expected.items()}
    ages = _by(_panel_now(stack, "Age of the oldest task per status and kind"), "queue", "status")
    assert ages.keys() == oldest.keys()
    for kind, since in oldest.items():
        assert ages[kind] == pytest.approx(now - since, abs=AGE_SLACK), kind


def _dashboard_shows_the_query_load(stack: Stack) -> None:
    """A fast query on a small indexed-or-not table: collections at the configured interval,
    no unindexed scan, an estimate of a few rows; the two load alerts' expressions are silent."""
    assert _now(stack, "Time between collections") == [INTERVAL]
    assert _now(stack, "Query reads the table without an index") == [0]
    (rows,) = _now(stack, "Rows the query reads (EXPLAIN estimate)")
    assert 0 < rows < 1000
    for name in ("TasksExporterQueryUnindexed", "TasksExporterCollectionsSpacedOut"):
        assert stack.prometheus.query(_alert_expr(stack, name)) == [], name


def _alerts_on_age_and_failures(stack: Stack) -> None:
    """The rules' expressions as Prometheus loaded them: the Pending tasks of "reports" are
    too old, and none of the others; many failures in a kind with enough finished tasks make
    the failure ratio fire for that kind only."""
    too_old = stack.prometheus.query(_alert_expr(stack, "TasksPendingTooOld"))
    assert [(r["metric"]["queue"], r["metric"]["status"]) for r in too_old] == [
        ("reports", "Pending")
    ]
    assert float(too_old[0]["value"][1]) > WAITING - AGE_SLACK
    ratio = _alert_expr(stack, "TasksFailureRatioHigh")
    assert stack.prometheus.query(ratio) == []  # too few finished tasks
    stack.db.server.executemany(
        f"INSERT INTO {stack.db.qualified_table} (task_title, task_status, task_queue)"
        " VALUES (%s, %s, 'billing')",
        [(f"Bill {i}", "Failed" if i < 6 else "Success") for i in range(24)],
    )
    fired = wait_for(lambda: stack.prometheus.query(ratio), timeout=10, what="the ratio")
    assert [r["metric"]["queue"] for r in fired] == ["billing"]
    assert float(fired[0]["value"][1]) == pytest.approx(6 / 24)


def _database_stops(stack: Stack) -> None:
    """Health panels turn at once, the staleness alert's expression after the window, and
    the counts vanish; the exporter itself stays reachable."""
    stale = _alert_expr(stack, "TasksDataStale")
    assert stack.prometheus.query(stale) == []
    stack.db.server.stop()
    wait_for(lambda: _now(stack, "Database readable") == [0], timeout=5, what="readable = No")
    assert max(_now(stack, "Failed attempts to count the tasks, per minute")) > 0
    assert _now(stack, "Exporter reachable") == [1]
    fired = wait_for(
        lambda: stack.prometheus.query(stale), timeout=STALENESS + 5, what="the stale expression"
    )
    assert [r["metric"]["instance"] for r in fired] == [stack.target]
    assert float(fired[0]["value"][1]) > STALENESS
    # The exporter drops its counts at the same age; Prometheus sees it at the next scrape.
    wait_for(lambda: _now(stack, "Tasks per status") == [], timeout=INTERVAL + 2, what="no counts")
    assert _now(stack, "Total tasks") == []
    assert _now(stack, "Age of the counts")[0] > STALENESS
    # Evaluated by the rule engine too: the alert is pending (its `for` is a minute).
    wait_for(
        lambda: _alert_state(stack, "TasksDataStale") == {"pending"},
        timeout=5,
        what="TasksDataStale pending",
    )


def _exporter_stops(stack: Stack) -> None:
    """The reachability panel and the down alert's expression turn."""
    down = _alert_expr(stack, "TasksExporterDown")
    assert stack.prometheus.query(down) == []
    stack.exporter.stop()
    wait_for(lambda: _now(stack, "Exporter reachable") == [0], timeout=5, what="unreachable")
    assert [r["metric"]["instance"] for r in stack.prometheus.query(down)] == [stack.target]


def test_prometheus_dashboard_and_alerts_follow_the_table_and_its_failures(stack: Stack) -> None:
    """Prometheus reports the exporter up and stores the table's counts, follows a change
    within one interval plus one scrape; every dashboard query returns the table's figures,
    ages and kinds included; the age and failure-ratio alerts' expressions pick the right kind;
    stopping the database turns the health panels and the staleness alert, stopping the
    exporter turns reachability and the down alert.

    One test, because Prometheus takes about 5 s to start scraping a new target."""
    wait_for(
        lambda: [t["health"] for t in stack.prometheus.api("targets")["activeTargets"]] == ["up"],
        timeout=15,
        what="Prometheus to report the exporter up",
    )
    up_since = time.monotonic()
    wait_for(lambda: stack.stored() == stack.table(), timeout=5, what="the seeded counts")
    _follow_a_change(stack)
    # Enough samples for the widest range a panel uses, as Grafana would have by now.
    time.sleep(max(0.0, float(RATE_INTERVAL.removesuffix("s")) - (time.monotonic() - up_since)))
    _dashboard_shows_the_table(stack)
    _alerts_on_age_and_failures(stack)
    _database_stops(stack)
    _exporter_stops(stack)
