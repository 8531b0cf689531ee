"""The standard process_* metrics and python_info, as prometheus_client's collectors name them.

They are read from /proc at most once per `refresh` seconds rather than on every scrape, so that
a scrape costs no file reads: a scraper sees figures at most that old.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from exporter.exposition import Family, Rendered, gauge

REFRESH = 1.0  # seconds


def python_info() -> Rendered:
    """python_info{implementation,major,minor,patchlevel,version} 1, which never changes."""
    major, minor, patchlevel = platform.python_version_tuple()
    labels = (
        ("version", platform.python_version()),
        ("implementation", platform.python_implementation()),
        ("major", major),
        ("minor", minor),
        ("patchlevel", patchlevel),
    )
    return Rendered([Family("python_info", "gauge", "Python platform information", ((labels, 1),))])


def _boot_time(proc: Path) -> float | None:
    try:
        with (proc / "stat").open("rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


class ProcessMetrics:
    """CPU, memory, start time and file descriptors of this process (none without /proc)."""

    def __init__(
        self,
        *,
        refresh: float = REFRESH,
        proc: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self._self = proc / "self"
        self._clock = clock
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._page = os.sysconf("SC_PAGESIZE")
        self._boot = _boot_time(proc)
        self._read_at: float | None = None
        self._rendered = Rendered(())

    def __call__(self, _now: float) -> Rendered:
        now = self._clock()
        if self._boot is not None and (
            self._read_at is None or now - self._read_at >= self._refresh
        ):
            self._read_at = now
            self._rendered = Rendered(self.read())
        return self._rendered

    def read(self) -> list[Family]:
        """The families as /proc shows them now; those that cannot be read are left out."""
        out: list[Family] = []
        try:
            stat = (self._self / "stat").read_bytes().rsplit(b")", 1)[-1].split()
        except OSError:
            pass
        else:
            ticks = self._ticks
            out += [
                gauge(
                    "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(stat[20])
                ),
                gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    float(stat[21]) * self._page,
                ),
                gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    float(stat[19]) / ticks + (self._boot or 0.0),
                ),
                Family(
                    "process_cpu_seconds",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                    (((), float(stat[11]) / ticks + float(stat[12]) / ticks),),
                ),
            ]
        try:
            open_fds = len(os.listdir(self._self / "fd"))  # noqa: PTH208 - a count: no Path per entry
            limits = (self._self / "limits").read_bytes().splitlines()
        except OSError:
            return out
        out.append(gauge("process_open_fds", "Number of open file descriptors.", open_fds))
        for line in limits:
            if line.startswith(b"Max open files"):
                soft = line.split()[3]
                if soft.isdigit():  # "unlimited" has no number to show
                    out.append(
                        gauge(
                            "process_max_fds",
                            "Maximum number of open file descriptors.",
                            float(soft),
                        )
                    )
        return out
