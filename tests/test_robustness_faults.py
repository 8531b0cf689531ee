"""Robustness: the database broken on purpose in every way operators fear.

Each fault runs against a private MariaDB and ends with the exporter serving correct counts
again, without a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import TasksDB
from support import (
    collections,
    db_exporter,
    expected_counts,
    exporter_connections,
    lines_matching,
    task_counts,
    value,
    wait_for,
    wait_up,
)

pytestmark = [pytest.mark.robustness, pytest.mark.mariadb]


def test_database_down_at_start_then_up(tmp_path: Path, private_tasks_db: TasksDB) -> None:
    """Started while the database is down: up=0 and not ready; it recovers by itself."""
    db = private_tasks_db
    db.server.stop()
    exporter = db_exporter(tmp_path, db, ready=False)
    try:
        wait_for(lambda: "collection failed" in exporter.log(), timeout=5, what="failure log")
        samples = exporter.scrape()
        assert value(samples, "tasks_exporter_up") == 0
        assert task_counts(samples) == {}
        ready = exporter.get("/-/ready")
        assert ready.status == 503
        assert "no successful collection yet" in ready.text
        assert "Can't connect" in exporter.log() or "cannot connect" in exporter.log()
        db.server.start()
        exporter.wait_ready(timeout=10)
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        assert len(lines_matching(exporter.log(), "collection failed")) == 1
    finally:
        exporter.stop()


def test_restart_keeps_counts_until_stale_then_recovers(
    tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """Database stopped: up=0, counts kept for the staleness window, then dropped; then back."""
    db = private_tasks_db
    exporter = db_exporter(tmp_path, db, staleness="2s")
    try:
        db.server.stop()
        stopped = time.monotonic()
        wait_up(exporter, 0, timeout=5)
        if time.monotonic() - stopped < 1.0:
            assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        wait_for(lambda: exporter.counts() == {}, timeout=6, what="counts dropped when stale")
        assert time.monotonic() - stopped >= 1.4  # last success (< 0.5 s before the stop) + 2 s
        assert exporter.get("/-/ready").status == 503
        assert "Data is stale." in exporter.get("/").text
        db.server.start()
        db.insert("Failed", 1)
        wait_for(lambda: exporter.counts() == expected_counts(db), timeout=10, what="recovery")
        assert exporter.get("/-/ready").status == 200
        log = exporter.log()
        assert len(lines_matching(log, "collection failed")) <= 2  # once per change, not per try
        assert len(lines_matching(log, "collection succeeded")) == 2
    finally:
        exporter.stop()


def test_killed_connection_is_replaced_without_a_failed_collection(
    tmp_path: Path, tasks_db: TasksDB
) -> None:
    """KILLing the exporter's connection server-side, repeatedly: it reconnects, counts stay."""
    exporter = db_exporter(tmp_path, tasks_db)
    try:
        seen: set[int] = set()
        for _ in range(5):
            (conn_id,) = wait_for(lambda: exporter_connections(tasks_db), timeout=5, what="conn")
            assert conn_id not in seen
            seen.add(conn_id)
            tasks_db.server.execute(f"KILL CONNECTION {conn_id}")
            wait_for(
                lambda: (ids := exporter_connections(tasks_db)) and ids[0] not in seen,
                timeout=5,
                what="a fresh connection",
            )
        samples = exporter.scrape()
        assert value(samples, "tasks_exporter_up") == 1
        assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}
        assert value(samples, "tasks_exporter_collections_total", result="error") == 0
    finally:
        exporter.stop()


