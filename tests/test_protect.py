"""Protecting the database: the EXPLAIN warning, the load budget, and quick retries after a
connection error, against a real MariaDB."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.collect import CollectionLoop
from exporter.config import CollectionConfig, TasksConfig, Window
from exporter.log import Logger
from exporter.metrics.collectors import families
from exporter.sources.mysql import MySQLSource
from testing.exporter_process import (
    Exporters,
    collections,
    db_source_config,
    lines_matching,
    value,
    wait_for,
    wait_up,
)
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

WARNING = "the query scans a large table without an index that serves it"


def _gauge(loop: CollectionLoop, name: str) -> float | None:
    for family in families(loop.snapshot, time.time(), "test"):
        if family.name == name:
            return family.samples[0].value if family.samples else None
    raise KeyError(name)


def test_explain_warns_about_a_million_unindexed_rows_and_not_once_indexed(
    tasks_db: TasksDB, caplog: pytest.LogCaptureFixture
) -> None:
    """On a table of a million rows without a fitting index, one warning names a ready CREATE
    INDEX and the metric says 1; once that statement has run, the next connection's EXPLAIN
    finds the index and the metric says 0."""
    db = tasks_db
    table = f"`{db.database}`.`big`"
    db.server.execute(
        f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, task_status VARCHAR(20),"
        " created_at INT NOT NULL)"
    )
    db.server.execute(
        f"INSERT INTO {table} (task_status, created_at)"
        " SELECT ELT(1 + seq % 3, 'Success', 'Pending', 'Failed'), seq"
        f" FROM `{db.database}`.seq_1_to_1000000"
    )
    db.server.execute(f"GRANT SELECT ON {table} TO '{db.user}'@'localhost'")
    tasks = TasksConfig(
        table=(db.database, "big"), time_column="created_at", window=Window(seconds=3600)
    )
    source = MySQLSource(db_source_config(db), tasks, timeout=5, scan_warning_rows=100_000)
    loop = CollectionLoop(
        source,
        tasks,
        CollectionConfig(interval=10, timeout=5, staleness=60),
        logger=Logger("test.protect"),
        clock=lambda: 1_000_000.0,
    )
    caplog.set_level(logging.INFO, logger="test.protect")
    try:
        first = loop.collect_once()
        loop.collect_once()
        assert first.up, first.error
        assert dict(first.counts or ()) == {"Success": 1200, "Pending": 1201, "Failed": 1200}
        warnings = [r for r in caplog.records if r.getMessage().startswith(WARNING)]
        assert len(warnings) == 1  # once, not at every collection
        kv = warnings[0].__dict__["kv"]
        assert kv["estimated_rows"] > 900_000
        assert _gauge(loop, "tasks_exporter_query_unindexed") == 1
        assert (_gauge(loop, "tasks_exporter_query_estimated_rows") or 0) > 900_000
        statement = kv["create_index"]
        assert statement == (
            f"CREATE INDEX `tasks_exporter_window` ON {table} (`created_at`, `task_status`)"
        )
        db.server.execute(statement)
        source.close()  # a reconnect: the next collection EXPLAINs again
        indexed = loop.collect_once()
        assert indexed.plan is not None
        assert not indexed.plan.unindexed
        assert indexed.plan.access == "range"
        assert _gauge(loop, "tasks_exporter_query_unindexed") == 0
        assert any(r.getMessage() == "the query is now served by an index" for r in caplog.records)
        assert len([r for r in caplog.records if r.getMessage().startswith(WARNING)]) == 1
    finally:
        loop.stop()


def _slow_knob(db: TasksDB) -> str:
    """A table holding the seconds each row of the query sleeps, and a filter that reads it."""
    knob = f"`{db.database}`.`knob`"
    db.server.execute(f"CREATE TABLE {knob} (per_row DOUBLE NOT NULL)")
    db.server.execute(f"INSERT INTO {knob} VALUES (0)")
    db.server.execute(f"GRANT SELECT ON {knob} TO '{db.user}'@'localhost', '{db.user}'@'127.0.0.1'")
    return f"SLEEP((SELECT per_row FROM {knob})) = 0"


def test_a_slow_query_spaces_collections_out_and_they_recover(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB, figure: Callable[[str], None]
) -> None:
    """A query taking 0.3 s at a 0.5 s interval is spaced out to 0.3 / 0.25 = 1.2 s, said once
    in the log and in the effective interval metric; fast again, the interval is 0.5 s again."""
    sleep_filter = _slow_knob(tasks_db)
    exporter = exporters.on_db(
        tmp_path,
        tasks_db,
        interval="0.5s",
        timeout="0.45s",
        extra_tasks=f'filter = "{sleep_filter}"',
    )
    try:
        effective = "tasks_exporter_collection_effective_interval_seconds"
        assert value(exporter.scrape(), effective) == 0.5
        tasks_db.server.execute(f"UPDATE `{tasks_db.database}`.`knob` SET per_row = 0.03")
        stretched = wait_for(
            lambda: (v := value(exporter.scrape(), effective)) and v > 1.0 and v,
            timeout=10,
            what="a stretched interval",
        )
        assert 1.1 <= stretched <= 1.6  # 10 rows x 0.03 s / 0.25, with the host's jitter
        before = value(exporter.scrape(), "tasks_exporter_collections_total", result="success")
        time.sleep(3.6)
        after = value(exporter.scrape(), "tasks_exporter_collections_total", result="success")
        assert before is not None
        assert after is not None
        assert 2 <= after - before <= 4  # every ~1.2 s, not every 0.5 s (7)
        figure(
            f"0.3 s query at a 0.5 s interval: effective interval {stretched:g} s,"
            f" {after - before:g} collections in 3.6 s"
        )
        tasks_db.server.execute(f"UPDATE `{tasks_db.database}`.`knob` SET per_row = 0")
        wait_for(
            lambda: value(exporter.scrape(), effective) == 0.5, timeout=10, what="the interval"
        )
        log = exporter.log()
        assert len(lines_matching(log, "collections are spaced out to keep")) == 1
        assert len(lines_matching(log, "collections are back at the configured interval")) == 1
    finally:
        exporter.stop()


def test_counts_return_about_a_second_after_the_database_does(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB, figure: Callable[[str], None]
) -> None:
    """At a 5 s interval, after a connection error the exporter retries 1 s later: counts are
    back well before the next interval, with one attempt at a time."""
    db = private_tasks_db
    exporter = exporters.on_db(tmp_path, db, interval="5s", timeout="1s")
    try:
        db.server.stop()
        wait_up(exporter, 0, timeout=10)
        failed_at = time.monotonic()
        db.server.start()
        back_at = time.monotonic()
        wait_up(exporter, 1, timeout=10)
        recovered = time.monotonic()
        figure(
            f"database back {back_at - failed_at:.2f} s after the failed collection:"
            f" counts back {recovered - back_at:.2f} s later (interval 5 s)"
        )
        # The first retry comes 1 s after the failure; the second 2 s after that.
        assert recovered - failed_at < 3.5, (back_at - failed_at, recovered - back_at)
        assert recovered - back_at < 3.0
    finally:
        exporter.stop()


def test_a_query_longer_than_the_default_timeout_gets_counts_with_a_longer_timeout(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A query needing 1 s is cut off at a 0.5 s timeout, and the log says what it needed
    against what the timeout allowed; with timeout = "2s" (interval "3s") it gets counts."""
    sleep_filter = _slow_knob(tasks_db)
    tasks_db.server.execute(f"UPDATE `{tasks_db.database}`.`knob` SET per_row = 0.1")
    for workdir in ("short", "longer"):
        (tmp_path / workdir).mkdir()
    short = exporters.on_db(
        tmp_path / "short",
        tasks_db,
        ready=False,
        interval="1s",
        timeout="0.5s",
        extra_tasks=f'filter = "{sleep_filter}"',
    )
    try:
        wait_for(lambda: collections(short, "timeout") >= 1, timeout=10, what="a timeout")
        assert value(short.scrape(), "tasks_exporter_up") == 0
        (line,) = lines_matching(short.log(), "needs more than the timeout allows")
        assert "needed_seconds_at_least=0.5 timeout_seconds=0.5" in line
        assert "effective_interval_seconds=2" in line  # 0.5 s / 0.25
    finally:
        short.stop()
    longer = exporters.on_db(
        tmp_path / "longer",
        tasks_db,
        interval="3s",
        timeout="2s",
        extra_tasks=f'filter = "{sleep_filter}"',
    )
    try:
        samples = longer.scrape()
        assert value(samples, "tasks_exporter_up") == 1
        assert value(samples, "tasks_exporter_tasks", status="Success") == 5
    finally:
        longer.stop()
