"""The embedded demo: a SQLite tasks table seeded like the tutorial, with work in progress."""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

SCHEMA = (
    "CREATE TABLE tasks (task_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " task_title VARCHAR(50), task_status VARCHAR(50))"
)
SEED = {"Success": 84, "Pending": 24, "Failed": 12}


def seed(path: Path) -> None:
    """Create the tutorial's table with enough tasks to look like a working day."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # the exporter reads while the demo writes
        conn.execute(SCHEMA)
        statuses = [s for s, n in SEED.items() for _ in range(n)]
        random.Random(42).shuffle(statuses)  # noqa: S311 - demo data
        conn.executemany(
            "INSERT INTO tasks (task_title, task_status) VALUES (?, ?)",
            [(f"Task {i}", s) for i, s in enumerate(statuses, start=1)],
        )
    conn.close()


class DemoDatabase:
    """A seeded database in a private temporary directory, with tasks progressing every few
    seconds (a pending task succeeds or fails, new tasks arrive) so the numbers move."""

    def __init__(self, *, progress: bool = True, step: float = 3.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tasks_exporter-demo-"))
        self.path = self._dir / "tasks.db"
        seed(self.path)
        self._step = step
        self._progress_enabled = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._progress, name="demo", daemon=True)
        self._random = random.Random()  # noqa: S311 - demo data, not security

    def __enter__(self) -> Self:
        if self._progress_enabled:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _progress(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            while not self._stop.wait(self._step):
                self.advance(conn)
        finally:
            conn.close()

    def advance(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT task_id FROM tasks WHERE task_status = 'Pending' ORDER BY task_id LIMIT 1"
        ).fetchone()
        if row is not None:
            done = "Failed" if self._random.random() < 0.12 else "Success"
            conn.execute("UPDATE tasks SET task_status = ? WHERE task_id = ?", (done, row[0]))
        if row is None or self._random.random() < 0.5:
            conn.execute(
                "INSERT INTO tasks (task_title, task_status) VALUES ('New task', 'Pending')"
            )