def test_locked_table_times_out_while_scrapes_stay_fast(tmp_path: Path, tasks_db: TasksDB) -> None:
    """A table locked by another session: the query is cut off at the timeout, scrapes stay
    fast, there is never more than one exporter connection, and it recovers on unlock."""
    exporter = db_exporter(tmp_path, tasks_db, interval="2s", timeout="1s")
    locker = tasks_db.server.connect(database=tasks_db.database)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES tasks WRITE")
        wait_for(
            lambda: collections(exporter, "timeout") >= 3,
            timeout=12,
            what="three timed-out collections",
        )
        for _ in range(20):
            started = time.monotonic()
            samples = exporter.scrape()
            assert time.monotonic() - started < 0.2
            assert len(exporter_connections(tasks_db)) <= 1
        assert value(samples, "tasks_exporter_up") == 0
        duration = value(samples, "tasks_exporter_collection_duration_seconds")
        assert duration is not None
        assert 0.9 <= duration <= 1.6
        assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}  # not stale yet
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        wait_up(exporter, 1, timeout=5)
        (failure,) = lines_matching(exporter.log(), "collection failed")  # 3 timeouts, 1 line
        assert "result=timeout" in failure
    finally:
        locker.close()
        exporter.stop()


def test_slow_query_is_cut_off_by_the_server(tmp_path: Path, tasks_db: TasksDB) -> None:
    """A query slower than the timeout is killed server-side, not left running."""
    exporter = db_exporter(
        tmp_path,
        tasks_db,
        ready=False,
        interval="3s",
        timeout="1s",
        extra_tasks='filter = "SLEEP(0.4) = 0"',  # 10 rows x 0.4 s: far beyond the timeout
    )
    try:
        wait_for(
            lambda: collections(exporter, "timeout"),
            timeout=6,
            what="a timed-out collection",
        )
        samples = exporter.scrape()
        duration = value(samples, "tasks_exporter_collection_duration_seconds")
        assert duration is not None
        assert 0.9 <= duration < 1.5
        assert "max_statement_time" in exporter.log() or "timeout" in exporter.log()
        running = tasks_db.server.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE user = %s AND command = 'Query'",
            (tasks_db.user,),
        )
        assert running == [(0,)]  # nothing left running on the server
    finally:
        exporter.stop()


def test_frozen_server_is_cut_off_by_the_client_timeout(
    tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """A server that stops answering (SIGSTOP): the client timeout fires, scrapes stay fast,
    and collections recover once it answers again."""
    db = private_tasks_db
    exporter = db_exporter(tmp_path, db, interval="2s", timeout="1s")
    db.server.pause()
    try:
        wait_up(exporter, 0, timeout=8)
        for _ in range(10):
            started = time.monotonic()
            exporter.scrape()
            assert time.monotonic() - started < 0.2
        duration = value(exporter.scrape(), "tasks_exporter_collection_duration_seconds")
        assert duration is not None
        assert duration < 2.0
    finally:
        db.server.resume()
    try:
        wait_up(exporter, 1, timeout=10)
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    ("breaks", "heals", "reason"),
    [
        (
            "REVOKE SELECT ON {table} FROM {user}",
            "GRANT SELECT ON {table} TO {user}",
            "command denied",
        ),
        (
            # The grant is on the name, which is free once the table is renamed away.
            "RENAME TABLE {table} TO {db}.tasks_old",
            "RENAME TABLE {db}.tasks_old TO {table}",
            "doesn't exist",
        ),
    ],
    ids=["grant revoked", "table renamed"],
)
def test_broken_then_healed_without_restart(
    tmp_path: Path, tasks_db: TasksDB, breaks: str, heals: str, reason: str
) -> None:
    """Grant revoked or table renamed away: the failure is logged once per reason, not per
    interval; put right, the counts return without a restart."""
    exporter = db_exporter(tmp_path, tasks_db)
    names = {
        "table": tasks_db.qualified_table,
        "db": f"`{tasks_db.database}`",
        "user": f"'{tasks_db.user}'@'127.0.0.1'",
    }
    try:
        tasks_db.server.execute(breaks.format(**names))
        wait_up(exporter, 0, timeout=5)
        time.sleep(1.0)
        failures = lines_matching(exporter.log(), "collection failed")
        assert reason in failures[0]
        # A revoked grant fails first on the kept connection, then differently on a fresh
        # one (1044, no access to the database): each new reason once, then silence.
        assert len(failures) <= 2
        time.sleep(1.5)  # three more failed collections
        assert lines_matching(exporter.log(), "collection failed") == failures
        tasks_db.server.execute(heals.format(**names))
        wait_up(exporter, 1, timeout=5)
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
    finally:
        exporter.stop()
