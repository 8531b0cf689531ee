"""The server: listening sockets, one accept loop each, and the connections it admits.

Each accept loop takes a connection off its listening socket and decides at once: a client
outside the allowlist is reset (before a byte is read or written: it learns nothing, not even
that this is an HTTP server), counted, and logged (a flood is summed up, not logged line by
line). An allowed one takes a slot, evicting another when max_connections are open
(connection.evictee() says which), and runs connection.serve() in a task of its own. A
connection counts against max_connections until its socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING

from exporter.config import ListenAddress, WebConfig
from exporter.log import Logger
from exporter.web.allowlist import Allowlist, RefusalLog, client_address
from exporter.web.connection import Slot, evictee, reset, serve
from exporter.web.listen import ListenError, bind_all, every_interface
from exporter.web.passwords import PasswordChecks
from exporter.web.routes import Response, Routes

if TYPE_CHECKING:
    from exporter.web.security.webconfig import ActiveSecurity, LiveSecurity, RateLimit

# accept() errors that end one connection, not the ability to accept: the client left first.
_CLIENT_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_BACKOFF_MIN, _BACKOFF_MAX = 0.01, 1.0  # seconds between attempts while accept() fails


class _Listener:
    """A listening socket and, once serving, the task that accepts on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.sock.close()


