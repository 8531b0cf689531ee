"""Who the server lets in, in-process on port 0 with real sockets: clients outside the allowlist
are closed at accept and counted, and trickling clients beyond max_connections do not keep an
allowed scraper waiting."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from exporter.config import parse_network
from testing.web_server import LOGGER, Client, ask_once, request, run, serving


async def answer_to(source: str, port: int) -> bytes:
    """What a client at `source` gets back for a request: b"" when closed at accept."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request())
        return await asyncio.wait_for(reader.read(1024), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.transport.abort()


def test_refused_client_gets_nothing_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client outside the allowlist (127.0.0.2) is closed at once with no byte sent; counted."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        async with serving(tmp_path, allow=(parse_network("127.0.0.1/32"),)) as served:
            for _ in range(3):
                assert await answer_to("127.0.0.2", served.port) == b""
            assert served.refused.value == 3
            assert (await ask_once(served.port, request()))[0] == 200  # 127.0.0.1 is let in

    run(scenario)
    refusals = [r for r in caplog.records if r.getMessage() == "connection refused by allowlist"]
    assert len(refusals) == 1  # logged once per address, not once per connection
    assert getattr(refusals[0], "kv", {}).get("client") == "127.0.0.2"
    # the two others are summed up in one line when the server stops
    summary = [
        r for r in caplog.records if r.getMessage() == "more connections refused by allowlist"
    ]
    assert [getattr(r, "kv", {}).get("count") for r in summary] == [2]


def test_slow_clients_do_not_block_an_allowed_scraper(tmp_path: Path) -> None:
    """Hundreds of trickling connections beyond the cap: a scraper is still answered promptly."""

    async def scenario() -> None:
        async with serving(tmp_path, max_connections=50, request_timeout=30.0) as served:
            slow = []
            try:
                for _ in range(300):
                    client = await Client.connect(served.port)
                    client.writer.write(b"GET /metrics HTTP/1.1\r\nX-Slow: ")  # never finished
                    slow.append(client)
                latencies = []
                for _ in range(20):
                    started = time.monotonic()
                    status, body = await ask_once(served.port, request())
                    latencies.append(time.monotonic() - started)
                    assert status == 200
                    assert body == b"up 1\n"
                assert max(latencies) < 1.0, latencies
            finally:
                for client in slow:
                    client.close()

    run(scenario)
