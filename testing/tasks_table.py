"""The tutorial's `tasks` table, seeded, on a private MariaDB, with a SELECT-only user."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass

from testing.mariadb_server import MariaDB

SEED: dict[str | None, int] = {"Success": 5, "Pending": 3, "Failed": 2}

_counter = itertools.count(1)


@dataclass(frozen=True)
class TasksDB:
    """A database holding the tutorial's `tasks` table, and a SELECT-only user for it."""

    server: MariaDB
    database: str
    table: str
    user: str
    password: str

    @property
    def qualified_table(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    def rows(self) -> dict[str | None, int]:
        """The true number of rows per task_status (NULL status as None)."""
        result = self.server.execute(
            f"SELECT task_status, COUNT(*) FROM {self.qualified_table} GROUP BY task_status"
        )
        return {status: int(count) for status, count in result}

    def insert(self, status: str | None, n: int = 1) -> None:
        """Insert `n` rows with the given status (None inserts NULL)."""
        if n <= 0:
            return
        self.server.executemany(
            f"INSERT INTO {self.qualified_table} (task_title, task_status) VALUES (%s, %s)",
            [(f"Task {i}", status) for i in range(1, n + 1)],
        )

    def drop(self) -> None:
        """Drop the database and the user (both hosts)."""
        self.server.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
        self.server.execute(
            f"DROP USER IF EXISTS '{self.user}'@'localhost', '{self.user}'@'127.0.0.1'"
        )


def make_tasks_db(server: MariaDB) -> TasksDB:
    """Create a uniquely named database with the seeded `tasks` table and a SELECT-only user."""
    suffix = f"{next(_counter)}_{secrets.token_hex(4)}"
    database, user, password = f"t_{suffix}", f"u_{suffix}", secrets.token_urlsafe(16)
    db = TasksDB(server=server, database=database, table="tasks", user=user, password=password)
    server.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    server.execute(
        f"CREATE TABLE {db.qualified_table} ("
        " task_id INT NOT NULL AUTO_INCREMENT,"
        " task_title VARCHAR(50),"
        " task_status VARCHAR(50),"
        " PRIMARY KEY (task_id)"
        ") DEFAULT CHARSET=utf8mb4"
    )
    seed = [
        (f"Task {i}", status)
        for i, status in enumerate(
            (s for s, n in SEED.items() for _ in range(n)),
            start=1,
        )
    ]
    server.executemany(
        f"INSERT INTO {db.qualified_table} (task_title, task_status) VALUES (%s, %s)", seed
    )
    # Both hosts: over the unix socket the client is 'localhost', over TCP (with
    # skip-name-resolve) it is '127.0.0.1'. The connection limit is per account.
    server.execute(
        f"CREATE USER '{user}'@'localhost' IDENTIFIED BY %s,"
        f" '{user}'@'127.0.0.1' IDENTIFIED BY %s"
        " WITH MAX_USER_CONNECTIONS 2",
        (password, password),
    )
    server.execute(
        f"GRANT SELECT ON {db.qualified_table} TO '{user}'@'localhost', '{user}'@'127.0.0.1'"
    )
    return db