class Server:
    """Serves Routes on every listen address (or on systemd's sockets) until stopped."""

    def __init__(
        self,
        *,
        routes: Routes,
        web: WebConfig,
        on_refused: Callable[[], None],
        logger: Logger,
    ) -> None:
        self.routes = routes
        self.web = web
        self.log = logger
        self._allowlist = Allowlist(web.allow)
        self._on_refused = on_refused  # told of each client the allowlist refuses
        self._refusals = RefusalLog(logger)
        # Listeners per listen address; None holds sockets passed by systemd.
        self._listeners: dict[ListenAddress | None, list[_Listener]] = {}
        self._slots: set[Slot] = set()
        self._live: LiveSecurity | None = None
        self._checks: PasswordChecks | None = None
        self._metrics_requests = 0  # in flight, for --web.max-requests
        self._rate: RateLimit | None = None
        self._serving = False

    # -- what connections read ----------------------------------------------------------------

    def security(self) -> ActiveSecurity | None:
        """The web configuration file's TLS, users and headers as they are now (None: no file),
        following the files it names as they change."""
        return None if self._live is None else self._live.current()

    def headers(self) -> tuple[tuple[str, str], ...]:
        """The headers the web configuration file adds to every response."""
        security = self.security()
        return () if security is None else security.headers

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
            from exporter.web.security.webconfig import RateLimit  # noqa: PLC0415 - see _activate

            self._rate = RateLimit(config, now)
        return not self._rate.allow(now)

    def password_checks(self) -> PasswordChecks:
        if self._checks is None:
            self._checks = PasswordChecks(self.log)
        return self._checks

    @contextlib.contextmanager
    def metrics_request(self) -> Iterator[bool]:
        """A place among the metrics requests in flight (--web.max-requests), held until the
        answer is sent; False when they are all taken (0: no limit)."""
        limit = self.web.max_requests
        if limit and self._metrics_requests >= limit:
            yield False
            return
        self._metrics_requests += 1
        try:
            yield True
        finally:
            self._metrics_requests -= 1

    def too_many_requests(self) -> Response:
        """The answer beyond --web.max-requests, as the toolkit's promhttp words it."""
        limit = self.web.max_requests
        body = f"Limit of concurrent requests reached ({limit}), try again later.\n"
        return Response(HTTPStatus.SERVICE_UNAVAILABLE, body.encode())

    # -- listening ------------------------------------------------------------------------------

    async def start(self, sockets: Iterable[socket.socket] = ()) -> None:
        """Bind every listen address, or take the given sockets (systemd's), before returning;
        serve() then starts accepting on them.

        Given sockets are served as they are, and a reload leaves them alone.
        """
        self._live = self._activate(self.web)
        socks = list(sockets)
        if socks:
            self._listeners[None] = [self._listen(s) for s in socks]
            return
        for address, bound in bind_all(self.web.listen_addresses).items():
            self._listeners[address] = [self._listen(s) for s in bound]

    def _activate(self, web: WebConfig) -> LiveSecurity | None:
        """The web config file's TLS and users ready to use, read now: certificates may have
        gone bad since the configuration was checked. ListenError says why they cannot be used."""
        if web.security is None:
            return None
        # Only with a web config file: its module loads tempfile (and shutil) besides.
        from exporter.web.security.webconfig import LiveSecurity, WebConfigError  # noqa: PLC0415

        try:
            return LiveSecurity(web.security, self.log)
        except WebConfigError as exc:
            problems = "; ".join(exc.problems)
            raise ListenError(f"cannot use the web config file: {problems}") from None

    async def serve(self) -> None:
        """Start accepting connections on every socket start() bound or was given."""
        self._serving = True
        for listeners in self._listeners.values():
            for listener in listeners:
                self._start_accepting(listener)

    def _listen(self, sock: socket.socket) -> _Listener:
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        listener = _Listener(sock)
        if self._serving:
            self._start_accepting(listener)
        return listener

    def _start_accepting(self, listener: _Listener) -> None:
        if listener.task is None:
            loop = asyncio.get_running_loop()
            listener.task = loop.create_task(self._accept(listener.sock))

    async def reconfigure(self, web: WebConfig, routes: Routes) -> None:
        """Apply a new web configuration and routes as a whole, or raise ListenError and change
        nothing.

        New listen addresses are bound before old ones are closed, so an address kept across a
        reload never stops accepting. Connections open from a client the new allowlist refuses
        are reset; the others keep going, with the new settings from their next request.
        """
        live = self._activate(web)
        if None not in self._listeners:  # our own listeners, not systemd's
            await self._relisten(web.listen_addresses)
        self.web, self._live, self.routes = web, live, routes
        self._allowlist = Allowlist(web.allow)
        for slot in self._slots:
            if not self._allowlist.allows(slot.address):
                slot.evict()

    async def _relisten(self, addresses: tuple[ListenAddress, ...]) -> None:
        wanted = list(dict.fromkeys(addresses))
        removed = [a for a in self._listeners if a is not None and a not in wanted]
        added = [a for a in wanted if a not in self._listeners]
        try:
            bound = bind_all(added)
        except ListenError:
            if not removed:
                raise
            # An address can overlap one being dropped (":9775" for "127.0.0.1:9775"): free
            # the dropped ones, then try again, and put them back if that fails too.
            dropped = [a for a in removed if a is not None]
            await self._unlisten(dropped)
            try:
                bound = bind_all(added)
            except ListenError:
                with contextlib.suppress(ListenError):
                    for address, socks in bind_all(dropped).items():
                        self._listeners[address] = [self._listen(s) for s in socks]
                raise
        for address, socks in bound.items():
            self._listeners[address] = [self._listen(s) for s in socks]
        await self._unlisten(removed)

    async def _unlisten(self, addresses: Iterable[ListenAddress | None]) -> None:
        for address in list(addresses):
            for listener in self._listeners.pop(address, []):
                await listener.close()

    def describe_listeners(self) -> list[str]:
        """Where it listens, for the start line: every interface as configured (`:9775`,
        `[::]:9775` and `0.0.0.0:9775` differ), other addresses as bound."""
        described = []
        for address, listeners in self._listeners.items():
            bound = [listener.sock.getsockname()[:2] for listener in listeners]
            if address is not None and every_interface(address.host) and bound:
                described.append(str(ListenAddress(address.host, bound[0][1])))
            else:
                described += [str(ListenAddress(*b)) for b in bound]
        return described

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) actually bound, e.g. to learn a port chosen by the system."""
        return [
            listener.sock.getsockname()[:2]
            for listeners in self._listeners.values()
            for listener in listeners
        ]

    # -- accepting ------------------------------------------------------------------------------

    async def _accept(self, listening: socket.socket) -> None:
        """Admit connections from one listening socket until cancelled. While accept() fails
        (EMFILE: out of file descriptors...), it is retried with a growing pause, and the
        episode is logged once when it starts and once when it ends."""
        loop = asyncio.get_running_loop()
        failures, pause = 0, _BACKOFF_MIN
        while True:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:
                if exc.errno in _CLIENT_GONE:
                    continue
                if not failures:
                    self.log.error("cannot accept connections", err=str(exc))  # noqa: TRY400 - one line per episode
                failures += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, _BACKOFF_MAX)
                continue
            if failures:
                self.log.warning("accepting connections again", failed_attempts=failures)
                failures, pause = 0, _BACKOFF_MIN
            self._admit(sock, peer)
            await asyncio.sleep(0)  # let the connections evicted for this one end first

    def _admit(self, sock: socket.socket, peer: object) -> None:
        host = peer[0] if isinstance(peer, tuple) else ""
        address = client_address(host)
        if not self._allowlist.allows(address):
            self._refused(str(address or host))  # counted and logged before the client sees it
            sock.close()
            return
        if len(self._slots) >= self.web.max_connections:
            self._make_room()
        loop = asyncio.get_running_loop()
        slot = Slot(address, loop.time())
        slot.task = loop.create_task(serve(sock, slot, self))
        self._slots.add(slot)

        def ended(_task: asyncio.Task[None]) -> None:
            reset(sock)  # closed already, unless cancelled before it began
            self._slots.discard(slot)

        slot.task.add_done_callback(ended)

    def _make_room(self) -> None:
        """Reset the connection connection.evictee() ranks last. Those already being reset
        still count (until their socket is closed, a turn of the loop later) but are not
        chosen again."""
        candidates = [s for s in self._slots if s.task is not None and not s.task.cancelling()]
        if len(candidates) < self.web.max_connections:
            return
        victim = evictee(candidates)
        victim.evict()
        if not victim.gone:
            self.log.debug("connection limit reached; reset the connection ranked last")

    def _refused(self, host: str) -> None:
        self._on_refused()
        summary_in = self._refusals.refused(host)
        if summary_in is not None:
            asyncio.get_running_loop().call_later(summary_in, self._refusals.flush)

    async def stop(self) -> None:
        """Stop accepting, reset every connection, and return once all are closed."""
        await self._unlisten(list(self._listeners))
        tasks = [s.task for s in self._slots if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._checks is not None:
            self._checks.close()
        self._refusals.flush()
