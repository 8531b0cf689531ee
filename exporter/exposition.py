"""The bytes of /metrics: the two text formats, their negotiation, gzip, and a render cache.

The formats are Prometheus text 0.0.4 (and its 1.0.0 variant) and OpenMetrics 1.0, written
byte for byte as prometheus_client writes them and negotiated as its `choose_encoder` does (the
tests compare both). The exporter does not import prometheus_client to do it: its package
imports an HTTP server, urllib and WSGI on the way, more resident memory than the exporter's
whole budget has room for (see the README's performance section).

A scrape never renders what has not changed: the exposition is made of parts (the snapshot's
families, the process metrics, a counter), each rendered at most once per format and
deflated at most once per format while it stays the same object. A response is the
concatenation of its parts' bytes; its gzip form is the concatenation of their deflate blocks,
which is still one valid gzip member.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Labels = tuple[tuple[str, str], ...]

OPENMETRICS = "application/openmetrics-text"
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_1_0_0 = "application/openmetrics-text; version=1.0.0; charset=utf-8"
UNDERSCORES = "underscores"
_ESCAPINGS = ("allow-utf-8", UNDERSCORES, "dots", "values")
_EOF = b"# EOF\n"
_VERSION = re.compile(r"[0-9A-Za-z.+-]{0,32}")


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family. A counter's name has no `_total`; its samples get it."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    samples: tuple[tuple[Labels, float], ...] = ()


def gauge(name: str, help_text: str, value: float | None = None) -> Family:
    """A gauge without labels; no sample when value is None."""
    return Family(name, "gauge", help_text, () if value is None else (((), value),))


@dataclass(frozen=True, slots=True)
class Format:
    """What a scraper gets: OpenMetrics or text, the name escaping asked for, the content type."""

    openmetrics: bool
    escaping: str
    content_type: str


TEXT = Format(openmetrics=False, escaping=UNDERSCORES, content_type=TEXT_0_0_4)


def negotiate(accept: str | None) -> Format:
    """The format for an Accept header, chosen as prometheus_client's choose_encoder does.

    The first acceptable media range wins (q-values are not weighed): OpenMetrics without a
    version, or with a version of at least 1.0.0 (echoed in the content type); text/plain with a
    version of at least 1.0.0; else text 0.0.4. Where choose_encoder raises on a version it
    cannot compare (`version=1.x`), that media range is skipped instead.
    """
    for accepted in (accept or "").split(","):
        params = accepted.split(";")
        media = params[0].strip()
        if media not in (OPENMETRICS, "text/plain"):
            continue
        version = _param(params, "version")
        if not _VERSION.fullmatch(version):
            continue  # not a version; and nothing a client sends may reach a response header
        escaping = _param(params, "escaping")
        escaping = escaping if escaping in _ESCAPINGS else UNDERSCORES
        if media == OPENMETRICS and not version:
            return Format(openmetrics=True, escaping=UNDERSCORES, content_type=OPENMETRICS_1_0_0)
        if not _at_least_1(version):
            continue
        if media == OPENMETRICS:
            content_type = f"{OPENMETRICS}; version={version}; charset=utf-8; escaping={escaping}"
            return Format(openmetrics=True, escaping=escaping, content_type=content_type)
        content_type = f"text/plain; version=1.0.0; charset=utf-8; escaping={escaping}"
        return Format(openmetrics=False, escaping=escaping, content_type=content_type)
    return TEXT


def _param(params: list[str], key: str) -> str:
    for param in params:
        name, equals, value = param.strip().partition("=")
        if equals and name == key:
            return value
    return ""


def _at_least_1(version: str) -> bool:
    parts: list[int | str] = []
    for part in version.split("."):
        try:
            parts.append(int(part))
        except ValueError:
            parts.append(part)
    try:
        return tuple(parts) >= (1, 0, 0)
    except TypeError:  # a part that is not a number, where a number is compared
        return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when the Accept-Encoding header allows gzip (and does not give it q=0)."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


# -- the formats ----------------------------------------------------------------------------


def go_float(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it."""
    d = float(value)
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _name(name: str, escaping: str) -> str:
    """A metric or label name under a name escaping scheme.

    Every name here is a valid legacy Prometheus name without colons, which every scheme keeps
    as it is except `dots`, which doubles underscores.
    """
    return name.replace("_", "__") if escaping == "dots" else name


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, labels: Labels, value: float, escaping: str) -> str:
    if not labels:
        return f"{name} {go_float(value)}\n"
    pairs = ",".join(f'{_name(k, escaping)}="{_label_value(v)}"' for k, v in sorted(labels))
    return f"{name}{{{pairs}}} {go_float(value)}\n"


