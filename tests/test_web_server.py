"""The HTTP server in the test's own event loop, on port 0, with real sockets: what clients see
when they flood passwords, leave, never read, churn, or when accept() runs out of files."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest

from exporter.config import parse_network
from testing.web_server import (
    PASSWORD,
    TCP_CLOSE,
    Client,
    ask_once,
    request,
    run,
    serving,
    wait_until,
)


def one_bcrypt(cost: int) -> tuple[float, float]:
    """Seconds, and seconds of CPU, that one check at this cost takes here now."""
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
    runs, cpu = [], []
    for _ in range(3):
        started, started_cpu = time.perf_counter(), time.process_time()
        bcrypt.checkpw(b"y", hashed)
        runs.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(runs), min(cpu)


# -- password checks ---------------------------------------------------------------------------


def test_a_wrong_password_flood_is_refused_at_once_beyond_the_checks_in_flight(
    tmp_path: Path,
) -> None:
    """40 wrong passwords at once, for a real user and a made-up one alike: all get 401, and
    all but the few bcrypt checks allowed in flight get it at once, whichever the user."""
    cost = 12
    bcrypt_seconds, bcrypt_cpu = one_bcrypt(cost)

    async def scenario() -> None:
        async with serving(tmp_path, users={"alice": PASSWORD}, cost=cost) as served:

            async def guess(i: int) -> tuple[str, int, float]:
                user = "alice" if i % 2 else "nobody"
                started = time.perf_counter()
                status, _ = await ask_once(served.port, request(auth=(user, f"guess-{i}")))
                return user, status, time.perf_counter() - started

            cpu_before = time.process_time()
            results = await asyncio.gather(*(guess(i) for i in range(40)))
            cpu = time.process_time() - cpu_before
        assert {status for _, status, _ in results} == {401}
        assert cpu < 12 * bcrypt_cpu, (cpu, bcrypt_cpu)  # 8 checks, not 40
        at_once = [user for user, _, seconds in results if seconds < bcrypt_seconds]
        assert len(at_once) >= 40 - 8, sorted(s for _, _, s in results)
        assert {"alice", "nobody"} <= set(at_once)  # refused alike: the user was not looked at

    run(scenario)


def test_checks_of_clients_that_left_are_dropped_and_free_their_place(tmp_path: Path) -> None:
    """24 clients send a wrong password and leave at once: the checks still waiting for them
    are dropped (bcrypt then runs for the few already started, not for all 24), and a right
    password sent next (not yet remembered) is checked and let in."""
    cost = 12
    _, bcrypt_cpu = one_bcrypt(cost)

    async def scenario() -> None:
        async with serving(tmp_path, users={"alice": PASSWORD}, cost=cost) as served:
            leavers = [await Client.connect(served.port) for _ in range(24)]
            for i, client in enumerate(leavers):
                client.writer.write(request(auth=("alice", f"guess-{i}")))
                await client.writer.drain()
            await asyncio.sleep(0.05)  # the server has read them all and queued their checks
            cpu_before = time.process_time()
            for client in leavers:
                client.reset()
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            status, _ = await ask_once(served.port, request(auth=("alice", PASSWORD)))
            await asyncio.sleep(2 * (time.perf_counter() - started))  # anything still queued
            cpu = time.process_time() - cpu_before
            assert status == 200
            # Two checks were running when they left, then the right password's: three.
            assert cpu < 5 * bcrypt_cpu, (cpu, bcrypt_cpu)

    run(scenario)


def test_a_remembered_password_does_not_wait_behind_a_flood(tmp_path: Path) -> None:
    """While wrong passwords fill every check in flight, a scraper whose password was verified
    before is answered at once."""
    cost = 11
    bcrypt_seconds, _ = one_bcrypt(cost)

    async def scenario() -> None:
        async with serving(tmp_path, users={"alice": PASSWORD}, cost=cost) as served:
            scraper = await Client.connect(served.port)
            assert (await scraper.ask(request(auth=("alice", PASSWORD))))[0] == 200
            flood = [
                asyncio.ensure_future(ask_once(served.port, request(auth=("alice", f"g{i}"))))
                for i in range(30)
            ]
            await asyncio.sleep(bcrypt_seconds / 2)
            started = time.perf_counter()
            assert (await scraper.ask(request(auth=("alice", PASSWORD))))[0] == 200
            elapsed = time.perf_counter() - started
            assert not all(f.done() for f in flood)
            await asyncio.gather(*flood)
            scraper.close()
        assert elapsed < bcrypt_seconds / 2, (elapsed, bcrypt_seconds)

    run(scenario)


def test_a_connection_has_one_password_check_at_a_time(tmp_path: Path) -> None:
    """A client that pipelines 20 wrong passwords on one connection holds one check at a time:
    another client's password is still checked by bcrypt, not refused for want of room."""
    cost = 11
    bcrypt_seconds, _ = one_bcrypt(cost)

    async def scenario() -> None:
        async with serving(tmp_path, users={"alice": PASSWORD}, cost=cost) as served:
            pipeliner = await Client.connect(served.port)
            pipeliner.writer.write(b"".join(request(auth=("alice", f"g{i}")) for i in range(20)))
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            status, _ = await ask_once(served.port, request(auth=("alice", "another guess")))
            elapsed = time.perf_counter() - started
            pipeliner.close()
        assert status == 401
        assert elapsed > bcrypt_seconds / 2, (elapsed, bcrypt_seconds)  # it was checked

    run(scenario)


