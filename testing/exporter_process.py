"""Running the real exporter as a subprocess, and reading what it serves."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import DatabaseConfig
from exporter.secret import Secret
from exporter.sources.demo import SEED

if TYPE_CHECKING:
    from testing.tasks_table import TasksDB

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll until check() returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def get(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection: HTTPS with `ssl_context`, basic auth with `auth`."""
    conn = (
        http.client.HTTPConnection(host, port, timeout=timeout)
        if ssl_context is None
        else http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    )
    sent = dict(headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        sent["Authorization"] = f"Basic {token}"
    try:
        conn.request(method, path, headers=sent)
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a text exposition, keyed by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# What the demo counts: today's tasks (its window is "today"), not yesterday's finished ones.
DEMO_COUNTS = dict(SEED)


def task_counts(samples: Samples) -> dict[str, int]:
    """The counts per status, summed over the kinds of tasks when label_columns adds them."""
    counts: dict[str, int] = {}
    for (name, labels), value in samples.items():
        if name == "tasks_exporter_tasks":
            status = dict(labels)["status"]
            counts[status] = counts.get(status, 0) + int(value)
    return counts


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Exporter:
    """The exporter as its users run it: `python -m exporter` with a config file and flags."""

    def __init__(
        self,
        workdir: Path,
        config: str = "",
        *args: str,
        listen: str = "",
        listen_flag: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config, encoding="utf-8")
        self.log_path = workdir / "exporter.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.listen = listen or f"{self.host}:{self.port}"
        self.args = args
        # False: the listen address is the config file's (so a reload can change it).
        self.listen_flag = listen_flag
        self.ssl_context = ssl_context  # how get() reaches an exporter that serves TLS
        self.auth = auth  # and the basic auth credentials it sends
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        config = ["--config.file", str(self.config_path)]
        listen = ["--web.listen-address", self.listen] if self.listen_flag else []
        return [sys.executable, "-m", "exporter", *config, *listen, *self.args]

    def start(self, *, env: Mapping[str, str] | None = None, ready: bool = False) -> Exporter:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env={**os.environ, **(env or {})},
            )
        try:
            wait_for(self._answers, timeout=15, what=f"exporter on {self.listen}\n{self.log()}")
        except BaseException:
            self.kill()  # one that never answered is not left running
            raise
        if ready:
            self.wait_ready()
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"exporter exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.get("/-/healthy", timeout=1).status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 15) -> None:
        wait_for(
            lambda: self.get("/-/ready").status == 200,
            timeout=timeout,
            what=f"/-/ready\n{self.log()}",
        )

    def get(self, path: str, **kwargs: object) -> Reply:
        options: dict[str, object] = {"ssl_context": self.ssl_context, "auth": self.auth}
        return get(self.host, self.port, path, **(options | kwargs))  # type: ignore[arg-type]

    def scrape(self) -> Samples:
        reply = self.get("/metrics")
        assert reply.status == 200, reply
        return parse_metrics(reply.text)

    def counts(self) -> dict[str, int]:
        return task_counts(self.scrape())

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def write_config(self, text: str) -> None:
        """Replace the config file the way an editor or a deploy tool does: whole, at once."""
        staged = self.config_path.with_suffix(".new")
        staged.write_text(text, encoding="utf-8")
        staged.replace(self.config_path)

    def reload(self) -> None:
        """What `systemctl reload` does (the unit's ExecReload): SIGHUP."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stats(self) -> ProcessStats:
        assert self.process is not None
        return process_stats(self.process.pid)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@dataclass(frozen=True)
class ProcessStats:
    """What a process holds, from /proc: resident memory, threads, open file descriptors."""

    rss: int  # bytes
    threads: int
    fds: int

    def __str__(self) -> str:
        return f"RSS {self.rss / 2**20:.1f} MiB, {self.threads} threads, {self.fds} fds"


def process_stats(pid: int) -> ProcessStats:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return ProcessStats(
        rss=int(fields["VmRSS"].split()[0]) * 1024,
        threads=int(fields["Threads"]),
        fds=sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()),
    )


def run_cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion (for --config.check, --once, --version)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def mysql_config(
    *,
    socket_path: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    user: str,
    database: str,
    password_file: Path,
    interval: str = "0.5s",
    timeout: str = "0.3s",
    staleness: str | None = None,
    extra_tasks: str = "",
    extra_web: str = "",
    extra_collection: str = "",
    extra_database: str = "",
) -> str:
    where = f'socket = "{socket_path}"' if socket_path else f'host = "{host}"\nport = {port}'
    stale = f'staleness = "{staleness}"' if staleness else ""
    return f"""
