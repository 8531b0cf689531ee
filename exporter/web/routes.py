"""Which response each request gets, and its bytes on the wire. Pure: no I/O, no state."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from exporter.collect import Snapshot
from exporter.web.history import Point
from exporter.web.page import CONTENT_SECURITY_POLICY, render


class Metrics(Protocol):
    """What /metrics is rendered by."""

    def render(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for a scrape with these request headers."""
        ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def text(
    status: HTTPStatus, *, close: bool = False, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(int(status), f"{status.phrase}\n".encode(), headers=headers, close=close)


class Routes:
    """Which response each request gets. Reads the current snapshot; never touches the database."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        snapshot: Callable[[], Snapshot],
        telemetry_path: str,
        version: str,
        source: str,
        clock: Callable[[], float] = time.time,
        history: Callable[[], Sequence[Point]] = tuple,
    ) -> None:
        self._exposition = metrics
        self._history = history
        self._snapshot = snapshot
        self._telemetry_path = telemetry_path
        self._version = version
        self._source = source
        self._clock = clock

    def respond(self, method: str, path: str, headers: Mapping[str, str]) -> Response:
        if path == self._telemetry_path:
            handler: Callable[[Mapping[str, str]], Response] = self._metrics
        elif path == "/":
            handler = self._landing
        elif path == "/-/healthy":
            handler = self._healthy
        elif path == "/-/ready":
            handler = self._ready
        else:
            return text(HTTPStatus.NOT_FOUND)
        if method not in ("GET", "HEAD"):
            return text(HTTPStatus.METHOD_NOT_ALLOWED, headers=(("Allow", "GET, HEAD"),))
        return handler(headers)

    def _metrics(self, headers: Mapping[str, str]) -> Response:
        body, content_type, gzipped = self._exposition.render(
            headers.get("accept"), headers.get("accept-encoding")
        )
        extra = [("Vary", "Accept-Encoding")]
        if gzipped:
            extra.append(("Content-Encoding", "gzip"))
        return Response(200, body, content_type, tuple(extra))

    def _landing(self, _headers: Mapping[str, str]) -> Response:
        body = render(
            self._snapshot(),
            self._clock(),
            version=self._version,
            telemetry_path=self._telemetry_path,
            source=self._source,
            history=self._history(),
        )
        return Response(
            200,
            body,
            "text/html; charset=utf-8",
            (("Content-Security-Policy", CONTENT_SECURITY_POLICY), ("Cache-Control", "no-store")),
        )

    def _healthy(self, _headers: Mapping[str, str]) -> Response:
        return Response(200, b"Healthy.\n")

    def _ready(self, _headers: Mapping[str, str]) -> Response:
        snapshot = self._snapshot()
        if not snapshot.is_stale(self._clock()):
            return Response(200, b"Ready.\n")
        reason = (
            "no successful collection yet"
            if snapshot.last_success is None
            else f"data older than {snapshot.staleness:g}s"
        )
        return Response(503, f"Not ready: {reason}.\n".encode())


@functools.lru_cache(maxsize=16)
def wire(
    response: Response,
    *,
    close: bool,
    head_only: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A response as written on the connection.

    Cached, so that scrapes of a body that has not changed since the last collection are
    answered with the very same bytes, without building or copying anything.
    """
    status = HTTPStatus(response.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "X-Content-Type-Options: nosniff",
        f"Connection: {'close' if close else 'keep-alive'}",
        *(f"{k}: {v}" for k, v in response.headers),
        # The web config file's headers; a Content-Security-Policy there is sent besides the
        # landing page's own, and browsers enforce both.
        *(f"{k}: {v}" for k, v in extra if k != "X-Content-Type-Options"),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
