"""The logger's call sites: a message and its fields, written on one line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter import log as logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    written = io.StringIO()
    yield written
    for name in ("tasks_exporter", "asyncio"):
        logging.getLogger(name).handlers.clear()


def test_fields_follow_the_message_in_the_order_given(stream: io.StringIO) -> None:
    """A call's keyword arguments are written after the message, as fields, in call order."""
    log = logs.setup("info", "logfmt", stream)
    log.error("collection failed", result="timeout", err="query cut off", duration_seconds=2.5)
    (line,) = stream.getvalue().splitlines()
    assert line.split(" ", 1)[1] == (
        'level=error msg="collection failed" result=timeout err="query cut off"'
        " duration_seconds=2.5"
    )


def test_exception_adds_the_exception_as_a_field_without_a_traceback(stream: io.StringIO) -> None:
    """log.exception() writes one line whose exc field names the exception being handled."""
    log = logs.setup("info", "json", stream)
    try:
        raise ValueError("bad value")  # noqa: TRY301 - the exception the log line reports
    except ValueError:
        log.exception("error answering request", path="/metrics")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["path"] == "/metrics"
    assert json.loads(line)["exc"] == "ValueError: bad value"
