"""parse_head(), the request parser, against h11: never more lenient, and reading alike."""

from __future__ import annotations

from http import HTTPStatus

import h11
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from exporter.web.parsing import MAX_HEADERS, Request, _path, parse_head

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN = st.text(alphabet=_TCHAR, min_size=1, max_size=12)
_NEARLY = st.binary(max_size=12)  # anything, control characters and non-ASCII included

_METHOD = st.one_of(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"get"]),
    st.sampled_from([b"GET", b"HEAD"]),
    _TOKEN.map(str.encode),
    _NEARLY,
)
_TARGET = st.one_of(
    st.sampled_from([b"/metrics", b"/", b"/-/ready?x=1", b"http://h/metrics", b"*", b"/a b"]),
    st.sampled_from([b"/metrics", b"/"]),
    st.binary(max_size=16).map(lambda b: b"/" + b),
)
_VERSION = st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"] * 2 + [b"HTTP/2.0", b"http/1.1", b""])
_VALUE = st.one_of(
    st.sampled_from(
        [
            b"x",
            b"0",
            b" 0 ",
            b"0\x0b",
            b"5, 5",
            b"5, 6",
            b"chunked",
            b"gzip",
            b"a\rb",
            b"a\x00b",
            b"\t a \t",
            b"\xe2\x80\x9c",
        ]
    ),
    st.binary(max_size=16),
)
_NAME = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Accept",
            b"Connection",
            b" X",
            b"X ",
        ]
    ),
    _TOKEN.map(str.encode),
    _NEARLY,
)
_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\n"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """A request head as read_head() would give it: from the request line to the first empty
    line; each part valid or not, about half and half."""
    line = b" ".join([draw(_METHOD), draw(_TARGET), draw(_VERSION)])
    fields = draw(st.lists(st.tuples(_NAME, _VALUE), max_size=3))
    if draw(st.integers(0, 3)):
        fields.insert(0, (b"Host", b"example"))
    text = line + draw(_EOL)
    for name, value in fields:
        text += name + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + value + draw(_EOL)
        if draw(st.integers(0, 19)) == 0:
            text += b" folded" + draw(_EOL)  # obs-fold
    text += draw(_EOL)
    # Framed as read_head() frames it: up to the first empty line; none may come first.
    ends = [i for i in (text.find(b"\n\n"), text.find(b"\n\r\n")) if i >= 0]
    end = min(ends)
    return text[: end + (2 if text[end + 1 : end + 2] == b"\n" else 3)]


def h11_reads(head: bytes) -> h11.Request | None:
    """The request h11 reads from these bytes as a server, or None if it refuses them."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def _joined(request: h11.Request) -> dict[str, str]:
    """h11's headers as parse_head() gives them: repeated fields joined with ", "."""
    joined: dict[str, str] = {}
    for name, value in request.headers:
        key, text = name.decode("ascii"), value.decode("latin-1")
        joined[key] = f"{joined[key]}, {text}" if key in joined else text
    return joined


@settings(max_examples=1500, deadline=None)
@given(head=heads())
@example(head=b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\x0b\r\n\r\n")
@example(head=b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n")
@example(head=b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n")
@example(
    head=b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
)
def test_a_head_parse_head_accepts_h11_accepts_and_reads_alike(head: bytes) -> None:
    """Whatever parse_head() accepts, h11 accepts too, with the same method, path and
    headers: the exporter is never the more lenient parser of the two."""
    ours = parse_head(head)
    theirs = h11_reads(head)
    verdicts = ("refused", "accepted")
    event(f"ours {verdicts[isinstance(ours, Request)]}, h11 {verdicts[theirs is not None]}")
    if isinstance(ours, HTTPStatus):
        return
    assert theirs is not None, (head, ours)
    assert ours.method == theirs.method.decode("ascii")
    target = theirs.target.decode("ascii")
    assert target.endswith(ours.path) or target.split("?")[0].endswith(ours.path), (ours, target)
    framing = {"content-length", "transfer-encoding"}  # h11 normalises them
    expected = {k: v for k, v in _joined(theirs).items() if k not in framing}
    assert {k: v for k, v in ours.headers.items() if k not in framing} == expected


@st.composite
def good_heads(draw: st.DrawFn) -> bytes:
    """Well-formed request heads, as scrapers and browsers send them."""
    method = draw(st.sampled_from([b"GET", b"HEAD"]))
    path = draw(st.sampled_from([b"/metrics", b"/", b"/-/healthy", b"/metrics?x=y"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    eol = draw(_EOL)
    names = st.text(alphabet=_TCHAR, min_size=1, max_size=20).filter(
        lambda n: n.lower() not in {"host", "content-length", "transfer-encoding"}
    )
    values = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
    fields = [(b"Host", b"127.0.0.1:9775")] + [
        (n.encode(), v.encode()) for n, v in draw(st.lists(st.tuples(names, values), max_size=8))
    ]
    return (
        method
        + b" "
        + path
        + b" "
        + version
        + eol
        + b"".join(n + b": " + v + eol for n, v in fields)
        + eol
    )


@settings(max_examples=500, deadline=None)
@given(head=good_heads())
def test_well_formed_heads_are_read_as_h11_reads_them(head: bytes) -> None:
    """Every well-formed head is accepted, and read as h11 reads it."""
    ours = parse_head(head)
    theirs = h11_reads(head)
    assert theirs is not None
    assert isinstance(ours, Request), (head, ours)
    assert ours.headers == _joined(theirs)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"Host: x\r\n\r\n", 431),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ],
)
def test_limits_and_what_h11_allows_but_the_exporter_does_not(head: bytes, status: int) -> None:
    """Too many headers get 431, a long request line 414; a missing or repeated Host, and a
    target that is not a path, 400."""
    assert parse_head(head) == status


def test_keep_alive_follows_the_version_and_connection_header() -> None:
    """HTTP/1.1 keeps the connection unless told to close, HTTP/1.0 closes unless told to keep
    it; a request announcing a body closes it."""

    def keep(head: bytes) -> bool:
        request = parse_head(head)
        assert isinstance(request, Request)
        return request.keep_alive

    assert keep(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not keep(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not keep(b"GET / HTTP/1.0\r\n\r\n")
    assert keep(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert not keep(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    assert keep(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/metrics", "/metrics"),
        ("/metrics?x=1", "/metrics"),
        ("http://host:1/metrics?x", "/metrics"),
        ("http://host", "/"),
        ("*", None),
        ("metrics", None),
    ],
)
def test_request_target_path(target: str, path: str | None) -> None:
    """The path is taken from origin- or absolute-form targets, without the query."""
    assert _path(target) == path


def test_a_repeated_head_is_parsed_once_into_a_request_nobody_can_change() -> None:
    """A scraper's head, sent again and again, is parsed once; the request it gives is shared,
    so its headers are read-only."""
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
    first, again = parse_head(head), parse_head(bytes(head))
    assert isinstance(first, Request)
    assert again is first
    with pytest.raises(TypeError):
        first.headers["host"] = "y"  # type: ignore[index]
    assert first.headers == {"host": "x", "accept-encoding": "gzip"}
