"""What systemd hands a service: listening sockets (socket activation) and a notify socket.

Both follow sd_listen_fds(3) and sd_notify(3), with no library: the protocol is a few
environment variables and one datagram.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, MutableMapping

SD_LISTEN_FDS_START = 3


class SystemdError(Exception):
    """The environment does not hold usable sockets from systemd; the message says why."""


def listen_sockets(environ: MutableMapping[str, str], pid: int) -> list[socket.socket]:
    """The listening TCP sockets passed by systemd (or systemd-socket-activate), from fd 3 on.

    The variables are removed from `environ` once read, as sd_listen_fds(1) does, so that a
    child process cannot mistake them for its own.
    """
    listen_pid = environ.pop("LISTEN_PID", None)
    listen_fds = environ.pop("LISTEN_FDS", None)
    environ.pop("LISTEN_FDNAMES", None)
    if listen_fds is None or listen_pid is None:
        raise SystemdError(
            "--web.systemd-socket: no sockets were passed (LISTEN_FDS and LISTEN_PID are not"
            " set); start the service through its .socket unit, or drop the flag"
        )
    if not listen_pid.isdigit() or int(listen_pid) != pid:
        raise SystemdError(
            f"--web.systemd-socket: the sockets were passed to process {listen_pid}, not to"
            f" this one ({pid})"
        )
    if not listen_fds.isdigit() or int(listen_fds) < 1:
        raise SystemdError(f"--web.systemd-socket: LISTEN_FDS={listen_fds!r} passes no socket")
    sockets: list[socket.socket] = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(listen_fds)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            _close(sockets)
            raise SystemdError(f"--web.systemd-socket: fd {fd} is not a socket: {exc}") from None
        sockets.append(sock)
        problem = _unusable(sock)
        if problem:
            _close(sockets)
            raise SystemdError(f"--web.systemd-socket: fd {fd} {problem}")
    for sock in sockets:
        os.set_inheritable(sock.fileno(), False)  # noqa: FBT003 - the os API
    return sockets


def _unusable(sock: socket.socket) -> str | None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return "is not a TCP socket; use ListenStream= with an address or port in the .socket unit"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return "is not listening; the .socket unit must not set Accept=yes"
    return None


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.detach()  # leave the descriptors to their owner; we only looked


def notify(state: str, environ: Mapping[str, str]) -> None:
    """Tell systemd about a state change (READY=1, RELOADING=1, STOPPING=1), if it listens."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.sendto(state.encode(), address)
