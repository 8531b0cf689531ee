"""A loopback TCP forwarder the tests can silence, to play a network that drops every packet.

While silent it keeps every connection open and accepts new ones, but nothing either side
sends reaches the other: what it reads it throws away, as a lossy link would. Neither side gets
an error or a close, so only the client's own timeouts can end a wait. It never leaves
loopback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Self


class SilentProxy:
    """Forwards 127.0.0.1:port to a target until told to drop(), and again after heal()."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.accepted = 0  # client connections accepted so far
        self.open = 0  # client connections open now
        self.peak = 0  # most client connections open at once
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def drop(self) -> None:
        """From now on, whatever either side sends is lost."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Forward again (bytes lost meanwhile stay lost)."""
        self._forwarding.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
                self.accepted += 1
                self.open += 1
                self.peak = max(self.peak, self.open)
            pair = _Pair(client, upstream, self._forwarding, self._finished)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pair.pump, args=(a, b), daemon=True).start()

    def _finished(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._sockets -= {client, upstream}
            self.open -= 1


class _Pair:
    """One client connection and its upstream; closes both when either side ends."""

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        forwarding: threading.Event,
        finished: Callable[[socket.socket, socket.socket], None],
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._forwarding = forwarding
        self._finished = finished
        self._done = threading.Lock()
        self._ended = False

    def pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self._forwarding.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        self._end()

    def _end(self) -> None:
        with self._done:
            if self._ended:
                return
            self._ended = True
        for s in (self._client, self._upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._finished(self._client, self._upstream)
