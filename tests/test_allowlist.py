"""Who may connect: the allowlist's matching, how a client is named, and the refusal log."""

from __future__ import annotations

import io

import pytest

from exporter import log as logs
from exporter.config import parse_network
from exporter.web.allowlist import Allowlist, RefusalLog, client_address


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::ffff:127.0.0.1", True),  # IPv4 client on a dual-stack socket
        ("::1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("", False),
        ("not-an-ip", False),
    ],
)
def test_allowlist_matching(client: str, allowed: bool) -> None:
    """Clients match by network; IPv4-mapped IPv6 addresses match as IPv4."""
    networks = [parse_network(n) for n in ("127.0.0.0/8", "::1/128", "2001:db8::/32")]
    assert Allowlist(networks).allows(client_address(client)) is allowed


@pytest.mark.parametrize(
    ("peer", "shown"),
    [("::ffff:192.0.2.1", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"), ("fe80::1%eth0", "fe80::1")],
)
def test_client_address_is_shown_as_it_is_matched(peer: str, shown: str) -> None:
    """A refused IPv4 client on a dual-stack socket is logged as IPv4, as it is matched."""
    assert str(client_address(peer)) == shown


def test_ipv4_mapped_client_does_not_match_an_ipv6_only_rule() -> None:
    """A mapped IPv4 client is judged by IPv4 rules only: ::/0 does not let it in."""
    assert not Allowlist([parse_network("::/0")]).allows(client_address("::ffff:192.0.2.1"))


def test_refusal_log_does_not_flood() -> None:
    """A flood of refusals logs each new address once, then one summary line per window."""
    stream = io.StringIO()
    logger = logs.setup("info", "logfmt", stream)
    now = [0.0]
    refusals = RefusalLog(logger, window=60, distinct=3, clock=lambda: now[0])
    flush_in = [refusals.refused(f"10.0.0.{i % 5}") for i in range(1000)]
    assert flush_in[3] == 60  # the first suppressed refusal asks for a summary at window end
    assert [d for d in flush_in if d is not None] == [60]
    assert len(stream.getvalue().splitlines()) == 3  # one line per new address, at most 3
    now[0] = 60.0
    refusals.flush()  # the server calls this when asked to, even if the flood has stopped
    now[0] = 61.0
    refusals.refused("10.0.0.1")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # 3 distinct, 1 summary of the other 997, 1 in the new window
    assert "count=997" in lines[3]
