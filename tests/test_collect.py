"""The collection loop with a scripted source: snapshots, outcomes and what gets logged."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from exporter import log as logs
from exporter.collect import CollectionLoop
from exporter.config import CollectionConfig, TasksConfig
from exporter.source import Bounds, ConnectError, QueryPlan, QueryTimeout, Row, Rows

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
        logger=logging.getLogger("tasks_exporter"),
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