[database]
{where}
user = "{user}"
database = "{database}"
password_file = "{password_file}"
{extra_database}

[tasks]
{extra_tasks}

[collection]
interval = "{interval}"
timeout = "{timeout}"
{stale}
{extra_collection}

[web]
{extra_web}
"""


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def lines_matching(text: str, needle: str) -> Sequence[str]:
    return [line for line in text.splitlines() if needle in line]


# Every module imported stays resident for the life of the exporter (docs/performance.md):
# none of these is needed to serve.
NEVER_IMPORTED = frozenset({"encodings.idna"})


def imports_while_serving(exporter: Exporter) -> set[str]:
    """Run the exporter with PYTHONPROFILEIMPORTTIME=1, scrape /metrics in every format and
    the page, stop it, and return the modules it imported (from the lines Python writes)."""
    exporter.start(env={"PYTHONPROFILEIMPORTTIME": "1"}, ready=True)
    try:
        for accept in ("text/plain", "application/openmetrics-text"):
            for encoding in ("identity", "gzip"):
                headers = {"Accept": accept, "Accept-Encoding": encoding}
                assert exporter.get("/metrics", headers=headers).status == 200
        assert exporter.get("/").status == 200
    finally:
        exporter.stop()
    return {
        line.rsplit("|", 1)[1].strip()
        for line in lines_matching(exporter.log(), "import time:")
        if "|" in line
    }


# -- the exporter against a TasksDB ------------------------------------------------------------


def db_config(
    tmp_path: Path,
    db: TasksDB,
    *,
    via: str = "tcp",
    port: int | None = None,
    password: str | None = None,
    **kwargs: str,
) -> str:
    """A config for `db` over TCP (to its port, or another) or its unix socket, the password
    in a private file."""
    secret = write_secret(tmp_path / "password", password if password is not None else db.password)
    return mysql_config(
        socket_path=db.server.socket if via == "socket" else None,
        port=port or db.server.port,
        user=db.user,
        database=db.database,
        password_file=secret,
        **kwargs,
    )


def db_source_config(db: TasksDB) -> DatabaseConfig:
    """The exporter's database settings for `db`, over its unix socket."""
    return DatabaseConfig(
        driver="mysql",
        socket=str(db.server.socket),
        user=db.user,
        password=Secret(db.password),
        database=db.database,
    )


class Exporters:
    """The exporters a test makes: `close` kills those still running (the `exporters` fixture
    calls it after the test), so none is left listening and trying its database."""

    def __init__(self) -> None:
        self._made: list[Exporter] = []

    def __call__(self, workdir: Path, config: str = "", *args: str, **kwargs: Any) -> Exporter:
        """An exporter, not started yet: the arguments are `Exporter`'s."""
        exporter = Exporter(workdir, config, *args, **kwargs)
        self._made.append(exporter)
        return exporter

    def on_db(
        self,
        tmp_path: Path,
        db: TasksDB,
        *,
        ready: bool = True,
        port: int | None = None,
        **kwargs: str,
    ) -> Exporter:
        """An exporter started on `db`'s tasks table (`db_config` takes the settings)."""
        return self(tmp_path, db_config(tmp_path, db, port=port, **kwargs)).start(ready=ready)

    def close(self) -> None:
        for exporter in self._made:
            exporter.kill()
        self._made.clear()


def table_counts(db: TasksDB) -> dict[str, int]:
    """The table's true counts per status label (NULL as "NULL")."""
    return {("NULL" if s is None else s): n for s, n in db.rows().items()}


def expected_counts(db: TasksDB) -> dict[str, int]:
    """What /metrics should show for the table: the expected statuses, 0 when absent."""
    return {"Success": 0, "Pending": 0, "Failed": 0, **table_counts(db)}


def exporter_connections(db: TasksDB) -> list[int]:
    """Ids of the server connections open as the exporter's user."""
    rows = db.server.execute(
        "SELECT id FROM information_schema.PROCESSLIST WHERE user = %s", (db.user,)
    )
    return [int(r[0]) for r in rows]


def wait_up(exporter: Exporter, up: int, *, timeout: float) -> None:
    """Wait until tasks_exporter_up reads `up`."""
    wait_for(
        lambda: value(exporter.scrape(), "tasks_exporter_up") == up,
        timeout=timeout,
        what=f"tasks_exporter_up == {up}",
    )


def collections(exporter: Exporter, result: str) -> float:
    """tasks_exporter_collections_total{result=...} as scraped now."""
    return value(exporter.scrape(), "tasks_exporter_collections_total", result=result) or 0
