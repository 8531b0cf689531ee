"""Robustness: the database broken on purpose in every way operators fear.

Each fault runs against a private MariaDB and ends with the exporter serving correct counts
again, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testing.exporter_process import (
    Exporters,
    Samples,
    collections,
    expected_counts,
    exporter_connections,
    lines_matching,
    task_counts,
    value,
    wait_for,
    wait_up,
)
from testing.silent_proxy import SilentProxy
from testing.tasks_table import TasksDB

pytestmark = [pytest.mark.robustness, pytest.mark.mariadb]


def test_database_down_at_start_then_up(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """Started while the database is down: up=0 and not ready; it recovers by itself."""
    db = private_tasks_db
    db.server.stop()
    exporter = exporters.on_db(tmp_path, db, ready=False)
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


def test_stopped_past_staleness_counts_drop_on_time_and_return_within_an_interval(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB, figure: Callable[[str], None]
) -> None:
    """Database stopped for longer than the staleness window: up drops to 0 at the next
    collection; the counts are served until the window has passed since the last success, not
    a moment longer nor shorter; started again, the right counts are back within one interval."""
    db = private_tasks_db
    interval, timeout, staleness = 0.5, 0.3, 2.0
    exporter = exporters.on_db(tmp_path, db, interval="0.5s", timeout="0.3s", staleness="2s")
    try:
        db.server.stop()
        stopped = time.time()
        seen: list[tuple[float, float, Samples]] = []  # (sent, answered, what it said)
        dropped: float | None = None
        while dropped is None or time.time() - dropped < 0.5:  # and half a second beyond
            sent = time.time()
            samples = exporter.scrape()
            seen.append((sent, time.time(), samples))
            if dropped is None and not task_counts(samples):
                dropped = time.time()
            assert time.time() - stopped < 10, "counts never dropped"
            time.sleep(0.02)
        down_at = next(t for _, t, s in seen if value(s, "tasks_exporter_up") == 0)
        assert down_at - stopped <= interval + timeout + 0.2
        for sent, answered, samples in seen:
            last = value(samples, "tasks_exporter_last_success_timestamp_seconds")
            assert last is not None
            if task_counts(samples):
                assert task_counts(samples) == {"Success": 5, "Pending": 3, "Failed": 2}
                assert sent - last <= staleness  # never served past the window
            else:
                assert answered - last > staleness  # never dropped before it
        assert exporter.get("/-/ready").status == 503
        assert "Data is stale." in exporter.get("/").text
        db.server.start()
        db.insert("Failed", 1)
        changed = time.time()
        wait_for(
            lambda: exporter.counts() == expected_counts(db),
            timeout=10,
            what="recovery",
            every=0.02,
        )
        recovered = time.time() - changed
        assert recovered <= interval + timeout + 0.2  # the next collection, and a scrape
        assert exporter.get("/-/ready").status == 200
        log = exporter.log()
        assert len(lines_matching(log, "collection failed")) <= 2  # once per change, not per try
        assert len(lines_matching(log, "collection succeeded")) == 2
        figure(
            f"database stopped: up=0 after {down_at - stopped:.2f}s (interval {interval:g}s);"
            f" counts dropped {staleness:g}s after the last success, to within one scrape;"
            f" started again: right counts after {recovered:.2f}s"
        )
    finally:
        exporter.stop()


def test_killed_connection_is_replaced_without_a_failed_collection(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """KILLing the exporter's connection server-side, repeatedly: it reconnects, counts stay."""
    exporter = exporters.on_db(tmp_path, tasks_db)
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


