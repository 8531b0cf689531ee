"""A real Prometheus server for the tests: scrapes what it is told, answers PromQL queries."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from testing.exporter_process import free_port, wait_for


def tool(name: str) -> str:
    """Where a program of Debian's prometheus package is (prometheus, promtool)."""
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} not found: install the Debian package prometheus"
            " (scripts/dev test installs it when run as root)"
        )
    return found


def promtool() -> str:
    return tool("promtool")


class Prometheus:
    """`prometheus` on a loopback port with a throw-away TSDB, scraping every second."""

    def __init__(self, workdir: Path, scrape_configs: str) -> None:
        self.binary = tool("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            f"scrape_configs:{scrape_configs}",
            encoding="utf-8",
        )
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        wait_for(self._ready, timeout=30, what=f"Prometheus to start\n{self.log()}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/-/ready", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def value(self, query: str) -> float | None:
        """The value of an instant query with one result, or None when it has none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": query}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
