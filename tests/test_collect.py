"""The collection loop with a scripted source: snapshots, outcomes and what gets logged."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter import log as logs
from exporter.collect import CollectionLoop, shape
from exporter.config import CollectionConfig, TasksConfig
from exporter.sources.source import Bounds, ConnectError, QueryPlan, QueryTimeout, Row, Rows

Script = list[Sequence[tuple[object, int]] | Exception]


class ScriptedSource:
    """A Source that answers each count() with the next scripted result or exception."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.counts = 0
        self.closed = 0
        self.plan: QueryPlan | None = None

    def count(self, bounds: Bounds | None = None) -> Rows:  # noqa: ARG002 - no window here
        self.counts += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return [Row(*row) for row in step]

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.setup("info", "logfmt", stream)
    yield stream
    for name in ("tasks_exporter", "asyncio"):
        logging.getLogger(name).handlers.clear()


def _loop(source: ScriptedSource, **collection: Any) -> CollectionLoop:
    return CollectionLoop(
        source,
        TasksConfig(),
        CollectionConfig(**collection),
        logger=logs.Logger("tasks_exporter"),
        clock=lambda: 1000.0,
    )


def test_a_lasting_timeout_is_logged_once_however_it_is_worded(log_stream: io.StringIO) -> None:
    """Timeouts cut off by different limits are one condition: one line, then one on recovery."""
    source = ScriptedSource(
        [
            [("Success", 1)],
            QueryTimeout("cut off: (1969) max_statement_time", reason="timeout"),
            QueryTimeout("cut off: (2013) timed out", reason="timeout"),
            QueryTimeout("cut off: (1969) max_statement_time", reason="timeout"),
            ConnectError("cannot connect: (2003)", reason="connect error 2003"),
            [("Success", 2)],
        ]
    )
    loop = _loop(source)
    for _ in range(6):
        loop.collect_once()
    # The lines about collections; the back-off's own lines are tested below.
    lines = [line for line in log_stream.getvalue().splitlines() if 'msg="collection ' in line]
    assert [line.split("msg=")[1].split('"')[1] for line in lines] == [
        "collection succeeded",
        "collection failed",  # the first timeout
        "collection failed",  # a new reason: cannot connect
        "collection succeeded",
    ]
    assert "result=timeout" in lines[1]
    assert "(2003)" in lines[2]
    assert dict(loop.snapshot.outcomes) == {"success": 2, "error": 1, "timeout": 3}


def test_failure_keeps_the_last_counts_and_records_why(log_stream: io.StringIO) -> None:
    """A failed collection keeps the last good counts and time, sets up=0 and keeps the reason."""
    source = ScriptedSource([[("Success", 3), ("Odd", 1)], ConnectError("db down")])
    loop = _loop(source)
    good = loop.collect_once()
    bad = loop.collect_once()
    assert good.up
    assert not bad.up
    assert bad.counts == good.counts == (("Success", 3), ("Pending", 0), ("Failed", 0), ("Odd", 1))
    assert bad.last_success == good.last_success == 1000.0
    assert bad.error == "db down"
    assert loop.snapshot is bad
    assert "db down" in log_stream.getvalue()


def test_a_bug_in_the_source_never_kills_the_loop(log_stream: io.StringIO) -> None:
    """An unexpected exception is a failed collection with one log line; the source is reset."""
    source = ScriptedSource([RuntimeError("boom")])
    loop = _loop(source)
    snapshot = loop.collect_once()
    assert not snapshot.up
    assert snapshot.error == "unexpected RuntimeError: boom"
    assert source.closed == 1
    assert "Traceback" not in log_stream.getvalue()


@pytest.mark.usefixtures("log_stream")
def test_loop_runs_on_a_fixed_schedule_and_stops_promptly() -> None:
    """Started, the loop collects at once and then every interval; stop() returns quickly."""
    source = ScriptedSource([[("Success", 1)]])
    loop = _loop(source, interval=0.1, timeout=0.05, staleness=1.0)
    loop.start()
    time.sleep(0.55)
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 0.5
    assert 5 <= source.counts <= 7  # at 0, 0.1, ... 0.5 s
    assert source.closed == 1  # the loop's thread closes its source on the way out


def test_timeouts_back_off_bounded_and_say_what_the_query_needed(log_stream: io.StringIO) -> None:
    """Each timeout in a row doubles the interval, from what the load budget asks of a query
    that took the whole timeout, up to staleness - timeout; the log says the query needed more
    than the timeout allowed, once; one fast query brings the interval back."""
    cut = QueryTimeout("cut off", reason="timeout")
    source = ScriptedSource([cut, cut, cut, cut, cut, [("Success", 1)]])
    loop = _loop(source, interval=1, timeout=0.5, staleness=10, load_budget=0.25)
    waits = []
    for _ in range(6):
        snapshot = loop.collect_once()
        waits.append(loop.next_wait)
        assert snapshot.effective_interval == loop.next_wait
    assert waits == [2.0, 4.0, 8.0, 9.5, 9.5, 1.0]
    log = log_stream.getvalue()
    assert log.count("needs more than the timeout allows") == 1
    assert "needed_seconds_at_least=0.5 timeout_seconds=0.5" in log
    assert log.count("back at the configured interval") == 1


