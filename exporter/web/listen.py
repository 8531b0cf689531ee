"""Listening sockets for the configured listen addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from exporter.config import ListenAddress


class ListenError(Exception):
    """A listen address could not be bound; the message names it."""


def every_interface(host: str) -> bool:
    """`:port` and `[::]:port` mean every interface, IPv4 and IPv6, as Go exporters read them
    (`0.0.0.0:port` is IPv4 only)."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    except ValueError:
        return False


def bind(address: ListenAddress) -> list[socket.socket]:
    """Listening sockets for one address; `:port` and `[::]:port` are one dual-stack socket
    where IPv6 exists."""
    seen: list[socket.socket] = []
    try:
        if every_interface(address.host):
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


def bind_all(addresses: Iterable[ListenAddress]) -> dict[ListenAddress, list[socket.socket]]:
    """Sockets for every address, or ListenError with none left open."""
    bound: dict[ListenAddress, list[socket.socket]] = {}
    try:
        for address in addresses:
            bound[address] = bind(address)
    except ListenError:
        for socks in bound.values():
            for sock in socks:
                sock.close()
        raise
    return bound
