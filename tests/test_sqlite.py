"""SQLite as a real task source, for applications that keep their tasks in SQLite."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from exporter.collect import CollectionLoop
from exporter.config import CollectionConfig, TasksConfig, Window
from exporter.log import Logger
from exporter.sources.demo import SCHEMA
from exporter.sources.sqlite import SQLiteSource
from testing.exporter_process import Exporters, parse_metrics, run_cli, value, wait_for
from testing.prometheus_server import promtool


def _database(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(SCHEMA)
        conn.executemany("INSERT INTO tasks (task_title, task_status) VALUES (?, ?)", rows)
    conn.close()
    return path


def _config(path: Path, tasks: str = "") -> str:
    return (
        f'[database]\ndriver = "sqlite"\npath = "{path}"\n'
        f'[collection]\ninterval = "0.5s"\ntimeout = "0.3s"\n[tasks]\n{tasks}\n'
    )


def test_counts_follow_an_application_sqlite_file(exporters: Exporters, tmp_path: Path) -> None:
    """A SQLite tasks table is counted like MySQL's, and changes show at the next interval."""
    db = _database(
        tmp_path / "app.db",
        [("a", "Success"), ("b", "Success"), ("c", "Pending"), ("d", None), ("e", "Retry")],
    )
    exporter = exporters(tmp_path, _config(db)).start(ready=True)
    try:
        assert exporter.counts() == {"Success": 2, "Pending": 1, "Failed": 0, "NULL": 1, "Retry": 1}
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE tasks SET task_status = 'Failed' WHERE task_status = 'Retry'")
        conn.close()
        wait_for(
            lambda: exporter.counts() == {"Success": 2, "Pending": 1, "Failed": 1, "NULL": 1},
            timeout=5,
            what="the update",
        )
    finally:
        exporter.stop()


