"""The benchmark's database: a private MariaDB holding the tables, loaded once, kept if asked.

Tables are filled by doubling (INSERT ... SELECT of the table into itself), which loads ten
million rows in about a minute here; the index on the status column is built after the rows
are in. A table is recorded in `loaded` only once complete, so an interrupted load is redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testing.mariadb_server import MariaDB

SCHEMA = "bench"
USER = "bench_exporter"

# A buffer pool that holds the largest table with its index, so that a query's time is CPU,
# not disk; a redo log large enough for the bulk inserts; per-user statement counters
# (USER_STATISTICS); no query cache, which would answer a repeated GROUP BY from memory.
SERVER_ARGS = (
    "--innodb-buffer-pool-size=3G",
    "--innodb-log-file-size=1G",
    "--userstat=1",
    "--query-cache-type=0",
    "--query-cache-size=0",
    "--max-connections=500",
    # Doubling a table copies it through a temporary table: in memory rather than on disk.
    "--max-heap-table-size=2G",
    "--tmp-table-size=2G",
)

# The status mix of every generated table, as in a working day: mostly done, some pending.
MIX = (("Success", 7), ("Pending", 2), ("Failed", 1))


@dataclass(frozen=True)
class Table:
    name: str
    rows: int
    index: bool = False

    @property
    def label(self) -> str:
        size = f"{self.rows // 1_000_000}M" if self.rows >= 1_000_000 else f"{self.rows}"
        return f"{size} rows" + (", indexed" if self.index else "")


SMALL = Table("tasks_3", 3)
FRESH = Table("tasks_fresh", 3)  # the freshness test writes to this one
SIZES = (1_000_000, 10_000_000)


def large_tables(sizes: tuple[int, ...] = SIZES) -> list[Table]:
    return [
        Table(f"tasks_{n}{'_idx' if idx else ''}", n, idx) for n in sizes for idx in (False, True)
    ]


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


@dataclass
class Database:
    """The running server, the schema and the exporter's account on it."""

    server: MariaDB
    password_file: Path

    def execute(self, sql: str, args: object = None) -> list[tuple[object, ...]]:
        return self.server.execute(sql, args)

    def user_selects(self) -> int:
        """SELECT statements run by the exporter's account, from the server's own counters."""
        rows = self.execute(
            "SELECT SELECT_COMMANDS FROM information_schema.USER_STATISTICS WHERE USER = %s",
            (USER,),
        )
        return int(str(rows[0][0])) if rows else 0

    def version(self) -> str:
        return str(self.execute("SELECT VERSION()")[0][0])


@contextlib.contextmanager
def open_database(data_dir: Path | None, tables: list[Table]) -> Iterator[Database]:
    """A running server with every table loaded; data_dir None means a throw-away one."""
    base = data_dir or Path(tempfile.mkdtemp(prefix="tasks_exporter-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    with (base / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"bench: another run is using {base}") from None
        server = MariaDB(base / "mariadb")
        log(f"starting MariaDB in {server.base_dir}")
        tmp = base / "tmp"  # its own temporary files, not in a /tmp shared with other programs
        tmp.mkdir(exist_ok=True)
        server.start(extra_args=(*SERVER_ARGS, f"--tmpdir={tmp}"), timeout=300)
        try:
            database = Database(server, _account(server, base))
            _load(database, tables)
            yield database
        finally:
            server.stop(timeout=120)
            if data_dir is None:
                shutil.rmtree(base, ignore_errors=True)


def _account(server: MariaDB, base: Path) -> Path:
    """The exporter's least-privilege account (a new password each run), and its password file."""
    password = secrets.token_urlsafe(16)
    server.execute(f"CREATE DATABASE IF NOT EXISTS `{SCHEMA}` CHARACTER SET utf8mb4")
    server.execute(
        f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY %s"
        " WITH MAX_USER_CONNECTIONS 8",
        (password,),
    )
    server.execute(f"ALTER USER '{USER}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
    server.execute(f"GRANT SELECT ON `{SCHEMA}`.* TO '{USER}'@'127.0.0.1'")
    path = base / "password"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    return path


def _load(database: Database, tables: list[Table]) -> None:
    database.execute(
        f"CREATE TABLE IF NOT EXISTS `{SCHEMA}`.loaded"
        " (name VARCHAR(64) PRIMARY KEY, row_count BIGINT)"
    )
    done = {
        str(name): int(str(n)) for name, n in database.execute(f"SELECT * FROM `{SCHEMA}`.loaded")
    }
    for table in tables:
        if done.get(table.name) == table.rows:
            continue
        started = time.monotonic()
        log(f"loading {SCHEMA}.{table.name}: {table.label} (once; --keep keeps it for next time)")
        _fill(database, table)
        database.execute(
            f"REPLACE INTO `{SCHEMA}`.loaded VALUES (%s, %s)", (table.name, table.rows)
        )
        log(f"loaded {table.name} in {time.monotonic() - started:.0f} s")


def _fill(database: Database, table: Table) -> None:
    name = f"`{SCHEMA}`.`{table.name}`"
    if table.rows < sum(n for _, n in MIX):
        statuses = [s for s, _ in MIX][: table.rows]
    else:
        statuses = [s for s, n in MIX for _ in range(n)]
    copy = (
        f"INSERT INTO {name} (task_title, task_status) SELECT task_title, task_status FROM {name}"
    )
    # Its own connection: a doubling of millions of rows outlasts the harness's read timeout.
    with (
        contextlib.closing(database.server.connect(read_timeout=None)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(
            f"CREATE TABLE {name} (task_id INT NOT NULL AUTO_INCREMENT, task_title VARCHAR(50),"
            " task_status VARCHAR(50), PRIMARY KEY (task_id)) DEFAULT CHARSET=utf8mb4"
        )
        cur.executemany(
            f"INSERT INTO {name} (task_title, task_status) VALUES (%s, %s)",
            [(f"Task {i}", s) for i, s in enumerate(statuses, start=1)],
        )
        rows = len(statuses)
        while rows * 2 <= table.rows:
            cur.execute(copy)
            rows *= 2
        if rows < table.rows:
            cur.execute(f"{copy} LIMIT {table.rows - rows}")
        if table.index:
            cur.execute(f"ALTER TABLE {name} ADD INDEX task_status (task_status)")
        cur.execute(f"ANALYZE TABLE {name}")
        cur.fetchall()
