"""Many concurrent keep-alive scrapers on one event loop, each response kept for checking.

The responses are only read here (status, headers, exactly Content-Length bytes of body) and
timed; checking what they say is left to the test, after the load, so that parsing does not
slow the scrapers down.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Scrape:
    scraper: int
    latency: float  # seconds from the request's first byte sent to its body's last received
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Failure:
    scraper: int
    error: str


async def _scraper(
    n: int,
    address: tuple[str, int],
    path: str,
    headers: Mapping[str, str],
    deadline: float,
    every: float | None,
    out: list[Scrape | Failure],
) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {address[0]}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    next_at = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if every is not None:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += every
            if writer is None:
                reader, writer = await asyncio.open_connection(*address)
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            fields = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)
            }
            body = await reader.readexactly(int(fields["content-length"]))
            latency = time.perf_counter() - started
            out.append(Scrape(n, latency, int(status_line.split()[1]), fields, body))
            if fields.get("connection") == "close":
                writer.close()
                writer = None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        out.append(Failure(n, f"{type(exc).__name__}: {exc}"))
    finally:
        if writer is not None:
            writer.close()


def scrape_concurrently(
    address: tuple[str, int],
    *,
    scrapers: int,
    seconds: float,
    headers: Sequence[Mapping[str, str]],
    every: float | None = None,
    path: str = "/metrics",
) -> list[Scrape | Failure]:
    """`scrapers` keep-alive clients scraping for `seconds`, back to back or, like Prometheus,
    each once `every` seconds (their starts spread over the first period); scraper n sends
    headers[n % len(headers)]. Every response or failure, in the order they happened."""

    async def run() -> list[Scrape | Failure]:
        out: list[Scrape | Failure] = []
        deadline = time.monotonic() + seconds

        async def scraper(n: int) -> None:
            if every is not None:
                await asyncio.sleep(every * n / scrapers)
            await _scraper(n, address, path, headers[n % len(headers)], deadline, every, out)

        await asyncio.gather(*(scraper(n) for n in range(scrapers)))
        return out

    return asyncio.run(run())


def percentiles(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max, in milliseconds."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50": cuts[49] * 1000,
        "p90": cuts[89] * 1000,
        "p99": cuts[98] * 1000,
        "max": max(latencies) * 1000,
    }


def describe(latencies: Sequence[float]) -> str:
    return " ".join(f"{k} {v:.1f} ms" for k, v in percentiles(latencies).items())
