"""A private, throw-away MariaDB server for the test suite.

The tests never touch a MariaDB that may already run on the machine (port 3306,
/run/mysqld): each `MariaDB` owns a directory holding its datadir, unix socket,
pid file and error log, listens on its own loopback port, and can be stopped,
restarted, killed or paused by the tests.

Initialising a datadir with mariadb-install-db takes about half a second; copying an
initialised template takes ~0.05 s and starting it ~0.1 s, so the fixtures initialise
one template per session and copy it for every server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.cursors

from testing.exporter_process import free_port

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pymysql.connections import Connection
    from pymysql.cursors import Cursor

MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")

# Small InnoDB files: the datadir is ~26 MB instead of ~110 MB, so copies are cheap.
# install-db and mariadbd must agree on the redo log size, or the server resizes it
# on every start.
_INNODB_ARGS = (
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=16M",
)

# Unix socket paths are limited to 107 bytes (sun_path); keep a margin.
_MAX_SOCKET_PATH = 100

_ROOT_CONNECT_TIMEOUT = 2


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _binary(path: Path, name: str) -> Path:
    if path.exists():
        return path
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    raise RuntimeError(
        f"{path} not found: install the Debian package mariadb-server "
        "(scripts/dev test installs it when run as root)"
    )


def _tail(path: Path, *, start: int = 0, lines: int = 30) -> str:
    """The last `lines` lines of `path` from byte offset `start` (empty if missing)."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# Processes started by this module and still alive: killed at interpreter exit.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
# Short socket directories created because base_dir was too deep for a unix socket.
_SOCKET_DIRS: list[Path] = []


