"""The private MariaDB harness itself: isolation, lifecycle, seed data, least privilege."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pymysql
import pytest

from testing.mariadb_server import MariaDB
from testing.tasks_table import SEED, make_tasks_db

if TYPE_CHECKING:
    from pymysql.connections import Connection
    from pymysql.cursors import Cursor

    from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

REPO = Path(__file__).resolve().parent.parent


def _connect_as(db: TasksDB, *, tcp: bool) -> Connection[Cursor]:
    if tcp:
        return pymysql.connect(
            host="127.0.0.1",
            port=db.server.port,
            user=db.user,
            password=db.password,
            database=db.database,
            connect_timeout=2,
        )
    return pymysql.connect(
        unix_socket=str(db.server.socket),
        user=db.user,
        password=db.password,
        database=db.database,
        connect_timeout=2,
    )


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_server_is_private(mariadb: MariaDB) -> None:
    """The suite's server listens on its own port and socket, never 3306 or /run/mysqld."""
    assert mariadb.port != 3306
    assert not str(mariadb.socket).startswith("/run/mysqld")
    assert mariadb.execute("SELECT @@port, @@socket, @@datadir") == [
        (mariadb.port, str(mariadb.socket), f"{mariadb.datadir}/")
    ]


def test_seed_rows(tasks_db: TasksDB) -> None:
    """A fresh tasks table holds 5 Success, 3 Pending and 2 Failed rows."""
    assert tasks_db.rows() == {"Success": 5, "Pending": 3, "Failed": 2} == SEED


def test_insert_counts_null_status_as_none(tasks_db: TasksDB) -> None:
    """insert() adds rows, and rows() reports a NULL status under None."""
    tasks_db.insert("Pending", 4)
    tasks_db.insert(None)
    assert tasks_db.rows() == {"Success": 5, "Pending": 7, "Failed": 2, None: 1}


def test_tasks_dbs_are_independent(mariadb: MariaDB, tasks_db: TasksDB) -> None:
    """Each TasksDB gets its own database and user."""
    other = make_tasks_db(mariadb)
    try:
        other.insert("Success", 10)
        assert tasks_db.rows() == SEED
        assert (other.database, other.user) != (tasks_db.database, tasks_db.user)
    finally:
        other.drop()


@pytest.mark.parametrize("tcp", [False, True], ids=["socket", "tcp"])
def test_least_privilege_user_can_select_but_not_insert(tasks_db: TasksDB, tcp: bool) -> None:
    """The exporter's user can SELECT the tasks table but INSERT fails with error 1142."""
    with _connect_as(tasks_db, tcp=tcp) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{tasks_db.table}`")
        assert cur.fetchone() == (10,)
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            cur.execute(f"INSERT INTO `{tasks_db.table}` (task_status) VALUES ('x')")
        assert excinfo.value.args[0] == 1142


def test_least_privilege_user_has_two_connections(tasks_db: TasksDB) -> None:
    """A third simultaneous connection of the user fails with error 1226."""
    with _connect_as(tasks_db, tcp=False), _connect_as(tasks_db, tcp=False):
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            _connect_as(tasks_db, tcp=False)
        assert excinfo.value.args[0] == 1226


def test_com_select_counts_one_select(mariadb: MariaDB) -> None:
    """Com_select grows by exactly 1 for one SELECT (status() itself does not count)."""
    before = mariadb.status("Com_select")
    assert mariadb.status("Com_select") == before
    mariadb.execute("SELECT 1")
    assert mariadb.status("Com_select") == before + 1


def test_stop_then_start_keeps_data(private_tasks_db: TasksDB) -> None:
    """Rows survive a clean stop and start, on the same port and socket."""
    server = private_tasks_db.server
    private_tasks_db.insert("Failed", 3)
    port, sock = server.port, server.socket
    server.stop()
    assert not server.running
    assert not sock.exists()
    server.start()
    assert (server.port, server.socket) == (port, sock)
    assert private_tasks_db.rows() == {"Success": 5, "Pending": 3, "Failed": 5}


def test_kill_then_start_recovers_committed_rows(private_tasks_db: TasksDB) -> None:
    """After SIGKILL (a crash) the server starts again with every committed row."""
    server = private_tasks_db.server
    private_tasks_db.insert("Pending", 2)
    server.kill()
    assert not server.running
    server.start()
    assert private_tasks_db.rows() == {"Success": 5, "Pending": 5, "Failed": 2}


@pytest.mark.parametrize("tcp", [False, True], ids=["socket", "tcp"])
def test_stopped_server_refuses_connections(private_tasks_db: TasksDB, tcp: bool) -> None:
    """With the server stopped, connecting fails at once with error 2003 (pymysql's code)."""
    private_tasks_db.server.stop()
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        _connect_as(private_tasks_db, tcp=tcp)
    assert excinfo.value.args[0] == 2003


def test_restart_reconnects_cached_root_connection(private_mariadb: MariaDB) -> None:
    """execute() keeps working across restart() and reaches a new server process."""
    before = private_mariadb.pid
    private_mariadb.execute("SELECT 1")
    private_mariadb.restart()
    assert private_mariadb.pid != before
    assert private_mariadb.execute("SELECT 2") == [(2,)]


def test_paused_server_hangs_then_resumes(private_mariadb: MariaDB) -> None:
    """A paused server accepts TCP but never greets, so only read_timeout ends the wait."""
    private_mariadb.pause()
    started = time.monotonic()
    # connect_timeout alone would wait forever: the kernel completes the TCP handshake
    # for a stopped server, and pymysql reads the greeting with read_timeout.
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            host="127.0.0.1",
            port=private_mariadb.port,
            user="root",
            connect_timeout=1,
            read_timeout=0.5,
        )
    assert 0.4 < time.monotonic() - started < 5
    private_mariadb.resume()
    assert private_mariadb.execute("SELECT 3") == [(3,)]


def test_start_failure_reports_error_log(tmp_path: Path, mariadb_template: Path) -> None:
    """A server that cannot start raises with the error log's tail, and leaves no process."""
    server = MariaDB(tmp_path / "bad", template=mariadb_template)
    with pytest.raises(RuntimeError, match="unknown variable"):
        server.start(extra_args=["--no-such-option=1"])
    assert not server.running


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_no_stray_server_when_test_process_dies(
    tmp_path: Path, mariadb_template: Path, how: str
) -> None:
    """A server left running dies with the test process: at exit, or even on SIGKILL."""
    base, template = str(tmp_path / "child"), str(mariadb_template)
    script = (
        "import sys, time; from pathlib import Path; from testing.mariadb_server import MariaDB\n"
        f"s = MariaDB(Path({base!r}), template=Path({template!r}))\n"
        "s.start(); print(s.pid, flush=True)\n"
        "sys.stdin.read()\n"  # returns when the test closes stdin; then exit normally
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        assert not _gone(pid)
        if how == "sigkill":
            child.send_signal(signal.SIGKILL)
        child.stdin.close()
        assert child.wait(timeout=30) == (-signal.SIGKILL if how == "sigkill" else 0)
    assert _wait_gone(pid), f"mariadbd {pid} survived its test process"
