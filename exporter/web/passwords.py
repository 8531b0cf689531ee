"""Basic auth for the whole server: a password seen before is let in at once, others go through
bcrypt on two worker threads, with a bound on how many checks may wait.

The bound is what keeps a flood of wrong passwords from queueing bcrypt work without end (and
both cores busy for minutes after it stops): beyond MAX_CHECKS checks in flight, a request that
needs bcrypt is refused at once with the same 401 as a wrong password. That is decided before
the user name is looked at, so it tells nothing about which users exist. A password remembered
from an earlier check (auth.py) never waits behind the queue.

A check belongs to the request that asked for it: when the connection's task is cancelled (the
client went, was evicted, or the server stops) the check is cancelled too. One still waiting for
a thread is dropped from the queue; one already running finishes on its thread, but its place
in the bound is given back at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from exporter.log import Logger
from exporter.web.security.auth import BasicAuth, Credentials, Users, parse_basic

THREADS = 2  # bcrypt releases the GIL; more threads would only share the same two cores
MAX_CHECKS = 8  # in flight across the server: two running, six waiting (about 0.2 s at cost 10)


class PasswordChecks:
    def __init__(self, logger: Logger, *, max_checks: int = MAX_CHECKS) -> None:
        self._log = logger
        self._auth = BasicAuth()
        self._max = max_checks
        self._in_flight = 0
        self._pool: ThreadPoolExecutor | None = None  # started on the first check

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def at_once(self, users: Users, header: str | None) -> bool | Credentials:
        """Whether the Authorization header lets the request in, when that can be told without
        bcrypt; otherwise the credentials to check() (and a place in the bound is not yet
        taken)."""
        credentials = parse_basic(header)
        if credentials is None:
            return False
        if self._auth.remembered(users, credentials):
            return True
        if self._in_flight >= self._max:
            return False  # full: refused without looking at the user
        return credentials

    async def check(self, users: Users, credentials: Credentials) -> bool:
        """The bcrypt check, on a worker thread; cancelling it gives its place back at once."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="bcrypt")
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._auth.verify, users, credentials)
        except Exception as exc:  # a hash bcrypt cannot read: refused, and said once per request
            self._log.error("password check failed", err=repr(exc))
            return False
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
