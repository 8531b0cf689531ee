"""HTTP basic auth against bcrypt hashes, as the exporter-toolkit's basic_auth_users.

bcrypt is slow on purpose (tens of milliseconds at cost 10), so it must not run on every scrape.
A password that bcrypt verified is remembered as an HMAC-SHA256 under a key drawn at random when
the process starts: a later request with the same user and password matches it with a constant
time comparison and no bcrypt. Nothing stored lets anyone recover or test a password offline (the
key never leaves the process), any other password still goes through bcrypt, and a changed hash
for the user voids what was remembered.

A user that does not exist costs the same bcrypt as one that does (against a dummy hash of the
same cost), so the time of a refusal does not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.secret import Secret

# bcrypt reads at most 72 bytes of a password; Go's bcrypt, which the toolkit uses, and htpasswd
# ignore the rest, and so does this (the bcrypt library refuses longer input instead).
BCRYPT_MAX_PASSWORD = 72
# A well-formed hash of a random password nobody kept; its cost is set to the users' cost. It is
# only checked for users that do not exist, whose requests are refused whatever bcrypt says.
_DUMMY = "$2b${cost:02d}$ft/9THoxbZYA/mrH7WZSS.zJ9uXpZIAjLnJ8xOLRjdMkqBz0BxRw2"


@dataclass(frozen=True)
class Credentials:
    user: bytes
    password: bytes


def parse_basic(header: str | None) -> Credentials | None:
    """The user and password of an `Authorization: Basic ...` header, or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return Credentials(user, password)


@dataclass(frozen=True)
class Users:
    """The configured users' bcrypt hashes, and the dummy hash unknown users are checked against."""

    hashes: dict[bytes, bytes]
    dummy: bytes

    @classmethod
    def from_hashes(cls, users: Iterable[tuple[str, Secret]]) -> Users:
        hashes = {name.encode(): hashed.reveal().encode() for name, hashed in users}
        # The most common cost (the highest on a tie): with one cost for every user, which is
        # what the README advises, an unknown user takes exactly as long as a known one.
        costs = Counter(int(h.split(b"$")[2]) for h in hashes.values())
        cost = max(costs, key=lambda c: (costs[c], c)) if costs else 10
        return cls(hashes, _DUMMY.format(cost=cost).encode())


class BasicAuth:
    """Checks credentials; remembers verified ones so that bcrypt runs once per password."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # per process: never stored, never shown
        self._verified: dict[bytes, tuple[bytes, bytes]] = {}  # user -> (hash, HMAC of password)
        self._lock = threading.Lock()  # verify() runs on worker threads

    def _mac(self, password: bytes) -> bytes:
        return hmac.new(self._key, password, hashlib.sha256).digest()

    def remembered(self, users: Users, credentials: Credentials) -> bool:
        """True when these credentials were verified before against the user's current hash."""
        mac = self._mac(credentials.password)
        with self._lock:
            hashed, verified_mac = self._verified.get(credentials.user, (b"", bytes(32)))
        current = users.hashes.get(credentials.user)
        same_password = hmac.compare_digest(mac, verified_mac)
        return current is not None and current == hashed and same_password

    def verify(self, users: Users, credentials: Credentials) -> bool:
        """The full bcrypt check (slow: call it off the event loop); remembers a success."""
        import bcrypt  # noqa: PLC0415 - only exporters with basic auth users pay for bcrypt

        hashed = users.hashes.get(credentials.user)
        password = credentials.password[:BCRYPT_MAX_PASSWORD]
        matches = bcrypt.checkpw(password, hashed if hashed is not None else users.dummy)
        if hashed is None or not matches:
            return False
        with self._lock:
            # Forget users no longer configured, so the memory stays bounded by the user list.
            for gone in set(self._verified) - set(users.hashes):
                del self._verified[gone]
            self._verified[credentials.user] = (hashed, self._mac(credentials.password))
        return True
