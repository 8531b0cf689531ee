"""How long the server waits for a client, in-process on port 0 with real sockets: the request
timeout for a request that trickles in, and the idle timeout between keep-alive requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from testing.web_server import Client, run, serving

HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"


async def closed_after(client: Client, seconds: float) -> float:
    """Seconds until the server closes this connection (at most `seconds`, or the test fails)."""
    started = time.monotonic()
    assert await asyncio.wait_for(client.reader.read(1), seconds) == b""
    return time.monotonic() - started


def test_trickling_client_is_cut_off_at_the_request_timeout(tmp_path: Path) -> None:
    """A client that never completes its request is disconnected after web.request_timeout."""

    async def scenario() -> None:
        async with serving(tmp_path, request_timeout=0.5) as served:
            client = await Client.connect(served.port)
            try:
                client.writer.write(b"GET /metrics HTTP/1.1\r\n")
                assert 0.4 < await closed_after(client, 3) < 2.0
            finally:
                client.close()

    run(scenario)


def test_idle_keep_alive_then_trickle_gets_the_request_timeout(tmp_path: Path) -> None:
    """After a served request, a new request that trickles in is cut at request_timeout too."""

    async def scenario() -> None:
        async with serving(tmp_path, request_timeout=0.5, idle_timeout=30.0) as served:
            client = await Client.connect(served.port)
            try:
                assert (await client.ask(HEALTHY))[0] == 200
                client.writer.write(b"GET /metrics HTTP/1.1\r\n")
                assert 0.4 < await closed_after(client, 3) < 2.0
            finally:
                client.close()

    run(scenario)


def test_each_request_restarts_the_idle_timeout(tmp_path: Path) -> None:
    """A keep-alive scraper that keeps asking stays connected past idle_timeout; once it
    stops, the connection is closed idle_timeout after its last answer."""

    async def scenario() -> None:
        async with serving(tmp_path, idle_timeout=0.6) as served:
            client = await Client.connect(served.port)
            try:
                for _ in range(6):  # 1.5 s of requests, 0.25 s apart
                    assert (await client.ask(HEALTHY))[0] == 200
                    await asyncio.sleep(0.25)
                assert (await client.ask(HEALTHY))[0] == 200
                assert 0.5 < await closed_after(client, 3) < 1.5
            finally:
                client.close()

    run(scenario)
