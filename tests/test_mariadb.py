"""The exporter against a real, private MariaDB: counts, schedule, failures and recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pymysql
import pytest

from conftest import TasksDB
from exporter.config import DatabaseConfig, TasksConfig
from exporter.mysql import MySQLSource
from exporter.secret import Secret
from support import (
    NEVER_IMPORTED,
    Exporter,
    imports_while_serving,
    lines_matching,
    mysql_config,
    parse_metrics,
    run_cli,
    task_counts,
    value,
    wait_for,
    write_secret,
)

pytestmark = pytest.mark.mariadb


def _config(
    tmp_path: Path, db: TasksDB, *, via: str = "tcp", password: str | None = None, **kwargs: str
) -> str:
    secret = write_secret(tmp_path / "password", password if password is not None else db.password)
    return mysql_config(
        socket_path=db.server.socket if via == "socket" else None,
        port=db.server.port,
        user=db.user,
        database=db.database,
        password_file=secret,
        **kwargs,
    )


def _exporter(tmp_path: Path, db: TasksDB, *, ready: bool = True, **kwargs: str) -> Exporter:
    return Exporter(tmp_path, _config(tmp_path, db, **kwargs)).start(ready=ready)


def _table_counts(db: TasksDB) -> dict[str, int]:
    return {("NULL" if s is None else s): n for s, n in db.rows().items()}


def _expected(db: TasksDB) -> dict[str, int]:
    return {"Success": 0, "Pending": 0, "Failed": 0, **_table_counts(db)}


def _exporter_connections(db: TasksDB) -> list[int]:
    rows = db.server.execute(
        "SELECT id FROM information_schema.PROCESSLIST WHERE user = %s", (db.user,)
    )
    return [int(r[0]) for r in rows]


def _wait_up(exporter: Exporter, up: int, *, timeout: float) -> None:
    """Wait until tasks_exporter_up reads `up`."""
    wait_for(
        lambda: value(exporter.scrape(), "tasks_exporter_up") == up,
        timeout=timeout,
        what=f"tasks_exporter_up == {up}",
    )


def _timeouts(exporter: Exporter) -> float:
    return value(exporter.scrape(), "tasks_exporter_collections_total", result="timeout") or 0


def _successes(exporter: Exporter) -> float:
    return value(exporter.scrape(), "tasks_exporter_collections_total", result="success") or 0


@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_counts_equal_the_table(tmp_path: Path, tasks_db: TasksDB, via: str) -> None:
    """Over TCP or the unix socket, /metrics shows exactly the table's counts per status."""
    exporter = _exporter(tmp_path, tasks_db, via=via)
    try:
        samples = exporter.scrape()
        assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}
        assert value(samples, "tasks_exporter_up") == 1
    finally:
        assert exporter.stop() == 0


def test_new_rows_are_visible_at_the_next_interval(tmp_path: Path, tasks_db: TasksDB) -> None:
    """Rows committed by the application show up within one interval, with no restart."""
    exporter = _exporter(tmp_path, tasks_db, interval="1s", timeout="0.5s")
    try:
        tasks_db.insert("Pending", 4)
        tasks_db.insert("Retry", 2)
        started = time.monotonic()
        wait_for(lambda: exporter.counts() == _expected(tasks_db), timeout=5, what="new counts")
        assert time.monotonic() - started < 1.5
        assert exporter.counts() == {"Success": 5, "Pending": 7, "Failed": 2, "Retry": 2}
    finally:
        exporter.stop()


def test_a_status_disappearing(tmp_path: Path, tasks_db: TasksDB) -> None:
    """An extra status gone from the table disappears; an expected one stays, at 0."""
    tasks_db.insert("Retry", 1)
    exporter = _exporter(tmp_path, tasks_db)
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
    tmp_path: Path, tasks_db: TasksDB
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
    exporter = _exporter(tmp_path, tasks_db)
    try:
        assert exporter.counts() == _expected(tasks_db)
        assert exporter.counts()["NULL"] == 2
        for status in hostile:
            assert exporter.counts()[status] == 1, status
    finally:
        exporter.stop()


