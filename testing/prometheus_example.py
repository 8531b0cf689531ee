"""A private Prometheus server (Debian's prometheus package) for the end-to-end tests.

It scrapes with the example configuration under prometheus/, changed only where a test must:
the target (the exporter on its free port), shorter intervals, and the rule file's absolute
path. Its data lives in the test's tmp dir and it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from testing.exporter_process import free_port, get, wait_for
from testing.mariadb_server import _die_with_parent
from testing.prometheus_server import tool

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "prometheus" / "prometheus.yml"
RULES = REPO / "prometheus" / "tasks_exporter.rules.yml"
RULES_TEST = REPO / "prometheus" / "tasks_exporter.rules.test.yml"
JOB = "tasks_exporter"


def example_config(target: str, interval: float) -> dict[str, Any]:
    """The example prometheus.yml, scraping `target` and evaluating rules every `interval` s."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    every = f"{int(interval * 1000)}ms"
    config["global"]["evaluation_interval"] = every
    config["rule_files"] = [str(CONFIG.parent / name) for name in config["rule_files"]]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job["scrape_interval"] = every
    job["scrape_timeout"] = every
    job["static_configs"] = [{"targets": [target]}]
    return config


class Prometheus:
    """One prometheus process with its own config, storage and loopback port."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        for _ in range(3):  # another test may take the free port before prometheus binds it
            self.port = free_port()
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [
                        tool("prometheus"),
                        f"--config.file={self.config_path}",
                        f"--storage.tsdb.path={self.workdir / 'data'}",
                        f"--web.listen-address={self.host}:{self.port}",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
                )
            self.process = process
            try:
                wait_for(self._ready_or_exited, timeout=timeout, what="prometheus /-/ready")
            except AssertionError as exc:
                self.stop()
                raise AssertionError(f"{exc}\n{self.log()}") from None
            if process.poll() is None:
                return self
            if "address already in use" not in self.log():
                break
        raise AssertionError(f"prometheus exited with {process.returncode}:\n{self.log()}")

    def _ready_or_exited(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            return True
        try:
            return get(self.host, self.port, "/-/ready", timeout=1).status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH and return its `data`, failing on any error Prometheus reports."""
        query = f"?{urlencode(params)}" if params else ""
        reply = get(self.host, self.port, f"/api/v1/{path}{query}", timeout=10)
        body = json.loads(reply.body)
        assert reply.status == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the server's now: the result vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, *, seconds: float, step: float) -> list[dict[str, Any]]:
        """A range query over the last `seconds`, as a graph panel runs it: the result matrix."""
        end = time.time()
        data = self.api(
            "query_range", query=expr, start=str(end - seconds), end=str(end), step=str(step)
        )
        assert data["resultType"] == "matrix", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
