"""The HTTP layer: an allowlisted, bounded HTTP/1.1 listener that only serves.

It runs on asyncio so that idle, slow or trickling clients cost a few hundred bytes each rather
than a thread: an allowed scraper is served as soon as its request is complete, whatever other
connections are doing. Connections from outside the allowlist are closed at accept, before a
byte is read or written: they learn nothing (not even that this is an HTTP server) and cost
nothing to parse.

With a web configuration file (webconfig.py), each accepted connection is wrapped in TLS with the
context current at that moment, and every request must carry basic auth credentials before it is
routed. bcrypt runs on worker threads so that a password check never stalls other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from exporter.collect import Snapshot
from exporter.config import ListenAddress, Network, WebConfig
from exporter.metrics.collectors import RefusedConnections
from exporter.metrics.exposition import Exposition
from exporter.page import CONTENT_SECURITY_POLICY, render

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from exporter.auth import BasicAuth
    from exporter.webconfig import ActiveSecurity, LiveSecurity, RateLimit

MAX_REQUEST_LINE = 8 * 1024
MAX_HEAD = 16 * 1024  # request line and headers together
MAX_HEADERS = 100
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/1\.[01]")
_TLS_HANDSHAKE = b"\x16"  # the first byte of every TLS connection (a handshake record)
_PLAIN_ON_TLS = b"Client sent an HTTP request to an HTTPS server.\n"
_CHALLENGE = 'Basic realm="tasks_exporter", charset="UTF-8"'


class ListenError(Exception):
    """A listen address could not be bound; the message names it."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def _text(
    status: HTTPStatus, *, close: bool = False, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    return Response(int(status), f"{status.phrase}\n".encode(), headers=headers, close=close)


class Allowlist:
    """Client address matching; IPv4 clients seen as IPv4-mapped IPv6 are matched as IPv4."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self._v4 = tuple(n for n in networks if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in networks if isinstance(n, ipaddress.IPv6Network))

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        """Whether a client address (as client_address() gives it) is in an allowed network."""
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in n for n in self._v4)
        if isinstance(address, ipaddress.IPv6Address):
            return any(address in n for n in self._v6)
        return False  # not an IP client (should not happen on TCP sockets): refuse


def client_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address as it is matched and logged: IPv4-mapped IPv6 becomes IPv4."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class RefusalLog:
    """Logs refused clients without letting a flood flood the log.

    The first refusal of up to `distinct` addresses per window is logged on its own line;
    the rest are summed into one line at the end of the window.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = 60.0,
        distinct: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._window = window
        self._distinct = distinct
        self._clock = clock
        self._window_end = 0.0
        self._seen: set[str] = set()
        self._suppressed = 0

    def refused(self, host: str) -> float | None:
        """Record one refusal. When it starts a pending summary, return the seconds after
        which flush() should be called to write it."""
        now = self._clock()
        if now >= self._window_end:
            self.flush()
            self._window_end = now + self._window
            self._seen.clear()
        if host not in self._seen and len(self._seen) < self._distinct:
            self._seen.add(host)
            self._log.warning("connection refused by allowlist", extra={"kv": {"client": host}})
            return None
        self._suppressed += 1
        return self._window_end - now if self._suppressed == 1 else None

    def flush(self) -> None:
        if self._suppressed:
            self._log.warning(
                "more connections refused by allowlist",
                extra={"kv": {"count": self._suppressed, "window_seconds": self._window}},
            )
            self._suppressed = 0


class Routes:
    """Which response each request gets. Reads the current snapshot; never touches the database."""

    def __init__(
        self,
        *,
        metrics: Exposition,
        snapshot: Callable[[], Snapshot],
        telemetry_path: str,
        version: str,
        source: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._exposition = metrics
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
            return _text(HTTPStatus.NOT_FOUND)
        if method not in ("GET", "HEAD"):
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, headers=(("Allow", "GET, HEAD"),))
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


