"""What a scraper, a browser and an attacker see over HTTP (the real process, demo database)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.exporter_process import (
    DEMO_COUNTS,
    NEVER_IMPORTED,
    Exporter,
    Exporters,
    free_port,
    get,
    imports_while_serving,
    lines_matching,
    parse_metrics,
    run_cli,
    task_counts,
    value,
    wait_for,
)
from testing.prometheus_server import promtool


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One exporter on the embedded demo database, shared by the read-only tests here."""
    exporter = Exporter(tmp_path_factory.mktemp("demo"), "", "--demo").start(ready=True)
    yield exporter
    exporter.stop()


def test_metrics_show_the_demo_counts(demo: Exporter) -> None:
    """/metrics serves the demo's counts per status, up=1, in the text format by default."""
    reply = demo.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(reply.text)
    counts = task_counts(samples)
    assert set(counts) >= {"Success", "Pending", "Failed"}
    assert sum(counts.values()) >= 120
    assert value(samples, "tasks_exporter_up") == 1
    assert any(name.startswith("process_") for name, _ in samples)


def test_openmetrics_and_gzip_are_negotiated(demo: Exporter) -> None:
    """Prometheus's Accept header gets OpenMetrics; Accept-Encoding: gzip gets it compressed."""
    reply = demo.get(
        "/metrics",
        headers={
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "Accept-Encoding": "gzip",
        },
    )
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.headers["content-encoding"] == "gzip"
    text = gzip.decompress(reply.body).decode()
    assert text.endswith("# EOF\n")
    assert re.search(r'^tasks_exporter_tasks\{[^}]*status="Success"', text, re.MULTILINE)


def test_curl_reads_the_compressed_openmetrics(demo: Exporter) -> None:
    """curl --compressed (libcurl's own gzip decoder) gets the OpenMetrics text, one # EOF."""
    curl = shutil.which("curl")
    assert curl
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--fail",
            "--compressed",
            "--header",
            "Accept: application/openmetrics-text;version=1.0.0",
            f"http://127.0.0.1:{demo.port}/metrics",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert result.stdout.count("# EOF") == 1
    assert result.stdout.endswith("\n# EOF\n")
    assert "# TYPE tasks_exporter_collections counter" in result.stdout


