"""Collection time on a large table with and without the window and its index.

    .venv/bin/python -m bench.timecolumn [--rows 10000000] [--deadline 1200]

A private MariaDB (deleted at the end) holds one `tasks` table: `task_status` (70% Success, 20%
Pending, 10% Failed), `task_queue` (three kinds) and `created_at` DATETIME spread evenly over the
30 days before the measuring clock. The exporter's own source (exporter/mysql.py, the exact
query and EXPLAIN it runs) is timed, 5 collections per case, median; cases in order: no index,
then the index for the whole table, then the one for the window. Prints a Markdown table. The
run stops loading or measuring at --deadline seconds and prints what it has.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from exporter.config import DatabaseConfig, TasksConfig, Window
from exporter.secret import Secret
from exporter.sources.mysql import MySQLSource, quote
from exporter.sources.source import index_statement, window_bounds
from testing.mariadb_server import MariaDB

DAYS = 30
NOW = 1_780_000_000.0  # the measuring clock: the window is "today" in UTC at this time
CHUNK = 1_000_000
REPEATS = 5


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _load(server: MariaDB, rows: int, deadline: float) -> int:
    """Fill bench.tasks by chunks from the sequence engine; the rows loaded by the deadline."""
    server.execute("CREATE DATABASE bench")
    server.execute(
        "CREATE TABLE bench.tasks (task_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
        " task_status VARCHAR(20), task_queue VARCHAR(20), created_at DATETIME)"
    )
    span = DAYS * 86400
    loaded = 0
    with contextlib.closing(server.connect(read_timeout=None)) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        while loaded < rows and time.monotonic() < deadline:
            n = min(CHUNK, rows - loaded)
            cur.execute(
                "INSERT INTO bench.tasks (task_status, task_queue, created_at)"
                " SELECT ELT(1 + seq %% 10, 'Success', 'Success', 'Success', 'Success', 'Success',"
                " 'Success', 'Success', 'Pending', 'Pending', 'Failed'),"
                " ELT(1 + seq %% 3, 'email', 'billing', 'reports'),"
                " FROM_UNIXTIME(%s + (seq * 7919) %% %s)"
                f" FROM bench.seq_{loaded + 1}_to_{loaded + n}",
                (int(NOW) - span, span),
            )
            loaded += n
            log(f"loaded {loaded:,} rows")
    return loaded


def _measure(source: MySQLSource, tasks: TasksConfig) -> tuple[float, int | None, bool | None]:
    bounds = window_bounds(tasks.window, tasks.zone, NOW) if tasks.window else None
    times = []
    for _ in range(REPEATS):
        started = time.monotonic()
        source.count(bounds)
        times.append(time.monotonic() - started)
    plan = source.plan
    return (
        statistics.median(times),
        None if plan is None else plan.estimated_rows,
        None if plan is None else plan.unindexed,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timecolumn")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--deadline", type=float, default=1200, help="seconds for the whole run")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.deadline
    base = Path(tempfile.mkdtemp(prefix="tasks_exporter-timecolumn-"))
    server = MariaDB(base / "mariadb")
    server.start(
        extra_args=(
            "--innodb-buffer-pool-size=2G",
            "--innodb-log-file-size=512M",
            "--query-cache-type=0",
            f"--tmpdir={base}",
        ),
        timeout=300,
    )
    results: list[str] = []
    try:
        started = time.monotonic()
        rows = _load(server, args.rows, deadline)
        log(f"{rows:,} rows in {time.monotonic() - started:.0f} s")
        server.execute("ANALYZE TABLE bench.tasks")
        server.execute("CREATE USER bench@localhost IDENTIFIED BY 'bench'")
        server.execute("GRANT SELECT ON bench.tasks TO bench@localhost")
        db = DatabaseConfig(
            driver="mysql",
            socket=str(server.socket),
            user="bench",
            password=Secret("bench"),
            database="bench",
        )
        base_tasks = TasksConfig(table=("bench", "tasks"), time_column="created_at")
        cases = {
            "whole table": base_tasks,
            'window = "today"': TasksConfig(
                table=("bench", "tasks"), time_column="created_at", window=Window(today=True)
            ),
        }
        indexes = ["none", "status", "window"]
        results.append(
            "| query | index | collection time (median of 5) | EXPLAIN rows | unindexed |"
        )
        results.append("|---|---|---|---|---|")
        for index in indexes:
            if index != "none":
                tasks = base_tasks if index == "status" else cases['window = "today"']
                statement = index_statement(tasks, quote)
                began = time.monotonic()
                server.execute(statement)
                server.execute("ANALYZE TABLE bench.tasks")
                log(f"{statement} in {time.monotonic() - began:.0f} s")
            for name, tasks in cases.items():
                if time.monotonic() > deadline:
                    log("deadline reached")
                    break
                source = MySQLSource(db, tasks, timeout=120, scan_warning_rows=100_000)
                try:
                    seconds, estimated, unindexed = _measure(source, tasks)
                finally:
                    source.close()
                line = f"| {name} | {index} | {seconds:.3f} s | {estimated:,} | {unindexed} |"
                log(line)
                results.append(line)
    finally:
        server.stop(timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    print(f"{rows:,} rows, MariaDB {server!r}")
    print("\n".join(results))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1:]))
