"""tasks_exporter's benchmark: every target of issue 7, measured side by side in one run.

    scripts/dev bench [--keep | --data-dir DIR] [--quick] [--reps N] [--seconds S] [--pairs N]

Prints a Markdown table (figure, measured, target, floor, result) on stdout, progress on
stderr, and exits 1 when a target is missed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import random
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pymysql

from bench.database import (
    FRESH,
    SCHEMA,
    SIZES,
    SMALL,
    USER,
    Database,
    Table,
    large_tables,
    log,
    open_database,
)
from bench.load import WRK, Fresh, Run, raw_response, scrape_exactly, scrape_fresh, wrk
from exporter.config import TasksConfig
from exporter.sources.mysql import quote
from exporter.sources.source import build_query
from testing.certificates import CA
from testing.exporter_process import Exporter, mysql_config, wait_for

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What Prometheus 2 sends: OpenMetrics preferred, the text format accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
GZIP = {"Accept-Encoding": "gzip"}
OPENMETRICS = {"Accept": PROMETHEUS_ACCEPT}
FORMATS = {
    "text": {},
    "text, gzip": GZIP,
    "OpenMetrics": OPENMETRICS,
    "OpenMetrics, gzip": {**OPENMETRICS, **GZIP},
}
# One wrk thread: on two cores, a second one would take the core the server under test needs
# (the floor, with a thread per connection, suffers less from that than a one-thread server).
WRK_THREADS = 1
THROUGHPUT_SHARE = 0.8  # of the floor's requests per second, at least
P99_FACTOR = 1.5  # times the floor's p99 latency, at most
CPU_PER_SCRAPE_MS = 0.1
CPU_PER_MINUTE_S = 0.1  # at one scrape a second, each a cache miss
SLOW_SCRAPING_SECONDS = 60.0
RSS_LIMIT_KIB = 32 * 1024
RSS_GROWTH_KIB = 256  # "flat": 1% of the limit over 100,000 scrapes
MEMORY_SCRAPES = 100_000
COLLECTION_OVERHEAD = 0.02
POLL = 0.005  # seconds between scrapes while waiting for a change
PARTS = ("serving", "tls", "freshness", "database", "collection")


@dataclass(frozen=True)
class Options:
    reps: int
    seconds: float
    pairs: int
    trials: int
    window: float
    cpu_requests: int
    fresh_scrapes: int  # new connections timed, with TLS and without


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    target: str
    floor: str = ""
    ok: bool | None = None  # None: for information


# -- processes -------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of a process, in clock ticks, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pid_of(exporter: Exporter) -> int:
    assert exporter.process is not None  # noqa: S101 - started
    return exporter.process.pid


@dataclass
class Bench:
    database: Database
    work: Path
    options: Options

    @contextlib.contextmanager
    def exporter(
        self,
        table: Table,
        *,
        interval: float,
        timeout: float,
        web: str = "",
        args: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> Iterator[Exporter]:
        """The exporter on one table, run as installed (from compiled bytecode), ready."""
        workdir = Path(tempfile.mkdtemp(prefix=f"exporter-{table.name}-", dir=self.work))
        config = mysql_config(
            port=self.database.server.port,
            user=USER,
            database=SCHEMA,
            password_file=self.database.password_file,
            interval=f"{interval:g}s",
            timeout=f"{timeout:g}s",
            extra_tasks=f'table = "{table.name}"',
            extra_web=web,
        )
        exporter = Exporter(workdir, config, *args, ssl_context=ssl_context)
        exporter.start(env={"PYTHONDONTWRITEBYTECODE": ""})
        try:
            exporter.wait_ready(timeout=15 + 3 * timeout)
            yield exporter
        finally:
            exporter.stop()

    # -- serving -----------------------------------------------------------------------------

    def serving(self) -> list[Row]:
        """Throughput, latency, CPU and memory of /metrics against the floor, per format."""
        big = Table(f"tasks_{SIZES[-1]}", SIZES[-1])
        with (
            self.exporter(SMALL, interval=15, timeout=5) as small,
            self.exporter(big, interval=60, timeout=30) as large,
        ):
            variants = [(f"{SMALL.label}, {f}", small, h) for f, h in FORMATS.items()]
            variants += [
                (f"{big.label}, text", large, {}),
                (f"{big.label}, OpenMetrics, gzip", large, {**OPENMETRICS, **GZIP}),
            ]
            floor_dir = self.work / "floor"
            floor_dir.mkdir(exist_ok=True)
            for i, (_, exporter, headers) in enumerate(variants):
                response = raw_response(exporter.host, exporter.port, "/metrics", headers)
                (floor_dir / f"v{i}").write_bytes(response)
            with floor_server(floor_dir) as (floor_pid, floor_port):
                rows = self._throughput(variants, floor_port)
                rows += self._cpu(variants, floor_pid, floor_port)
                rows += self._memory(small, large, floor_pid)
            rows += self._slow_scraping(small)
        return rows

    def _throughput(
        self, variants: list[tuple[str, Exporter, dict[str, str]]], floor_port: int
    ) -> list[Row]:
        opts = self.options
        runs: dict[int, list[tuple[Run, Run]]] = {i: [] for i in range(len(variants))}
        urls = [
            (f"http://127.0.0.1:{floor_port}/v{i}", f"http://{e.host}:{e.port}/metrics", h)
            for i, (_, e, h) in enumerate(variants)
        ]
        for floor_url, url, headers in urls:  # warm-up
            wrk(floor_url, seconds=1, threads=WRK_THREADS, headers=headers)
            wrk(url, seconds=1, threads=WRK_THREADS, headers=headers)
        for rep in range(opts.reps):
            log(f"throughput and latency: round {rep + 1} of {opts.reps}")
            for i, (floor_url, url, headers) in enumerate(urls):
                # Floor and exporter back to back, alternating which goes first.
                order = [url, floor_url] if rep % 2 else [floor_url, url]
                done = {
                    u: wrk(u, seconds=opts.seconds, threads=WRK_THREADS, headers=headers)
                    for u in order
                }
                runs[i].append((done[url], done[floor_url]))
        rows = []
        for i, (name, _, _) in enumerate(variants):
            pairs = runs[i]
            share = statistics.median(m.rps / b.rps for m, b in pairs)
            factor = statistics.median(m.p99_ms / b.p99_ms for m, b in pairs)
            errors = sum(m.errors for m, _ in pairs)
            mine_rps = statistics.median(m.rps for m, _ in pairs)
            base_rps = statistics.median(b.rps for _, b in pairs)
            rows.append(
                Row(
                    f"throughput, {name}",
                    f"{mine_rps:,.0f}/s = {share:.0%} of floor"
                    + (f", {errors} errors" if errors else ""),
                    f">= {THROUGHPUT_SHARE:.0%} of floor",
                    f"{base_rps:,.0f}/s",
                    share >= THROUGHPUT_SHARE and errors == 0,
                )
            )
            mine_p99 = statistics.median(m.p99_ms for m, _ in pairs)
            base_p99 = statistics.median(b.p99_ms for _, b in pairs)
            rows.append(
                Row(
                    f"p99 latency, {name}",
                    f"{mine_p99:.2f} ms = {factor:.2f}x floor",
                    f"<= {P99_FACTOR}x floor",
                    f"{base_p99:.2f} ms",
                    factor <= P99_FACTOR,
                )
            )
        return rows

    def _cpu(
        self, variants: list[tuple[str, Exporter, dict[str, str]]], floor_pid: int, floor_port: int
    ) -> list[Row]:
        n = self.options.cpu_requests
        log(f"CPU per scrape: {n:,} scrapes per format")
        rows = []
        for i, (name, exporter, headers) in enumerate(variants):
            pid = pid_of(exporter)
            before = cpu_ticks(pid)
            scrape_exactly(exporter.host, exporter.port, "/metrics", n, headers=headers)
            ms = (cpu_ticks(pid) - before) / CLOCK_TICKS / n * 1000
            before = cpu_ticks(floor_pid)
            scrape_exactly("127.0.0.1", floor_port, f"/v{i}", n, headers=headers)
            floor_ms = (cpu_ticks(floor_pid) - before) / CLOCK_TICKS / n * 1000
            rows.append(
                Row(
                    f"CPU per scrape, {name}",
                    f"{ms:.3f} ms",
                    f"<= {CPU_PER_SCRAPE_MS} ms",
                    f"{floor_ms:.3f} ms",
                    ms <= CPU_PER_SCRAPE_MS,
                )
            )
        return rows

    def _memory(self, small: Exporter, large: Exporter, floor_pid: int) -> list[Row]:
        # The runs above are the warm-up: hundreds of thousands of scrapes in every format.
        log(f"resident memory: {MEMORY_SCRAPES:,} scrapes")
        warm = {e.port: rss_kib(pid_of(e)) for e in (small, large)}
        per_format = MEMORY_SCRAPES // len(FORMATS)
        for headers in FORMATS.values():
            scrape_exactly(small.host, small.port, "/metrics", per_format, headers=headers)
        after = rss_kib(pid_of(small))
        growth = after - warm[small.port]
        floor_rss = f"{rss_kib(floor_pid) / 1024:.1f} MiB"
        return [
            Row(
                f"resident memory after warm-up, {SMALL.label}",
                f"{warm[small.port] / 1024:.1f} MiB",
                f"<= {RSS_LIMIT_KIB // 1024} MiB",
                floor_rss,
                warm[small.port] <= RSS_LIMIT_KIB,
            ),
            Row(
                f"resident memory after warm-up, {Table('', SIZES[-1]).label}",
                f"{warm[large.port] / 1024:.1f} MiB",
                f"<= {RSS_LIMIT_KIB // 1024} MiB",
                floor_rss,
                warm[large.port] <= RSS_LIMIT_KIB,
            ),
            Row(
                f"resident memory growth over {MEMORY_SCRAPES:,} more scrapes",
                f"{growth:+d} KiB (to {after / 1024:.1f} MiB)",
                f"flat: <= {RSS_GROWTH_KIB} KiB",
                "",
                growth <= RSS_GROWTH_KIB and after <= RSS_LIMIT_KIB,
            ),
        ]

    def _slow_scraping(self, exporter: Exporter) -> list[Row]:
        """Exporter CPU over a minute of one scrape a second, as Prometheus scrapes (OpenMetrics,
        gzip, one keep-alive connection): each scrape is a cache miss, because the process
        metrics are read afresh once a second and each scrape comes over a second after the
        last. The collections of that minute (every 15 s) are counted too."""
        seconds = SLOW_SCRAPING_SECONDS
        log(f"CPU at one scrape a second: {seconds:g} s")
        pid = pid_of(exporter)
        conn = http.client.HTTPConnection(exporter.host, exporter.port, timeout=10)
        scrapes = 0
        try:
            before = cpu_ticks(pid)
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                conn.request("GET", "/metrics", headers={**OPENMETRICS, **GZIP})
                response = conn.getresponse()
                response.read()
                assert response.status == 200  # noqa: S101 - the exporter serves
                scrapes += 1
                time.sleep(1.0)
            elapsed = time.monotonic() - started
            used = (cpu_ticks(pid) - before) / CLOCK_TICKS
        finally:
            conn.close()
        per_minute = used / elapsed * 60
        return [
            Row(
                "CPU at one scrape a second, 3 rows, OpenMetrics, gzip",
                f"{per_minute:.2f} s per minute ({scrapes} scrapes in {elapsed:.0f} s)",
                f"<= {CPU_PER_MINUTE_S} s per minute",
                "",
                per_minute <= CPU_PER_MINUTE_S,
            )
        ]

    # -- TLS -------------------------------------------------------------------------------------

    def tls(self) -> list[Row]:
        """A scraper's first scrape on a new connection: TLS handshake included, against the
        same over plain HTTP, alternating one and the other on two exporters of the 3-row table."""
        pki = self.work / "pki"
        ca = CA.create(pki, "bench-ca")
        server = ca.issue("exporter")
        web_config = pki / "web.yml"
        web_config.write_text(
            f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n",
            encoding="utf-8",
        )
        context = ssl.create_default_context(cafile=str(ca.cert))
        headers = {**OPENMETRICS, **GZIP}  # as Prometheus scrapes
        n = self.options.fresh_scrapes
        log(f"TLS handshake and first scrape: {n:,} new connections, with TLS and without")
        tls: list[Fresh] = []
        plain: list[Fresh] = []
        try:
            with (
                self.exporter(
                    SMALL,
                    interval=15,
                    timeout=5,
                    args=("--web.config.file", str(web_config)),
                    ssl_context=context,
                ) as secure,
                self.exporter(SMALL, interval=15, timeout=5) as clear,
            ):
                for _ in range(n):
                    tls.append(
                        scrape_fresh(
                            secure.host, secure.port, "/metrics", headers=headers, context=context
                        )
                    )
                    plain.append(
                        scrape_fresh(
                            clear.host, clear.port, "/metrics", headers=headers, context=None
                        )
                    )
        except (AssertionError, OSError, RuntimeError) as exc:  # no answer over TLS: say so
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return [
                Row(
                    f"TLS handshake + first scrape, {SMALL.label}, OpenMetrics, gzip",
                    f"failed after {len(tls)} scrapes: {why}",
                    "reported",
                    ok=False,
                )
            ]
        ms = 1000
        tls_total = [f.answered * ms for f in tls]
        plain_total = [f.answered * ms for f in plain]
        shake = statistics.median(f.connected * ms for f in tls)
        return [
            Row(
                f"TLS handshake + first scrape, {SMALL.label}, OpenMetrics, gzip",
                f"median {statistics.median(tls_total):.2f} ms, p99 {_p99(tls_total):.2f} ms"
                f" (to the end of the handshake: median {shake:.2f} ms)",
                "reported",
            ),
            Row(
                f"plain HTTP connect + first scrape, {SMALL.label}, OpenMetrics, gzip",
                f"median {statistics.median(plain_total):.2f} ms, p99 {_p99(plain_total):.2f} ms",
                "reported (the baseline)",
            ),
        ]

    # -- freshness ---------------------------------------------------------------------------

    def freshness(self) -> list[Row]:
        """Time from a committed change to a scrape that shows it."""
        interval = 1.0
        latencies: list[float] = []
        durations: list[float] = []
        with self.exporter(FRESH, interval=interval, timeout=0.5) as exporter:
            for trial in range(self.options.trials):
                log(f"freshness: change {trial + 1} of {self.options.trials}")
                time.sleep(random.uniform(0, interval))  # noqa: S311 - a random phase, not a secret
                expected = Seen.scrape(exporter).pending + 1
                self.database.execute(
                    f"INSERT INTO `{SCHEMA}`.`{FRESH.name}` (task_title, task_status)"
                    " VALUES ('fresh', 'Pending')"
                )
                committed = time.monotonic()
                seen = _until(
                    exporter,
                    lambda s: s.pending == expected,  # noqa: B023 - used before the loop goes on
                    timeout=interval * 5,
                    every=POLL,
                    what="the new row on /metrics",
                )
                latencies.append(time.monotonic() - committed)
                durations.append(seen.duration)
        bound = interval + max(durations) + POLL
        return [
            Row(
                "freshness: commit to /metrics",
                f"max {max(latencies) * 1000:.0f} ms, median "
                f"{statistics.median(latencies) * 1000:.0f} ms ({len(latencies)} changes)",
                f"<= interval + query time + poll = {bound * 1000:.0f} ms",
                "",
                max(latencies) <= bound,
            )
        ]

    # -- database cost -----------------------------------------------------------------------

    def database_cost(self) -> list[Row]:
        """SELECTs the server counts for the exporter's account, with 0, 1 and 200 scrapers."""
        interval = 1.0
        rows = []
        web = "max_connections = 300"
        with self.exporter(SMALL, interval=interval, timeout=0.5, web=web) as exporter:
            for scrapers in (0, 1, 200):
                log(f"database cost: {scrapers} scrapers for {self.options.window:g} s")
                selects, collections, started = self._after_collection(exporter)
                served = 0
                if scrapers:
                    run = wrk(
                        f"http://{exporter.host}:{exporter.port}/metrics",
                        seconds=self.options.window,
                        connections=scrapers,
                        headers={**OPENMETRICS, **GZIP},
                    )
                    served = run.requests
                else:
                    time.sleep(self.options.window)
                selects_after, collections_after, ended = self._after_collection(exporter)
                n_selects = selects_after - selects
                n_collections = collections_after - collections
                intervals = (ended - started) / interval
                ok = n_selects == n_collections and abs(n_collections - intervals) <= 1
                rows.append(
                    Row(
                        f"database cost, {scrapers} scraper{'' if scrapers == 1 else 's'}",
                        f"{n_selects} SELECTs, {n_collections} collections in "
                        f"{intervals:.1f} intervals; {served:,} scrapes",
                        "1 SELECT per collection, 1 collection per interval",
                        "",
                        ok,
                    )
                )
        return rows

    def _after_collection(self, exporter: Exporter) -> tuple[int, int, float]:
        """(SELECTs by the exporter's account, collections, time), read just after a
        collection, so that none is in flight while they are read."""
        seen = _next_collection(
            exporter, after=Seen.scrape(exporter).collections, timeout=5, every=0.05
        )
        return self.database.user_selects(), seen.collections, time.monotonic()

    # -- collection overhead -----------------------------------------------------------------

    def collection(self) -> list[Row]:
        """The exporter's collection time against the same query over a kept connection."""
        # The server's own time for every statement of the exporter's account (the slow log,
        # as a table, with a threshold of 0), to take the server's share out of each timing.
        self.database.execute("TRUNCATE TABLE mysql.slow_log")
        self.database.execute("SET GLOBAL log_output = 'TABLE'")
        self.database.execute("SET GLOBAL long_query_time = 0")
        self.database.execute("SET GLOBAL slow_query_log = 1")
        direct = pymysql.connect(
            host="127.0.0.1",
            port=self.database.server.port,
            user=USER,
            password=self.database.password_file.read_text(),
            database=SCHEMA,
            autocommit=True,
            ssl_disabled=True,
            read_timeout=600,
        )
        try:
            return [self._collection(table, direct) for table in [SMALL, *large_tables()]]
        finally:
            direct.close()
            self.database.execute("SET GLOBAL slow_query_log = 0")
            self.database.execute("SET GLOBAL long_query_time = 10")

    def _collection(
        self, table: Table, direct: pymysql.connections.Connection[pymysql.cursors.Cursor]
    ) -> Row:
        sql = build_query(TasksConfig(table=(table.name,)), quote)

        def query() -> float:
            with direct.cursor() as cursor:
                started = time.perf_counter()
                cursor.execute(sql)
                cursor.fetchall()
                return time.perf_counter() - started

        query()  # the buffer pool holds the table from here on
        q = query()
        interval = max(1.0, float(round(3 * q + 1)))
        gap = (interval - 2 * q) / 2
        pairs = self.options.pairs
        log(f"collection time, {table.label}: {pairs} pairs, {q * 1000:.0f} ms per query")
        ours: list[tuple[float, float]] = []  # (collection time, the server's time)
        theirs: list[tuple[float, float]] = []  # (direct query time, the server's time)
        with self.exporter(table, interval=interval, timeout=0.9 * interval) as exporter:
            seen = Seen.scrape(exporter)
            for _ in range(pairs):
                seen = _next_collection(
                    exporter, after=seen.collections, timeout=interval * 3, every=0.01
                )
                # The direct query in the middle of the quiet time between two collections:
                # they never overlap, and each follows the same idle time.
                time.sleep(gap)
                plain = query()
                thread = direct.thread_id()  # type: ignore[no-untyped-call]  # untyped in the stubs
                server = self._server_times(sql, thread)
                ours.append((seen.duration, server[0]))
                theirs.append((plain, server[1]))
                # No polling while the exporter's query runs: it would take CPU from it.
                time.sleep(max(0.0, seen.started + interval + 0.9 * q - time.time()))
        # Each timing is the server's time plus the client's: compared at equal server time,
        # what is left is what the exporter adds to a direct query, whatever the load on the
        # server (at a load average of 40, timings of the same query varied by 20%).
        overhead = (
            statistics.median(
                (o / os) / (t / ts) for (o, os), (t, ts) in zip(ours, theirs, strict=True)
            )
            - 1
        )
        checked = table.rows >= SIZES[0]
        return Row(
            f"collection time, {table.label}",
            f"{statistics.median(o for o, _ in ours) * 1000:,.1f} ms;"
            f" {overhead:+.2%} vs direct at equal server time;"
            f" {statistics.median(o - s for o, s in ours) * 1000:.2f} ms outside the server",
            f"<= +{COLLECTION_OVERHEAD:.0%}" if checked else "(information)",
            f"{statistics.median(t for t, _ in theirs) * 1000:,.1f} ms;"
            f" {statistics.median(t - s for t, s in theirs) * 1000:.2f} ms outside the server",
            overhead <= COLLECTION_OVERHEAD if checked else None,
        )

    def _server_times(self, sql: str, direct_thread: int) -> tuple[float, float]:
        """The server's time for the latest run of `sql` by the exporter and by the direct
        connection, from the slow log."""
        rows = self.database.execute(
            "SELECT thread_id, query_time FROM mysql.slow_log WHERE sql_text = %s"
            " ORDER BY start_time DESC LIMIT 4",
            (sql,),
        )
        times: dict[bool, float] = {}
        for thread, spent in rows:
            assert isinstance(spent, timedelta)  # noqa: S101 - TIME(6) column
            times.setdefault(thread == direct_thread, spent.total_seconds())
        return times[False], times[True]


