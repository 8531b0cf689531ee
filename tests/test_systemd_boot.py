"""The production section of docs/operations.md run as written on Debian 12 with systemd as
PID 1, and what the running systemd then shows: socket activation, readiness, reload, the
sandbox, the IP filter, TLS through credentials, a bad config failing once, a quick stop.

The tests run in order against one booted container (module fixtures), as an administrator
would go through the steps; `-m container` selects them, `-m "not container"` leaves them out.
"""

from __future__ import annotations

import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_install import REPO, Moved, guide_blocks

from testing import systemd_container as container
from testing.exporter_process import parse_metrics, task_counts, value, wait_for
from testing.tasks_table import SEED

if (why := container.unavailable()) is not None:
    pytest.skip(why, allow_module_level=True)  # one line for the module, not one per test

pytestmark = [
    pytest.mark.container,
    pytest.mark.usefixtures("checked"),  # the guide's steps 1-6, done once for every test here
]

CHECKOUT = "/root/tasks_exporter"  # the checkout inside the container: the wheel and systemd/
PASSWORD = "CHANGE-ME"  # the guide's, as written: this database lives and dies with the test
CONFIG = "/etc/tasks_exporter/tasks_exporter.toml"
METRICS = "http://127.0.0.1:9775/metrics"
SERVICE = "tasks_exporter.service"


@dataclass(frozen=True)
class Steps:
    """The guide's fenced blocks, by step."""

    install: str
    create_user: str
    password: str
    config: str
    check: str
    units: str
    allow: str
    tls: str