def test_locked_table_times_out_while_scrapes_stay_fast(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A table locked by another session: the query is cut off at the timeout, the next attempts
    back off (4 s, then 8 s at a 2 s interval), scrapes stay fast, there is never more than one
    exporter connection, and it recovers on unlock at the next attempt."""
    exporter = exporters.on_db(tmp_path, tasks_db, interval="2s", timeout="1s")
    locker = tasks_db.server.connect(database=tasks_db.database)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLES tasks WRITE")
        wait_for(
            lambda: collections(exporter, "timeout") >= 2,
            timeout=12,
            what="two timed-out collections",
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
        effective = value(samples, "tasks_exporter_collection_effective_interval_seconds")
        assert effective == 8  # 1 s / 0.25, doubled at the second timeout
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        wait_up(exporter, 1, timeout=effective + 3)
        (failure,) = lines_matching(exporter.log(), "collection failed")  # 2 timeouts, 1 line
        assert "result=timeout" in failure
        assert len(lines_matching(exporter.log(), "needs more than the timeout allows")) == 1
    finally:
        locker.close()
        exporter.stop()


def test_slow_query_is_cut_off_by_the_server(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A query slower than the timeout is killed server-side at the timeout, again and again:
    scrapes stay fast, no second query ever runs beside the first, nothing is left running."""
    exporter = exporters.on_db(
        tmp_path,
        tasks_db,
        ready=False,
        interval="1.5s",
        timeout="1s",
        extra_tasks='filter = "SLEEP(0.4) = 0"',  # 10 rows x 0.4 s: far beyond the timeout
    )

    def running() -> int:
        (row,) = tasks_db.server.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
            " WHERE user = %s AND command = 'Query'",
            (tasks_db.user,),
        )
        return int(row[0])

    try:
        most_running, slowest_scrape = 0, 0.0
        while collections(exporter, "timeout") < 2:
            started = time.monotonic()
            exporter.scrape()
            slowest_scrape = max(slowest_scrape, time.monotonic() - started)
            most_running = max(most_running, running())
            time.sleep(0.05)
        assert most_running == 1  # the slow query was seen running, never two at once
        assert slowest_scrape < 0.2
        samples = exporter.scrape()
        duration = value(samples, "tasks_exporter_collection_duration_seconds")
        assert duration is not None
        assert 0.9 <= duration < 1.5
        assert "max_statement_time" in exporter.log() or "timeout" in exporter.log()
        assert running() == 0  # nothing left running on the server
    finally:
        exporter.stop()


