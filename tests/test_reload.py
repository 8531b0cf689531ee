"""SIGHUP reload, as an operator uses it: edit the file, `systemctl reload`, look at /metrics."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from testing.exporter_process import (
    Exporter,
    Exporters,
    free_port,
    lines_matching,
    mysql_config,
    parse_metrics,
    run_cli,
    task_counts,
    value,
    wait_for,
    write_secret,
)
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB, make_tasks_db

pytestmark = pytest.mark.mariadb

OTHER_CLIENT = "127.0.0.2"  # a second loopback address, to see the allowlist change


def _config(
    db: TasksDB,
    password_file: Path,
    *,
    listen: list[int],
    allow: str,
    interval: str = "0.5s",
    timeout: str = "0.3s",
    extra_tasks: str = "",
) -> str:
    web = f"listen_addresses = {[f'127.0.0.1:{p}' for p in listen]!r}\nallow = {allow}"
    return mysql_config(
        port=db.server.port,
        user=db.user,
        database=db.database,
        password_file=password_file,
        interval=interval,
        timeout=timeout,
        extra_tasks=extra_tasks,
        extra_web=web,
    ).replace("'", '"')


def _exporter(
    exporters: Exporters, workdir: Path, config: Callable[[int], str], *args: str
) -> Exporter:
    """An exporter whose listen address is in its config file, so a reload can change it.
    (The `exporters` fixture stops it after the test.)"""
    exporter = exporters(workdir, "", *args, listen_flag=False)
    exporter.write_config(config(exporter.port))
    return exporter.start(ready=True)


def _plain(
    exporters: Exporters, tmp_path: Path, db: TasksDB, password_file: Path, *args: str
) -> Exporter:
    """An exporter on `db` listening on its own port, loopback allowed."""
    return _exporter(
        exporters,
        tmp_path / "run",
        lambda port: _config(db, password_file, listen=[port], allow='["127.0.0.0/8"]'),
        *args,
    )


def _get(port: int, *, source: str = "127.0.0.1", path: str = "/metrics") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, (response.status, body)
        return body
    finally:
        conn.close()


def _refused(port: int, *, source: str = "127.0.0.1") -> bool:
    """True when the exporter does not serve this client on this port (closed or refused)."""
    try:
        _get(port, source=source)
    except (ConnectionError, http.client.HTTPException, OSError):
        return True
    return False


class Scraper(threading.Thread):
    """Scrapes one port in a loop and records every scrape that was not a whole 200."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done = threading.Event()
        self.scrapes = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            try:
                text = _get(self.port)
                assert "tasks_exporter_up" in text
                parse_metrics(text)
                self.scrapes += 1
            except (AssertionError, OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(repr(exc))

    def finish(self) -> None:
        self.done.set()
        self.join(10)


@pytest.fixture
def scrapers() -> Iterator[list[Scraper]]:
    started: list[Scraper] = []
    yield started
    for scraper in started:
        scraper.finish()


def _reloads(exporter: Exporter) -> tuple[float | None, float | None]:
    samples = exporter.scrape()
    return (
        value(samples, "tasks_exporter_config_last_reload_successful"),
        value(samples, "tasks_exporter_config_last_reload_success_timestamp_seconds"),
    )


def test_a_valid_reload_takes_effect_completely_without_a_gap(
    exporters: Exporters,
    tmp_path: Path,
    tasks_db: TasksDB,
    mariadb: MariaDB,
    scrapers: list[Scraper],
) -> None:
    """Listen addresses, allowlist, statuses, interval and database all change on SIGHUP,
    while a scraper on a kept address never misses a scrape."""
    dropped, added = free_port(), free_port()
    other_db = make_tasks_db(mariadb)
    other_db.insert("Success", 4)  # 9 Success there, 5 here: which database is read shows
    try:
        first_pw = write_secret(tmp_path / "first.pw", tasks_db.password)
        other_pw = write_secret(tmp_path / "other.pw", other_db.password)
        exporter = _exporter(
            exporters,
            tmp_path / "run",
            lambda port: _config(
                tasks_db, first_pw, listen=[port, dropped], allow='["127.0.0.0/8"]'
            ),
        )
        kept = exporter.port
        assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        assert not _refused(dropped, source=OTHER_CLIENT)
        loaded_at = _reloads(exporter)[1]
        assert loaded_at is not None
        scraper = Scraper(kept)
        scraper.start()
        scrapers.append(scraper)

        exporter.write_config(
            _config(
                other_db,
                other_pw,
                listen=[kept, added],
                allow='["127.0.0.1/32"]',
                interval="0.7s",
                extra_tasks='expected_statuses = ["Success", "Pending", "Failed", "Queued"]',
            )
        )
        exporter.reload()

        wait_for(lambda: exporter.counts().get("Queued") == 0, timeout=10, what="new statuses")
        samples = exporter.scrape()
        assert task_counts(samples) == {"Success": 9, "Pending": 3, "Failed": 2, "Queued": 0}
        assert value(samples, "tasks_exporter_collection_interval_seconds") == 0.7
        assert _reloads(exporter)[0] == 1
        assert (_reloads(exporter)[1] or 0) > loaded_at
        assert "tasks_exporter_up 1.0" in _get(added)
        assert _refused(dropped)
        assert _refused(kept, source=OTHER_CLIENT)  # the narrower allowlist applies
        assert lines_matching(exporter.log(), "configuration reloaded")
        time.sleep(0.3)
        scraper.finish()
        assert scraper.failures == []
        assert scraper.scrapes > 10
    finally:
        other_db.drop()


def test_an_invalid_configuration_is_refused_whole_and_the_old_one_keeps_running(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """The log says what --config.check says; nothing of the new file applies."""
    pw = write_secret(tmp_path / "pw", tasks_db.password)
    exporter = _plain(exporters, tmp_path, tasks_db, pw, "--log.format", "json")
    port = exporter.port
    good = _config(tasks_db, pw, listen=[port], allow='["127.0.0.0/8"]')
    loaded_at = _reloads(exporter)[1]

    # A valid allowlist change next to two mistakes: none of it may apply.
    bad = _config(tasks_db, pw, listen=[port], allow='["127.0.0.1/32"]', interval="soon")
    bad = bad.replace("[tasks]", '[tasks]\nexpected_statuse = ["Queued"]')
    exporter.write_config(bad)
    exporter.reload()

    check = run_cli("--config.check", "--config.file", str(exporter.config_path), cwd=tmp_path)
    assert check.returncode == 2
    problems = [line.split("config error: ", 1)[1] for line in check.stderr.splitlines()]
    assert len(problems) == 2

    def refusals() -> list[str]:
        events = [json.loads(line) for line in exporter.log().splitlines()]
        return [e["err"] for e in events if "reload refused" in e["msg"]]

    wait_for(lambda: len(refusals()) == 2, timeout=15, what=f"two refusals\n{exporter.log()}")
    assert refusals() == [f"config error: {problem}" for problem in problems]
    assert _reloads(exporter) == (0, loaded_at)
    assert exporter.process is not None
    assert exporter.process.poll() is None
    assert not _refused(port, source=OTHER_CLIENT)  # the old allowlist is still the one
    assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}

    exporter.write_config(good.replace("0.5s", "0.6s"))
    exporter.reload()
    wait_for(lambda: _reloads(exporter)[0] == 1, timeout=15, what="the fixed file applied")
    # The interval is shown by the snapshot of the first collection with the new settings,
    # which starts at once but may still be running when the reload is reported.
    wait_for(
        lambda: value(exporter.scrape(), "tasks_exporter_collection_interval_seconds") == 0.6,
        timeout=5,
        what="the new interval on /metrics",
    )


def test_a_reload_that_cannot_listen_changes_nothing(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    pw = write_secret(tmp_path / "pw", tasks_db.password)
    exporter = _plain(exporters, tmp_path, tasks_db, pw)
    port = exporter.port
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        exporter.write_config(
            _config(tasks_db, pw, listen=[port, busy], allow='["127.0.0.1/32"]', interval="0.6s")
        )
        exporter.reload()
        wait_for(lambda: _reloads(exporter)[0] == 0, timeout=15, what="the reload refused")
    assert lines_matching(exporter.log(), f"cannot listen on 127.0.0.1:{busy}")
    assert not _refused(port, source=OTHER_CLIENT)
    assert value(exporter.scrape(), "tasks_exporter_collection_interval_seconds") == 0.5


def test_a_reload_reads_the_password_again(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """Rotating the password: change it on the server and in the file, then reload."""
    pw = write_secret(tmp_path / "pw", tasks_db.password)
    exporter = _plain(exporters, tmp_path, tasks_db, pw)
    rotated = tasks_db.password + "-rotated"
    for host in ("localhost", "127.0.0.1"):
        tasks_db.server.execute(
            f"ALTER USER '{tasks_db.user}'@'{host}' IDENTIFIED BY %s", (rotated,)
        )
    write_secret(pw, rotated)
    before = value(exporter.scrape(), "tasks_exporter_collections_total", result="success") or 0
    exporter.reload()
    # The old session is closed on reload, so only a login with the new password collects.
    wait_for(
        lambda: (
            (value(exporter.scrape(), "tasks_exporter_collections_total", result="success") or 0)
            > before + 2
        ),
        timeout=10,
        what=f"collections with the rotated password\n{exporter.log()}",
    )
    assert value(exporter.scrape(), "tasks_exporter_up") == 1
    assert not lines_matching(exporter.log(), "Access denied")


def test_reloads_racing_with_scrapes_and_a_collection_in_flight(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB, scrapers: list[Scraper]
) -> None:
    """SIGHUPs while the table is locked (a collection stuck until its timeout) and four
    scrapers run: every scrape answers, the last file wins, no query piles up."""
    db = private_tasks_db
    pw = write_secret(tmp_path / "pw", db.password)
    exporter = _exporter(
        exporters,
        tmp_path / "run",
        lambda port: _config(
            db, pw, listen=[port], allow='["127.0.0.0/8"]', interval="2s", timeout="1s"
        ),
    )
    port = exporter.port
    for _ in range(4):
        scraper = Scraper(port)
        scraper.start()
        scrapers.append(scraper)
    locker = db.server.connect()
    try:
        with locker.cursor() as cursor:
            cursor.execute(f"LOCK TABLES {db.qualified_table} WRITE")
        time.sleep(2.2)  # the next collection is now waiting on the lock
        for n in range(5):
            statuses = f'expected_statuses = ["Success", "Pending", "Failed", "Step{n}"]'
            exporter.write_config(
                _config(
                    db,
                    pw,
                    listen=[port],
                    allow='["127.0.0.0/8"]',
                    interval="2s",
                    timeout="1s",
                    extra_tasks=statuses,
                )
            )
            exporter.reload()
            time.sleep(0.1)
        sessions = db.server.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (db.user,)
        )[0][0]
        assert sessions <= 1
    finally:
        locker.close()  # releases the lock
    wait_for(lambda: exporter.counts().get("Step4") == 0, timeout=10, what="the last file")
    assert "Step3" not in exporter.counts()
    for scraper in scrapers:
        scraper.finish()
        assert scraper.failures == []
        assert scraper.scrapes > 5


def test_a_reload_can_turn_on_basic_auth_from_a_web_config_file(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """[web] config_file named by the reloaded file applies at once: scrapes then need the
    password. (Changes inside an already named web config file apply without SIGHUP.)"""
    pw = write_secret(tmp_path / "pw", tasks_db.password)
    exporter = _plain(exporters, tmp_path, tasks_db, pw)
    assert exporter.get("/metrics").status == 200
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n", encoding="utf-8")
    text = exporter.config_path.read_text(encoding="utf-8")
    exporter.write_config(text.replace("[web]", f'[web]\nconfig_file = "{web_config}"'))
    exporter.reload()
    wait_for(lambda: exporter.get("/metrics").status == 401, timeout=15, what="basic auth on")
    exporter.auth = ("prometheus", "s3cret")
    assert _reloads(exporter)[0] == 1
