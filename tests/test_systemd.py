"""The shipped systemd units, checked by systemd's own tools, and socket activation for real."""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.cli import EXIT_CONFIG
from testing.exporter_process import (
    Exporters,
    free_port,
    get,
    lines_matching,
    mysql_config,
    run_cli,
    wait_for,
    write_secret,
)
from testing.tasks_table import TasksDB

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE, SOCKET, DEFAULTS = (
    UNITS / "tasks_exporter.service",
    UNITS / "tasks_exporter.socket",
    UNITS / "tasks_exporter.default",
)
INSTALL_PREFIX = "/opt/tasks_exporter"  # where docs/operations.md installs the venv
VENV_BIN = Path(sys.executable).parent
MAX_CONNECTIONS = 100_000  # the highest [web] max_connections the configuration accepts

needs_systemd_tools = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("systemd-socket-activate") is None,
    reason="systemd-analyze and systemd-socket-activate come with Debian's systemd package",
)


def settings(unit: Path) -> dict[str, list[str]]:
    """Every Key=Value of a unit file, values of repeated keys in order (sections merged)."""
    out: dict[str, list[str]] = {}
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, val = line.partition("=")
        out.setdefault(key.strip(), []).append(val.strip())
    return out


def installed_copy(tmp_path: Path) -> Path:
    """The shipped units with only the install prefix pointed at this test run's environment,
    so systemd-analyze verify finds the executable as it would on an installed host."""
    directory = tmp_path / "units"
    directory.mkdir()
    for unit in (SERVICE, SOCKET):
        text = unit.read_text(encoding="utf-8").replace(INSTALL_PREFIX, str(VENV_BIN.parent))
        (directory / unit.name).write_text(text, encoding="utf-8")
    return directory


