"""Load generators: wrk for throughput and latency, a bounded client for exact request counts."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

WRK = Path("/usr/bin/wrk")

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Run:
    """What one wrk run measured."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and non-2xx answers


def _latency(output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 10,
    threads: int = 2,
    headers: Mapping[str, str] | None = None,
) -> Run:
    """Keep-alive load on `url` for `seconds`, with `connections` connections."""
    argv = [
        str(WRK),
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={seconds:g}s",
        "--timeout=10s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    result = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    out = result.stdout
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rps is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}{result.stderr}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Run(
        requests=int(requests.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_latency(out, "50"),
        p99_ms=_latency(out, "99"),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def scrape_exactly(
    host: str,
    port: int,
    path: str,
    requests: int,
    *,
    connections: int = 10,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send exactly `requests` GETs over `connections` keep-alive connections, reading every
    answer whole; raise on anything but 200."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}\r\n".encode()
    share, extra = divmod(requests, connections)

    async def connection(count: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(count):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200 "):
                    raise RuntimeError(f"unexpected answer: {head[:200]!r}")
                length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
        finally:
            writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection(share + (i < extra)) for i in range(connections)))

    asyncio.run(run())


@dataclass(frozen=True)
class Fresh:
    """One scrape on a new connection, in seconds from the start of the TCP connect."""

    connected: float  # the TCP handshake and, with TLS, the TLS handshake done
    answered: float  # the last byte of the answer read


def scrape_fresh(
    host: str,
    port: int,
    path: str,
    *,
    headers: Mapping[str, str],
    context: ssl.SSLContext | None,
) -> Fresh:
    """One GET on a new connection, as a scraper's first scrape after a restart or a closed
    connection: TCP connect, the TLS handshake when `context` is given (a full one: no session
    is resumed), the request, the whole answer read; then the connection is closed."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}\r\n".encode()
    started = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=10)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)  # handshakes here
        connected = time.perf_counter()
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += _received(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"unexpected answer: {head[:200]!r}")
        length = re.search(rb"\r\nContent-Length: (\d+)(?:\r\n|$)", head)
        if length is None:
            raise RuntimeError(f"no Content-Length: {head[:200]!r}")
        while len(body) < int(length.group(1)):
            body += _received(sock)
        answered = time.perf_counter()
    finally:
        sock.close()
    return Fresh(connected - started, answered - started)


def _received(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise RuntimeError("connection closed before the whole answer")
    return chunk


def raw_response(host: str, port: int, path: str, headers: Mapping[str, str]) -> bytes:
    """One whole response, head and body, exactly as the server wrote it."""

    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            return head + await reader.readexactly(int(length.group(1)) if length else 0)
        finally:
            writer.close()

    return asyncio.run(fetch())