@dataclass(eq=False)
class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers each in one write, enforces deadlines."""

    server: Server
    transport: asyncio.Transport | None = None
    buffer: bytearray = field(default_factory=bytearray)
    waiting_since: float = 0.0  # when the current wait (for a request, or idle) began
    deadline: float = 0.0  # when the current wait must end
    timer: asyncio.TimerHandle | None = None  # fires at the deadline, or before it
    idle: bool = False  # between requests, on the idle timeout
    scheduled: bool = False  # a call to _next_request is pending
    writing_paused: bool = False  # the transport's write buffer is full
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    eof: bool = False  # the client has finished sending (half-close)
    closing: bool = False
    handshake: asyncio.Task[None] | None = None  # TLS not yet established
    tls: bool = False
    plain_on_tls: bool = False  # a client speaking plain HTTP to a TLS listener
    pending: asyncio.Future[bool] | None = None  # a password check running on a worker thread

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - TCP servers give Transports
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        address = client_address(host)
        if not self.server.allowlist.allows(address):
            transport.abort()
            self.closing = True
            self.server.refused(str(address or host))
            return
        self.transport = transport
        self.address = address
        self.server.opened(self)
        self._arm(self.server.web.request_timeout)
        self._keep_deadline()
        security = self.server.security()
        if security is not None and security.context is not None:
            # Nothing may be read until TLS is up: _start_tls peeks at the first byte, and TLS
            # reads the handshake from the socket itself. The pause waits for the next turn of
            # the loop: asyncio starts reading only after connection_made() returns, and Python
            # 3.11.2 (Debian 12's) then starts it even if paused here (CPython gh-103607). On the
            # next turn the reader is registered, and pausing removes it and cancels a read that
            # the same turn's poll may have queued, on every version.
            asyncio.get_running_loop().call_soon(transport.pause_reading)
            self.handshake = asyncio.ensure_future(
                self._start_tls(transport, security.context, _allowed_sans(security))
            )

    async def _start_tls(
        self, raw: asyncio.Transport, context: ssl.SSLContext, sans: tuple[str, ...] | None
    ) -> None:
        """Wrap the connection in TLS, or mark it to answer plain HTTP with a 400 saying why."""
        wrapped: asyncio.Transport | None = None
        try:
            first = await _first_byte(raw)
            if first and first != _TLS_HANDSHAKE:
                self.plain_on_tls = True
                raw.resume_reading()
                return
            if first:
                wrapped = await asyncio.get_running_loop().start_tls(
                    raw,
                    self,
                    context,
                    server_side=True,
                    ssl_handshake_timeout=self.server.web.request_timeout,
                )
        except OSError as exc:  # ssl.SSLError is one: no certificate, wrong CA, old version...
            peer = raw.get_extra_info("peername")
            self.server.log.debug(
                "TLS handshake failed",
                extra={"kv": {"client": peer[0] if peer else "?", "err": str(exc)}},
            )
        finally:
            self.handshake = None
            # Failed, closed, or cut off (request_timeout, stop) before or during the handshake:
            # asyncio's TLS layer does not report that to this protocol, so release it here.
            if wrapped is None and not self.plain_on_tls:
                self._abandon(raw)
        if wrapped is not None:
            self.transport = wrapped
            self.tls = True
            if sans is not None and not _has_allowed_san(wrapped, sans):
                # As the toolkit: a verified certificate without an allowed SAN is refused.
                peer = raw.get_extra_info("peername")
                self.server.log.debug(
                    "TLS client refused",
                    extra={
                        "kv": {
                            "client": peer[0] if peer else "?",
                            "err": "no allowed SAN in the client certificate",
                        }
                    },
                )
                self.closing = True
                wrapped.abort()

    def _abandon(self, raw: asyncio.Transport) -> None:
        """End a connection that never got to HTTP (its protocol was not told it closed)."""
        if self.timer is not None:
            self.timer.cancel()
        if not self.closing:
            self.closing = True
            raw.abort()
        self.server.closed(self)

    def _arm(self, seconds: float) -> None:
        """Start a wait that must end within `seconds` (see _keep_deadline for the timer)."""
        self.waiting_since = asyncio.get_running_loop().time()
        self.deadline = self.waiting_since + seconds

    def _keep_deadline(self) -> None:
        """Make sure a timer fires by the deadline.

        A timer that fires earlier is kept: it sets a new one for the deadline as it is then.
        So a scraper's request, which moves the deadline later (to the idle timeout), costs no
        timer at all; only a wait that must end sooner than the timer sets a new one.
        """
        timer = self.timer
        if self.closing or (timer is not None and timer.when() <= self.deadline):
            return
        if timer is not None:
            timer.cancel()
        self.timer = asyncio.get_running_loop().call_at(self.deadline, self._expire)

    def _expire(self) -> None:
        """A deadline passed: drop the connection, with anything the client did not read."""
        self.timer = None
        if self.transport is None or self.closing:
            return
        if asyncio.get_running_loop().time() < self.deadline:  # the deadline moved later
            self._keep_deadline()
            return
        self._stop_handshake()
        self.closing = True
        self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self._stop_handshake()
            self.closing = True
            self.transport.close()

    def _stop_handshake(self) -> None:
        if self.handshake is not None and self.handshake is not asyncio.current_task():
            self.handshake.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        if self.idle:  # a new request has begun: it must now arrive within request_timeout
            self.idle = False
            self._arm(self.server.web.request_timeout)
        if self.handshake is not None:
            # TLS is coming up: start_tls hands this protocol its first data before it returns
            # the TLS transport, so the answer waits a turn to go out encrypted.
            self._schedule()
        elif not self.scheduled:
            # Answered now rather than on the next turn of the loop: a scraper's request
            # arrives whole, and waiting a turn only adds latency. Requests that were sent
            # behind it still go one per turn (_next_request schedules them).
            self._next_request()

    def _schedule(self) -> None:
        """Answer the next buffered request on a later turn of the loop.

        One request per turn keeps a client that pipelines many requests from holding up
        every other connection.
        """
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._next_request)

    def _next_request(self) -> None:
        self.scheduled = False
        if not self.closing and not self.writing_paused and self.pending is None:
            self._answer_next()
        self._keep_deadline()

    def _answer_next(self) -> None:
        # Empty lines before a request line are ignored (RFC 9112, 2.2): some clients send a
        # stray CRLF between requests.
        blank = len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))
        if blank:
            del self.buffer[:blank]
        match = _END_OF_HEAD.search(self.buffer, 0, MAX_HEAD + 4)
        if match is None:
            first_line_end = self.buffer.find(b"\n", 0, MAX_REQUEST_LINE + 2)
            if first_line_end < 0 and len(self.buffer) > MAX_REQUEST_LINE:
                self._send(_text(HTTPStatus.REQUEST_URI_TOO_LONG, close=True))
            elif len(self.buffer) > MAX_HEAD:
                self._send(_text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, close=True))
            elif self.eof:
                self.close()  # every complete request is answered; the rest never came
            self._update_reading()
            return
        head = bytes(self.buffer[: match.start()])
        del self.buffer[: match.end()]
        if self._handle(head):  # None: answered when the password check ends
            self._answered()

    def _answered(self) -> None:
        """A request was answered and the connection stays: wait for the next one."""
        self.idle = not self.buffer
        web = self.server.web
        self._arm(web.idle_timeout if self.idle else web.request_timeout)
        self._keep_deadline()
        self._update_reading()
        if self.buffer or self.eof:
            self._schedule()

    def _update_reading(self) -> None:
        """Read more only while the client reads its answers and has little queued."""
        if self.transport is None or self.closing:
            return
        if self.writing_paused or self.pending is not None or len(self.buffer) > MAX_HEAD:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        # Keep the connection open to answer what was already sent (clients like `nc -N`
        # half-close after their request); it closes once the buffer is answered. Over TLS the
        # end of the client's data ends the connection: asyncio's TLS cannot half-close.
        self.eof = True
        self._schedule()
        return not self.tls

    def pause_writing(self) -> None:
        # The client is not reading its answers: take no more requests from it until it does.
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()
        if self.buffer or self.eof:
            self._schedule()

    def _handle(self, head: bytes) -> bool | None:
        """Answer one request; False when the connection is closing after it, None when the
        answer waits for a password check."""
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        request_line = lines[0]
        if len(request_line) > MAX_REQUEST_LINE:
            return self._send(_text(HTTPStatus.REQUEST_URI_TOO_LONG, close=True))
        parts = request_line.split(" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
            return self._send(_text(HTTPStatus.BAD_REQUEST, close=True))
        method, target, version = parts
        if len(lines) - 1 > MAX_HEADERS:
            return self._send(_text(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, close=True))
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                return self._send(_text(HTTPStatus.BAD_REQUEST, close=True))
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        path = _path(target)
        if path is None:
            return self._send(_text(HTTPStatus.BAD_REQUEST, close=True))
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        # Requests here carry no body; one that announces a body cannot be framed safely
        # without reading it, so it is answered and the connection closed.
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            keep_alive = False
        return self._gate(method, path, headers, keep_alive)

    def _gate(
        self, method: str, path: str, headers: Mapping[str, str], keep_alive: bool
    ) -> bool | None:
        """Answer a parsed request if it may be answered (TLS, basic auth), as _handle."""
        if self.plain_on_tls:
            return self._send(Response(HTTPStatus.BAD_REQUEST, _PLAIN_ON_TLS, close=True))
        if self.server.rate_limited():  # before auth, as the toolkit does
            return self._send(_text(HTTPStatus.TOO_MANY_REQUESTS), keep_alive=keep_alive)
        allowed = self.server.authorize(headers)
        if isinstance(allowed, asyncio.Future):
            self.pending = allowed
            allowed.add_done_callback(
                functools.partial(self._checked, method, path, headers, keep_alive)
            )
            self._update_reading()
            return None
        return self._answer(method, path, headers, keep_alive=keep_alive, allowed=allowed)

    def _checked(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        keep_alive: bool,
        check: asyncio.Future[bool],
    ) -> None:
        """The password check ended: answer the request that waited for it."""
        self.pending = None
        if self.closing:
            return
        allowed = False
        if check.cancelled():
            pass  # the server is stopping
        elif (error := check.exception()) is not None:
            self.server.log.error("password check failed", extra={"kv": {"err": repr(error)}})
        else:
            allowed = check.result()
        if self._answer(method, path, headers, keep_alive=keep_alive, allowed=allowed):
            self._answered()

    def _answer(
        self, method: str, path: str, headers: Mapping[str, str], *, keep_alive: bool, allowed: bool
    ) -> bool:
        if not allowed:
            response = _text(HTTPStatus.UNAUTHORIZED, headers=(("WWW-Authenticate", _CHALLENGE),))
        else:
            try:
                response = self.server.routes.respond(method, path, headers)
            except Exception:  # a bug answers 500 and is logged once; the server keeps serving
                self.server.log.exception("error answering request", extra={"kv": {"path": path}})
                response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)
        return self._send(response, head_only=method == "HEAD", keep_alive=keep_alive)

    def _send(
        self, response: Response, *, head_only: bool = False, keep_alive: bool = False
    ) -> bool:
        """Write the response in one go; False when the connection closes after it."""
        assert self.transport is not None  # noqa: S101 - only called on accepted connections
        close = response.close or not keep_alive
        # One write per response: separate small writes would meet Nagle and delayed ACK.
        self.transport.write(
            _wire(response, close=close, head_only=head_only, extra=self.server.headers())
        )
        if close:
            self.close()
        return not close

    def connection_lost(self, _exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.server.closed(self)
        self.closing = True


def _allowed_sans(security: ActiveSecurity) -> tuple[str, ...] | None:
    tls = security.config.tls
    return None if tls is None else tls.client_allowed_sans


def _has_allowed_san(wrapped: asyncio.Transport, sans: tuple[str, ...]) -> bool:
    from exporter.webconfig import allowed_sans  # noqa: PLC0415 - see Server.__init__

    peercert = wrapped.get_extra_info("peercert")
    return isinstance(peercert, dict) and allowed_sans(peercert, sans)


async def _first_byte(transport: asyncio.Transport) -> bytes:
    """The first byte the client sends, left unread for TLS to read; b"" if it closes first."""
    loop = asyncio.get_running_loop()
    peek = transport.get_extra_info("socket").dup()  # the same connection, for MSG_PEEK
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(peek.fileno(), ready)
    try:
        await readable
        data: bytes = peek.recv(1, socket.MSG_PEEK)
        return data
    finally:
        loop.remove_reader(peek.fileno())
        peek.close()


@functools.lru_cache(maxsize=16)
def _wire(
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


def _path(target: str) -> str | None:
    """The path of a request target in origin form (or absolute form), without the query."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        return None
    return target.split("?", 1)[0].split("#", 1)[0]


