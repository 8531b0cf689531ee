"""Request heads: how they are read off a connection, and a pure parser for them.

parse_head() does no I/O: bytes in, a Request or the status that refuses it out. It is at least
as strict as h11 (RFC 9112), which the tests check it against: a head h11 refuses is refused
here too, and one accepted here is read by h11 the same way. It is stricter where serving
metrics allows: obs-fold, control characters in values, versions other than 1.0 and 1.1, and
request targets other than a path (or an absolute URL) are refused.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType

MAX_REQUEST_LINE = 8 * 1024
MAX_HEAD = 16 * 1024  # request line and headers together
MAX_HEADERS = 100

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(
    rb"(?P<method>[!#$%&'*+.^_`|~0-9A-Za-z-]+) (?P<target>[\x21-\x7e]+) HTTP/1\.(?P<minor>[01])"
)
# A field value: visible characters and obs-text, single spaces or tabs between them (RFC 9110,
# 5.5); no control characters, so no bare CR, NUL or vertical tab.
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?")
_DIGITS = re.compile(rb"[0-9]+")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    headers: Mapping[str, str]  # lower-case names; repeated fields joined with ", "; read-only
    keep_alive: bool  # the client asked to keep the connection, and no body needs reading


class HeadTooLarge(Exception):
    """The head outgrew its limits before it ended; status says which (414 or 431)."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


async def read_head(reader: asyncio.StreamReader, start: bytes = b"") -> bytes:
    """The next request head, from its request line to its empty line, `start` being its
    first bytes already read; b"" when the client closed before a request began or mid-way.
    Empty lines before a request line are skipped (RFC 9112, 2.2). The reader's limit must be
    at least MAX_HEAD."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            if start.endswith(b"\n"):
                line, start = start, b""
            else:
                line, start = start + await reader.readuntil(b"\n"), b""
        except asyncio.IncompleteReadError:
            return b""
        except asyncio.LimitOverrunError:
            raise HeadTooLarge(_too_large(lines)) from None
        size += len(line)
        if size > MAX_HEAD or (not lines and len(line) > MAX_REQUEST_LINE + 2):
            raise HeadTooLarge(_too_large(lines))
        if line in (b"\r\n", b"\n"):
            if lines:
                lines.append(line)
                return b"".join(lines)
            continue
        lines.append(line)


def _too_large(lines: list[bytes]) -> HTTPStatus:
    return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if lines else HTTPStatus.REQUEST_URI_TOO_LONG


# A scraper sends the same head every time: the parse of the last few heads is kept, and a
# repeated head costs a lookup. The result is immutable (frozen, headers read-only).
@functools.lru_cache(maxsize=64)
def parse_head(head: bytes) -> Request | HTTPStatus:  # noqa: PLR0911 - a return per refusal
    """A request head (request line to empty line, as read_head gives it), or the status
    that refuses it."""
    if not head.endswith((b"\n\n", b"\n\r\n")):
        return HTTPStatus.BAD_REQUEST
    request_line, *fields = _lines(head)
    if len(request_line) > MAX_REQUEST_LINE:
        return HTTPStatus.REQUEST_URI_TOO_LONG
    line = _REQUEST_LINE.fullmatch(request_line)
    if line is None:
        return HTTPStatus.BAD_REQUEST
    if len(fields) > MAX_HEADERS:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, raw = field.partition(b":")
        value = raw.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            return HTTPStatus.BAD_REQUEST  # obs-fold too: its line starts with a space
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path = _path(line["target"].decode("ascii"))
    http11 = line["minor"] == b"1"
    body = _has_body(headers)
    if path is None or body is None or not _host_ok(fields, http11=http11):
        return HTTPStatus.BAD_REQUEST
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if http11 else "keep-alive" in tokens
    # Requests here carry no body; one that announces a body cannot be framed safely without
    # reading it, so it is answered and the connection closed.
    return Request(
        line["method"].decode("ascii"), path, MappingProxyType(headers), keep_alive and not body
    )


def _lines(head: bytes) -> list[bytes]:
    """The head's lines without their endings (CRLF, or a bare LF as RFC 9112 tolerates) and
    without the empty line."""
    return [line.removesuffix(b"\r") for line in head.split(b"\n")[:-2]] or [b""]


def _has_body(headers: dict[str, str]) -> bool | None:
    """Whether the request announces a body; None when its framing is invalid."""
    encoding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if encoding is not None:
        # Only chunked exists in HTTP/1.1, once; h11 refuses anything else too. With a
        # Content-Length as well, the request is refused (RFC 9112, 6.3 allows it): one of
        # two framings is a smuggling attempt.
        return True if encoding.lower() == "chunked" and length is None else None
    if length is None:
        return False
    values = {v.strip(" \t") for v in length.split(",")}
    if len(values) != 1:
        return None
    (value,) = values
    if not _DIGITS.fullmatch(value.encode("latin-1")):
        return None
    return int(value) != 0


def _host_ok(fields: list[bytes], *, http11: bool) -> bool:
    """RFC 9112, 3.2: never more than one Host field, and one in an HTTP/1.1 request."""
    hosts = sum(1 for f in fields if f[:5].lower() == b"host:")
    return hosts == 1 or (hosts == 0 and not http11)


def _path(target: str) -> str | None:
    """The path of a request target in origin form (or absolute form), without the query."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        return None
    return target.split("?", 1)[0].split("#", 1)[0]
