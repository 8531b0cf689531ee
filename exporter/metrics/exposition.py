"""The bytes of /metrics: prometheus_client's negotiation and formats, gzip, and a cache.

Negotiation is prometheus_client's `choose_encoder`, asked about one media range of the Accept
header at a time so that a range it cannot use is passed over rather than fatal: it raises on a
version that does not compare (`version=1.x`), and copies the version into the content type as
sent, so a range whose answer is not a well-formed content type is skipped too. Nothing a client
sends reaches a response header unchecked, and what is left is text 0.0.4.

A scrape renders nothing that the previous scrape in the same format already rendered, unless
the state it shows has changed: the bodies are kept per content type and encoding, and dropped
when `state()` (what the registry's output depends on) compares unequal to the last one.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from typing import Final

from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
)
from prometheus_client.registry import Collector

Encoder = Callable[[Collector], bytes]

TEXT_0_0_4: Final = CONTENT_TYPE_PLAIN_0_0_4
_CONTENT_TYPE = re.compile(
    r"(?:text/plain|application/openmetrics-text); version=[0-9A-Za-z.+-]{1,32};"
    r" charset=utf-8(?:; escaping=[a-z0-9-]{1,20})?"
)
_NEGOTIATED_MAX = 64  # distinct Accept/Accept-Encoding pairs remembered


def negotiate(accept: str | None) -> tuple[Encoder, str]:
    """The encoder and content type for an Accept header: choose_encoder's first usable answer."""
    for accepted in (accept or "").split(","):
        try:
            encoder, content_type = choose_encoder(accepted)
        except (TypeError, ValueError):  # a version such as 1.x, compared with numbers
            continue
        if content_type != TEXT_0_0_4 and _CONTENT_TYPE.fullmatch(content_type):
            return encoder, content_type
    return generate_latest, TEXT_0_0_4


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when Accept-Encoding allows gzip and does not give it q=0.

    (prometheus_client's gzip_accepted ignores q-values: `gzip;q=0` would get gzip.)
    """
    for item in (accept_encoding or "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


class Exposition:
    """The /metrics response bodies of a registry, rendered once per state and format.

    Used from the event loop only. A scrape whose state is unchanged gets the very same bytes
    object as the previous scrape in that format.
    """

    def __init__(self, registry: Collector, state: Callable[[], object]) -> None:
        self._registry = registry
        self._state = state
        self._shown: object = _NEVER
        self._bodies: dict[tuple[str, bool], bytes] = {}
        self._negotiated: dict[tuple[str | None, str | None], tuple[Encoder, str, bool]] = {}

    def render(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for a scrape with these request headers."""
        encoder, content_type, gzipped = self._negotiate(accept, accept_encoding)
        state = self._state()
        if state != self._shown:
            self._shown = state
            self._bodies.clear()
        body = self._bodies.get((content_type, gzipped))
        if body is None:
            text = self._bodies.get((content_type, False))
            if text is None:
                text = self._bodies[content_type, False] = encoder(self._registry)
            body = text
            if gzipped:
                body = self._bodies[content_type, True] = gzip.compress(text, 6, mtime=0)
        return body, content_type, gzipped

    def _negotiate(
        self, accept: str | None, accept_encoding: str | None
    ) -> tuple[Encoder, str, bool]:
        # Scrapers send the same headers every time: negotiate each pair once, and remember a
        # bounded number of them so that odd headers cannot grow memory.
        key = (accept, accept_encoding)
        found = self._negotiated.get(key)
        if found is None:
            if len(self._negotiated) >= _NEGOTIATED_MAX:
                self._negotiated.clear()
            encoder, content_type = negotiate(accept)
            found = self._negotiated[key] = (encoder, content_type, accepts_gzip(accept_encoding))
        return found


_NEVER = object()  # a state no state() returns: the first render always renders