def test_too_many_statuses_are_folded_visibly(tmp_path: Path, tasks_db: TasksDB) -> None:
    """Beyond max_statuses, the rarest statuses fold into 'other', shown in a metric and a log."""
    for i in range(10):
        tasks_db.insert(f"junk-{i}", 1 + (i == 0))  # junk-0 is the most frequent
    exporter = _exporter(tmp_path, tasks_db, extra_tasks="max_statuses = 6")
    try:
        samples = exporter.scrape()
        counts = task_counts(samples)
        assert len(counts) == 6
        assert counts["junk-0"] == 2
        assert counts["other"] == 8
        assert sum(counts.values()) == sum(_table_counts(tasks_db).values())
        assert value(samples, "tasks_exporter_folded_statuses") == 8
        time.sleep(1.2)  # a few more collections: the folding is logged once, not per interval
        assert len(lines_matching(exporter.log(), "too many distinct statuses")) == 1
    finally:
        exporter.stop()


def test_schema_qualified_table_and_filter(tmp_path: Path, tasks_db: TasksDB) -> None:
    """table = schema.table and an operator's filter select exactly the rows SQL would."""
    exporter = _exporter(
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


def test_one_query_per_interval_however_many_scrapes(
    tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """Hundreds of concurrent scrapes cause no query: one SELECT per collection, no more."""
    db = private_tasks_db
    exporter = _exporter(tmp_path, db, interval="1s", timeout="0.5s")
    try:
        first = _successes(exporter)
        wait_for(lambda: _successes(exporter) > first, timeout=5, what="a collection")
        # Just after a collection: the next one is about a second away.
        before_selects, before_collections = db.server.status("Com_select"), _successes(exporter)
        errors: list[BaseException] = []

        def scrape(n: int) -> None:
            try:
                for _ in range(n):
                    assert exporter.get("/metrics").status == 200
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=scrape, args=(40,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.5)
        wait_for(lambda: exporter.get("/-/ready").status == 200, timeout=5, what="ready")
        after_collections = _successes(exporter)
        after_selects = db.server.status("Com_select")
        assert errors == []
        collections = after_collections - before_collections
        assert collections >= 1
        assert after_selects - before_selects == collections
    finally:
        exporter.stop()


def test_database_down_at_start_then_up(tmp_path: Path, private_tasks_db: TasksDB) -> None:
    """Started while the database is down: up=0 and not ready; it recovers by itself."""
    db = private_tasks_db
    db.server.stop()
    exporter = _exporter(tmp_path, db, ready=False)
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
    exporter = _exporter(tmp_path, db, staleness="2s")
    try:
        db.server.stop()
        stopped = time.monotonic()
        _wait_up(exporter, 0, timeout=5)
        if time.monotonic() - stopped < 1.0:
            assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        wait_for(lambda: exporter.counts() == {}, timeout=6, what="counts dropped when stale")
        assert time.monotonic() - stopped >= 1.4  # last success (< 0.5 s before the stop) + 2 s
        assert exporter.get("/-/ready").status == 503
        assert "Data is stale." in exporter.get("/").text
        db.server.start()
        db.insert("Failed", 1)
        wait_for(lambda: exporter.counts() == _expected(db), timeout=10, what="recovery")
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
    exporter = _exporter(tmp_path, tasks_db)
    try:
        seen: set[int] = set()
        for _ in range(5):
            (conn_id,) = wait_for(lambda: _exporter_connections(tasks_db), timeout=5, what="conn")
            assert conn_id not in seen
            seen.add(conn_id)
            tasks_db.server.execute(f"KILL CONNECTION {conn_id}")
            wait_for(
                lambda: (ids := _exporter_connections(tasks_db)) and ids[0] not in seen,
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
    exporter = _exporter(tmp_path, tasks_db, interval="2s", timeout="1s")
    locker = tasks_db.server.connect(database=tasks_db.database)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES tasks WRITE")
        wait_for(
            lambda: _timeouts(exporter) >= 3,
            timeout=12,
            what="three timed-out collections",
        )
        for _ in range(20):
            started = time.monotonic()
            samples = exporter.scrape()
            assert time.monotonic() - started < 0.2
            assert len(_exporter_connections(tasks_db)) <= 1
        assert value(samples, "tasks_exporter_up") == 0
        duration = value(samples, "tasks_exporter_collection_duration_seconds")
        assert duration is not None
        assert 0.9 <= duration <= 1.6
        assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}  # not stale yet
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        _wait_up(exporter, 1, timeout=5)
        (failure,) = lines_matching(exporter.log(), "collection failed")  # 3 timeouts, 1 line
        assert "result=timeout" in failure
    finally:
        locker.close()
        exporter.stop()


def test_wrong_password_is_reported_once_and_never_shown(tmp_path: Path, tasks_db: TasksDB) -> None:
    """A refused login: up=0, one log line with the server's reason, the password nowhere."""
    wrong = "not-the-password-4f9a"
    exporter = _exporter(tmp_path, tasks_db, ready=False, password=wrong)
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
    config.write_text(_config(tmp_path, tasks_db, extra_tasks='table = "nope"'), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "collection failed" in result.stderr
    assert "`nope`" in result.stderr
    assert "doesn't exist" in result.stderr or "command denied" in result.stderr
    assert "Traceback" not in result.stderr


def test_once_prints_the_exposition(tmp_path: Path, tasks_db: TasksDB) -> None:
    """--once runs one collection, prints the metrics and exits 0: the installer's first check."""
    config = tmp_path / "c.toml"
    config.write_text(_config(tmp_path, tasks_db), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert task_counts(parse_metrics(result.stdout)) == {"Success": 5, "Pending": 3, "Failed": 2}


def test_once_with_wrong_password_fails_with_the_reason(tmp_path: Path, tasks_db: TasksDB) -> None:
    """--once with a refused login exits 1 with the server's reason and not the password."""
    config = tmp_path / "c.toml"
    config.write_text(_config(tmp_path, tasks_db, password="wrong-pw-77"), encoding="utf-8")
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "Access denied" in result.stderr
    assert "wrong-pw-77" not in result.stderr + result.stdout


def test_session_is_read_only(tasks_db: TasksDB) -> None:
    """Even a user allowed to write cannot write through the exporter's session settings."""
    tasks_db.server.execute(
        f"GRANT INSERT ON {tasks_db.qualified_table} TO '{tasks_db.user}'@'localhost'"
    )
    db = DatabaseConfig(
        driver="mysql",
        socket=str(tasks_db.server.socket),
        user=tasks_db.user,
        password=Secret(tasks_db.password),
        database=tasks_db.database,
    )
    source = MySQLSource(db, TasksConfig(), timeout=2)
    try:
        assert dict(source.count()) == {"Success": 5, "Pending": 3, "Failed": 2}
        conn = source._connect()
        with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError, match="READ ONLY"):
            cur.execute(f"INSERT INTO {tasks_db.qualified_table} (task_status) VALUES ('x')")
    finally:
        source.close()


def test_slow_query_is_cut_off_by_the_server(tmp_path: Path, tasks_db: TasksDB) -> None:
    """A query slower than the timeout is killed server-side, not left running."""
    exporter = _exporter(
        tmp_path,
        tasks_db,
        ready=False,
        interval="3s",
        timeout="1s",
        extra_tasks='filter = "SLEEP(0.4) = 0"',  # 10 rows x 0.4 s: far beyond the timeout
    )
    try:
        wait_for(
            lambda: _timeouts(exporter),
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
    exporter = _exporter(tmp_path, db, interval="2s", timeout="1s")
    db.server.pause()
    try:
        _wait_up(exporter, 0, timeout=8)
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
        _wait_up(exporter, 1, timeout=10)
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
    exporter = _exporter(tmp_path, tasks_db)
    names = {
        "table": tasks_db.qualified_table,
        "db": f"`{tasks_db.database}`",
        "user": f"'{tasks_db.user}'@'127.0.0.1'",
    }
    try:
        tasks_db.server.execute(breaks.format(**names))
        _wait_up(exporter, 0, timeout=5)
        time.sleep(1.0)
        failures = lines_matching(exporter.log(), "collection failed")
        assert reason in failures[0]
        # A revoked grant fails first on the kept connection, then differently on a fresh
        # one (1044, no access to the database): each new reason once, then silence.
        assert len(failures) <= 2
        time.sleep(1.5)  # three more failed collections
        assert lines_matching(exporter.log(), "collection failed") == failures
        tasks_db.server.execute(heals.format(**names))
        _wait_up(exporter, 1, timeout=5)
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
    finally:
        exporter.stop()


def test_serving_mysql_imports_only_what_it_uses(tmp_path: Path, tasks_db: TasksDB) -> None:
    """Serving a MySQL table over a socket, every format and the page, imports neither sqlite3
    nor prometheus_client, html, json, shutil or the idna codec."""
    config = _config(tmp_path, tasks_db, via="socket")
    imported = imports_while_serving(Exporter(tmp_path, config))
    assert {"asyncio", "pymysql"} <= imported
    assert imported & (NEVER_IMPORTED | {"sqlite3"}) == set()