_SAMPLE = re.compile(rb"^(\w+)(\{[^}]*\})? (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Seen:
    """What one scrape showed, read with a regular expression: the bench polls often, and a
    full parse would take CPU from the very query being timed."""

    collections: int
    up: bool
    duration: float
    last_success: float
    pending: int

    @property
    def started(self) -> float:
        """When the last successful collection started (Unix time)."""
        return self.last_success - self.duration

    @classmethod
    def scrape(cls, exporter: Exporter) -> Seen:
        samples = {
            (m[1] + (m[2] or b"")).decode(): float(m[3])
            for m in _SAMPLE.finditer(exporter.get("/metrics").body)
        }
        return cls(
            collections=int(
                sum(v for k, v in samples.items() if k.startswith("tasks_exporter_collections_"))
            ),
            up=samples.get("tasks_exporter_up") == 1,
            duration=samples.get("tasks_exporter_collection_duration_seconds", 0.0),
            last_success=samples.get("tasks_exporter_last_success_timestamp_seconds", 0.0),
            pending=int(samples.get('tasks_exporter_tasks{status="Pending"}', -1)),
        )


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _until(
    exporter: Exporter, done: Callable[[Seen], bool], *, timeout: float, every: float, what: str
) -> Seen:
    """The first scrape for which `done` is true."""

    def check() -> Seen | None:
        seen = Seen.scrape(exporter)
        return seen if done(seen) else None

    return wait_for(check, timeout=timeout, what=what, every=every)


def _next_collection(exporter: Exporter, *, after: int, timeout: float, every: float) -> Seen:
    """The first scrape that shows more than `after` collections."""
    return _until(
        exporter, lambda s: s.collections > after, timeout=timeout, every=every, what="a collection"
    )


@contextlib.contextmanager
def floor_server(directory: Path) -> Iterator[tuple[int, int]]:
    """The floor (bench/floor.py) serving the responses in `directory`: (pid, port)."""
    process = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "floor.py"), str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None  # noqa: S101 - piped
        port = int(process.stdout.readline())
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(10)


