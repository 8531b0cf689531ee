"""What a client sees of requests, in-process on port 0 with real sockets: paths and methods,
HEAD, keep-alive and pipelining, half-closed clients, malformed and oversized heads, bodies."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from testing.web_server import LOGGER, ask_once, raw, run, serving


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("POST", "/nope", 404),
        ("POST", "/metrics", 405),
        ("DELETE", "/", 405),
        ("PUT", "/-/ready", 405),
        ("OPTIONS", "/metrics", 405),
    ],
)
def test_other_paths_404_other_methods_405(
    tmp_path: Path, method: str, path: str, status: int
) -> None:
    """Unknown paths are 404 and methods other than GET and HEAD are 405 with Allow."""

    async def scenario() -> None:
        async with serving(tmp_path) as served:
            data = await raw(served.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert data.startswith(f"HTTP/1.1 {status} ".encode()), data[:80]
            head = data.split(b"\r\n\r\n", 1)[0].lower()
            if status == 405:
                assert b"\r\nallow: get, head\r\n" in head + b"\r\n"
            else:
                assert b"\r\nallow:" not in head

    run(scenario)


def test_head_has_headers_and_no_body(tmp_path: Path) -> None:
    """HEAD /metrics gives the headers of GET, with a length, and no body."""

    async def scenario() -> None:
        async with serving(tmp_path, body=b"up 1\n" * 100) as served:
            data = await raw(served.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = data.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"\r\ncontent-length: 500" in head.lower()
            assert body == b""

    run(scenario)


def test_keep_alive_serves_several_requests_on_one_connection(tmp_path: Path) -> None:
    """Pipelined keep-alive requests on one connection each get their answer, in order; a stray
    empty line between requests is ignored."""
    request = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"\r\nGET /-/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"  # stray CRLF first

    async def scenario() -> None:
        async with serving(tmp_path, ready=True) as served:
            data = await raw(served.port, request * 3 + last)
            assert data.count(b"HTTP/1.1 200 OK") == 4
            assert data.count(b"Healthy.\n") == 3
            assert data.endswith(b"Ready.\n")

    run(scenario)


def test_half_closed_client_gets_its_answer_and_the_connection_ends(tmp_path: Path) -> None:
    """A client that sends a keep-alive request and half-closes (nc -N) is answered, then closed."""

    async def scenario() -> None:
        async with serving(tmp_path, idle_timeout=30.0) as served:
            started = time.monotonic()
            data = await raw(served.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            assert data.count(b"HTTP/1.1 200 OK") == 2
            assert time.monotonic() - started < 1.0  # not held until the idle timeout

    run(scenario)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/9.9\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", b"431"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n", b"400"),
    ],
)
def test_malformed_requests_get_4xx_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: bytes
) -> None:
    """Broken, oversized or binary requests get a 4xx and a closed connection; serving goes on."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def scenario() -> None:
        async with serving(tmp_path) as served:
            data = await raw(served.port, request_bytes)
            assert data.startswith(b"HTTP/1.1 " + status), data[:80]
            assert b"Connection: close" in data
            healthy = b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await ask_once(served.port, healthy))[0] == 200

    run(scenario)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_request_with_a_body_is_answered_then_closed(tmp_path: Path) -> None:
    """A request announcing a body is answered and the connection closed (no smuggling)."""

    async def scenario() -> None:
        async with serving(tmp_path) as served:
            data = await raw(
                served.port,
                b"GET /-/healthy HTTP/1.1\r\nContent-Length: 30\r\n\r\n"
                b"GET /metrics HTTP/1.1\r\n\r\n",
            )
            assert data.count(b"HTTP/1.1 ") == 1
            assert b"Connection: close" in data

    run(scenario)
