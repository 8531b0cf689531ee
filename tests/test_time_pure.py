"""The pure parts of time, window and kinds: bounds, shaping per kind, settings and the query."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collect import shape_rows
from exporter.config import ConfigError, Overrides, TasksConfig, Window, load
from exporter.sources.mysql import quote
from exporter.sources.source import (
    Bounds,
    Row,
    build_query,
    index_statement,
    unix_time,
    window_bounds,
)
from testing.exporter_process import run_cli, write_secret


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        # The day Paris springs forward is 23 hours long, the day it falls back 25.
        ("2026-03-29T12:00:00+02:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        ("2026-10-25T23:59:59+01:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"),
        ("2026-10-26T00:00:00+01:00", "2026-10-26T00:00:00+01:00", "2026-10-27T00:00:00+01:00"),
    ],
)
def test_today_runs_from_local_midnight_to_the_next(now: str, start: str, end: str) -> None:
    """ "today" in Europe/Paris starts at local midnight and ends at the next, 23 or 25 hours on
    the days the clocks change."""
    bounds = window_bounds(Window(today=True), ZoneInfo("Europe/Paris"), _at(now))
    assert bounds == Bounds(_at(start), _at(end))


def test_a_rolling_window_ends_nowhere() -> None:
    """A rolling window starts its length before now, with no end (tasks stamped ahead count)."""
    assert window_bounds(Window(seconds=3600), ZoneInfo("UTC"), 10_000.0) == Bounds(6400.0)


def test_the_window_is_a_parameter_on_the_bare_column() -> None:
    """The window condition compares the bare column with parameters, index-friendly; kinds
    are grouped; the oldest time comes from the same GROUP BY."""
    tasks = TasksConfig(
        time_column="created_at",
        window=Window(today=True),
        label_columns=(("queue", "task_queue"),),
        filter="archived = 0",
    )
    query = build_query(
        tasks, quote, oldest=lambda m: f"UNIX_TIMESTAMP({m})", bounds=Bounds(0.0, 1.0)
    )
    assert query == (
        "SELECT `task_status`, `task_queue`, COUNT(*), UNIX_TIMESTAMP(MIN(`created_at`))"
        " FROM `tasks` WHERE (archived = 0) AND `created_at` >= %s AND `created_at` < %s"
        " GROUP BY `task_status`, `task_queue`"
    )
    assert index_statement(tasks, quote) == (
        "CREATE INDEX `tasks_exporter_window` ON `tasks`"
        " (`created_at`, `task_status`, `task_queue`)"
    )
    no_window = TasksConfig(time_column="created_at")
    assert index_statement(no_window, quote) == (
        "CREATE INDEX `tasks_exporter_status` ON `tasks` (`task_status`, `created_at`)"
    )


def test_times_from_the_driver_are_read_in_the_zone() -> None:
    """Naive times are wall-clock times of the zone; numbers are epoch seconds; junk is ignored."""
    paris = ZoneInfo("Europe/Paris")
    wall = datetime(2026, 3, 29, 3, 30)  # noqa: DTZ001 - naive, as a DATETIME column reads
    assert unix_time(wall, paris) == _at("2026-03-29T01:30:00+00:00")
    assert unix_time("2026-03-29 01:30:00", paris) == _at("2026-03-29T00:30:00+00:00")
    assert unix_time(1_700_000_000, paris) == 1_700_000_000.0
    assert unix_time(float("nan"), paris) is None
    assert unix_time("not a time", paris) is None
    assert unix_time(None, paris) is None


kinds = st.sampled_from(["email", "billing", "reports", None, "other", "x" * 3, "ü"])
statuses = st.sampled_from(["Success", "Pending", "Failed", "Retry", None, "other", "a", "b"])


@given(
    st.lists(
        st.tuples(statuses, st.integers(0, 1000), kinds, st.none() | st.floats(0, 2e9)),
        max_size=60,
    )
)
def test_kinds_are_capped_and_no_task_is_lost(
    rows: list[tuple[str | None, int, str | None, float | None]],
) -> None:
    """Whatever the table holds: at most max_kinds kinds and max_statuses statuses, totals per
    status equal to the counts, every kind with every expected status, and the oldest time per
    status the smallest of the rows."""
    tasks = TasksConfig(label_columns=(("queue", "q"),), max_kinds=3, max_statuses=5)
    shaped = shape_rows([Row(s, n, (k,), t) for s, n, k, t in rows], tasks)
    kinds_seen = {one.labels for one in shaped.series}
    assert len(kinds_seen) <= 3
    assert len({one.status for one in shaped.series}) <= 5
    assert sum(one.count for one in shaped.series) == sum(n for _, n, _, _ in rows)
    totals: dict[str, int] = {}
    for one in shaped.series:
        totals[one.status] = totals.get(one.status, 0) + one.count
    assert {s: n for s, n in shaped.counts if s in totals} == totals
    for kind in kinds_seen:
        statuses_of_kind = {one.status for one in shaped.series if one.labels == kind}
        assert set(tasks.expected_statuses) <= statuses_of_kind
    times = [t for _, _, _, t in rows if t is not None]
    if times:
        assert min(t for _, t in shaped.oldest) == min(times)


def _problems(tmp_path: Path, tasks: str) -> tuple[str, ...]:
    secret = write_secret(tmp_path / "pw", "s3cret\n")
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nuser = "u"\ndatabase = "app"\npassword_file = "{secret}"\n[tasks]\n{tasks}'
    )
    with pytest.raises(ConfigError) as info:
        load(path, Overrides(), {})
    return info.value.problems


def test_time_settings_are_checked_each_with_its_reason(tmp_path: Path) -> None:
    """A bad zone, window, type, label name or a window without time column: one line each."""
    problems = _problems(
        tmp_path,
        'time_zone = "Mars/Olympus"\nwindow = "yesterday"\ntime_column_type = "date"\n'
        'label_columns = { status = "a", __x = "b", "1q" = "c", job = "d", ok = "e f",'
        ' exported_queue = "g" }\nmax_kinds = 1\n',
    )
    text = "\n".join(problems)
    assert "tasks.time_zone: 'Mars/Olympus' is not an IANA time zone" in text
    assert 'tasks.window: must be "today" or a duration such as "24h", got \'yesterday\'' in text
    assert "tasks.time_column_type: must be one of auto, datetime, timestamp, epoch" in text
    assert "'status' is taken" in text
    assert "'job' is taken" in text
    assert "'__x' is not a Prometheus label name" in text
    assert "'1q' is not a Prometheus label name" in text
    assert "'e f' is not a plain identifier" in text
    assert "'exported_queue' is what Prometheus renames clashing labels to" in text
    assert "tasks.max_kinds: must be an integer from 2 to 10000, got 1" in text
    assert "tasks.window: needs time_column" in text


def test_the_load_budget_is_a_share(tmp_path: Path) -> None:
    """load_budget is above 0 and at most 1; scan_warning_rows a count."""
    secret = write_secret(tmp_path / "pw", "s3cret\n")
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nuser = "u"\ndatabase = "app"\npassword_file = "{secret}"\n'
        "[collection]\nload_budget = 1.5\nscan_warning_rows = -1\n"
    )
    with pytest.raises(ConfigError) as info:
        load(path, Overrides(), {})
    assert info.value.problems == (
        "collection.load_budget: must be a share of the interval, above 0 and at most 1, got 1.5",
        "collection.scan_warning_rows: must be an integer from 0 to 1000000000000000, got -1",
    )


def test_a_machine_without_a_time_zone_database_runs_in_utc(tmp_path: Path) -> None:
    """Without tzdata (as on a minimal Debian), UTC windows and times still work, and a named
    zone is refused at load saying what to install."""
    db = tmp_path / "tasks.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tasks (task_status TEXT, created_at INTEGER)")
        conn.execute("INSERT INTO tasks VALUES ('Pending', ?)", (int(time.time()) - 10,))
    conn.close()
    config = tmp_path / "config.toml"
    base = f'[database]\ndriver = "sqlite"\npath = "{db}"\n[tasks]\n'
    base += 'time_column = "created_at"\nwindow = "today"\n'
    no_zones = {"PYTHONTZPATH": str(tmp_path / "no-zoneinfo")}
    config.write_text(base)
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path, env=no_zones)
    assert result.returncode == 0, result.stderr
    assert 'tasks_exporter_tasks{status="Pending"} 1.0' in result.stdout
    config.write_text(base + 'time_zone = "Europe/Paris"\n')
    result = run_cli("--config.file", str(config), "--config.check", cwd=tmp_path, env=no_zones)
    assert result.returncode == 2
    assert "this machine has no time zone database; install it (apt-get install tzdata)" in (
        result.stderr
    )