# -- report ----------------------------------------------------------------------------------


def conditions(database: Database) -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = Path("/proc/meminfo").read_text().split()[1]
    wrk_version = subprocess.run(
        [str(WRK), "--version"], capture_output=True, text=True, check=False
    )
    machine = f"{os.cpu_count()} x {cpu}, {int(memory) // 1024 // 1024} GiB"
    software = f"Python {platform.python_version()}, MariaDB {database.version()}"
    return [
        f"- machine: {machine}, Linux {platform.release()}",
        f"- software: {software}, {wrk_version.stdout.split(' [')[0].strip()}",
        f"- load average at start: {Path('/proc/loadavg').read_text().split()[0]}",
    ]


def table(rows: list[Row]) -> str:
    lines = ["| figure | measured | target | floor | result |", "|---|---|---|---|---|"]
    for row in rows:
        result = "-" if row.ok is None else ("pass" if row.ok else "**FAIL**")
        lines.append(f"| {row.figure} | {row.measured} | {row.target} | {row.floor} | {result} |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Options]:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parser = argparse.ArgumentParser(prog="scripts/dev bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the database and its tables in {cache / 'tasks_exporter-bench'}",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the database here instead")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a quick look")
    parser.add_argument("--reps", type=int, help="rounds of floor/exporter runs (default 7)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 2)")
    parser.add_argument("--pairs", type=int, help="collections timed per table (default 7)")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable; the exit code then speaks for it alone)",
    )
    args = parser.parse_args(argv)
    if args.keep and args.data_dir is None:
        args.data_dir = cache / "tasks_exporter-bench"
    quick = args.quick
    options = Options(
        reps=args.reps or (3 if quick else 7),
        seconds=args.seconds or (1.0 if quick else 2.0),
        pairs=args.pairs or (3 if quick else 7),
        trials=3 if quick else 7,
        window=5.0 if quick else 10.0,
        cpu_requests=5_000 if quick else 20_000,
        fresh_scrapes=200 if quick else 1_000,
    )
    return args, options