def render(families: Iterable[Family], *, openmetrics: bool, escaping: str = UNDERSCORES) -> bytes:
    """The families in one format, without OpenMetrics' closing `# EOF` (see Exposition)."""
    out: list[str] = []
    for family in families:
        total = f"{family.name}_total" if family.type == "counter" else family.name
        if openmetrics:
            named = _name(family.name, escaping)
            doc = _label_value(family.help)
        else:
            named = _name(total, escaping)
            doc = family.help.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {named} {doc}\n# TYPE {named} {family.type}\n")
        sample_name = _name(total, escaping)
        out.extend(
            _sample(sample_name, labels, value, escaping) for labels, value in family.samples
        )
    return "".join(out).encode("utf-8")


# -- gzip from parts ------------------------------------------------------------------------

# A gzip member header: deflate, no flags, no time stamp, unknown OS (as gzip.compress(mtime=0)).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# An empty final deflate block (fixed Huffman codes): what zlib writes to finish a stream.
_FINAL_BLOCK = b"\x03\x00"


def deflate(data: bytes) -> bytes:
    """Raw deflate blocks for `data`, ending on a byte boundary and not final.

    Blocks like these from separately compressed parts can be concatenated: each part refers
    only to its own bytes, and the decoder reads one stream.
    """
    # An 8 KiB window and memLevel 6 (64 KiB of state instead of 256 KiB) compress parts of a
    # few KiB as well, and stay below the size at which malloc maps and unmaps memory.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -13, 6)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def gzip_member(texts: Sequence[bytes], deflated: Sequence[bytes]) -> bytes:
    """One gzip member holding the concatenated texts, from each text's deflate() blocks."""
    crc = 0
    size = 0
    for text in texts:
        crc = zlib.crc32(text, crc)
        size += len(text)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, *deflated, _FINAL_BLOCK, trailer))


# -- the render cache -----------------------------------------------------------------------


class Rendered:
    """Some families, rendered at most once per format and deflated at most once per format."""

    __slots__ = ("_deflated", "_text", "families")

    def __init__(self, families: Iterable[Family]) -> None:
        self.families = tuple(families)
        self._text: dict[tuple[bool, str], bytes] = {}
        self._deflated: dict[tuple[bool, str], bytes] = {}

    def text(self, *, openmetrics: bool, escaping: str) -> bytes:
        key = (openmetrics, escaping)
        text = self._text.get(key)
        if text is None:
            text = self._text[key] = render(
                self.families, openmetrics=openmetrics, escaping=escaping
            )
        return text

    def deflated(self, *, openmetrics: bool, escaping: str) -> bytes:
        key = (openmetrics, escaping)
        blocks = self._deflated.get(key)
        if blocks is None:
            blocks = self._deflated[key] = deflate(
                self.text(openmetrics=openmetrics, escaping=escaping)
            )
        return blocks


# A part of the exposition: given the time, the Rendered families it shows now. It returns the
# same Rendered object for as long as its families stay the same.
Part = Callable[[float], Rendered]

_EOF_DEFLATED = deflate(_EOF)
_NEGOTIATED_MAX = 64  # distinct Accept/Accept-Encoding pairs remembered


class Exposition:
    """The /metrics response bodies, built from parts and cached until a part changes.

    Used from the event loop only. A scrape whose parts are unchanged gets the very same bytes
    object as the previous scrape in that format.
    """

    def __init__(self, parts: Sequence[Part], clock: Callable[[], float]) -> None:
        self._parts = tuple(parts)
        self._clock = clock
        self._current: tuple[Rendered, ...] = ()
        self._bodies: dict[tuple[bool, str, bool], bytes] = {}
        self._negotiated: dict[tuple[str | None, str | None], tuple[Format, bool]] = {}

    def render(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for a scrape with these request headers."""
        fmt, gzipped = self._negotiate(accept, accept_encoding)
        now = self._clock()
        current = tuple(part(now) for part in self._parts)
        if current != self._current:  # identity: a part renders a new object when it changes
            self._current = current
            self._bodies.clear()
        key = (fmt.openmetrics, fmt.escaping, gzipped)
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = self._body(current, fmt, gzipped)
        return body, fmt.content_type, gzipped

    def _negotiate(self, accept: str | None, accept_encoding: str | None) -> tuple[Format, bool]:
        # Scrapers send the same headers every time: negotiate each pair once, and remember a
        # bounded number of them so that odd headers cannot grow memory.
        key = (accept, accept_encoding)
        found = self._negotiated.get(key)
        if found is None:
            if len(self._negotiated) >= _NEGOTIATED_MAX:
                self._negotiated.clear()
            found = self._negotiated[key] = (negotiate(accept), accepts_gzip(accept_encoding))
        return found

    @staticmethod
    def _body(parts: tuple[Rendered, ...], fmt: Format, gzipped: bool) -> bytes:
        om, escaping = fmt.openmetrics, fmt.escaping
        texts = [part.text(openmetrics=om, escaping=escaping) for part in parts]
        if om:
            texts.append(_EOF)
        if not gzipped:
            return b"".join(texts)
        deflated = [part.deflated(openmetrics=om, escaping=escaping) for part in parts]
        if om:
            deflated.append(_EOF_DEFLATED)
        return gzip_member(texts, deflated)
