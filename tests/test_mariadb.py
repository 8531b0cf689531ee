"""The exporter against a real, private MariaDB: counts, schedule and clear failures.

What it does when the database breaks is in test_robustness_faults.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pymysql
import pytest

from exporter.config import TasksConfig
from exporter.sources.mysql import MySQLSource
from testing.exporter_process import (
    NEVER_IMPORTED,
    Exporters,
    db_config,
    db_source_config,
    expected_counts,
    imports_while_serving,
    lines_matching,
    parse_metrics,
    run_cli,
    table_counts,
    task_counts,
    value,
    wait_for,
)
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb


@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_counts_equal_the_table(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB, via: str
) -> None:
    """Over TCP or the unix socket, /metrics shows exactly the table's counts per status."""
    exporter = exporters.on_db(tmp_path, tasks_db, via=via)
    try:
        samples = exporter.scrape()
        assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}
        assert value(samples, "tasks_exporter_up") == 1
    finally:
        assert exporter.stop() == 0


def test_the_first_scrape_answered_already_shows_the_counts(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """An exporter accepts its first connection only once the first collection has ended, so
    the first scrape (with socket activation, the one that started it) shows fresh counts."""
    # SLEEP() per row: the first collection takes about half a second.
    slow = db_config(
        tmp_path, tasks_db, interval="60s", timeout="3s", extra_tasks='filter = "SLEEP(0.05) = 0"'
    )
    exporter = exporters(tmp_path, slow).start(ready=False)  # waits for any answer at all
    try:
        samples = exporter.scrape()
        assert value(samples, "tasks_exporter_up") == 1
        assert task_counts(samples) == expected_counts(tasks_db)
    finally:
        exporter.stop()


def test_new_rows_are_visible_at_the_next_interval(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """Rows committed by the application show up within one interval, with no restart."""
    exporter = exporters.on_db(tmp_path, tasks_db, interval="1s", timeout="0.5s")
    try:
        tasks_db.insert("Pending", 4)
        tasks_db.insert("Retry", 2)
        started = time.monotonic()
        wait_for(
            lambda: exporter.counts() == expected_counts(tasks_db), timeout=5, what="new counts"
        )
        assert time.monotonic() - started < 1.5
        assert exporter.counts() == {"Success": 5, "Pending": 7, "Failed": 2, "Retry": 2}
    finally:
        exporter.stop()


def test_a_status_disappearing(exporters: Exporters, tmp_path: Path, tasks_db: TasksDB) -> None:
    """An extra status gone from the table disappears; an expected one stays, at 0."""
    tasks_db.insert("Retry", 1)
    exporter = exporters.on_db(tmp_path, tasks_db)
    try:
        assert exporter.counts()["Retry"] == 1
        tasks_db.server.execute(
            f"DELETE FROM {tasks_db.qualified_table} WHERE task_status IN ('Retry', 'Failed')"
        )
        wait_for(lambda: "Retry" not in exporter.counts(), timeout=5, what="Retry to vanish")
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 0}
    finally:
        exporter.stop()


def test_null_status_and_hostile_strings_come_out_exactly(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """NULL, quotes, backslashes, newlines, unicode and long values: valid exposition, exact."""
    tasks_db.server.execute(
        f"ALTER TABLE {tasks_db.qualified_table} MODIFY task_status VARCHAR(1000)"
    )
    hostile = [
        'quote"d',
        "back\\slash",
        "new\nline",
        "tab\tand\rcr",
        "ünïcødé ✓ 任务 🚀",
        "<script>alert(1)</script>",
        "x" * 1000,
        "",
        " padded ",
    ]
    for status in hostile:
        tasks_db.insert(status)
    tasks_db.insert(None, 2)
    exporter = exporters.on_db(tmp_path, tasks_db)
    try:
        assert exporter.counts() == expected_counts(tasks_db)
        assert exporter.counts()["NULL"] == 2
        for status in hostile:
            assert exporter.counts()[status] == 1, status
    finally:
        exporter.stop()


def test_too_many_statuses_are_folded_visibly(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """Beyond max_statuses, the rarest statuses fold into 'other', shown in a metric and a log."""
    for i in range(10):
        tasks_db.insert(f"junk-{i}", 1 + (i == 0))  # junk-0 is the most frequent
    exporter = exporters.on_db(tmp_path, tasks_db, extra_tasks="max_statuses = 6")
    try:
        samples = exporter.scrape()
        counts = task_counts(samples)
        assert len(counts) == 6
        assert counts["junk-0"] == 2
        assert counts["other"] == 8
        assert sum(counts.values()) == sum(table_counts(tasks_db).values())
        assert value(samples, "tasks_exporter_folded_statuses") == 8
        time.sleep(1.2)  # a few more collections: the folding is logged once, not per interval
        assert len(lines_matching(exporter.log(), "too many distinct statuses")) == 1
    finally:
        exporter.stop()


def test_schema_qualified_table_and_filter(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """table = schema.table and an operator's filter select exactly the rows SQL would."""
    exporter = exporters.on_db(
        tmp_path,
        tasks_db,
        extra_tasks=f'table = "{tasks_db.database}.tasks"\nfilter = "task_id > 3"',
    )
    try:
        rows = tasks_db.server.execute(
            f"SELECT task_status, COUNT(*) FROM {tasks_db.qualified_table}"
            " WHERE task_id > 3 GROUP BY task_status"
        )
        assert exporter.counts() == {"Success": 0, "Pending": 0, "Failed": 0, **dict(rows)}
    finally:
        exporter.stop()


def test_wrong_password_is_reported_once_and_never_shown(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A refused login: up=0, one log line with the server's reason, the password nowhere."""
    wrong = "not-the-password-4f9a"
    exporter = exporters.on_db(tmp_path, tasks_db, ready=False, password=wrong)
    try:
        wait_for(lambda: "collection failed" in exporter.log(), timeout=5, what="failure log")
        time.sleep(1.2)
        log = exporter.log()
        assert len(lines_matching(log, "collection failed")) == 1
        assert "Access denied" in log
        pages = [exporter.get(p).text for p in ("/metrics", "/", "/-/ready")]
        assert value(parse_metrics(pages[0]), "tasks_exporter_up") == 0
        assert exporter.process is not None
        proc = Path(f"/proc/{exporter.process.pid}")
        for text in (
            log,
            *pages,
            (proc / "cmdline").read_bytes().decode(),
            (proc / "environ").read_bytes().decode(),
        ):
            assert wrong not in text
            assert tasks_db.password not in text
    finally:
        exporter.stop()


def test_missing_table_is_a_clear_error(tmp_path: Path, tasks_db: TasksDB) -> None:
    """A table that does not exist makes --once fail naming it, with no traceback.

    A least-privilege user is told "command denied" rather than "doesn't exist": the server
    does not reveal which tables exist to users without a grant on them.
    """
    config = tmp_path / "c.toml"
    config.write_text(db_config(tmp_path, tasks_db, extra_tasks='table = "nope"'), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "collection failed" in result.stderr
    assert "`nope`" in result.stderr
    assert "doesn't exist" in result.stderr or "command denied" in result.stderr
    assert "Traceback" not in result.stderr


def test_once_prints_the_exposition(tmp_path: Path, tasks_db: TasksDB) -> None:
    """--once runs one collection, prints the metrics and exits 0: the installer's first check."""
    config = tmp_path / "c.toml"
    config.write_text(db_config(tmp_path, tasks_db), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert task_counts(parse_metrics(result.stdout)) == {"Success": 5, "Pending": 3, "Failed": 2}


def test_once_with_wrong_password_fails_with_the_reason(tmp_path: Path, tasks_db: TasksDB) -> None:
    """--once with a refused login exits 1 with the server's reason and not the password."""
    config = tmp_path / "c.toml"
    config.write_text(db_config(tmp_path, tasks_db, password="wrong-pw-77"), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "Access denied" in result.stderr
    assert "wrong-pw-77" not in result.stderr + result.stdout


def test_session_is_read_only(tasks_db: TasksDB) -> None:
    """Even a user allowed to write cannot write through the exporter's session settings."""
    tasks_db.server.execute(
        f"GRANT INSERT ON {tasks_db.qualified_table} TO '{tasks_db.user}'@'localhost'"
    )
    source = MySQLSource(db_source_config(tasks_db), TasksConfig(), timeout=2)
    try:
        assert {row.status: row.n for row in source.count()} == {
            "Success": 5,
            "Pending": 3,
            "Failed": 2,
        }
        conn = source._connect()
        with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="READ ONLY"):
            cur.execute(f"INSERT INTO {tasks_db.qualified_table} (task_status) VALUES ('x')")
    finally:
        source.close()


def test_serving_mysql_imports_only_what_it_uses(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """Serving a MySQL table over a socket, every format and the page, imports pymysql and
    prometheus_client, but neither sqlite3 nor the idna codec."""
    config = db_config(tmp_path, tasks_db, via="socket")
    imported = imports_while_serving(exporters(tmp_path, config))
    assert {"asyncio", "pymysql", "prometheus_client"} <= imported
    assert imported & (NEVER_IMPORTED | {"sqlite3"}) == set()
