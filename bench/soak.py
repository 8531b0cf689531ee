"""Soak: the exporter against a private MariaDB for a while, broken and changed along the way.

    .venv/bin/python bench/soak.py                  # 10 minutes
    .venv/bin/python bench/soak.py --duration 1h    # longer on request

It starts a private MariaDB (the test suite's harness) with the seeded tasks table, and the
exporter on it with a 1 s collection interval. For the whole duration it scrapes /metrics once
a second (alternately as Prometheus does, OpenMetrics and gzip, and as plain text) and changes
the table every few seconds. The exporter is never restarted.

Warm-up (a tenth of the run, 20 to 60 s) runs every path once, a short database outage
included: the first failed reconnects raise the exporter's resident memory by a few MiB
(pymysql builds a TLS context, loading the system's CA certificates, for every connection
attempt), and a baseline taken before that would show this rise, not a trend. Later outages
usually add little, but can add more (see docs/performance.md). After warm-up the resident memory,
threads and open
descriptors are taken as the baseline; the database is then stopped for a few seconds and
started again twice (at a third and two thirds of the rest), and the same figures are taken at
the end. It exits 1 when one is beyond its stated margin, when a scrape failed (the exporter is
up throughout), or when a scrape with up=1 showed counts the table never held.
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

# Run by path, so the repository root (where the testing harness is) is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import parse_duration
from testing.exporter_process import (
    Exporter,
    ProcessStats,
    Reply,
    Samples,
    db_config,
    parse_metrics,
    task_counts,
    value,
)
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB, make_tasks_db

MiB = 2**20
# Margins at the end against the values after warm-up: what "flat" means here.
RSS_MARGIN = 2 * MiB
THREADS_MARGIN = 0
FDS_MARGIN = 0  # both taken between scrapes that saw up=1: the one connection is open

PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    "Accept-Encoding": "gzip",
}
STATUSES = ("Success", "Pending", "Failed", "Retry")
DOWN_FOR = 5.0  # seconds the database stays stopped at each outage


@dataclass
class Truth:
    """The table's counts over time, as the soak changed them: (time recorded, counts)."""

    history: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, db: TasksDB) -> None:
        counts = {"Success": 0, "Pending": 0, "Failed": 0}
        counts.update({("NULL" if s is None else s): n for s, n in db.rows().items()})
        with self.lock:
            self.history.append((time.time(), counts))

    def around(self, moment: float) -> list[dict[str, int]]:
        """The counts in effect at `moment`, and those just before and after (a change may
        commit while a collection runs, and is recorded just after its commit)."""
        with self.lock:
            history = list(self.history)
        index = max((i for i, (t, _) in enumerate(history) if t <= moment), default=0)
        return [c for _, c in history[max(0, index - 1) : index + 2]]


@dataclass
class Chaos:
    """Changes the table every few seconds, and stops and starts the database when due."""

    db: TasksDB
    truth: Truth
    outages: list[tuple[float, str]]  # (seconds from the start, what it is), in order
    started: float
    stop: threading.Event = field(default_factory=threading.Event)
    changes: int = 0
    done: list[tuple[str, float, float]] = field(default_factory=list)  # (what, stopped, back)

    def run(self) -> None:
        rng = random.Random(6)  # noqa: S311 - the same run every time, not a secret
        while not self.stop.wait(rng.uniform(2, 5)):
            if self.outages and time.monotonic() - self.started >= self.outages[0][0]:
                _, what = self.outages.pop(0)
                self.db.server.stop()
                stopped = time.time()
                time.sleep(DOWN_FOR)
                self.db.server.start()
                self.done.append((what, stopped, time.time()))
            self.change(rng)

    def change(self, rng: random.Random) -> None:
        table = self.db.qualified_table
        what = rng.choice(("insert", "finish", "fail", "delete"))
        if what == "insert":
            self.db.insert(rng.choice(STATUSES), rng.randint(1, 5))
        elif what in ("finish", "fail"):
            new = "Success" if what == "finish" else "Failed"
            self.db.server.execute(
                f"UPDATE {table} SET task_status = %s WHERE task_status IN ('Pending', 'Retry')"
                f" ORDER BY task_id LIMIT {rng.randint(1, 3)}",
                (new,),
            )
        else:
            self.db.server.execute(f"DELETE FROM {table} ORDER BY task_id LIMIT 1")
        self.changes += 1
        self.truth.record(self.db)


@dataclass
class Scrapes:
    latencies: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # why, for each failed scrape
    wrong: list[str] = field(default_factory=list)  # up=1 but counts the table never held
    checked: int = 0  # scrapes with up=1 whose counts were checked against the table
    down: int = 0  # scrapes with up=0 (the database was stopped)


def _samples(reply: Reply) -> Samples:
    """What an answer says, parsed as a scraper would; raises if it is not a valid one."""
    if reply.status != 200:
        raise ValueError(f"status {reply.status}")
    body = reply.body
    if reply.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    text = body.decode("utf-8")
    if not reply.headers["content-type"].startswith("application/openmetrics-text"):
        return parse_metrics(text)
    if not text.endswith("# EOF\n"):
        raise ValueError("OpenMetrics answer without # EOF")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in parse_om(text)  # type: ignore[no-untyped-call]  # untyped upstream
        for s in f.samples
    }