def test_promtool_finds_nothing_to_lint(demo: Exporter) -> None:
    """`promtool check metrics` on a live scrape prints nothing and succeeds."""
    result = subprocess.run(
        [promtool(), "check", "metrics"],
        input=demo.get("/metrics").body,
        capture_output=True,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_landing_page_links_metrics_and_forbids_scripts(demo: Exporter) -> None:
    """/ is a small HTML page with the counts and a link to /metrics, under a strict CSP."""
    reply = demo.get("/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert '<a href="/metrics">' in reply.text
    assert "<td>Pending</td>" in reply.text


def test_health_and_readiness(demo: Exporter) -> None:
    """/-/healthy and /-/ready answer 200 once data has been collected."""
    assert demo.get("/-/healthy").status == 200
    assert demo.get("/-/ready").status == 200


def test_start_line_says_where_it_listens_and_whom_it_allows(demo: Exporter) -> None:
    """The first log line names the listen address, the allowlist and the data source."""
    first = demo.log().splitlines()[0]
    assert 'msg="tasks_exporter started"' in first
    assert f"listen=127.0.0.1:{demo.port}" in first
    assert "allow=127.0.0.0/8,::1/128" in first
    assert 'source="embedded demo database"' in first


def test_version_flag() -> None:
    """--version prints the name and version and exits 0."""
    result = run_cli("--version", cwd=Path.cwd())
    assert result.returncode == 0
    assert result.stdout.startswith("tasks_exporter, version ")


def test_config_check_reports_every_problem_and_binds_nothing(tmp_path: Path) -> None:
    """--config.check prints one line per problem, exits 2, and never opens the port."""
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text("[database]\nport = 0\n[web]\nallow = []\n", encoding="utf-8")
    result = run_cli(
        "--config.file", str(config), "--config.check",
        "--web.listen-address", f"127.0.0.1:{port}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert all(line.startswith("tasks_exporter: config error: ") for line in lines)
    assert {line.split(": ")[2] for line in lines} >= {
        "database.port",
        "database.user",
        "web.allow",
    }
    assert "Traceback" not in result.stderr


def test_invalid_config_at_start_exits_before_binding(tmp_path: Path) -> None:
    """Starting with a bad config gives the same messages and exit code, and binds no port."""
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text("[web]\nallow = []\n", encoding="utf-8")
    result = run_cli(
        "--config.file", str(config), "--web.listen-address", f"127.0.0.1:{port}", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "config error: web.allow: is empty" in result.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    """A listen address already taken ends the exporter with exit 1 and a line naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--demo", "--web.listen-address", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_cleanly_and_quickly(
    exporters: Exporters, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM and SIGINT stop the exporter within a few seconds with exit code 0."""
    exporter = exporters(tmp_path, "", "--demo").start(ready=True)
    started = time.monotonic()
    assert exporter.stop(sig) == 0
    assert time.monotonic() - started < 3
    assert "shutting down" in exporter.log()


def _connect_from(source: str, port: int, dest: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((dest, port))
    return s


def _answer_to(source: str, port: int) -> bytes:
    """What a client at `source` gets back for a request: b"" when closed at accept."""
    with _connect_from(source, port) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return s.recv(1024)
        except ConnectionResetError:
            return b""


def test_dual_stack_listener_matches_ipv4_clients_as_ipv4(
    exporters: Exporters, tmp_path: Path
) -> None:
    """On a dual-stack `:port` listener, IPv4 clients (seen as ::ffff:a.b.c.d) are matched and
    logged as IPv4; ::1 is refused by an IPv4-only allowlist."""
    port = free_port("::")
    exporter = exporters(tmp_path, '[web]\nallow = ["127.0.0.1/32"]\n', "--demo", listen=f":{port}")
    exporter.port = port
    exporter.start(ready=True)
    try:
        assert get("127.0.0.1", port, "/-/healthy").status == 200
        with pytest.raises(ConnectionError):  # closed without a byte of answer
            get("::1", port, "/-/healthy")
        assert _answer_to("127.0.0.2", port) == b""
        refusals = lines_matching(exporter.log(), "refused by allowlist")
        assert [line.split("client=")[1] for line in refusals] == ["::1", "127.0.0.2"]
        # the process counts what the server refuses (the server alone: test_web_admission.py)
        assert value(exporter.scrape(), "tasks_exporter_allowlist_refused_connections_total") == 2
    finally:
        exporter.stop()


@pytest.mark.parametrize(
    ("form", "ipv4", "ipv6"),
    [(":{port}", True, True), ("[::]:{port}", True, True), ("0.0.0.0:{port}", True, False)],
)
def test_every_interface_forms_listen_as_go_exporters_do(
    exporters: Exporters, tmp_path: Path, form: str, ipv4: bool, ipv6: bool
) -> None:
    """`:port` and `[::]:port` take IPv4 and IPv6 clients, `0.0.0.0:port` IPv4 only, as Go
    exporters read them; the start line names the address as it was given."""
    port = free_port("::")
    exporter = exporters(tmp_path, "", "--demo", listen=form.format(port=port))
    exporter.port = port
    exporter.start(ready=True)
    try:
        first = exporter.log().splitlines()[0]
        assert f"listen={form.format(port=port)} " in first
        for host, served in (("127.0.0.1", ipv4), ("::1", ipv6)):
            if served:
                assert get(host, port, "/-/healthy").status == 200
            else:
                with pytest.raises(ConnectionRefusedError):
                    get(host, port, "/-/healthy")
    finally:
        exporter.stop()


def test_once_on_the_demo_prints_counts_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """--once --demo prints the counts of the demo's window (today: yesterday's tasks are left
    out) and removes its temporary database."""
    # A temporary directory of its own: other programs' demos come and go in the shared one.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = run_cli("--demo", "--once", cwd=tmp_path, env={"TMPDIR": str(tmp)})
    assert result.returncode == 0, result.stderr
    assert task_counts(parse_metrics(result.stdout)) == DEMO_COUNTS
    assert list(tmp.iterdir()) == []


def test_no_configuration_at_all_is_refused_with_a_pointer_to_demo(tmp_path: Path) -> None:
    """Run with nothing configured, the exporter exits 2 saying what to add, and names --demo."""
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert "no database configured" in result.stderr
    assert "--demo" in result.stderr


def test_config_check_does_not_touch_the_network(tmp_path: Path) -> None:
    """--config.check accepts a valid config whose database is unreachable: it never connects."""
    secret = tmp_path / "pw"
    secret.write_text("pw", encoding="utf-8")
    secret.chmod(0o600)
    with socket.socket() as listener:  # a port that accepts but would never answer MySQL
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(
            f'[database]\nport = {port}\nuser = "u"\ndatabase = "d"\npassword_file = "{secret}"\n',
            encoding="utf-8",
        )
        result = run_cli("--config.file", str(config), "--config.check", cwd=tmp_path, timeout=10)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_client_that_never_reads_cannot_grow_server_memory(
    exporters: Exporters, tmp_path: Path
) -> None:
    """Thousands of pipelined scrapes whose answers are never read: memory stays bounded,
    others are still served, and the stuck connection is dropped at request_timeout."""
    exporter = exporters(tmp_path, '[web]\nrequest_timeout = "2s"\n', "--demo").start(ready=True)
    try:
        exporter.scrape()
        baseline = exporter.stats().rss
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", exporter.port)) as greedy:
            greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            greedy.setblocking(False)  # noqa: FBT003 - the socket API
            sent, deadline = 0, time.monotonic() + 3
            batch = request * 100
            while sent < 50_000 and time.monotonic() < deadline:
                try:
                    greedy.send(batch)
                    sent += 100
                except BlockingIOError:
                    time.sleep(0.01)
            time.sleep(0.5)
            growth = exporter.stats().rss - baseline
            assert growth < 20 * 1024 * 1024, f"grew {growth} bytes after {sent} requests"
            started = time.monotonic()
            assert exporter.get("/metrics").status == 200
            assert time.monotonic() - started < 0.5
            greedy.setblocking(True)  # noqa: FBT003 - the socket API
            greedy.settimeout(10)

            def dropped() -> bool:
                try:
                    return greedy.recv(1 << 20) == b""
                except ConnectionResetError:
                    return True

            wait_for(dropped, timeout=10, what="the stuck connection to be dropped")
    finally:
        exporter.stop()


def test_ipv6_loopback_scraper_is_allowed_by_default(exporters: Exporters, tmp_path: Path) -> None:
    """Listening on [::1], a scraper on ::1 is served under the default allowlist."""
    port = free_port("::1")
    exporter = exporters(tmp_path, "", "--demo", listen=f"[::1]:{port}")
    exporter.host, exporter.port = "::1", port
    exporter.start(ready=True)
    try:
        assert task_counts(exporter.scrape())["Success"] == DEMO_COUNTS["Success"]
    finally:
        exporter.stop()


def test_custom_telemetry_path_and_json_logs(exporters: Exporters, tmp_path: Path) -> None:
    """--web.telemetry-path moves the metrics (and the page's link); --log.format json logs JSON."""
    exporter = exporters(
        tmp_path, "", "--demo", "--web.telemetry-path", "/custom", "--log.format", "json"
    ).start(ready=True)
    try:
        assert exporter.get("/custom").status == 200
        assert exporter.get("/metrics").status == 404
        assert '<a href="/custom">' in exporter.get("/").text
        records = [json.loads(line) for line in exporter.log().splitlines()]
        assert records[0]["msg"] == "tasks_exporter started"
        assert {"ts", "level", "msg"} <= set(records[0])
    finally:
        exporter.stop()


def test_the_demo_imports_only_what_it_uses(exporters: Exporters, tmp_path: Path) -> None:
    """The demo, serving every format and the page, imports prometheus_client and sqlite3,
    but neither pymysql nor the idna codec."""
    imported = imports_while_serving(exporters(tmp_path, "", "--demo"))
    assert {"asyncio", "sqlite3", "prometheus_client"} <= imported
    assert imported & (NEVER_IMPORTED | {"pymysql"}) == set()
