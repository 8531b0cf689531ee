"""The embedded demo: a SQLite tasks table seeded like the tutorial, with work in progress.

Besides the tutorial's columns, each task has a creation time (`created_at`, Unix seconds as an
INTEGER: SQLite has no date type, and a number needs no time zone) and a kind (`task_queue`),
so that the demo shows the age of the oldest task, today's window and a breakdown by kind.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

SCHEMA = (
    "CREATE TABLE tasks (task_id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " task_title VARCHAR(50), task_status VARCHAR(50), created_at INTEGER, task_queue VARCHAR(20))"
)
SEED = {"Success": 84, "Pending": 24, "Failed": 12}  # today's tasks
YESTERDAY = {"Success": 30, "Failed": 6}  # finished before today: outside a "today" window
SEED_HOURS = 6  # today's tasks were created over the last hours (since midnight at most)
QUEUES = ("email", "billing", "reports")
SLOW_QUEUE = "reports"  # its worker is slow, and never gets to the tasks stuck since the morning
STUCK = 4  # Pending tasks of the slow queue among the oldest of the day
_INSERT = "INSERT INTO tasks (task_title, task_status, created_at, task_queue) VALUES (?, ?, ?, ?)"


def _midnight(now: float) -> float:
    """The later of today's midnight in UTC and in the machine's zone: whichever of the two
    a "today" window starts at, the tasks seeded after it are today's."""
    day = time.localtime(now)
    local = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))
    return max(now - now % 86400, local)


def seed(path: Path, now: float | None = None) -> None:
    """Create the tutorial's table with enough tasks to look like a working day: today's spread
    over the last hours, most of the older ones done, the newest waiting, a few of the slow
    queue stuck since the morning; and yesterday's, all finished."""
    now = time.time() if now is None else now
    rng = random.Random(42)  # noqa: S311 - demo data
    start = max(now - SEED_HOURS * 3600, _midnight(now))
    total = sum(SEED.values())
    times = sorted(int(rng.uniform(start, now)) for _ in range(total))
    queues = [rng.choice(QUEUES) for _ in range(total)]
    newest = total - (SEED["Pending"] - STUCK)
    stuck = [i for i in range(newest) if queues[i] == SLOW_QUEUE][:STUCK]
    statuses = ["Pending" if i >= newest or i in stuck else "" for i in range(total)]
    done = [i for i in range(total) if not statuses[i]]
    failed = set(rng.sample(done, SEED["Failed"]))
    today = [
        (f"Task {n}", statuses[i] or ("Failed" if i in failed else "Success"), at, queues[i])
        for n, (i, at) in enumerate(enumerate(times), start=sum(YESTERDAY.values()) + 1)
    ]
    finished = [s for s, n in YESTERDAY.items() for _ in range(n)]
    rng.shuffle(finished)
    before = [
        (f"Task {n}", status, int(now - 30 * 3600 + n * 60), rng.choice(QUEUES))
        for n, status in enumerate(finished, start=1)
    ]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # the exporter reads while the demo writes
        conn.execute(SCHEMA)
        conn.executemany(_INSERT, before + today)
    conn.close()


class DemoDatabase:
    """A seeded database in a private temporary directory, with tasks progressing every few
    seconds (a pending task succeeds or fails, new tasks arrive) so the numbers move."""

    def __init__(
        self,
        *,
        progress: bool = True,
        step: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="tasks_exporter-demo-"))
        self.path = self._dir / "tasks.db"
        self._clock = clock
        self._started = clock()
        seed(self.path, self._started)
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
        """One step of work: the oldest waiting task of a queue finishes, and often a new task
        arrives, created now. The slow queue's worker comes by less often and takes only tasks
        created since the demo started: the ones stuck since the morning keep waiting, so the
        oldest Pending task's age keeps growing, as when a worker skips tasks it cannot run."""
        slow = self._random.random() < 0.3
        queues = QUEUES if slow else tuple(q for q in QUEUES if q != SLOW_QUEUE)
        row = conn.execute(
            "SELECT task_id FROM tasks WHERE task_status = 'Pending'"
            f" AND task_queue IN ({', '.join('?' * len(queues))})"
            " AND (task_queue <> ? OR created_at >= ?)"
            " ORDER BY created_at, task_id LIMIT 1",
            (*queues, SLOW_QUEUE, int(self._started)),
        ).fetchone()
        if row is not None:
            done = "Failed" if self._random.random() < 0.12 else "Success"
            conn.execute("UPDATE tasks SET task_status = ? WHERE task_id = ?", (done, row[0]))
        if row is None or self._random.random() < 0.5:
            queue = self._random.choice(QUEUES)
            conn.execute(_INSERT, ("New task", "Pending", int(self._clock()), queue))
