"""The embedded demo's table: a working day of tasks with creation times and kinds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from exporter.sources.demo import (
    QUEUES,
    SEED,
    SEED_HOURS,
    SLOW_QUEUE,
    YESTERDAY,
    DemoDatabase,
    seed,
)

# 2026-03-10 14:30:00 UTC: a working afternoon.
AFTERNOON = 1_773_153_000.0
MIDNIGHT = AFTERNOON - 14.5 * 3600


def _rows(path: Path, where: str = "1", *args: object) -> list[tuple[str, int, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            f"SELECT task_status, created_at, task_queue FROM tasks WHERE {where} ORDER BY task_id",
            args,
        ).fetchall()
    conn.close()
    return rows


def test_today_is_spread_over_the_last_hours_and_yesterday_is_finished(tmp_path: Path) -> None:
    """Today's seeded tasks were created over the last hours, in every queue, with the tutorial's
    counts; yesterday's (outside a "today" window) are all finished."""
    seed(tmp_path / "t.db", AFTERNOON)
    today = _rows(tmp_path / "t.db", "created_at >= ?", MIDNIGHT)
    times = [at for _, at, _ in today]
    assert min(times) >= AFTERNOON - SEED_HOURS * 3600
    assert max(times) <= AFTERNOON
    assert max(times) - min(times) > (SEED_HOURS - 1) * 3600
    assert times == sorted(times)
    counts = {s: sum(1 for status, _, _ in today if status == s) for s in SEED}
    assert counts == SEED
    assert {q for _, _, q in today} == set(QUEUES)
    before = _rows(tmp_path / "t.db", "created_at < ?", MIDNIGHT)
    assert sorted({s for s, _, _ in before}) == sorted(YESTERDAY)
    assert len(before) == sum(YESTERDAY.values())


def test_the_slow_queue_has_pending_tasks_from_hours_ago_that_stay() -> None:
    """The oldest Pending task is hours old, and of the slow queue: the demo shows an age worth
    an alert, and it keeps growing while the demo runs, as the other queues move."""
    clock = [AFTERNOON]
    with DemoDatabase(progress=False, clock=lambda: clock[0]) as demo:
        pending = _rows(demo.path, "task_status = 'Pending'")
        oldest = min(pending, key=lambda row: row[1])
        assert oldest[2] == SLOW_QUEUE
        assert AFTERNOON - oldest[1] > 3 * 3600
        conn = sqlite3.connect(demo.path, isolation_level=None)
        try:
            for step in range(200):
                clock[0] = AFTERNOON + 3 * (step + 1)
                demo.advance(conn)
        finally:
            conn.close()
        still = _rows(demo.path, "task_status = 'Pending'")
        assert min(still, key=lambda row: row[1]) == oldest
        taken = _rows(
            demo.path,
            "task_status <> 'Pending' AND task_queue = ? AND created_at > ?",
            SLOW_QUEUE,
            AFTERNOON,
        )
        assert taken  # the slow queue's new tasks are taken


def test_shortly_after_midnight_every_seeded_task_of_today_is_after_it(tmp_path: Path) -> None:
    """At 00:20, today's tasks are squeezed into the last 20 minutes rather than spread into
    yesterday: a "today" window still counts all of them."""
    now = MIDNIGHT + 20 * 60
    seed(tmp_path / "t.db", now)
    assert len(_rows(tmp_path / "t.db", "created_at >= ?", MIDNIGHT)) == sum(SEED.values())


def test_new_tasks_are_created_now_in_a_queue() -> None:
    """Every step a waiting task finishes or a new one arrives; new ones carry the current time
    and a queue."""
    clock = [AFTERNOON]
    with DemoDatabase(progress=False, clock=lambda: clock[0]) as demo:
        conn = sqlite3.connect(demo.path, isolation_level=None)
        try:
            before = _rows(demo.path)
            for step in range(40):
                clock[0] = AFTERNOON + 3 * (step + 1)
                demo.advance(conn)
        finally:
            conn.close()
        after = _rows(demo.path)
    new = after[len(before) :]
    assert new
    assert all(AFTERNOON < at <= AFTERNOON + 120 and q in QUEUES for _, at, q in new)
    finished = sum(
        1 for (s0, _, _), (s1, _, _) in zip(before, after[: len(before)], strict=True) if s0 != s1
    )
    assert finished > 10


def test_the_demo_seeds_at_the_real_time_by_default() -> None:
    """Without a clock given, today's tasks end at the time the demo started."""
    started = time.time()
    with DemoDatabase(progress=False) as demo:
        newest = max(at for _, at, _ in _rows(demo.path))
    assert started - 3600 < newest <= time.time()
