"""Log lines in logfmt or JSON, the formats Prometheus exporters write (--log.format).

Call sites read as sentences: `log.error("collection failed", result="timeout", err=...)`.
Logger carries the fields to the standard logging module, whose formatters here write them
after the message, in the order given.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": _NAMES.get(record.levelno, record.levelname.lower()),
        "msg": record.getMessage(),
    }
    fields.update(getattr(record, "kv", {}))
    if record.exc_info and record.exc_info[1] is not None:
        fields["exc"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)  # a quoted value is written as a JSON string


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), ensure_ascii=False, default=str)


class Logger:
    """A message and its fields, logged through a standard logging.Logger."""

    def __init__(self, name: str = "tasks_exporter") -> None:
        self._logger = logging.getLogger(name)

    def debug(self, msg: str, /, **fields: object) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, /, **fields: object) -> None:
        self._log(logging.INFO, msg, fields)

    def warning(self, msg: str, /, **fields: object) -> None:
        self._log(logging.WARNING, msg, fields)

    def error(self, msg: str, /, **fields: object) -> None:
        self._log(logging.ERROR, msg, fields)

    def exception(self, msg: str, /, **fields: object) -> None:
        """An error with the exception being handled, as an `exc` field (no traceback)."""
        self._log(logging.ERROR, msg, fields, exc_info=True)

    def _log(
        self, level: int, msg: str, fields: dict[str, object], *, exc_info: bool = False
    ) -> None:
        # stacklevel 3: the record names the caller of debug() and the like, not this module.
        self._logger.log(level, msg, exc_info=exc_info, extra={"kv": fields}, stacklevel=3)


def setup(level: str, fmt: str, stream: TextIO = sys.stderr) -> Logger:
    """The exporter's logger, writing one line per event to stderr (journald adds the rest)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    # asyncio reports transport trouble on its own logger: same format, warnings and up.
    for name, minimum in (("tasks_exporter", _LEVELS[level]), ("asyncio", logging.WARNING)):
        each = logging.getLogger(name)
        each.handlers.clear()
        each.addHandler(handler)
        each.setLevel(max(minimum, _LEVELS[level]))
        each.propagate = False
    return Logger("tasks_exporter")