def main(argv: list[str]) -> int:
    args, options = parse_args(argv)
    if not WRK.exists():
        print("bench: wrk is missing: apt-get install wrk (scripts/dev bench does as root)")
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "exporter")], check=True)
    tables = [SMALL, FRESH, *large_tables()]
    with (
        tempfile.TemporaryDirectory(prefix="tasks_exporter-bench-work-") as work,
        open_database(args.data_dir, tables) as database,
    ):
        bench = Bench(database, Path(work), options)
        about = conditions(database)
        started = time.monotonic()
        parts: dict[str, Callable[[], list[Row]]] = {
            "serving": bench.serving,
            "tls": bench.tls,
            "freshness": bench.freshness,
            "database": bench.database_cost,
            "collection": bench.collection,
        }
        rows = [row for name in args.only or PARTS for row in parts[name]()]
        about.append(f"- load average at end: {Path('/proc/loadavg').read_text().split()[0]}")
        about.append(
            f"- measured in {time.monotonic() - started:.0f} s: {options.reps} rounds of"
            f" {options.seconds:g} s wrk runs per figure, {options.pairs} collections per table"
        )
    print("\n".join(about))
    print()
    print(table(rows))
    missed = [row.figure for row in rows if row.ok is False]
    if missed:
        print(f"\nbench: {len(missed)} targets missed: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
