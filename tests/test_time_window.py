"""Oldest task times, the counting window and kinds of tasks, against a real MariaDB.

Times are checked exactly, in a zone with daylight saving, across its change; the window with a
clock the test controls; the query plan with the server's own EXPLAIN.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from exporter.collect import CollectionLoop, Snapshot
from exporter.config import CollectionConfig, TasksConfig, Window
from exporter.log import Logger
from exporter.metrics.collectors import families
from exporter.sources.mysql import MySQLSource
from testing.exporter_process import Exporters, db_source_config, parse_metrics, value
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

PARIS = ZoneInfo("Europe/Paris")


def _at(text: str) -> float:
    """A Unix time from an ISO time with its offset."""
    return datetime.fromisoformat(text).timestamp()


# Paris springs forward on 2026-03-29 at 01:00 UTC (02:00 CET becomes 03:00 CEST): these rows are
# one real hour apart, but two hours apart on the wall clock.
BEFORE = _at("2026-03-29T00:30:00+00:00")  # 01:30 CET
AFTER = _at("2026-03-29T01:30:00+00:00")  # 03:30 CEST
LATER = _at("2026-03-29T08:00:00+00:00")  # 10:00 CEST
YESTERDAY = _at("2026-03-28T22:30:00+00:00")  # 23:30 CET on the 28th
COLUMNS = {"datetime": "at_dt", "timestamp": "at_ts", "epoch": "at_epoch"}


def _time_table(db: TasksDB, name: str = "timed") -> tuple[str, ...]:
    """A tasks table with the same times as DATETIME (Paris wall clock), TIMESTAMP and epoch."""
    table = f"`{db.database}`.`{name}`"
    db.server.execute(
        f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, task_status VARCHAR(20),"
        " task_queue VARCHAR(200), at_dt DATETIME NULL, at_ts TIMESTAMP NULL DEFAULT NULL,"
        " at_epoch BIGINT NULL)"
    )
    db.server.execute(
        f"GRANT SELECT ON {table} TO '{db.user}'@'localhost', '{db.user}'@'127.0.0.1'"
    )
    return (db.database, name)


def _insert(db: TasksDB, table: tuple[str, ...], status: str, when: float | None) -> None:
    wall = None if when is None else datetime.fromtimestamp(when, PARIS).replace(tzinfo=None)
    db.server.execute(
        f"INSERT INTO `{table[0]}`.`{table[1]}` (task_status, at_dt, at_ts, at_epoch)"
        " VALUES (%s, %s, FROM_UNIXTIME(%s), %s)",
        (status, wall, when, None if when is None else int(when)),
    )


def _loop(db: TasksDB, tasks: TasksConfig, clock: list[float]) -> CollectionLoop:
    source = MySQLSource(db_source_config(db), tasks, timeout=2)
    return CollectionLoop(
        source,
        tasks,
        CollectionConfig(interval=1, timeout=0.5, staleness=10**9),
        logger=Logger("test"),
        clock=lambda: clock[0],
    )


def _oldest_samples(snapshot: Snapshot, now: float) -> dict[str, float]:
    return {
        sample.labels["status"]: sample.value
        for family in families(snapshot, now, "test")
        if family.name == "tasks_exporter_oldest_task_timestamp_seconds"
        for sample in family.samples
    }


@pytest.fixture
def skewed_tasks_db(private_tasks_db: TasksDB) -> TasksDB:
    """A tasks database on a server whose own time zone is neither UTC nor Paris."""
    private_tasks_db.server.execute("SET GLOBAL time_zone = '+05:00'")
    return private_tasks_db


@pytest.mark.parametrize("kind", ["datetime", "timestamp", "epoch"])
def test_oldest_times_are_exact_across_a_daylight_saving_change(
    skewed_tasks_db: TasksDB, kind: str
) -> None:
    """DATETIME (read in Europe/Paris), TIMESTAMP and epoch columns give the same, exact oldest
    time per status across the spring change, whatever the server's zone; NULL times are
    ignored and a status with no time has no series."""
    db = skewed_tasks_db
    table = _time_table(db)
    for status, when in [
        ("Pending", AFTER),
        ("Pending", BEFORE),
        ("Success", LATER),
        ("Success", AFTER),
        ("Success", None),
        ("Failed", None),
    ]:
        _insert(db, table, status, when)
    tasks = TasksConfig(table=table, time_column=COLUMNS[kind], time_zone="Europe/Paris")
    loop = _loop(db, tasks, [LATER])
    try:
        snapshot = loop.collect_once()
    finally:
        loop.stop()
    assert snapshot.up, snapshot.error
    assert snapshot.oldest == (("Success", AFTER), ("Pending", BEFORE))
    assert AFTER - BEFORE == 3600
    assert _oldest_samples(snapshot, LATER) == {"Success": AFTER, "Pending": BEFORE}
    assert dict(snapshot.counts or ()) == {"Success": 3, "Pending": 2, "Failed": 1}


@pytest.mark.parametrize("kind", ["datetime", "timestamp", "epoch"])
def test_today_switches_at_local_midnight(skewed_tasks_db: TasksDB, kind: str) -> None:
    """window = "today" counts the rows since local midnight in time_zone, and starts afresh at
    the next local midnight, on a day that is 23 hours long."""
    db = skewed_tasks_db
    table = _time_table(db)
    for status, when in [
        ("Success", YESTERDAY),
        ("Pending", BEFORE),
        ("Success", AFTER),
        ("Failed", LATER),
    ]:
        _insert(db, table, status, when)
    _insert(db, table, "Pending", _at("2026-03-30T00:10:00+02:00"))  # ten past midnight, the 30th
    tasks = TasksConfig(
        table=table,
        time_column=COLUMNS[kind],
        time_column_type=kind,
        time_zone="Europe/Paris",
        window=Window(today=True),
    )
    clock = [_at("2026-03-29T23:59:59+02:00")]
    loop = _loop(db, tasks, clock)
    try:
        late = loop.collect_once()
        clock[0] = _at("2026-03-30T00:00:01+02:00")
        next_day = loop.collect_once()
    finally:
        loop.stop()
    assert late.window_start == _at("2026-03-29T00:00:00+01:00")
    assert dict(late.counts or ()) == {"Success": 1, "Pending": 1, "Failed": 1}
    assert late.oldest == (("Success", AFTER), ("Pending", BEFORE), ("Failed", LATER))
    assert next_day.window_start == _at("2026-03-30T00:00:00+02:00")
    assert dict(next_day.counts or ()) == {"Success": 0, "Pending": 1, "Failed": 0}
    samples = {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in families(next_day, clock[0], "test")
    }
    assert samples["tasks_exporter_window_start_timestamp_seconds"] == [
        ({}, _at("2026-03-30T00:00:00+02:00"))
    ]


def test_a_rolling_window_counts_the_last_hours(tasks_db: TasksDB) -> None:
    """window = "24h" counts the rows of the last 24 hours, moving with the clock."""
    table = _time_table(tasks_db)
    for status, when in [("Success", 1000.0), ("Pending", 90_000.0), ("Failed", 100_000.0)]:
        _insert(tasks_db, table, status, when)
    tasks = TasksConfig(
        table=table, time_column="at_epoch", window=Window(seconds=86400), time_zone="UTC"
    )
    clock = [100_000.0]
    loop = _loop(tasks_db, tasks, clock)
    try:
        first = loop.collect_once()
        clock[0] = 177_000.0
        later = loop.collect_once()
    finally:
        loop.stop()
    assert dict(first.counts or ()) == {"Success": 0, "Pending": 1, "Failed": 1}
    assert first.window_start == 100_000.0 - 86400
    assert dict(later.counts or ()) == {"Success": 0, "Pending": 0, "Failed": 1}


def test_the_window_query_uses_the_index(tasks_db: TasksDB) -> None:
    """With the index the exporter suggests, EXPLAIN shows a range scan over the window on that
    index, not a scan of the table, and the plan metric says the query is indexed."""
    table = _time_table(tasks_db)
    tasks_db.server.execute(
        f"INSERT INTO `{table[0]}`.`{table[1]}` (task_status, at_epoch)"
        " SELECT ELT(1 + seq % 3, 'Success', 'Pending', 'Failed'), seq"
        f" FROM `{table[0]}`.seq_1_to_20000"
    )
    tasks = TasksConfig(table=table, time_column="at_epoch", window=Window(seconds=100))
    statement = (
        f"CREATE INDEX `tasks_exporter_window` ON `{table[0]}`.`{table[1]}`"
        " (`at_epoch`, `task_status`)"
    )
    tasks_db.server.execute(statement)
    tasks_db.server.execute(f"ANALYZE TABLE `{table[0]}`.`{table[1]}`")
    loop = _loop(tasks_db, tasks, [20_000.0])
    try:
        snapshot = loop.collect_once()
    finally:
        loop.stop()
    assert dict(snapshot.counts or ()) == {"Success": 33, "Pending": 34, "Failed": 34}  # 101 rows
    assert snapshot.plan is not None
    assert snapshot.plan.create_index == statement
    assert snapshot.plan.access == "range"
    assert snapshot.plan.estimated_rows < 1000
    assert not snapshot.plan.unindexed
    # The server's own word, on the query as an application would write it:
    plan = tasks_db.server.execute(
        f"EXPLAIN SELECT task_status, COUNT(*), MIN(at_epoch) FROM `{table[0]}`.`{table[1]}`"
        " WHERE at_epoch >= 19900.0 GROUP BY task_status"
    )
    assert plan[0][3] == "range"
    assert plan[0][5] == "tasks_exporter_window"


def _kinds_table(db: TasksDB) -> tuple[str, ...]:
    return _time_table(db, "kinds")


def test_kinds_are_labelled_capped_and_zero_filled(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """label_columns adds a label per kind; beyond max_kinds the rarest kinds are summed under
    "other"; every kind with tasks shows every expected status, 0 when absent."""
    table = _kinds_table(tasks_db)
    rows = [("email", "Success", 5), ("email", "Pending", 2), ("billing", "Failed", 4)]
    rows += [(f"rare{i}", "Pending", 1) for i in range(3)] + [("rare3", "Retry", 1)]
    for queue, status, n in rows:
        tasks_db.server.executemany(
            f"INSERT INTO `{table[0]}`.`{table[1]}` (task_status, task_queue, at_epoch)"
            " VALUES (%s, %s, %s)",
            [(status, queue, 1000 + i) for i in range(n)],
        )
    exporter = exporters.on_db(
        tmp_path,
        tasks_db,
        extra_tasks=(
            f'table = "{table[0]}.{table[1]}"\ntime_column = "at_epoch"\nmax_kinds = 3\n'
            'label_columns = { queue = "task_queue" }'
        ),
    )
    try:
        samples = exporter.scrape()
    finally:
        exporter.stop()
    tasks = {
        (dict(labels)["queue"], dict(labels)["status"]): int(v)
        for (name, labels), v in samples.items()
        if name == "tasks_exporter_tasks"
    }
    assert tasks == {
        ("email", "Success"): 5,
        ("email", "Pending"): 2,
        ("email", "Failed"): 0,
        ("billing", "Success"): 0,
        ("billing", "Pending"): 0,
        ("billing", "Failed"): 4,
        ("other", "Success"): 0,
        ("other", "Pending"): 3,
        ("other", "Failed"): 0,
        ("other", "Retry"): 1,
    }
    assert value(samples, "tasks_exporter_folded_kinds") == 4
    oldest = value(
        samples, "tasks_exporter_oldest_task_timestamp_seconds", queue="other", status="Pending"
    )
    assert oldest == 1000
    assert "too many kinds of tasks" in exporter.log()


def test_hostile_values_in_label_columns_come_out_exactly(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """Quotes, backslashes, newlines, unicode, markup, empty and NULL kinds: valid exposition,
    each value exactly as stored (NULL as null_status)."""
    table = _kinds_table(tasks_db)
    hostile = [
        'quote"d',
        "back\\slash",
        "new\nline",
        "ünïcødé ✓ 任务 🚀",
        "<b>x</b>",
        "",
        "x" * 200,
    ]
    tasks_db.server.executemany(
        f"INSERT INTO `{table[0]}`.`{table[1]}` (task_status, task_queue) VALUES ('Pending', %s)",
        [(q,) for q in [*hostile, None]],
    )
    exporter = exporters.on_db(
        tmp_path,
        tasks_db,
        extra_tasks=f'table = "{table[0]}.{table[1]}"\nlabel_columns = {{ queue = "task_queue" }}',
    )
    try:
        text = exporter.get("/metrics").text
    finally:
        exporter.stop()
    samples = parse_metrics(text)
    pending = {
        dict(labels).get("queue", ""): int(v)
        for (name, labels), v in samples.items()
        if name == "tasks_exporter_tasks" and dict(labels)["status"] == "Pending"
    }
    assert pending == {**dict.fromkeys(hostile, 1), "NULL": 1}


def test_an_unknown_time_column_type_is_a_clear_failure(tasks_db: TasksDB) -> None:
    """A time_column that is text on MySQL, type "auto": the collection fails saying what to set."""
    tasks = TasksConfig(
        table=(tasks_db.database, tasks_db.table), time_column="task_title", time_zone="UTC"
    )
    loop = _loop(tasks_db, tasks, [0.0])
    try:
        snapshot = loop.collect_once()
    finally:
        loop.stop()
    assert not snapshot.up
    assert "time_column_type" in (snapshot.error or "")


def test_the_session_zone_is_utc_whatever_the_server_says(skewed_tasks_db: TasksDB) -> None:
    """The exporter's session reads TIMESTAMPs in UTC even when the server's zone is +05:00."""
    source = MySQLSource(db_source_config(skewed_tasks_db), TasksConfig(), timeout=2)
    try:
        source.count()
        conn = source._connect()
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@session.time_zone, @@global.time_zone")
            assert cursor.fetchone() == ("+00:00", "+05:00")
    finally:
        source.close()
    assert datetime.fromtimestamp(0, UTC).year == 1970


def test_a_filter_with_percent_signs_works_beside_the_window(tasks_db: TasksDB) -> None:
    """A trusted filter using LIKE 'P%' still means what it says when the window's bounds are
    passed as parameters (PyMySQL would otherwise read its % as one)."""
    table = _time_table(tasks_db)
    for status, when in [("Pending", 500.0), ("Paused", 600.0), ("Success", 700.0)]:
        _insert(tasks_db, table, status, when)
    tasks = TasksConfig(
        table=table,
        time_column="at_epoch",
        window=Window(seconds=1000),
        filter="task_status LIKE 'P%' AND task_status NOT LIKE '%d'",
    )
    loop = _loop(tasks_db, tasks, [1000.0])
    try:
        snapshot = loop.collect_once()
    finally:
        loop.stop()
    assert snapshot.up, snapshot.error
    assert dict(snapshot.counts or ()) == {"Success": 0, "Pending": 1, "Failed": 0}