@pytest.fixture(scope="module")
def steps() -> Steps:
    return Steps(*(text for _, text in guide_blocks()))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory, steps: Steps) -> Path:
    """What the container sees of the checkout: the wheel built here by the guide's own
    command, its dependencies (the container has no route to PyPI), the systemd directory."""
    stage = tmp_path_factory.mktemp("checkout")
    build = next(line for line in steps.install.splitlines() if " -m build " in line)
    moved = Moved({".venv/bin/python": sys.executable, "--outdir dist .": f"--outdir dist {REPO}"})
    subprocess.run(["bash", "-euc", moved(build, "--outdir dist .")], cwd=stage, check=True)
    (wheel,) = (stage / "dist").glob("tasks_exporter-*.whl")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"),
            *("--dest", str(stage / "wheels"), str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    shutil.copytree(REPO / "systemd", stage / "systemd")
    return stage


@pytest.fixture(scope="module")
def rootfs() -> container.RootFS:
    return container.root_filesystem()


@pytest.fixture(scope="module")
def machine(
    tmp_path_factory: pytest.TempPathFactory, checkout: Path, rootfs: container.RootFS
) -> Iterator[container.Container]:
    """Debian 12 booted with systemd as PID 1, its MariaDB up and holding the tutorial's table."""
    workdir = tmp_path_factory.mktemp("container")
    with container.booted(rootfs.path, workdir, binds={checkout: CHECKOUT}) as booted:
        seed = ", ".join(
            f"('Task {i}', '{status}')"
            for i, status in enumerate((s for s, n in SEED.items() for _ in range(n)), 1)
        )
        booted.run(
            ["mariadb"],
            stdin="CREATE DATABASE flasktest;"
            "CREATE TABLE flasktest.tasks (task_id INT NOT NULL AUTO_INCREMENT,"
            " task_title VARCHAR(50), task_status VARCHAR(50), PRIMARY KEY (task_id));"
            f"INSERT INTO flasktest.tasks (task_title, task_status) VALUES {seed};",
            check=True,
        )
        yield booted


def table(machine: container.Container) -> dict[str, int]:
    """The true counts, from the database inside the container."""
    rows = machine.run(
        ["mariadb", "-N", "-e", "SELECT task_status, COUNT(*) FROM flasktest.tasks GROUP BY 1"],
        check=True,
    ).stdout
    return {status: int(n) for status, n in (line.split("\t") for line in rows.splitlines())}


def scrape(machine: container.Container, url: str = METRICS, *curl: str) -> str:
    """What curl inside the container gets ("" when the connection is closed on it)."""
    return machine.run(["curl", "-s", "--max-time", "10", *curl, url]).stdout


def show(machine: container.Container, *properties: str) -> dict[str, str]:
    out = machine.run(["systemctl", "show", SERVICE, "-p", ",".join(properties)], check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def journal(machine: container.Container) -> str:
    return machine.run(["journalctl", "-q", "-o", "cat", "-u", SERVICE]).stdout


def script(block: str) -> str:
    """A block of the guide as a script, with only what cannot work in the container moved out:
    pip finds the dependencies in the copied checkout, the container has no route to PyPI."""
    return f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={CHECKOUT}/wheels\n{block}"


@pytest.fixture(scope="module")
def checked(machine: container.Container, steps: Steps) -> tuple[str, str]:
    """Steps 1 to 5 as written (install, database user, password, config, checks), and step 6
    but its scrape: the units installed and the socket enabled. The output of the checks."""
    install = "\n".join(line for line in steps.install.splitlines() if " -m build " not in line)
    machine.sh(script(install), cwd=CHECKOUT, check=True, timeout=300)
    machine.run(["mariadb"], stdin=steps.create_user, check=True)
    machine.sh(steps.password, check=True)
    machine.run(["install", "-m", "0644", "/dev/stdin", CONFIG], stdin=steps.config, check=True)
    result = machine.sh(steps.check, check=True)
    machine.sh(units_setup(steps), cwd=CHECKOUT, check=True)
    return result.stdout, result.stderr


def units_setup(steps: Steps) -> str:
    """Step 6 up to its scrape."""
    *setup, scrape = steps.units.splitlines()
    assert scrape.startswith("curl ")
    return "\n".join(setup)


def test_the_production_steps_install_and_check_the_exporter_inside_debian(
    machine: container.Container,
    checked: tuple[str, str],
    rootfs: container.RootFS,
    figure: Callable[[str], None],
) -> None:
    """Steps 1-5 as written: --config.check says valid and --once prints the table's counts."""
    if rootfs.built_seconds is not None:
        figure(f"root file system built in {rootfs.built_seconds:.0f} s")
    figure(f"container booted (systemd and MariaDB up) in {machine.boot_seconds:.1f} s")
    stdout, _ = checked
    assert "configuration is valid" in stdout
    assert task_counts(parse_metrics(stdout.split("\n", 1)[1])) == table(machine)
    venv = machine.run(["cat", "/opt/tasks_exporter/pyvenv.cfg"], check=True).stdout
    assert "home = /usr/bin\n" in venv  # Debian's own python3


def test_the_first_scrape_starts_the_service_through_the_socket(
    machine: container.Container, steps: Steps
) -> None:
    """Step 6 as written: the socket listens, the service starts on the first scrape, and that
    scrape already shows up 1 (readiness waits for the first collection)."""
    curl = steps.units.splitlines()[-1]
    assert machine.run(["systemctl", "is-active", "tasks_exporter.socket"]).stdout == "active\n"
    assert machine.run(["systemctl", "is-active", SERVICE]).stdout == "inactive\n"
    first = machine.sh(curl).stdout
    assert machine.run(["systemctl", "is-active", SERVICE]).stdout == "active\n"
    assert task_counts(parse_metrics(scrape(machine))) == table(machine)
    assert first == "tasks_exporter_up 1.0\n"


def test_a_fresh_start_answers_its_first_scrape_with_fresh_counts(
    machine: container.Container,
) -> None:
    """Stopped, the table changed, then one scrape: it starts the service and shows the new
    counts with up 1, not an empty or stale answer."""
    machine.run(["systemctl", "stop", SERVICE], check=True)
    machine.run(
        ["mariadb"],
        stdin="INSERT INTO flasktest.tasks (task_title, task_status) VALUES ('new', 'Pending');",
        check=True,
    )
    samples = parse_metrics(scrape(machine))
    assert value(samples, "tasks_exporter_up") == 1.0
    assert task_counts(samples) == table(machine)


def test_the_service_runs_sandboxed_without_its_password_in_sight(
    machine: container.Container,
) -> None:
    """A dynamic user, no capabilities, no new privileges, a read-only /, no core dumps, room
    for the connection cap, and the password in neither environ nor argv."""
    scrape(machine)
    pid = show(machine, "MainPID")["MainPID"]
    proc = f"/proc/{pid}"
    status = dict(
        line.split(":\t", 1) for line in machine.run(["cat", f"{proc}/status"]).stdout.splitlines()
    )
    assert status["Uid"].split()[0] != "0"
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    root = next(
        line.split()
        for line in machine.run(["cat", f"{proc}/mountinfo"]).stdout.splitlines()
        if line.split()[4] == "/"
    )
    assert "ro" in root[5].split(",")
    environ = machine.run(["cat", f"{proc}/environ"]).stdout
    cmdline = machine.run(["cat", f"{proc}/cmdline"]).stdout
    assert "CREDENTIALS_DIRECTORY=" in environ
    assert "tasks_exporter" in cmdline
    assert PASSWORD not in environ
    assert PASSWORD not in cmdline
    limits = machine.run(["cat", f"{proc}/limits"]).stdout
    core = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
    files = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
    assert core is not None
    assert core.groups() == ("0", "0"), limits
    assert files is not None
    # LimitNOFILE= as the unit sets it (tests/test_systemd.py checks it holds the connection
    # cap), or as far as this machine lets anyone raise it: above the default of 1024 anyway.
    unit = int(show(machine, "LimitNOFILE")["LimitNOFILE"])
    ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert int(files.group(1)) == min(unit, ceiling), limits


def test_reload_applies_a_changed_file_and_keeps_serving_on_an_invalid_one(
    machine: container.Container,
) -> None:
    """systemctl reload, on a system without procps' kill: a valid file takes effect (here an
    allowlist without 127.0.0.0/8), an invalid one is refused and the old one keeps serving."""
    scrape(machine)
    pid = show(machine, "MainPID")["MainPID"]
    original = machine.run(["cat", CONFIG], check=True).stdout
    machine.run(["rm", "-f", "/usr/bin/kill"], check=True)  # procps' (this overlay only)
    ipv6 = "http://[::1]:9775/metrics"
    try:
        machine.sh(f"sed -i 's|^allow = .*|allow = [\"::1/128\"]|' {CONFIG}", check=True)
        reload = machine.run(["systemctl", "reload", SERVICE])
        assert reload.returncode == 0, reload.stderr + journal(machine)[-2000:]
        assert scrape(machine) == ""  # closed on: 127.0.0.1 is no longer allowed
        samples = parse_metrics(scrape(machine, ipv6))
        assert value(samples, "tasks_exporter_config_last_reload_successful") == 1.0

        machine.sh(f"sed -i 's|^allow = .*|allow = []|' {CONFIG}", check=True)
        assert machine.run(["systemctl", "reload", SERVICE]).returncode == 0
        samples = parse_metrics(scrape(machine, ipv6))
        assert value(samples, "tasks_exporter_config_last_reload_successful") == 0.0
        assert task_counts(samples) == table(machine)
        assert scrape(machine) == ""  # the old allowlist still holds
        assert "configuration reload refused" in journal(machine)
        assert show(machine, "MainPID")["MainPID"] == pid
    finally:
        machine.run(["install", "-m", "0644", "/dev/stdin", CONFIG], stdin=original, check=True)
        machine.run(["systemctl", "reload", SERVICE])
    assert "tasks_exporter_up 1.0" in scrape(machine)


def connect(address: str, port: int) -> str:
    """What a TCP connection from this host to the container does: connected, refused, or
    timeout (the packets were dropped)."""
    try:
        socket.create_connection((address, port), timeout=3).close()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    return "connected"


def test_ip_address_allow_drops_other_clients_until_step_7_allows_them(
    machine: container.Container, steps: Steps
) -> None:
    """From the host over the veth link the port gives nothing (dropped by the kernel, with the
    container's bpf() allowed) while localhost in the container is served; step 7 as written,
    with the host's address for 192.0.2.10, lets the host scrape."""
    assert connect(machine.address, 9) == "refused"  # the link works: a closed port answers
    assert connect(machine.address, 9775) == "timeout"
    assert "tasks_exporter_up 1.0" in scrape(machine)
    opened = Moved({"192.0.2.10": machine.host_address})(steps.allow, "192.0.2.10")
    machine.sh(opened, check=True)
    reply = subprocess.run(
        ["curl", "-s", "--max-time", "10", f"http://{machine.address}:9775/metrics"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert task_counts(parse_metrics(reply)) == table(machine)


def test_tls_with_key_and_certificate_from_load_credential(
    machine: container.Container, steps: Steps
) -> None:
    """A root-only key and its certificate reach the dynamic user through the shipped
    drop-in: HTTPS is served, plain HTTP on the port gets nothing but a 400."""
    machine.sh(
        "cd /etc/tasks_exporter && (umask 077; openssl req -x509 -newkey ec"
        " -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost"
        " -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
        " -keyout tls-key.pem -out tls-cert.pem 2>/dev/null)",
        check=True,
    )
    original = machine.run(["cat", CONFIG], check=True).stdout
    try:
        result = machine.sh(steps.tls, cwd=CHECKOUT)
        cacert = ("--cacert", "/etc/tasks_exporter/tls-cert.pem")
        if result.returncode != 0:
            curl = machine.run(["curl", "-sv", *cacert, "https://localhost:9775/metrics"])
            raise AssertionError(f"{result.stderr}\n{curl.stderr}\n{journal(machine)[-2000:]}")
        check, up = result.stdout.splitlines()
        assert check.startswith("tasks_exporter: configuration is valid")
        assert up == "tasks_exporter_up 1.0"
        samples = parse_metrics(scrape(machine, "https://localhost:9775/metrics", *cacert))
        assert task_counts(samples) == table(machine)
        plain = machine.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", METRICS]
        ).stdout
        assert plain in ("400", "000")  # the documented 400, or closed on: never the metrics

        # Without the drop-in the dynamic user cannot read the root-only key: a config error.
        machine.run(["rm", "-r", "/etc/systemd/system/tasks_exporter.service.d"], check=True)
        machine.run(["systemctl", "daemon-reload"], check=True)
        assert machine.run(["systemctl", "restart", SERVICE]).returncode != 0
        assert show(machine, "ExecMainStatus") == {"ExecMainStatus": "2"}
        assert "tls-key.pem" in journal(machine).rsplit("Starting", 1)[-1]
    finally:
        machine.run(["rm", "-rf", "/etc/systemd/system/tasks_exporter.service.d"])
        machine.run(["install", "-m", "0644", "/dev/stdin", CONFIG], stdin=original, check=True)
        machine.run(["systemctl", "daemon-reload"], check=True)
        machine.run(["systemctl", "reset-failed", SERVICE])
        machine.run(["systemctl", "restart", SERVICE])


def test_an_invalid_config_fails_once_with_its_reason_in_the_journal(
    machine: container.Container,
) -> None:
    """A config error (exit 2) is not retried every RestartSec: the unit fails once and the
    journal says why."""
    original = machine.run(["cat", CONFIG], check=True).stdout
    try:
        machine.sh(f"sed -i 's|^allow = .*|allow = []|' {CONFIG}", check=True)
        machine.run(["systemctl", "restart", SERVICE])
        time.sleep(7)  # beyond RestartSec=5s
        state = show(machine, "ActiveState", "NRestarts", "ExecMainStatus")
        assert state == {"ActiveState": "failed", "NRestarts": "0", "ExecMainStatus": "2"}
        assert "config error" in journal(machine)
        assert "allow" in journal(machine)
    finally:
        machine.run(["install", "-m", "0644", "/dev/stdin", CONFIG], stdin=original, check=True)
        machine.run(["systemctl", "reset-failed", SERVICE])


def test_systemctl_stop_takes_a_few_seconds_at_most(
    machine: container.Container,
) -> None:
    """A running, socket-activated exporter stops at once with its socket."""
    wait_for(
        lambda: "tasks_exporter_up 1.0" in scrape(machine),
        timeout=15,
        what="the service serving again",
    )
    started = time.monotonic()
    machine.run(["systemctl", "stop", SERVICE, "tasks_exporter.socket"], check=True)
    assert time.monotonic() - started < 5
    assert show(machine, "ActiveState")["ActiveState"] == "inactive"