def test_filter_and_schema_qualified_table(tmp_path: Path) -> None:
    """`main.tasks` and a filter work on SQLite as on MySQL."""
    db = _database(tmp_path / "app.db", [("a", "Success"), ("b", "Failed"), ("c", "Failed")])
    config = tmp_path / "c.toml"
    config.write_text(_config(db, 'table = "main.tasks"\nfilter = "task_id > 1"'), "utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'tasks_exporter_tasks{status="Failed"} 2.0' in result.stdout
    assert 'tasks_exporter_tasks{status="Success"} 0.0' in result.stdout


def test_missing_file_fails_clearly_then_recovers(exporters: Exporters, tmp_path: Path) -> None:
    """A database file that does not exist yet: up=0 with the reason; once created, counted."""
    db = tmp_path / "later.db"
    exporter = exporters(tmp_path, _config(db)).start()
    try:
        wait_for(lambda: "does not exist" in exporter.log(), timeout=5, what="the reason")
        assert value(exporter.scrape(), "tasks_exporter_up") == 0
        _database(db, [("a", "Pending")])
        wait_for(lambda: exporter.counts().get("Pending") == 1, timeout=5, what="recovery")
    finally:
        exporter.stop()


def test_the_exporter_never_writes_to_the_file(exporters: Exporters, tmp_path: Path) -> None:
    """The file is opened read-only: after collections its bytes and mtime are unchanged."""
    db = _database(tmp_path / "app.db", [("a", "Success")])
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    exporter = exporters(tmp_path, _config(db)).start(ready=True)
    try:
        wait_for(
            lambda: (
                (
                    value(exporter.scrape(), "tasks_exporter_collections_total", result="success")
                    or 0
                )
                >= 3
            ),
            timeout=5,
            what="three collections",
        )
    finally:
        exporter.stop()
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert not (tmp_path / "app.db-journal").exists()


def test_oldest_times_window_and_kinds_on_sqlite(tmp_path: Path) -> None:
    """On SQLite, epoch numbers, wall-clock text (read in time_zone) and UTC TIMESTAMP text give
    the same exact oldest times across Paris's spring change, and "today" switches at local
    midnight, per kind."""
    paris = ZoneInfo("Europe/Paris")

    def at(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    before, after = at("2026-03-29T00:30:00+00:00"), at("2026-03-29T01:30:00+00:00")
    rows = [
        ("Pending", "email", at("2026-03-28T23:30:00+01:00")),  # yesterday in Paris
        ("Pending", "email", before),
        ("Pending", "billing", after),
        ("Success", "email", after),
        ("Failed", None, None),
    ]
    path = tmp_path / "timed.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tasks (task_status TEXT, task_queue TEXT, at_epoch INTEGER,"
            " at_text DATETIME, at_utc TIMESTAMP)"
        )
        conn.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?)",
            [
                (
                    s,
                    q,
                    t,
                    None if t is None else datetime.fromtimestamp(t, paris).strftime("%F %T"),
                    None if t is None else datetime.fromtimestamp(t, UTC).strftime("%F %T"),
                )
                for s, q, t in rows
            ],
        )
    conn.close()
    for column in ("at_epoch", "at_text", "at_utc"):
        tasks = TasksConfig(
            time_column=column,
            time_zone="Europe/Paris",
            window=Window(today=True),
            label_columns=(("queue", "task_queue"),),
        )
        clock = [at("2026-03-29T23:59:00+02:00")]
        loop = CollectionLoop(
            SQLiteSource(path, tasks, timeout=1),
            tasks,
            CollectionConfig(interval=1, timeout=0.5, staleness=10**9),
            logger=Logger("test"),
            clock=lambda clock=clock: clock[0],  # type: ignore[misc]
        )
        try:
            today = loop.collect_once()
            clock[0] = at("2026-03-30T00:00:01+02:00")
            tomorrow = loop.collect_once()
        finally:
            loop.stop()
        assert today.oldest == (("Success", after), ("Pending", before)), column
        series = {(one.labels, one.status): one.count for one in today.series or ()}
        assert series[((("queue", "email"),), "Pending")] == 1, column
        assert series[((("queue", "billing"),), "Pending")] == 1, column
        assert dict(today.counts or ()) == {"Success": 1, "Pending": 2, "Failed": 0}, column
        assert dict(tomorrow.counts or ()) == {"Success": 0, "Pending": 0, "Failed": 0}, column
        assert tomorrow.series == (), column  # no kind has tasks today: no series at all


def test_promtool_lints_the_time_window_and_kind_metrics(
    exporters: Exporters, tmp_path: Path
) -> None:
    """With time_column, window and label_columns, a live scrape passes `promtool check metrics`
    and holds the oldest time per status and kind, the window start and the effective interval."""
    now = int(time.time())
    path = tmp_path / "kinds.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE tasks (task_status TEXT, task_queue TEXT, created_at INTEGER)")
        conn.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?)",
            [
                ("Pending", "email", now - 60),
                ("Pending", "billing", now - 30),
                ("Success", "email", now),
            ],
        )
    conn.close()
    tasks = 'time_column = "created_at"\nwindow = "1h"\nlabel_columns = { queue = "task_queue" }'
    exporter = exporters(tmp_path, _config(path, tasks)).start(ready=True)
    try:
        body = exporter.get("/metrics").body
    finally:
        exporter.stop()
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    samples = parse_metrics(body.decode())
    oldest = "tasks_exporter_oldest_task_timestamp_seconds"
    assert value(samples, oldest, queue="email", status="Pending") == now - 60
    assert value(samples, oldest, queue="billing", status="Pending") == now - 30
    assert value(samples, oldest, queue="billing", status="Success") is None  # no such task
    assert value(samples, "tasks_exporter_tasks", queue="billing", status="Success") == 0
    start = value(samples, "tasks_exporter_window_start_timestamp_seconds")
    assert start is not None
    assert now - 3600 - 5 <= start <= now - 3600 + 5
    assert value(samples, "tasks_exporter_collection_effective_interval_seconds") == 0.5
