"""What the process does to itself at start: no core dumps, an open-files limit that holds the
connection cap."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testing.exporter_process import free_port, get, run_cli, wait_for

NOBODY = 65534


def _as_nobody() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running the exporter as another user needs root and setpriv (util-linux)",
)
def test_the_running_exporter_cannot_be_dumped_or_traced() -> None:
    """The exporter makes itself non-dumpable before it reads a secret: no core dump can hold
    the password, and its /proc files (environ, mem) belong to root, not to its own user; its
    process metrics still work."""
    probe = subprocess.run(
        [*_as_nobody(), sys.executable, "-c", "import exporter"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"{sys.executable} cannot be run by uid {NOBODY} here")
    port = free_port()
    process = subprocess.Popen(
        [*_as_nobody(), *_demo(port)],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        reply = wait_for(lambda: _metrics(port), timeout=15, what="the exporter running as nobody")
        status = Path(f"/proc/{process.pid}/status").read_text(encoding="ascii")
        assert f"Uid:\t{NOBODY}\t" in status
        assert Path(f"/proc/{process.pid}/environ").stat().st_uid == 0  # non-dumpable
        assert "\nprocess_open_fds " in reply
    finally:
        process.terminate()
        assert process.wait(10) == 0


def _demo(port: int) -> list[str]:
    return [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"]


def _metrics(port: int) -> str | None:
    try:
        return get("127.0.0.1", port, "/metrics", timeout=1).text
    except OSError:
        return None


def _with_open_files_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_a_connection_cap_the_open_files_limit_cannot_hold_is_refused(tmp_path: Path) -> None:
    """--config.check refuses a max_connections that needs more open files than the process
    may have, naming the setting, the files needed, the limit and the fix."""
    config = tmp_path / "config.toml"
    config.write_text("[web]\nmax_connections = 500\n", encoding="utf-8")
    args = ("--demo", "--config.file", str(config), "--config.check")
    check = subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        preexec_fn=lambda: _with_open_files_limit(1024),
    )
    assert check.returncode == 2
    assert check.stderr == (
        "tasks_exporter: config error: web.max_connections: 500 connections need up to 1064"
        " open files, above this process's limit of 1024 (ulimit -Hn; LimitNOFILE= in a"
        " systemd unit): lower max_connections or raise the limit\n"
    )
    config.write_text("[web]\nmax_connections = 480\n", encoding="utf-8")
    assert run_cli(*args, cwd=tmp_path).returncode == 0


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    """Started with a low soft limit, the exporter raises it to the hard limit, as Go
    exporters do, so the cap checked against the hard limit is really available."""
    port = free_port()
    process = subprocess.Popen(
        _demo(port),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)),  # noqa: PLW1509
    )
    try:
        wait_for(lambda: _metrics(port), timeout=15, what="the exporter")
        limits = Path(f"/proc/{process.pid}/limits").read_text(encoding="ascii")
        (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
        assert line.split()[3:5] == ["4096", "4096"]
    finally:
        process.terminate()
        assert process.wait(10) == 0