@needs_systemd_tools
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    units = installed_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / SERVICE.name), str(units / SOCKET.name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_tools
def test_the_service_is_rated_safe_by_systemd_analyze_security() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(SERVICE)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.1, result.stdout


def test_the_unit_keeps_secrets_out_of_the_environment_and_process_metrics_visible() -> None:
    service = settings(SERVICE)
    assert service["LoadCredential"] == ["mysql-password:/etc/tasks_exporter/mysql-password"]
    assert not any(k in service for k in ("Environment", "PassEnvironment", "SetCredential"))
    assert "ProcSubset" not in service  # ProcSubset=pid hides /proc/stat: process_* would vanish
    assert service["ExecReload"] == ["/bin/sh -c 'kill -HUP \"$MAINPID\"'"]  # no procps needed
    assert service["EnvironmentFile"] == ["-/etc/default/tasks_exporter"]
    for unit in (service, settings(SOCKET)):
        assert unit["IPAddressDeny"] == ["any"]
        assert unit["IPAddressAllow"]


def test_the_unit_fails_once_on_a_config_error_and_keeps_room_and_no_core_dumps() -> None:
    """A config error is not retried, no core dump can hold the password, and the open-files
    limit holds the highest connection cap (two descriptors per pending TLS handshake)."""
    service = settings(SERVICE)
    assert service["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert service["LimitCORE"] == ["0"]
    (nofile,) = service["LimitNOFILE"]
    assert int(nofile) > 2 * MAX_CONNECTIONS


def exec_start(config: Path) -> list[str]:
    """The unit's ExecStart as systemd would run it with the shipped /etc/default file: $ARGS
    expanded from it, the executable and the config file at this test's paths."""
    (line,) = settings(SERVICE)["ExecStart"]
    defaults = dict(
        shlex.split(raw)[0].split("=", 1)
        for raw in DEFAULTS.read_text(encoding="utf-8").splitlines()
        if raw.strip() and not raw.startswith("#")
    )
    words = []
    for word in shlex.split(line):
        if word == "$ARGS":
            words += shlex.split(defaults["ARGS"])  # systemd splits an unquoted $VAR into words
        else:
            words.append(word.replace(f"{INSTALL_PREFIX}/bin", str(VENV_BIN)))
    config_flag = "--config.file=/etc/tasks_exporter/tasks_exporter.toml"
    assert config_flag in words
    return [f"--config.file={config}" if w == config_flag else w for w in words]


def credential_env(tmp_path: Path, password: str) -> dict[str, str]:
    """What LoadCredential=mysql-password:... gives the service."""
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    write_secret(directory / "mysql-password", password, mode=0o400)
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def unit_config(db: TasksDB, *, allow: str = '["127.0.0.1/32"]') -> str:
    """The config file as docs/operations.md writes it for the unit: the password a credential."""
    return mysql_config(
        port=db.server.port,
        user=db.user,
        database=db.database,
        password_file=Path("unused"),
        extra_web=f"allow = {allow}",
    ).replace('password_file = "unused"', 'credential = "mysql-password"')


@pytest.mark.mariadb
def test_the_units_command_line_is_accepted_as_written(tmp_path: Path, tasks_db: TasksDB) -> None:
    config = tmp_path / "tasks_exporter.toml"
    config.write_text(unit_config(tasks_db), encoding="utf-8")
    command = exec_start(config)
    env = credential_env(tmp_path, tasks_db.password)
    result = run_cli(*command[1:], "--config.check", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


class Activated:
    """The exporter started by systemd-socket-activate, which listens first and passes the
    socket as fd 3 on the first connection, as systemd does for the .socket unit."""

    def __init__(self, tmp_path: Path, command: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "activated.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "systemd-socket-activate",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    *(f"--setenv={k}={v}" for k, v in env.items()),
                    *command,
                ],
                stdout=log,
                stderr=log,
                cwd=tmp_path,
            )
        # systemd-socket-activate listens at once; the exporter starts on the first connection.
        wait_for(self._listening, timeout=10, what="systemd-socket-activate listening")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def activated(tmp_path: Path, tasks_db: TasksDB) -> Iterator[Activated]:
    config = tmp_path / "tasks_exporter.toml"
    config.write_text(unit_config(tasks_db), encoding="utf-8")
    command = exec_start(config)
    service = Activated(tmp_path, command, credential_env(tmp_path, tasks_db.password))
    yield service
    service.stop()


def _scrape_from(port: int, source: str) -> str:
    """Everything the server sends back to a scrape from this address ("" when closed on)."""
    chunks = []
    with (
        contextlib.suppress(ConnectionResetError, BrokenPipeError),
        socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s,
    ):
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@needs_systemd_tools
@pytest.mark.mariadb
def test_socket_activation_serves_through_the_passed_socket_and_keeps_the_allowlist(
    activated: Activated,
) -> None:
    wait_for(
        lambda: "tasks_exporter_up 1.0" in _scrape_from(activated.port, "127.0.0.1"),
        timeout=15,
        what=f"a scrape through the passed socket\n{activated.log()}",
    )
    reply = _scrape_from(activated.port, "127.0.0.1")
    assert reply.startswith("HTTP/1.1 200")
    assert 'tasks_exporter_tasks{status="Success"} 5.0' in reply
    assert "process_resident_memory_bytes" in reply  # process metrics work here too
    # The allowlist is 127.0.0.1/32: another loopback address is closed on without a byte.
    assert _scrape_from(activated.port, "127.0.0.2") == ""
    assert lines_matching(activated.log(), "listen=systemd:127.0.0.1:")
    # A reload keeps the passed socket: it is systemd's, not the configuration's.
    # (systemd-socket-activate execs the service in its own process, as systemd does.)
    activated.process.send_signal(signal.SIGHUP)
    wait_for(
        lambda: lines_matching(activated.log(), "configuration reloaded"),
        timeout=5,
        what=f"the reload\n{activated.log()}",
    )
    assert _scrape_from(activated.port, "127.0.0.1").startswith("HTTP/1.1 200")


def test_systemd_socket_without_sockets_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("--demo", "--web.systemd-socket", cwd=tmp_path)
    assert result.returncode == 1
    assert "--web.systemd-socket: no sockets were passed" in result.stderr
    assert "Traceback" not in result.stderr


def test_systemd_socket_with_a_listen_address_is_refused(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--web.systemd-socket", "--web.listen-address", "127.0.0.1:0", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("tasks_exporter: config error: --web.systemd-socket:")


def test_systemd_is_told_when_the_exporter_is_ready_reloading_and_stopping(
    exporters: Exporters,
    tmp_path: Path,
) -> None:
    """Type=notify: READY=1 once it serves, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(10)
        exporter = exporters(tmp_path / "run", "", "--demo")
        exporter.start(env={"NOTIFY_SOCKET": str(path)})
        assert notify.recv(256) == b"READY=1"
        assert get(exporter.host, exporter.port, "/-/healthy").status == 200
        exporter.reload()
        assert notify.recv(256) == b"RELOADING=1"
        assert notify.recv(256) == b"READY=1"
        assert exporter.stop() == 0
        assert notify.recv(256) == b"STOPPING=1"