# -- eviction, reload, clients that never read -------------------------------------------------


async def _stuck_reader(port: int, requests: int = 2000) -> Client:
    """A client that pipelines scrapes and reads none of the answers."""
    client = await Client.connect(port)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.writer.write(request() * requests)
    return client


def test_an_evicted_connection_is_reset_even_with_answers_unread(tmp_path: Path) -> None:
    """With max_connections full, a newcomer evicts the connection that waited longest: it is
    reset at once (no graceful close waiting for a client that does not read), and stops
    counting as soon as it is closed."""

    async def scenario() -> None:
        body = b"x" * 100_000
        async with serving(tmp_path, max_connections=2, request_timeout=30.0, body=body) as served:
            stuck = await _stuck_reader(served.port)
            await asyncio.sleep(0.3)  # its answers fill the buffers; the server waits on it
            reader = await Client.connect(served.port)
            assert (await reader.ask(request("/-/healthy")))[0] == 200
            newcomer = await Client.connect(served.port)
            await wait_until(lambda: stuck.tcp_state() == TCP_CLOSE, 2, "the reset")
            assert (await newcomer.ask(request("/-/healthy")))[0] == 200
            assert (await reader.ask(request("/-/healthy")))[0] == 200  # not evicted
            for client in (stuck, reader, newcomer):
                client.close()

    run(scenario)


def test_eviction_spares_an_authenticated_scraper_for_churning_newcomers(tmp_path: Path) -> None:
    """With basic auth required and max_connections full, newcomers that never authenticate
    evict each other (or an unauthenticated client), never the scraper's keep-alive connection,
    however long it has been idle."""

    async def scenario() -> None:
        async with serving(tmp_path, users={"prometheus": PASSWORD}, max_connections=2) as served:
            scraper = await Client.connect(served.port)
            assert (await scraper.ask(request(auth=("prometheus", PASSWORD))))[0] == 200
            churn = []
            for _ in range(5):
                await asyncio.sleep(0.05)
                client = await Client.connect(served.port)
                assert (await client.ask(request()))[0] == 401
                churn.append(client)
            await asyncio.sleep(0.05)
            assert (await scraper.ask(request(auth=("prometheus", PASSWORD))))[0] == 200
            assert sum(c.tcp_state() == TCP_CLOSE for c in churn) == 4
            for client in (scraper, *churn):
                client.close()

    run(scenario)


