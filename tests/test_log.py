"""The logger's call sites: a message and its fields, written on one line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_formats_carry_message_and_fields(stream: io.StringIO, fmt: str) -> None:
    """Both log formats write one line per event with the message and its fields, asyncio's
    own warnings included."""
    logger = logs.setup("info", fmt, stream)
    logger.info("collection failed", err='quote " and space')
    logger.debug("hidden at info")
    (line,) = stream.getvalue().splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert record["msg"] == "collection failed"
        assert record["err"] == 'quote " and space'
        assert record["level"] == "info"
    else:
        assert 'msg="collection failed"' in line
        assert 'err="quote \\" and space"' in line
        assert "level=info" in line
    logging.getLogger("asyncio").warning("socket.send() raised exception.")
    asyncio_line = stream.getvalue().splitlines()[-1]
    assert "socket.send() raised exception." in asyncio_line
    assert asyncio_line.startswith("{" if fmt == "json" else "ts=")


@given(st.text(max_size=40))
def test_logfmt_values_that_need_quotes_are_json_strings(text: str) -> None:
    """A logfmt value is written bare when it can be, else exactly as JSON writes the string."""
    written = logs._logfmt_value(text)
    if written != text:
        assert written == json.dumps(text, ensure_ascii=False)