def _every_interface(host: str) -> bool:
    """`:port` and `[::]:port` mean every interface, IPv4 and IPv6, as Go exporters read them
    (`0.0.0.0:port` is IPv4 only)."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    except ValueError:
        return False


def _bind(address: ListenAddress) -> list[socket.socket]:
    """Listening sockets for one address; `:port` and `[::]:port` are one dual-stack socket
    where IPv6 exists."""
    seen: list[socket.socket] = []
    try:
        if _every_interface(address.host):
            if socket.has_dualstack_ipv6():
                return [
                    socket.create_server(
                        ("::", address.port),
                        family=socket.AF_INET6,
                        dualstack_ipv6=True,
                        backlog=512,
                    )
                ]
            return [socket.create_server(("0.0.0.0", address.port), backlog=512)]  # noqa: S104 - ":port" means every interface
        # An ASCII host goes as bytes: given text, getaddrinfo encodes it with the idna codec,
        # whose import (unicodedata, stringprep) costs 0.35 MiB for the life of the process.
        host = address.host.encode() if address.host.isascii() else address.host
        infos = socket.getaddrinfo(
            host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, _, _, _, sockaddr in infos:
            if any(s.getsockname()[:2] == sockaddr[:2] for s in seen):
                continue
            seen.append(socket.create_server(sockaddr[:2], family=family, backlog=512))
    except OSError as exc:
        for sock in seen:
            sock.close()
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return seen


def _bind_all(addresses: Iterable[ListenAddress]) -> dict[ListenAddress, list[socket.socket]]:
    """Sockets for every address, or ListenError with none left open."""
    bound: dict[ListenAddress, list[socket.socket]] = {}
    try:
        for address in addresses:
            bound[address] = _bind(address)
    except ListenError:
        for socks in bound.values():
            for sock in socks:
                sock.close()
        raise
    return bound


class Server:
    """Serves Routes on every listen address until stopped."""

    def __init__(
        self,
        *,
        routes: Routes,
        web: WebConfig,
        refused_total: RefusedConnections,
        logger: logging.Logger,
    ) -> None:
        self.routes = routes
        self.allowlist = Allowlist(web.allow)
        self.web = web
        self._refused_total = refused_total
        self._refusals = RefusalLog(logger)
        self.log = logger
        # Listening servers per listen address; None holds sockets passed by systemd.
        self._listeners: dict[ListenAddress | None, list[asyncio.Server]] = {}
        self._connections: set[_Connection] = set()
        # The web config file's machinery, made when one is configured: its code stays unloaded
        # otherwise, which matters for the memory target.
        self._live: LiveSecurity | None = None
        self._auth: BasicAuth | None = None
        self._bcrypt: ThreadPoolExecutor | None = None
        self._rate: RateLimit | None = None

    def security(self) -> ActiveSecurity | None:
        """The web configuration file's TLS, users and headers as they are now (None: no file),
        following the files it names as they change. start() and reconfigure() set it up."""
        return None if self._live is None else self._live.current()

    def rate_limited(self) -> bool:
        """Whether the web config file's rate_limit refuses a request arriving now. One bucket
        for the server, kept while the setting is unchanged."""
        security = self.security()
        config = None if security is None else security.config.rate_limit
        if config is None:
            self._rate = None
            return False
        now = time.monotonic()
        if self._rate is None or self._rate.config != config:
            from exporter.webconfig import RateLimit  # noqa: PLC0415 - see __init__

            self._rate = RateLimit(config, now)
        return not self._rate.allow(now)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The headers the web configuration file adds to every response."""
        security = self.security()
        return () if security is None else security.headers

    def authorize(self, headers: Mapping[str, str]) -> bool | asyncio.Future[bool]:
        """Whether the request may be answered: at once, or once bcrypt has run on a worker
        thread (a password not verified before)."""
        security = self.security()
        if security is None or security.users is None:
            return True
        from exporter.auth import BasicAuth, parse_basic  # noqa: PLC0415 - see __init__

        credentials = parse_basic(headers.get("authorization"))
        if credentials is None:
            return False
        if self._auth is None:
            self._auth = BasicAuth()
        if self._auth.remembered(security.users, credentials):
            return True
        if self._bcrypt is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 - see __init__

            # Two threads: bcrypt releases the GIL, and more would only share the same cores.
            self._bcrypt = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bcrypt")
        return asyncio.get_running_loop().run_in_executor(
            self._bcrypt, self._auth.verify, security.users, credentials
        )

    async def start(self, sockets: Iterable[socket.socket] = ()) -> None:
        """Bind every listen address, or take the given sockets (systemd's), before returning;
        serve() then starts accepting on them.

        Given sockets are served as they are, and a reload leaves them alone.
        """
        self._live = self._activate(self.web)
        socks = list(sockets)
        if socks:
            self._listeners[None] = await self._serve(socks)
            return
        bound = _bind_all(self.web.listen_addresses)
        for address, address_socks in bound.items():
            self._listeners[address] = await self._serve(address_socks)

    def _activate(self, web: WebConfig) -> LiveSecurity | None:
        """The web config file's TLS and users ready to use, read now: certificates may have
        gone bad since the configuration was checked. ListenError says why they cannot be used."""
        if web.security is None:
            return None
        from exporter.webconfig import LiveSecurity, WebConfigError  # noqa: PLC0415 - see __init__

        try:
            return LiveSecurity(web.security, self.log)
        except WebConfigError as exc:
            problems = "; ".join(exc.problems)
            raise ListenError(f"cannot use the web config file: {problems}") from None

    async def serve(self) -> None:
        """Start accepting connections on every socket start() bound or was given."""
        for servers in self._listeners.values():
            for server in servers:
                await server.start_serving()

    async def _serve(
        self, socks: list[socket.socket], *, start_serving: bool = False
    ) -> list[asyncio.Server]:
        loop = asyncio.get_running_loop()
        servers = []
        for sock in socks:
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            servers.append(
                await loop.create_server(
                    lambda: _Connection(self), sock=sock, start_serving=start_serving
                )
            )
        return servers

    async def reconfigure(self, web: WebConfig, routes: Routes) -> None:
        """Apply a new web configuration and routes as a whole, or raise ListenError and change
        nothing.

        New listen addresses are bound before old ones are closed, so an address kept across a
        reload never stops accepting. Connections already open from a client the new allowlist
        refuses are closed; the others keep going, with the new settings from their next request.
        """
        live = self._activate(web)
        if None not in self._listeners:  # our own listeners, not systemd's
            await self._relisten(web.listen_addresses)
        self.web = web
        self._live = live
        self.allowlist = Allowlist(web.allow)
        self.routes = routes
        for conn in list(self._connections):
            if not self.allowlist.allows(conn.address):
                self._connections.discard(conn)
                conn.close()

    async def _relisten(self, addresses: tuple[ListenAddress, ...]) -> None:
        wanted = list(dict.fromkeys(addresses))
        removed = [a for a in self._listeners if a is not None and a not in wanted]
        added = [a for a in wanted if a not in self._listeners]
        try:
            bound = _bind_all(added)
        except ListenError:
            if not removed:
                raise
            # An address can overlap one being dropped (":9775" for "127.0.0.1:9775"): free
            # the dropped ones, then try again, and put them back if that fails too.
            dropped = {a: self._listeners.pop(a) for a in removed if a is not None}
            await _close_servers([s for servers in dropped.values() for s in servers])
            try:
                bound = _bind_all(added)
            except ListenError:
                with contextlib.suppress(ListenError):
                    for address, socks in _bind_all(list(dropped)).items():
                        self._listeners[address] = await self._serve(socks, start_serving=True)
                raise
        for address, socks in bound.items():
            self._listeners[address] = await self._serve(socks, start_serving=True)
        await _close_servers([s for a in removed for s in self._listeners.pop(a, [])])

    def describe_listeners(self) -> list[str]:
        """Where it listens, for the start line: every interface as configured (`:9775`,
        `[::]:9775` and `0.0.0.0:9775` differ), other addresses as bound."""
        described = []
        for address, servers in self._listeners.items():
            bound = [s.getsockname()[:2] for srv in servers for s in srv.sockets]
            if address is not None and _every_interface(address.host) and bound:
                described.append(str(ListenAddress(address.host, bound[0][1])))
            else:
                described += [str(ListenAddress(*b)) for b in bound]
        return described

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) actually bound, e.g. to learn a port chosen by the system."""
        return [
            s.getsockname()[:2]
            for servers in self._listeners.values()
            for srv in servers
            for s in srv.sockets
        ]

    def refused(self, host: str) -> None:
        self._refused_total.inc()
        summary_in = self._refusals.refused(host)
        if summary_in is not None:
            asyncio.get_running_loop().call_later(summary_in, self._refusals.flush)

    def opened(self, conn: _Connection) -> None:
        if len(self._connections) >= self.web.max_connections:
            # Full: drop the connection that has waited longest (idle keep-alive or a client
            # that has not finished its request), so a newcomer with a request is served.
            oldest = min(self._connections, key=lambda c: c.waiting_since)
            self._connections.discard(oldest)
            oldest.close()
            self.log.debug("connection limit reached; closed the longest-waiting connection")
        self._connections.add(conn)

    def closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    async def stop(self) -> None:
        servers = [s for listeners in self._listeners.values() for s in listeners]
        self._listeners.clear()
        for server in servers:
            server.close()
        for conn in list(self._connections):
            conn.close()
        await _close_servers(servers)
        if self._bcrypt is not None:
            self._bcrypt.shutdown(wait=False, cancel_futures=True)
        self._refusals.flush()


async def _close_servers(servers: list[asyncio.Server]) -> None:
    for server in servers:
        server.close()
    for server in servers:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)