def test_a_reload_that_refuses_a_client_resets_its_connections(tmp_path: Path) -> None:
    """Connections from a client that a reloaded allowlist no longer allows are reset, those
    with unread answers too."""

    async def scenario() -> None:
        async with serving(tmp_path, request_timeout=30.0, body=b"x" * 100_000) as served:
            idle = await Client.connect(served.port)
            assert (await idle.ask(request("/-/healthy")))[0] == 200
            stuck = await _stuck_reader(served.port)
            await asyncio.sleep(0.3)
            routes = served.server.routes
            elsewhere = replace(served.web, allow=(parse_network("10.0.0.0/8"),))
            await served.server.reconfigure(elsewhere, routes)
            for client in (idle, stuck):
                await wait_until(lambda c=client: c.tcp_state() == TCP_CLOSE, 2, "the reset")  # type: ignore[misc]
                client.close()

    run(scenario)


def test_a_client_that_never_reads_is_reset_at_the_request_timeout(tmp_path: Path) -> None:
    """A client that pipelines scrapes and reads none of the answers is reset once an answer
    has waited request_timeout to be taken; the server holds a bounded amount meanwhile."""

    async def scenario() -> None:
        async with serving(tmp_path, request_timeout=0.5, body=b"x" * 100_000) as served:
            stuck = await _stuck_reader(served.port)
            started = time.monotonic()
            await wait_until(lambda: stuck.tcp_state() == TCP_CLOSE, 5, "the reset")
            assert 0.4 < time.monotonic() - started < 3
            stuck.close()

    run(scenario)


# -- accept() failures ---------------------------------------------------------------------------


def test_accept_failures_are_logged_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of file descriptors (EMFILE) for 2.5 s: one line when accept() starts failing, one
    when it works again, and the waiting client is then served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with serving(tmp_path) as served:
            client = socket.socket()  # its descriptor, before there are none left
            client.setblocking(False)  # noqa: FBT003 - the socket API
            probe = os.open(os.devnull, os.O_RDONLY)
            os.close(probe)  # the lowest free descriptor: the limit below leaves none
            caplog.clear()
            resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
            try:
                await loop.sock_connect(client, ("127.0.0.1", served.port))
                await asyncio.sleep(2.5)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await loop.sock_sendall(client, request("/-/healthy", close=True))
            answer = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
            client.close()
            assert answer.startswith(b"HTTP/1.1 200 ")

    with caplog.at_level(logging.DEBUG):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if "accept" in r.getMessage().lower()]
    assert lines == ["cannot accept connections", "accepting connections again"], lines


# -- strict heads, --web.max-requests ------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: 0\x0b",  # str.strip() would read 0
        b"Content-Length: +0",
        b"X-A: a\rb",  # a bare CR
        b"X-A: a\x00b",
        b"X-A: a\x0bb",
        b"X-A: a\r\n b",  # obs-fold
        b"Transfer-Encoding: gzip",
    ],
)
def test_heads_h11_refuses_are_refused(tmp_path: Path, header: bytes) -> None:
    """Bare CR, NUL or a vertical tab in a header, whitespace in Content-Length, folded lines
    or an unknown transfer coding get 400, as h11 refuses them."""

    async def scenario() -> None:
        async with serving(tmp_path) as served:
            data = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
            assert (await ask_once(served.port, data))[0] == 400

    run(scenario)


def test_metrics_requests_beyond_max_requests_get_503(tmp_path: Path) -> None:
    """With --web.max-requests 1, a scrape while another is still being sent gets 503 and the
    toolkit's message; other paths are not limited, and once the first is done scrapes work."""

    async def scenario() -> None:
        async with serving(tmp_path, max_requests=1, body=b"x" * 100_000) as served:
            stuck = await _stuck_reader(served.port, requests=50)
            await asyncio.sleep(0.3)
            status, body = await ask_once(served.port, request())
            assert (status, body) == (
                503,
                b"Limit of concurrent requests reached (1), try again later.\n",
            )
            assert (await ask_once(served.port, request("/-/healthy")))[0] == 200
            stuck.close()
            for _ in range(100):
                if (await ask_once(served.port, request()))[0] == 200:
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("scrapes were still refused 2 s after the first one ended")

    run(scenario)
