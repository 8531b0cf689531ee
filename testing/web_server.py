"""The HTTP server in the test's own event loop, on 127.0.0.1 port 0, with real sockets: a
fixed body for the metrics, optional basic auth users, and clients that read and write from the
test's event loop (fast, and no process to start)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import bcrypt

from exporter.collect import Snapshot
from exporter.config import ListenAddress, WebConfig
from exporter.log import Logger
from exporter.web import Routes, Server
from exporter.web.security.webconfig import read_web_security
from testing.exporter_process import Reply, get

LOGGER = "test_web_server"
PASSWORD = "correct horse"
TCP_CLOSE = 7  # linux/tcp_states.h: the state a socket is left in by a reset


class Body:
    """The metrics, as the server's routes see them: a fixed body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def render(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        del accept, accept_encoding
        return self.body, "text/plain; version=0.0.4; charset=utf-8", False


@dataclass
class Refused:
    value: int = 0

    def inc(self) -> None:
        self.value += 1


@dataclass
class Served:
    server: Server
    port: int
    web: WebConfig
    refused: Refused = field(default_factory=Refused)


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    *,
    users: dict[str, str] | None = None,
    cost: int = 4,
    body: bytes = b"up 1\n",
    ready: bool = False,
    web_file: Path | None = None,
    **settings: object,
) -> AsyncIterator[Served]:
    """A server on 127.0.0.1, port 0, with these WebConfig settings, and basic auth users
    (user -> password, hashed at `cost`) or the security of a web configuration file
    (`web_file`); `ready`: a collection has just succeeded."""
    security = None if web_file is None else read_web_security(web_file)
    if users is not None:
        path = tmp_path / "web.yml"
        hashes = {
            u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(cost)).decode() for u, p in users.items()
        }
        path.write_text(
            "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in hashes.items()),
            encoding="utf-8",
        )
        security = read_web_security(path)
    web = replace(
        WebConfig(listen_addresses=(ListenAddress("127.0.0.1", 0),), security=security),
        **settings,  # type: ignore[arg-type]
    )
    routes = Routes(
        metrics=Body(body),
        snapshot=lambda: Snapshot(
            interval=15, staleness=60, last_success=time.time() if ready else None, up=ready
        ),
        telemetry_path=web.telemetry_path,
        version="test",
        source="test",
    )
    refused = Refused()
    server = Server(routes=routes, web=web, on_refused=refused.inc, logger=Logger(LOGGER))
    await server.start()
    await server.serve()
    try:
        yield Served(server, server.addresses[0][1], web, refused)
    finally:
        await server.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def request(
    path: str = "/metrics", *, auth: tuple[str, str] | None = None, close: bool = False
) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x"]
    if auth is not None:
        lines.append("Authorization: Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Client:
    """A client connection, read and written from the test's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # The same connection through a descriptor of the test's own, to see its TCP state
        # after asyncio has closed its descriptor.
        self._watch = writer.get_extra_info("socket").dup()

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def ask(self, data: bytes) -> tuple[int, bytes]:
        """Send a request, read one answer: (status, body)."""
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        return status, await self.reader.readexactly(length)

    def tcp_state(self) -> int:
        return int(self._watch.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0])

    def reset(self) -> None:
        """Leave abruptly, as a client that gives up does."""
        self._watch.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        self.writer.transport.abort()
        self._watch.close()


async def ask_once(port: int, data: bytes) -> tuple[int, bytes]:
    client = await Client.connect(port)
    try:
        return await client.ask(data)
    finally:
        client.close()


async def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def raw(port: int, data: bytes, *, quiet: float = 5.0) -> bytes:
    """Send bytes and half-close, return everything the server sends back until it closes (or
    says nothing for `quiet` seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        chunks = []
        while chunk := await asyncio.wait_for(reader.read(65536), quiet):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.transport.abort()


class LogLines(logging.Handler):
    """The server's log records as lines: the message, then its fields as key=value."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "kv", {})
        self.lines.append(
            " ".join([f'msg="{record.getMessage()}"'] + [f"{k}={v}" for k, v in fields.items()])
        )


class ServerThread:
    """serving() in an event loop of its own thread, so that blocking clients (http.client,
    curl) can talk to it from the test's thread; its log kept at debug."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        ssl_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        **options: object,
    ) -> None:
        self.ssl_context, self.auth = ssl_context, auth
        self._tmp_path, self._options = tmp_path, options
        self._logs = LogLines()
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0
        self.loop_errors: list[dict[str, object]] = []  # what asyncio reported, never raised

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        logger = logging.getLogger(LOGGER)
        self._level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self._logs)
        self._thread.start()
        assert self._started.wait(30), "the server did not start"
        if self._failed is not None:
            raise self._failed
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        gc.collect()  # a task whose exception nobody retrieved reports it when collected
        logger = logging.getLogger(LOGGER)
        logger.removeHandler(self._logs)
        logger.setLevel(self._level)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test's thread
            self._failed = exc
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        async with serving(self._tmp_path, **self._options) as served:  # type: ignore[arg-type]
            self.port = served.port
            self._started.set()
            await self._stop.wait()

    def get(
        self,
        path: str,
        *,
        method: str = "GET",
        auth: tuple[str, str] | bool | None = True,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Reply:
        """One request on a fresh connection, with the server's ssl_context and auth unless
        told otherwise (auth=None: none)."""
        credentials = self.auth if auth is True else auth
        return get(
            "127.0.0.1",
            self.port,
            path,
            method=method,
            timeout=timeout,
            ssl_context=ssl_context or self.ssl_context,
            auth=credentials if isinstance(credentials, tuple) else None,
        )

    def log(self) -> str:
        return "\n".join(self._logs.lines)
