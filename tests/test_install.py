"""The production steps of docs/operations.md, followed as written, as far as a machine
without systemd as PID 1 allows: build, install into an empty venv, database user, files and
modes, checks, start.

The commands are read from docs/operations.md itself, with only the paths moved into the
test's directory, so the guide cannot drift from what works.
"""

from __future__ import annotations

import re
import secrets
import stat
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from testing.exporter_process import Exporter, free_port, get, parse_metrics, task_counts, wait_for
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Running in production (systemd)"
# Every module of the package and its subpackages, as paths under exporter/.
MODULES = sorted(
    p.relative_to(REPO / "exporter").as_posix() for p in (REPO / "exporter").rglob("*.py")
)


def guide_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the production section, in order."""
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end > 0 else None]
    return [
        (m.group(1), "\n".join(line.strip() for line in m.group(2).splitlines()))
        for m in re.finditer(r"```(\w+)\n(.*?)```", section, re.DOTALL)
    ]


class Moved:
    """Rewrites the guide's text to this test's places; each rewrite must apply, or the guide
    changed and this test has to follow."""

    def __init__(self, pairs: dict[str, str]) -> None:
        self.pairs = pairs

    def __call__(self, text: str, *expected: str) -> str:
        for old in expected:
            assert old in text, f"the guide's step no longer mentions {old!r}:\n{text}"
        for old, new in self.pairs.items():
            text = text.replace(old, new)
        return text


def installed_in(prefix: Path, etc: Path, db: TasksDB, user: str, pw: str) -> dict[str, str]:
    """The docs' install and database places, moved to a test's directories and database."""
    return {
        "/opt/tasks_exporter": str(prefix),
        "/etc/tasks_exporter": str(etc),
        "CHANGE-ME": pw,
        "'tasks_exporter'@": f"'{user}'@",
        "flasktest.tasks": db.qualified_table,
        '"/run/mysqld/mysqld.sock"': f'"{db.server.socket}"',
        'user = "tasks_exporter"': f'user = "{user}"',
        'database = "flasktest"': f'database = "{db.database}"',
    }


def sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )


def test_the_production_steps_work_as_written(tmp_path: Path, tasks_db: TasksDB) -> None:
    blocks = guide_blocks()
    assert [lang for lang, _ in blocks] == ["sh", "sql", "sh", "toml", "sh", "sh", "sh", "sh"]
    install, create_user, password, config, check, _units, _allow, _tls = (t for _, t in blocks)
    db = tasks_db
    user, pw = f"tx_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    prefix, etc = tmp_path / "opt" / "tasks_exporter", tmp_path / "etc" / "tasks_exporter"
    moved = Moved(
        {
            ".venv/bin/python": sys.executable,
            "--outdir dist .": f"--outdir {tmp_path / 'dist'} {REPO}",
            "install dist/": f"install {tmp_path / 'dist'}/",
            **installed_in(prefix, etc, db, user, pw),
        }
    )

    # 1. Build, then install the wheel into an empty virtual environment (apt is the machine's).
    steps = [line for line in install.splitlines() if not line.startswith("apt-get ")]
    result = sh(moved("\n".join(steps), ".venv/bin/python -m build", "/opt/tasks_exporter"), REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("tasks_exporter-*.whl")
    executable = prefix / "bin" / "tasks_exporter"
    assert executable.exists()

    # 2. The least-privilege user, with the guide's SQL.
    for statement in moved(create_user, "CHANGE-ME", "flasktest.tasks").split(";"):
        if statement.strip():
            db.server.execute(statement)
    try:
        # 3. The password file, and its mode.
        result = sh(moved(password, "/etc/tasks_exporter"), tmp_path)
        assert result.returncode == 0, result.stderr
        secret = etc / "mysql-password"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert secret.read_text(encoding="utf-8") == pw

        # 4. The configuration file, mode 0644.
        config_file = etc / "tasks_exporter.toml"
        config_file.write_text(moved(config, "/run/mysqld/mysqld.sock"), encoding="utf-8")
        config_file.chmod(0o644)

        # 5. --config.check, then --once, exactly as the guide runs them.
        result = sh(moved(check, "--config.check", "--once"), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "configuration is valid" in result.stdout
        assert task_counts(parse_metrics(result.stdout.split("\n", 1)[1])) == {
            "Success": 5,
            "Pending": 3,
            "Failed": 2,
        }

        # Then a normal start of the installed program, with the credential as systemd
        # passes it, and a scrape.
        exporter = Exporter(tmp_path / "run", config_file.read_text(encoding="utf-8"))
        exporter.command = lambda: [  # type: ignore[method-assign]
            str(executable),
            f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{exporter.port}",
        ]
        exporter.start(env={"CREDENTIALS_DIRECTORY": str(etc)}, ready=True)
        try:
            assert exporter.counts() == {"Success": 5, "Pending": 3, "Failed": 2}
        finally:
            exporter.stop()
    finally:
        db.server.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
    assert wheel.name.startswith("tasks_exporter-")


def test_the_wheel_and_sdist_hold_the_package_and_run_from_an_empty_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line
        ]
        entry_points = archive.read(
            next(n for n in names if n.endswith("entry_points.txt"))
        ).decode()
    assert sorted(n.split("/", 1)[1] for n in names if n.startswith("exporter/")) == sorted(
        [*MODULES, "py.typed"]
    )
    assert not [n for n in names if n.startswith("tests/")]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert sorted(requires) == sorted(declared["project"]["dependencies"])
    assert "tasks_exporter = exporter.cli:run" in entry_points

    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {f"exporter/{m}" for m in MODULES} <= members
    shipped = {
        "pyproject.toml",
        "README.md",
        "docs/operations.md",
        "systemd/tasks_exporter.service",
    }
    assert shipped <= members

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    version = subprocess.run(
        [str(venv / "bin" / "tasks_exporter"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("tasks_exporter, version ")
    port = free_port()
    demo = subprocess.Popen(
        [str(venv / "bin" / "tasks_exporter"), "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        cwd=tmp_path,
    )
    try:
        reply = wait_for(
            lambda: _metrics(port), timeout=15, what="the installed exporter serving the demo"
        )
        assert sum(task_counts(parse_metrics(reply)).values()) > 0
    finally:
        demo.terminate()
        assert demo.wait(10) == 0


def _metrics(port: int) -> str | None:
    try:
        reply = get("127.0.0.1", port, "/metrics", timeout=2)
    except OSError:
        return None
    return reply.text if reply.status == 200 and "tasks_exporter_up 1.0" in reply.text else None