@atexit.register
def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
        _LIVE.clear()
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    for d in _SOCKET_DIRS:
        shutil.rmtree(d, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILLed if the test process dies (Linux only).

    atexit does not run when the test process is killed by a signal; PR_SET_DEATHSIG
    covers that. Note that the kernel sends it when the *thread* that started the
    server exits, so start servers from the main thread (fixtures do).
    """
    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class MariaDB:
    """One private mariadbd: its own datadir, unix socket and loopback TCP port."""

    def __init__(self, base_dir: Path, *, template: Path | None = None) -> None:
        self.base_dir = base_dir.resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.base_dir / "data"
        self.error_log = self.base_dir / "error.log"
        self.pid_file = self.base_dir / "mariadbd.pid"
        self.stdout_log = self.base_dir / "mariadbd.out"
        self.socket = self.base_dir / "mysqld.sock"
        # Every mariadbd deletes the #sql* temporary-table files it finds in its tmpdir when it
        # starts, other servers' in-use ones included: with the default /tmp, a server (or a
        # mariadb-install-db) starting beside another, here or in a parallel run, broke it.
        self.tmpdir = self.base_dir / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            short = Path(tempfile.mkdtemp(prefix="mdb-"))
            _SOCKET_DIRS.append(short)
            self.socket = short / "mysqld.sock"
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._started_once = False
        self._extra_args: tuple[str, ...] = ()
        self._root: Connection[Cursor] | None = None
        self._root_lock = threading.Lock()
        if not self.datadir.exists():
            if template is not None:
                shutil.copytree(template, self.datadir, symlinks=True)
            else:
                self.initialise(self.datadir)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MariaDB port={self.port} socket={self.socket} {state}>"

    # -- lifecycle -----------------------------------------------------------

    @staticmethod
    def initialise(datadir: Path) -> None:
        """Create a fresh datadir with mariadb-install-db (root@localhost, no password)."""
        install_db = _binary(INSTALL_DB, "mariadb-install-db")
        if datadir.exists() and any(datadir.iterdir()):
            raise RuntimeError(f"{datadir} exists and is not empty")
        with tempfile.TemporaryDirectory(prefix="mdb-tmp-") as tmpdir:
            argv = [
                str(install_db),
                "--no-defaults",
                f"--datadir={datadir}",
                f"--tmpdir={tmpdir}",  # private, as each server's (see __init__)
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *_INNODB_ARGS,
            ]
            if _running_as_root():
                argv.append("--user=root")
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=120,
            )
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode(errors="replace")
            tail = "\n".join(out.splitlines()[-30:])
            raise RuntimeError(f"mariadb-install-db failed ({result.returncode}):\n{tail}")

    def command(self, extra_args: Sequence[str] = ()) -> list[str]:
        """The mariadbd command line this server starts with."""
        argv = [
            str(_binary(MARIADBD, "mariadbd")),
            "--no-defaults",  # never read /etc/mysql: it points at /run/mysqld and port 3306
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--tmpdir={self.tmpdir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            "--skip-name-resolve",
            *_INNODB_ARGS,
            # Fast start and stop; durability does not matter for throw-away data.
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--skip-innodb-buffer-pool-load-at-startup",
            "--skip-innodb-buffer-pool-dump-at-shutdown",
            "--innodb-temp-data-file-path=ibtmp1:4M:autoextend",
            "--performance-schema=OFF",
            "--skip-log-bin",
            "--loose-skip-feedback",
            # Same defaults as Debian's /etc/mysql/mariadb.conf.d/50-server.cnf.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]
        if _running_as_root():
            # mariadbd refuses to start as root ("Please consult the MariaDB
            # Documentation to find out how to run mariadbd as root!") without this.
            argv.append("--user=root")
        argv.extend(extra_args)
        return argv

    def start(self, *, timeout: float = 30.0, extra_args: Sequence[str] = ()) -> None:
        """Start mariadbd and wait until root can connect over the unix socket."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self._extra_args = tuple(extra_args)
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            log_start = self.error_log.stat().st_size if self.error_log.exists() else 0
            self._spawn()
            try:
                self._wait_ready(timeout=timeout, log_start=log_start)
            except _PortInUseError:
                # Someone took the port between free_port() and now: pick another one,
                # but only before the first successful start (the port must stay stable).
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                continue
            self._started_once = True
            return

    def _spawn(self) -> None:
        with self.stdout_log.open("ab") as out:
            proc = subprocess.Popen(
                self.command(self._extra_args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in pytest must not reach the server
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
            )
        with _LIVE_LOCK:
            _LIVE.add(proc)
        self._proc = proc
        self._paused = False

    def _wait_ready(self, *, timeout: float, log_start: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            code = proc.poll()
            if code is not None:
                self._forget(proc)
                tail = _tail(self.error_log, start=log_start) or _tail(self.stdout_log)
                if "Address already in use" in tail:
                    raise _PortInUseError(f"port {self.port} is in use:\n{tail}")
                raise RuntimeError(f"mariadbd exited with {code} while starting:\n{tail}")
            try:
                conn = self.connect()
            except pymysql.MySQLError as e:
                last_error = e
            else:
                conn.close()
                return
            if time.monotonic() > deadline:
                self.kill()
                tail = _tail(self.error_log, start=log_start)
                raise RuntimeError(
                    f"mariadbd did not accept connections within {timeout}s "
                    f"(last error: {last_error}):\n{tail}"
                )
            time.sleep(0.02)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM to the process we started) and wait for exit."""
        self._close_root()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            if self._paused:
                proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(
                    f"mariadbd did not stop within {timeout}s; killed it:\n{_tail(self.error_log)}"
                ) from None
        self._forget(proc)

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash) and wait for it to go."""
        self._close_root()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget(proc)

    def restart(self) -> None:
        """Stop cleanly and start again, on the same port and socket."""
        self.stop()
        self.start(extra_args=self._extra_args)

    def pause(self) -> None:
        """SIGSTOP the server: connections hang instead of failing (timeout tests)."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        return self._proc

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
        if self._proc is proc:
            self._proc = None
            self._paused = False

    # -- SQL -----------------------------------------------------------------

    def connect(
        self, *, database: str | None = None, read_timeout: float | None = 30.0
    ) -> Connection[Cursor]:
        """A new root connection over the unix socket, autocommit on."""
        return pymysql.connect(
            unix_socket=str(self.socket),
            user="root",
            password="",
            database=database,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=_ROOT_CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            write_timeout=read_timeout,
        )

    def _root_connection(self) -> Connection[Cursor]:
        if self._root is not None:
            try:
                self._root.ping()
            except pymysql.MySQLError:
                # The server was restarted (or killed) since the last statement.
                with contextlib.suppress(Exception):
                    self._root.close()
                self._root = None
        if self._root is None:
            self._root = self.connect()
        return self._root

    def _close_root(self) -> None:
        with self._root_lock:
            root, self._root = self._root, None
        if root is not None:
            with contextlib.suppress(Exception):
                root.close()

    def execute(self, sql: str, args: object = None) -> list[tuple[Any, ...]]:
        """Run one statement as root and return all rows."""
        with self._root_lock, self._root_connection().cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def executemany(self, sql: str, args: Iterable[object]) -> int:
        """Run one statement as root for each parameter set; return affected rows."""
        with self._root_lock, self._root_connection().cursor() as cur:
            return cur.executemany(sql, args) or 0

    def status(self, name: str) -> int:
        """A global status counter, e.g. status('Com_select')."""
        rows = self.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        if len(rows) != 1:
            raise KeyError(name)
        return int(rows[0][1])

    def variable(self, name: str) -> str:
        """A global server variable as a string, e.g. variable('max_connections')."""
        rows = self.execute("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        if len(rows) != 1:
            raise KeyError(name)
        return str(rows[0][1])


class _PortInUseError(RuntimeError):
    pass