def test_connection_errors_are_retried_from_a_second_up_to_the_interval(
    log_stream: io.StringIO,
) -> None:
    """After a connection error the next attempt comes 1 s later, then 2, 4, 8 s... never later
    than the interval; a success restores the interval and the next outage starts at 1 s."""
    down = ConnectError("cannot connect: (2003)", reason="connect error 2003")
    script: Script = [down, down, down, down, down, down, [("Success", 1)], down, [("Success", 1)]]
    source = ScriptedSource(script)
    loop = _loop(source, interval=15, timeout=5)
    waits = []
    for _ in range(9):
        loop.collect_once()
        waits.append(loop.next_wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 1.0, 15.0]
    assert log_stream.getvalue().count("collection failed") == 2


def test_the_load_budget_follows_the_query_time() -> None:
    """The interval in force is the query time over the budget, never below the interval."""

    class Slow(ScriptedSource):
        delay = 0.0

        def count(self, bounds: Bounds | None = None) -> Rows:
            time.sleep(self.delay)
            return super().count(bounds)

    source = Slow([[("Success", 1)]])
    loop = _loop(source, interval=0.1, timeout=0.09, staleness=10, load_budget=0.1)
    assert loop.collect_once().effective_interval == 0.1
    source.delay = 0.05
    stretched = loop.collect_once().effective_interval
    assert 0.5 <= stretched < 1.0  # 0.05 s / 0.1
    source.delay = 0.0
    assert loop.collect_once().effective_interval == 0.1


def test_timeouts_back_off_even_with_the_whole_interval_as_budget() -> None:
    """With load_budget = 1 a timeout alone does not stretch the interval, but timeouts in a
    row still double it."""
    cut = QueryTimeout("cut off", reason="timeout")
    source = ScriptedSource([cut])
    loop = _loop(source, interval=1, timeout=0.5, staleness=10, load_budget=1.0)
    waits = []
    for _ in range(5):
        loop.collect_once()
        waits.append(loop.next_wait)
    assert waits == [1.0, 2.0, 4.0, 8.0, 9.5]


TASKS = TasksConfig()


def test_expected_statuses_absent_from_the_table_are_zero() -> None:
    """Success, Pending and Failed always appear, 0 when the table has none of them."""
    counts, folded = shape([("Success", 4)], TASKS)
    assert counts == (("Success", 4), ("Pending", 0), ("Failed", 0))
    assert folded == ()


def test_other_statuses_follow_expected_ones_by_name() -> None:
    """Statuses outside the expected list appear too, after the expected ones, sorted."""
    counts, _ = shape([("Retry", 2), ("Failed", 1), ("Archived", 7)], TASKS)
    assert counts == (
        ("Success", 0),
        ("Pending", 0),
        ("Failed", 1),
        ("Archived", 7),
        ("Retry", 2),
    )


def test_null_binary_and_numeric_statuses_get_defined_labels() -> None:
    """NULL becomes null_status, bytes are decoded as UTF-8, numbers become their text."""
    counts, _ = shape([(None, 3), (b"Caf\xc3\xa9", 1), (b"\xff", 1), (7, 2)], TASKS)
    assert dict(counts) == {
        "Success": 0,
        "Pending": 0,
        "Failed": 0,
        "NULL": 3,
        "Café": 1,
        "\ufffd": 1,
        "7": 2,
    }


def test_rows_that_map_to_one_label_are_summed() -> None:
    """A NULL status and a literal 'NULL' string end up in one series, summed."""
    counts, _ = shape([(None, 3), ("NULL", 2)], TASKS)
    assert dict(counts)["NULL"] == 5


def test_statuses_beyond_the_cap_fold_into_other() -> None:
    """Beyond max_statuses, the least frequent extra statuses are summed into 'other'."""
    tasks = TasksConfig(max_statuses=6)  # 3 expected + 2 extra + other
    rows = [("Success", 1), ("big", 50), ("mid", 20), ("small", 2), ("tiny", 1), ("other", 4)]
    counts, folded = shape(rows, tasks)
    assert counts == (
        ("Success", 1),
        ("Pending", 0),
        ("Failed", 0),
        ("big", 50),
        ("mid", 20),
        ("other", 7),
    )
    assert folded == ("small", "tiny")
    assert len(counts) == tasks.max_statuses


def test_no_folding_at_exactly_the_cap() -> None:
    """A table with exactly max_statuses distinct values folds nothing."""
    tasks = TasksConfig(max_statuses=5)
    counts, folded = shape([("a", 1), ("b", 1)], tasks)
    assert folded == ()
    assert len(counts) == 5


@given(st.lists(st.tuples(st.text(max_size=20), st.integers(0, 10**9)), max_size=80))
def test_shape_never_exceeds_the_cap_and_keeps_the_total(rows: list[tuple[str, int]]) -> None:
    """Whatever the table holds: at most max_statuses series, and no task lost or invented."""
    tasks = TasksConfig(max_statuses=10)
    counts, _ = shape(rows, tasks)
    assert len(counts) <= 10
    assert sum(n for _, n in counts) == sum(n for _, n in rows)
    assert [s for s, _ in counts[:3]] == list(tasks.expected_statuses)