def test_frozen_server_is_cut_off_by_the_client_timeout(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """A server that stops answering (SIGSTOP): the client timeout fires, scrapes stay fast,
    and collections recover once it answers again."""
    db = private_tasks_db
    exporter = exporters.on_db(tmp_path, db, interval="2s", timeout="1s")
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


def test_password_changed_under_it_then_back(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """The password changed on the server: the open session goes on counting (passwords are
    checked at login); once it is cut, every login is refused, logged once with the server's
    reason; the password changed back, the counts return without a restart."""
    exporter = exporters.on_db(tmp_path, tasks_db)
    user = f"'{tasks_db.user}'@'127.0.0.1'"
    try:
        tasks_db.server.execute(f"ALTER USER {user} IDENTIFIED BY 'rotated-elsewhere'")
        before = collections(exporter, "success")
        wait_for(lambda: collections(exporter, "success") >= before + 2, timeout=5, what="2 more")
        (conn_id,) = exporter_connections(tasks_db)
        tasks_db.server.execute(f"KILL CONNECTION {conn_id}")
        wait_up(exporter, 0, timeout=5)
        time.sleep(1.5)  # three more refused logins
        (failure,) = lines_matching(exporter.log(), "collection failed")
        assert "Access denied" in failure
        assert "rotated-elsewhere" not in exporter.log()
        tasks_db.server.execute(f"ALTER USER {user} IDENTIFIED BY %s", (tasks_db.password,))
        wait_up(exporter, 1, timeout=5)
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
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB, breaks: str, heals: str, reason: str
) -> None:
    """Grant revoked or table renamed away: the failure is logged once per reason, not per
    interval; put right, the counts return without a restart."""
    exporter = exporters.on_db(tmp_path, tasks_db)
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


def test_silent_network_is_cut_off_by_the_client_timeout(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB, figure: Callable[[str], None]
) -> None:
    """The database reachable but every packet lost (a proxy that stops forwarding): each
    collection ends at the client-side timeout, scrapes stay fast, no thread, descriptor or
    connection piles up, the counts return once packets flow, and a stop never hangs."""
    timeout, grace = 0.5, 0.5  # the client's read timeout trails `timeout` by 0.5 s
    with SilentProxy(tasks_db.server.port) as proxy:
        exporter = exporters.on_db(
            tmp_path, tasks_db, port=proxy.port, interval="1s", timeout="0.5s"
        )
        try:
            before = exporter.stats()

            def failed() -> float:
                return collections(exporter, "timeout") + collections(exporter, "error")

            failed_before = failed()
            proxy.drop()
            slowest_scrape, longest_collection, most_fds = 0.0, 0.0, 0
            # Three collections (the kept connection's query, then fresh logins), ~2 s apart:
            # each waits ~1 s and the next starts an interval after it gave up.
            deadline = time.monotonic() + 10
            while failed() < failed_before + 3:
                assert time.monotonic() < deadline, "collections did not fail in time"
                started = time.monotonic()
                samples = exporter.scrape()
                slowest_scrape = max(slowest_scrape, time.monotonic() - started)
                duration = value(samples, "tasks_exporter_collection_duration_seconds") or 0
                longest_collection = max(longest_collection, duration)
                most_fds = max(most_fds, exporter.stats().fds)
                assert exporter.stats().threads == before.threads
                time.sleep(0.1)
            assert value(exporter.scrape(), "tasks_exporter_up") == 0
            assert slowest_scrape < 0.2
            assert timeout <= longest_collection <= timeout + grace + 0.3
            assert most_fds <= before.fds + 1  # the one connection, replaced, never added to
            assert proxy.peak <= 2  # one being given up while the next is tried, at most
            tasks_db.insert("Pending", 2)  # so that only a fresh collection shows the truth
            proxy.heal()
            healed = time.monotonic()
            wait_for(
                lambda: exporter.counts() == expected_counts(tasks_db),
                timeout=5,
                what="counts after heal",
            )
            assert value(exporter.scrape(), "tasks_exporter_up") == 1
            back_after = time.monotonic() - healed
            assert back_after < timeout + grace + 1 + 0.5  # the attempt in flight, an interval
            proxy.drop()  # a stop while a collection waits on the silent network
            time.sleep(1.2)
            started = time.monotonic()
            assert exporter.stop() == 0
            stop_took = time.monotonic() - started
            assert stop_took < 3
            figure(
                f"silent network: collections cut at {longest_collection:.2f}s at most"
                f" (timeout {timeout:g}s + {grace:g}s client grace), slowest scrape"
                f" {slowest_scrape * 1000:.0f} ms, counts back {back_after:.2f}s after packets"
                f" flowed, stopped in {stop_took:.2f}s"
            )
        finally:
            exporter.kill()


def test_a_thousand_failed_collections_in_a_row_leak_nothing(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB, figure: Callable[[str], None]
) -> None:
    """1,000 failed collections in a row (table renamed away, then the password changed):
    descriptors, threads and database connections stay flat, each collection opens one
    connection at most, the log has a line per reason, not per failure, and the counts return
    when put right."""
    db = private_tasks_db  # private: the server-wide connection counters are this test's own
    # As fast as collections go (each opens a connection); the timeout, though never needed,
    # leaves room for a statement slowed by a loaded machine, which would be a third reason.
    exporter = exporters.on_db(tmp_path, db, interval="30ms", timeout="25ms")
    user = f"'{db.user}'@'127.0.0.1'"
    try:

        def failed() -> float:
            return collections(exporter, "error") + collections(exporter, "timeout")

        def run_until(n: float) -> int:
            """Scrape until `n` collections have failed; the most exporter connections seen."""
            most = 0
            while failed() < n:
                most = max(most, len(exporter_connections(db)))
                time.sleep(0.05)
            return most

        started = time.monotonic()
        db.server.execute(f"RENAME TABLE {db.qualified_table} TO `{db.database}`.tasks_away")
        logins_before = db.server.status("Connections")
        base = failed()
        most = run_until(base + 100)
        warm = exporter.stats()  # every failure path has run
        successes = collections(exporter, "success")
        most = max(most, run_until(base + 500))
        db.server.execute(f"ALTER USER {user} IDENTIFIED BY 'rotated-elsewhere'")
        db.server.execute(f"RENAME TABLE `{db.database}`.tasks_away TO {db.qualified_table}")
        most = max(most, run_until(base + 1000))
        end = exporter.stats()
        took = time.monotonic() - started
        failures = failed() - base
        logins = db.server.status("Connections") - logins_before
        assert collections(exporter, "success") == successes  # the streak was never broken
        assert end.fds <= warm.fds + 1  # +1: a connection may be open at the moment of looking
        assert end.threads == warm.threads
        assert most <= 1
        assert logins <= failures + 5  # one login per failed collection, no retry storm
        # The log does not grow with the failures: a line per reason (a statement cut off
        # on a very loaded machine would add one, and one when the reason changes back).
        reasons = lines_matching(exporter.log(), "collection failed")
        assert len(reasons) <= 6, reasons
        assert "doesn't exist" in reasons[0]
        assert "Access denied" in reasons[-1]
        db.server.execute(f"ALTER USER {user} IDENTIFIED BY %s", (db.password,))
        wait_up(exporter, 1, timeout=5)
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        figure(
            f"{failures:.0f} failed collections in a row in {took:.1f}s: after 100 {warm},"
            f" at the end {end}; at most {most} database connection; {logins} logins"
        )
    finally:
        exporter.stop()