def scrape(exporter: Exporter, n: int, truth: Truth, out: Scrapes) -> bool:
    """One scrape, recorded in `out`; whether it said up=1."""
    started = time.perf_counter()
    try:
        reply = exporter.get("/metrics", headers=PROMETHEUS if n % 2 else {})
        out.latencies.append(time.perf_counter() - started)
        samples = _samples(reply)
    except Exception as exc:  # every failure is a failed scrape, with its reason
        out.failed.append(f"scrape {n}: {type(exc).__name__}: {exc}")
        return False
    if value(samples, "tasks_exporter_up") != 1:
        out.down += 1
        return False
    last = value(samples, "tasks_exporter_last_success_timestamp_seconds")
    counts = task_counts(samples)
    out.checked += 1
    if last is None or counts not in truth.around(last):
        out.wrong.append(f"scrape {n}: {counts} at last success {last}")
    return True


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress as it goes
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", default="10m", help="how long to run (default 10m)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    duration = parse_duration(args.duration)
    if duration < 60:
        parser.error("--duration: at least 60s, for a warm-up and two restarts")
    workdir = Path(tempfile.mkdtemp(prefix="tasks_exporter-soak-"))
    result = 1
    try:
        result = soak(workdir, duration)
    finally:
        if result == 0 and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")
    return result


def soak(workdir: Path, duration: float) -> int:
    warm_up = max(20.0, min(60.0, duration / 10))
    rest = duration - warm_up
    outages = [
        (warm_up / 3, "warm-up outage"),
        (warm_up + rest / 3, "restart 1"),
        (warm_up + 2 * rest / 3, "restart 2"),
    ]
    server = MariaDB(workdir / "mariadb")
    server.start()
    exporter: Exporter | None = None
    chaos: Chaos | None = None
    try:
        db = make_tasks_db(server)
        config = db_config(workdir, db, interval="1s", timeout="0.5s")
        exporter = Exporter(workdir / "exporter", config).start(ready=True)
        truth = Truth()
        truth.record(db)
        started = time.monotonic()
        chaos = Chaos(db, truth, outages, started)
        chaos_thread = threading.Thread(target=chaos.run, daemon=True)
        chaos_thread.start()
        out = Scrapes()
        first = warm = end = None
        n = 0
        print(f"soak: {duration:g} s (warm-up {warm_up:g} s), work directory {workdir}")
        was_up = False
        while (elapsed := time.monotonic() - started) < duration:
            n += 1
            # Taken a second after the last scrape, whose connection is closed by now; kept
            # when the scrapes either side say up=1, so the database connection is open.
            stats = exporter.stats()
            up = scrape(exporter, n, truth, out)
            if up and was_up:
                first = first or stats
                if warm is None and elapsed >= warm_up:
                    warm = stats
                if elapsed >= duration - 10:
                    end = stats  # the last one taken while up
            was_up = up
            if n % 60 == 0:
                print(
                    f"  {elapsed:4.0f} s: {n} scrapes, {len(out.failed)} failed; {exporter.stats()}"
                )
            time.sleep(max(0.0, started + n - time.monotonic()))  # one a second
        chaos.stop.set()
        chaos_thread.join(60)
        assert first and warm and end  # noqa: PT018, S101 - up=1 is seen in each phase
        return report(out, chaos, (first, warm, end), n)
    finally:
        if chaos is not None:
            chaos.stop.set()
        if exporter is not None:
            exporter.stop()
        server.stop()


def report(
    out: Scrapes, chaos: Chaos, stats: tuple[ProcessStats, ProcessStats, ProcessStats], n: int
) -> int:
    cuts = statistics.quantiles(out.latencies, n=100, method="inclusive")
    print(
        f"scrapes: {n}, failed {len(out.failed)} (the exporter was up throughout);"
        f" {out.checked} with up=1 checked against the table, {len(out.wrong)} wrong;"
        f" {out.down} with up=0 while the database was stopped"
    )
    print(
        f"scrape latency: p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms,"
        f" max {max(out.latencies) * 1000:.1f} ms"
    )
    print(f"table changes: {chaos.changes}")
    for what, stopped, back in chaos.done:
        at = time.strftime("%X", time.localtime(stopped))
        print(f"{what}: database stopped at {at} for {back - stopped:.1f} s")
    first, warm, end = stats
    print(f"  {'':<8} {'first':>8} {'after warm-up':>14} {'at the end':>11}   margin")
    failures = len(out.failed) + len(out.wrong)
    for name, margin, unit in (
        ("RSS", RSS_MARGIN, "MiB"),
        ("threads", THREADS_MARGIN, ""),
        ("fds", FDS_MARGIN, ""),
    ):
        scale, fmt = (MiB, ".1f") if unit else (1, ".0f")
        a, b, c = (getattr(s, name.lower()) / scale for s in (first, warm, end))
        ok = c <= b + margin / scale
        failures += not ok
        print(
            f"  {name:<8} {a:>8{fmt}} {b:>14{fmt}} {c:>11{fmt}}"
            f"   +{margin / scale:g} {unit:<4} {'ok' if ok else 'EXCEEDED'}"
        )
    for line in out.failed + out.wrong:
        print(f"  {line}")
    if len(chaos.done) < len(("warm-up outage", "restart 1", "restart 2")):
        print("not every planned outage happened")
        failures += 1
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
