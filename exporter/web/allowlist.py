"""Who may connect: the allowlist, and a log of refusals that a flood cannot flood."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

from exporter.config import Network
from exporter.log import Logger


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
        logger: Logger,
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
            self._log.warning("connection refused by allowlist", client=host)
            return None
        self._suppressed += 1
        return self._window_end - now if self._suppressed == 1 else None

    def flush(self) -> None:
        if self._suppressed:
            self._log.warning(
                "more connections refused by allowlist",
                count=self._suppressed,
                window_seconds=self._window,
            )
            self._suppressed = 0
