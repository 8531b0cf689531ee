"""One client connection, from accept to close, as one coroutine that reads top to bottom.

TLS starts on the raw socket, before any transport exists: the first byte is peeked (MSG_PEEK)
to tell a TLS handshake from plain HTTP sent to the TLS port (answered with a 400 that says so,
as Go's servers do), and the socket is then handed to asyncio with the TLS context. Nothing is
read or written before that, whatever the interpreter's asyncio.

Deadlines: the first request must be complete within request_timeout of the accept (TLS
handshake included); after an answer the next request may begin within idle_timeout, and must
then be complete within request_timeout of its first byte. An answer the client does not read
within request_timeout ends the connection.

A connection ends in one of two ways. Normally (the client closed, asked to close, idled out, or
sent something answered with an error), the last answer is flushed and the connection closed,
within request_timeout. Otherwise (a deadline passed, the client did not read, or the task was
cancelled: eviction, a reload's allowlist, stop) it is aborted with a reset, dropping whatever
was not sent; cancelling the task ends everything the connection started, its password check
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import struct
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from exporter.web.parsing import MAX_HEAD, HeadTooLarge, Request, parse_head, read_head
from exporter.web.routes import Response, text, wire

if TYPE_CHECKING:
    from exporter.web.security.webconfig import ActiveSecurity
    from exporter.web.server import Server

_TLS_HANDSHAKE = b"\x16"  # the first byte of every TLS connection (a handshake record)
_PLAIN_ON_TLS = b"Client sent an HTTP request to an HTTPS server.\n"
_CHALLENGE = 'Basic realm="tasks_exporter", charset="UTF-8"'
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, zero seconds: close() sends a reset


@dataclass(eq=False)
class Slot:
    """A connection as the server sees it when it must choose one to evict (see evictee())."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    since: float  # loop time it began to wait: at accept, then after each answer
    answered: bool = False  # a request of it was answered
    trusted: bool = False  # it proved who it is: a verified client certificate or password
    gone: bool = False  # the client has closed (or reset) its end: it is about to end
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def evict(self) -> None:
        if self.task is not None:
            self.task.cancel()


def evictee(slots: list[Slot]) -> Slot:
    """The connection to drop for a newcomer when all are taken: the first of, in order,
    connections whose client has already gone, connections never answered (handshaking,
    trickling, or silent since accept), connections answered but that never proved who they
    are, and connections that did (a verified client certificate or password); within each,
    the one that has waited longest."""
    return min(slots, key=lambda s: (not s.gone, s.trusted, s.answered, s.since))


def reset(sock: socket.socket) -> None:
    """Close a socket with a reset (RST), not a graceful close: nothing more is sent."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


class _Protocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, telling also when the client has gone: the connection was
    lost, or the client finished sending and left nothing unread (Go's servers cancel a
    request's work on the same signs)."""

    def __init__(self, reader: asyncio.StreamReader, slot: Slot) -> None:
        super().__init__(reader)
        self.reader, self.slot = reader, slot
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _went(self) -> None:
        self.slot.gone = True  # at once: an accept in this same turn must see it
        if not self.gone.done():
            self.gone.set_result(None)

    def eof_received(self) -> bool:
        keep_open = bool(super().eof_received())
        if self.reader.at_eof():
            self._went()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._went()


@dataclass
class _Streams:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: _Protocol
    plain_on_tls: bool  # plain HTTP sent to a TLS listener: every answer is the 400 saying so
    verified: bool  # the client presented a certificate that was verified


async def serve(sock: socket.socket, slot: Slot, server: Server) -> None:
    """Serve one accepted, allowed connection until it ends, then close or reset it."""
    streams: _Streams | None = None
    reset_it = True  # when evicted, refused by a reload, stopped, or the client does not read
    client = str(slot.address)
    try:
        web, security = server.web, server.security()
        context = None if security is None else security.context
        async with asyncio.timeout_at(slot.since + web.request_timeout):
            streams = await _open(sock, slot, context, web.request_timeout)
            if streams is not None and not _allowed_client(streams, security):
                err = "no allowed SAN in the client certificate"
                server.log.debug("TLS client refused", client=client, err=err)
                return
            first = b"" if streams is None else await streams.reader.read(1)
        if streams is not None and (not first or await _exchange(streams, first, slot, server)):
            await _close(streams.writer, server.web.request_timeout)
        reset_it = False
    except _Unread:
        server.log.debug("client does not read its answers; reset", client=client)
    except ssl.SSLError as exc:  # no certificate, wrong CA, old version...
        server.log.debug("TLS handshake failed", client=client, err=str(exc))
        reset_it = False
    except TimeoutError:  # the request or the next one did not come in time: closed
        reset_it = False
    except OSError as exc:  # reset by the client...
        server.log.debug("connection lost", client=client, err=str(exc))
        reset_it = False
    except Exception:  # a bug: this connection is reset, the others go on
        server.log.exception("error serving a connection", client=client)
    finally:
        if reset_it:  # nothing more is sent, not even what is buffered
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        if streams is None:
            sock.close()
        else:
            # Nothing, if closed already; but Python 3.11's TLS transport, closed by both
            # sides, raises AttributeError here (3.12 checks): nothing is left to abort then.
            with contextlib.suppress(AttributeError):
                streams.writer.transport.abort()


class _Unread(Exception):
    """The client did not take its answer within request_timeout."""


async def _close(writer: asyncio.StreamWriter, seconds: float) -> None:
    """Close after the buffered answer is sent; _Unread if the client does not take it."""
    writer.close()
    try:
        async with asyncio.timeout(seconds):
            await writer.wait_closed()
    except TimeoutError:
        raise _Unread from None


async def _open(
    sock: socket.socket, slot: Slot, context: ssl.SSLContext | None, handshake_timeout: float
) -> _Streams | None:
    """Streams for the connection, through TLS when a context is given (None: it closed)."""
    loop = asyncio.get_running_loop()
    plain_on_tls = False
    if context is not None:
        first = await _peek(sock)
        if not first:
            return None
        plain_on_tls = first != _TLS_HANDSHAKE
    reader = asyncio.StreamReader(limit=MAX_HEAD + 2)
    protocol = _Protocol(reader, slot)
    tls = context is not None and not plain_on_tls
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol,
        sock,
        ssl=context if tls else None,
        ssl_handshake_timeout=handshake_timeout if tls else None,
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    verified = tls and bool(writer.get_extra_info("peercert"))
    return _Streams(reader, writer, protocol, plain_on_tls, verified)


def _allowed_client(streams: _Streams, security: ActiveSecurity | None) -> bool:
    """False when client_allowed_sans is set and the verified client certificate has none of
    them, as the toolkit refuses it."""
    tls = None if security is None else security.config.tls
    if tls is None or tls.client_allowed_sans is None or streams.plain_on_tls:
        return True
    from exporter.web.security.webconfig import allowed_sans  # noqa: PLC0415 - see Server._activate

    peercert = streams.writer.get_extra_info("peercert")
    return isinstance(peercert, dict) and allowed_sans(peercert, tls.client_allowed_sans)


async def _peek(sock: socket.socket) -> bytes:
    """The first byte the client sends, left unread for TLS to read; b"" if it closes first."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the client
        return b""


async def _exchange(streams: _Streams, first: bytes, slot: Slot, server: Server) -> bool:
    """Answer requests until the connection should end; True to close it gracefully, after
    the last answer. `first` is the first byte of the first request."""
    loop = asyncio.get_running_loop()
    deadline = slot.since + server.web.request_timeout
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                head = await read_head(streams.reader, first)
        except HeadTooLarge as exc:
            await _send(streams, server, text(exc.status, close=True))
            return True
        if not head:
            return True  # the client closed with no request, or half a request
        request = parse_head(head)
        if isinstance(request, HTTPStatus):
            await _send(streams, server, text(request, close=True))
            return True
        if streams.plain_on_tls:
            await _send(streams, server, Response(400, _PLAIN_ON_TLS, close=True))
            return True
        if not await _answer(streams, request, slot, server):
            return True
        slot.answered, slot.since = True, loop.time()
        await asyncio.sleep(0)  # one request per turn: a client that pipelines holds up no one
        async with asyncio.timeout(server.web.idle_timeout):
            first = await streams.reader.read(1)
        if not first:
            return True
        deadline = loop.time() + server.web.request_timeout


async def _answer(streams: _Streams, request: Request, slot: Slot, server: Server) -> bool:
    """Authorize and answer one request; False when the connection closes after it."""
    if server.rate_limited():  # before authorization, as the toolkit does
        return await _send(streams, server, text(HTTPStatus.TOO_MANY_REQUESTS), request)
    authorized = await _authorize(streams, request, server)
    if authorized is False:
        challenge = (("WWW-Authenticate", _CHALLENGE),)
        response = text(HTTPStatus.UNAUTHORIZED, headers=challenge)
        return await _send(streams, server, response, request)
    slot.trusted = slot.trusted or authorized is True or streams.verified
    if request.path != server.web.telemetry_path:
        return await _send(streams, server, _respond(request, server), request)
    with server.metrics_request() as admitted:  # --web.max-requests
        response = _respond(request, server) if admitted else server.too_many_requests()
        return await _send(streams, server, response, request)


async def _authorize(streams: _Streams, request: Request, server: Server) -> bool | None:
    """False: refused; True: let in by a verified password; None: no password is required."""
    security = server.security()
    if security is None or security.users is None:
        return None
    checks = server.password_checks()
    verdict = checks.at_once(security.users, request.headers.get("authorization"))
    if isinstance(verdict, bool):
        return verdict
    # bcrypt is needed. If the client goes meanwhile, this task is cancelled, and the check too.
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - a connection always runs in its own task

    def cancel(_gone: object) -> None:
        task.cancel()

    streams.protocol.gone.add_done_callback(cancel)
    try:
        return await checks.check(security.users, verdict)
    finally:
        streams.protocol.gone.remove_done_callback(cancel)


def _respond(request: Request, server: Server) -> Response:
    try:
        return server.routes.respond(request.method, request.path, request.headers)
    except Exception:  # a bug answers 500 and is logged; the server keeps serving
        server.log.exception("error answering request", path=request.path)
        return text(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)


async def _send(
    streams: _Streams, server: Server, response: Response, request: Request | None = None
) -> bool:
    """Write one answer (in one write: separate small writes would meet Nagle and delayed ACK)
    and wait until the client has taken most of it; False when the connection closes after it.
    _Unread when the client does not take it within request_timeout."""
    close = response.close or request is None or not request.keep_alive
    head_only = request is not None and request.method == "HEAD"
    streams.writer.write(wire(response, close=close, head_only=head_only, extra=server.headers()))
    # A scrape's answer usually goes out whole in the write; only what the kernel did not take
    # is waited for (a timer per answer is about a tenth of the CPU of a cached scrape).
    if streams.writer.transport.get_write_buffer_size():
        try:
            async with asyncio.timeout(server.web.request_timeout):
                await streams.writer.drain()
        except TimeoutError:
            raise _Unread from None
    return not close
