"""Robustness: bad input of every kind, generated with hypothesis.

Raw HTTP garbage against the running exporter; every value a status column can hold, through
a real MariaDB to the exposition and the page; and configuration mistakes.
"""

from __future__ import annotations

import datetime as dt
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from exporter.collect import CollectionLoop, Snapshot
from exporter.config import (
    CollectionConfig,
    Config,
    ConfigError,
    Overrides,
    TasksConfig,
    load,
)
from exporter.log import Logger
from exporter.metrics.registry import Metrics
from exporter.sources.mysql import MySQLSource
from exporter.web import Routes
from exporter.web.page import render
from testing import landing_page as landing
from testing.exporter_process import (
    Exporter,
    db_source_config,
    free_port,
    parse_metrics,
    run_cli,
    task_counts,
    write_secret,
)
from testing.landing_page import Element
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB, make_tasks_db

pytestmark = pytest.mark.robustness

# Examples here talk to a real process or database, so they take their time; the fixtures they
# use (a running exporter, a table, a password file) are the same for every example.
_EXAMPLES = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- raw HTTP ------------------------------------------------------------------------------------

PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

# Statuses the server may answer garbage with; anything else (a 500 above all) is a bug.
ALLOWED_STATUSES = {200, 400, 404, 405, 414, 431}

_EOL = st.sampled_from(["\r\n", "\r\n", "\n", "\r", ""])
# Each part of a request is a valid one or garbage, about half and half, so that most examples
# get far enough into the parser to meet the next part.
_METHOD = st.one_of(
    st.sampled_from(["GET", "HEAD", "GET", "POST", "OPTIONS", "CONNECT", "PRI", "get"]),
    st.text(max_size=12),
)
_TARGET = st.one_of(
    st.sampled_from(["/metrics", "/", "/-/healthy", "/-/ready", "/metrics?x=1", "*", "/%00"]),
    st.sampled_from(["http://h/metrics", "metrics", "//metrics", "/metrics#x"]),
    st.text(max_size=40),
    st.integers(8000, 9000).map(lambda n: "/" + "a" * n),  # around the request-line limit
)
_VERSION = st.one_of(
    st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    st.sampled_from(["HTTP/2.0", "HTTP/1.1 ", "http/1.1", "HTTP/1", ""]),
    st.text(max_size=10),
)
_MEDIA = st.sampled_from(
    ["application/openmetrics-text", "text/plain", "text/html", "*/*", "application/json", ""]
)
_PARAMS = st.lists(
    st.tuples(
        st.sampled_from(["version", "q", "escaping", "charset", "x"]),
        st.one_of(
            st.sampled_from(["1.0.0", "0.0.4", "2.0.0", "0", "abc", "1.0.0.x", "allow-utf-8"]),
            st.just("1.0.0.1\rX-Injected: 1"),  # a bare CR: must never reach a response header
            st.text(max_size=12),
        ),
    ),
    max_size=4,
)
_ACCEPT = st.lists(
    st.tuples(_MEDIA, _PARAMS).map(lambda mp: ";".join([mp[0], *(f"{k}={v}" for k, v in mp[1])])),
    max_size=4,
).map(",".join)
_HEADER = st.one_of(
    st.tuples(st.just("Accept"), st.one_of(_ACCEPT, st.text(max_size=60))),
    st.tuples(
        st.sampled_from(["Accept-Encoding", "Connection", "Content-Length", "Transfer-Encoding"]),
        st.one_of(
            st.sampled_from(["gzip", "gzip;q=0", "gzip;q=abc", "close", "keep-alive", "0", "-1"]),
            st.text(max_size=30),
        ),
    ),
    st.tuples(st.text(max_size=20), st.text(max_size=60)),  # any name, any value
    st.tuples(st.just("X-Big"), st.integers(1, 20_000).map(lambda n: "b" * n)),
)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """A request line and headers, each part well-formed or not, possibly cut short."""
    eol = draw(_EOL)
    line = " ".join([draw(_METHOD), draw(_TARGET), draw(_VERSION)])
    headers = draw(st.lists(_HEADER, max_size=8))
    if draw(st.booleans()):  # many headers
        headers += [("X-Many", "v")] * draw(st.integers(90, 120))
    text = line + eol + "".join(f"{k}: {v}{eol}" for k, v in headers) + eol
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):  # truncated
        data = data[: draw(st.integers(0, len(data)))]
    return data


@st.composite
def _scrapes(draw: st.DrawFn) -> bytes:
    """A whole, well-framed scrape of /metrics whose headers are anything at all."""
    method = draw(st.sampled_from(["GET", "HEAD"]))
    headers = draw(st.lists(_HEADER, min_size=1, max_size=4))
    text = f"{method} /metrics HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (text + "\r\n").encode("utf-8", "surrogatepass")


_GARBAGE = st.one_of(
    _requests(),
    _scrapes(),
    st.binary(max_size=4096),  # noise
    st.lists(_requests(), min_size=2, max_size=4).map(b"".join),  # pipelined
)


def _responses(data: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    """Each response in what the server sent, checked to be whole: (status, headers)."""
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a response head was cut off: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert all(line.isprintable() for line in lines), lines  # nothing of the request echoed
        version, status, _phrase = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        length = int(headers["content-length"])
        # A HEAD answer has the length of the body it leaves out.
        body_follows = len(rest) >= length and (
            len(rest) == length or rest[length:].startswith(b"HTTP/1.1 ")
        )
        data = rest[length:] if body_follows else rest
        if not body_follows:
            assert not rest or rest.startswith(b"HTTP/1.1 "), rest[:200]
        yield int(status), headers


def _exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read until the server closes; b"" if it reset at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us while sending: allowed, and what follows says what it answered
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


@pytest.fixture(scope="module")
def garbage_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    exporter = Exporter(tmp_path_factory.mktemp("garbage"), "", "--demo").start(ready=True)
    yield exporter
    exporter.stop()


@settings(_EXAMPLES, max_examples=300)
@given(data=_GARBAGE)
@example(data=b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=:\r\n\r\n")
def test_http_garbage_gets_a_4xx_or_a_close_and_serving_goes_on(
    garbage_target: Exporter, data: bytes
) -> None:
    """Broken request lines, huge or many headers, invalid methods, odd Accept headers, binary
    noise, truncated or pipelined requests: every answer is whole and a 4xx (or a normal answer
    to whatever was a valid request), the connection ends, and the next good request is served."""
    answer = _exchange(garbage_target.port, data)
    statuses = [status for status, _ in _responses(answer)]
    event(f"answers {sorted(set(statuses))}")
    assert set(statuses) <= ALLOWED_STATUSES, (statuses, data[:300])
    assert garbage_target.get("/-/healthy").status == 200


def test_http_garbage_left_no_trace_in_the_log(garbage_target: Exporter) -> None:
    """After all that garbage (this runs after the test above): no traceback, no error line."""
    log = garbage_target.log()
    assert "Traceback" not in log
    assert "level=error" not in log
    assert garbage_target.process is not None
    assert garbage_target.process.poll() is None


# -- status values -------------------------------------------------------------------------------

_ANY_CHAR = st.characters(exclude_categories=["Cs"])  # every code point UTF-8 can carry
_TEXT_STATUS = st.one_of(
    st.none(),
    st.text(_ANY_CHAR, max_size=40),
    st.text(_ANY_CHAR, min_size=1000, max_size=3000),  # very long
    st.sampled_from(["", " ", "Success", "NULL", "other", "<script>alert(1)</script>", "\x00"]),
)
_BYTES_STATUS = st.one_of(st.none(), st.binary(max_size=60))


def _shown(cell: Element) -> str:
    """A status cell's text exactly as the page holds it; the empty status is shown as an
    emphasised "(empty)", and no status may bring an element of its own."""
    if [c.tag for c in cell.children if isinstance(c, Element)] == ["em"]:
        return ""
    assert all(isinstance(c, str) for c in cell.children), cell
    return "".join(str(c) for c in cell.children)


def _page_rows(page: Element) -> dict[str, int]:
    """Status -> count, as the landing page's table shows them."""
    (table,) = page.find("table", id="counts")
    (body,) = table.find("tbody")
    rows = {}
    for tr in body.find("tr"):
        status, count, *_ = tr.find("td")
        rows[_shown(status)] = int(count.text().replace(",", ""))
    return rows


@pytest.fixture(scope="module")
def status_table(mariadb: MariaDB) -> Iterator[TasksDB]:
    """A tasks table whose status columns hold anything: text compared byte by byte (no
    case folding, trailing spaces kept), and raw bytes."""
    db = make_tasks_db(mariadb)
    mariadb.execute(
        f"ALTER TABLE {db.qualified_table}"
        " MODIFY task_status VARCHAR(3000) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin,"
        " ADD COLUMN status_bytes VARBINARY(100)"
    )
    yield db
    db.drop()


def _exposed(db: TasksDB, column: str, values: list[Any]) -> tuple[Routes, dict[str, int]]:
    """Store `values` as the table's only rows, run one real collection, and return what serves
    it, with the counts it should show (None is NULL; bytes are read as UTF-8)."""
    db.server.execute(f"DELETE FROM {db.qualified_table}")
    db.server.executemany(
        f"INSERT INTO {db.qualified_table} (task_title, {column}) VALUES ('t', %s)",
        [(v,) for v in values],
    )
    tasks = TasksConfig(status_column=column, max_statuses=10_000)
    source = MySQLSource(db_source_config(db), tasks, timeout=5)
    loop = CollectionLoop(source, tasks, CollectionConfig(), logger=Logger(__name__))
    try:
        assert loop.collect_once().up, loop.snapshot.error
    finally:
        source.close()
    routes = Routes(
        metrics=Metrics(lambda: loop.snapshot, version="test").exposition,
        snapshot=lambda: loop.snapshot,
        telemetry_path="/metrics",
        version="test",
        source="test",
    )
    expected = dict.fromkeys(tasks.expected_statuses, 0)
    for v in values:
        key = "NULL" if v is None else v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        expected[key] = expected.get(key, 0) + 1
    return routes, expected


def _exposed_page(counts: dict[str, int]) -> str:
    """The landing page for fresh counts, as Routes would render it."""
    now = time.time()
    snapshot = Snapshot(
        interval=15, staleness=60, counts=tuple(counts.items()), last_success=now, up=True
    )
    return render(snapshot, now, version="test", telemetry_path="/metrics", source="test").decode()


def _assert_shown_exactly(routes: Routes, expected: dict[str, int]) -> None:
    """Both exposition formats parse and give back every status exactly; the page shows each
    as text in its table, with no tag but the table's own."""
    text = routes.respond("GET", "/metrics", {}).body.decode("utf-8")
    assert task_counts(parse_metrics(text)) == expected
    om = routes.respond("GET", "/metrics", {"accept": PROMETHEUS_ACCEPT}).body.decode("utf-8")
    om_counts = {
        s.labels["status"]: int(s.value)
        for f in parse_om(om)  # type: ignore[no-untyped-call]  # untyped upstream
        if f.name == "tasks_exporter_tasks"
        for s in f.samples
    }
    assert om_counts == expected
    page = landing.parse(routes.respond("GET", "/", {}).body.decode("utf-8"))
    assert _page_rows(page) == expected
    # The same page with harmless names is made of the same elements: nothing got in as markup.
    plain = dict(zip((f"s{i}" for i in range(len(expected))), expected.values(), strict=True))
    reference = landing.parse(_exposed_page(plain))
    assert {e.tag for e in page.iter()} <= {e.tag for e in reference.iter()} | {"em"}


@pytest.mark.mariadb
@settings(_EXAMPLES, max_examples=100)
@given(values=st.lists(_TEXT_STATUS, max_size=20))
def test_any_text_status_comes_out_exactly_and_escaped(
    status_table: TasksDB, values: list[str | None]
) -> None:
    """Whatever text the status column holds (any unicode, control characters, empty, very
    long, NULL), read back from a real MariaDB: both exposition formats parse and round-trip
    every value, and the landing page shows each as escaped text."""
    _assert_shown_exactly(*_exposed(status_table, "task_status", values))


@pytest.mark.mariadb
@settings(_EXAMPLES, max_examples=50)
@given(values=st.lists(_BYTES_STATUS, max_size=20))
def test_any_binary_status_comes_out_as_its_utf8_reading(
    status_table: TasksDB, values: list[bytes | None]
) -> None:
    """Whatever bytes a binary status column holds: each shows as its UTF-8 reading (invalid
    bytes as U+FFFD, statuses that read the same summed), in both formats and on the page."""
    _assert_shown_exactly(*_exposed(status_table, "status_bytes", values))


# -- configuration files -------------------------------------------------------------------------


class _Raw(str):
    """A TOML literal written as it is (numbers beyond what a float or an int parser takes)."""

    __slots__ = ()


_BARE_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True)
_SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.integers(1, 6000).map(lambda n: _Raw("1" * n)),  # up to 6,000 digits
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_BARE_KEY, inner, max_size=3),
    max_leaves=5,
)


def _toml(value: object) -> str:  # noqa: PLR0911 - one return per TOML type
    """A value as TOML (the standard library reads TOML but does not write it)."""
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        escaped = "".join(
            f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c
            for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _document(sections: dict[str, dict[str, object]]) -> str:
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items())
        for name, body in sections.items()
    )


# Every setting and the kind of value it takes.
_SETTINGS: dict[tuple[str, str], str] = {
    **{("database", k): "string" for k in ("driver", "host", "socket", "user", "database")},
    **{("database", k): "string" for k in ("option_file", "password_file", "credential")},
    ("database", "port"): "integer",
    **{("tasks", k): "string" for k in ("table", "status_column", "filter")},
    **{("tasks", k): "string" for k in ("other_status", "null_status")},
    ("tasks", "expected_statuses"): "strings",
    ("tasks", "max_statuses"): "integer",
    **{("collection", k): "duration" for k in ("interval", "timeout", "staleness")},
    ("web", "listen_addresses"): "strings",
    ("web", "allow"): "strings",
    ("web", "telemetry_path"): "string",
    ("web", "max_connections"): "integer",
    ("web", "request_timeout"): "duration",
    ("web", "idle_timeout"): "duration",
    ("log", "level"): "string",
    ("log", "format"): "string",
}
_NOT_A_STRING = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(_BARE_KEY, st.integers(), max_size=2),
)
_WRONG_TYPE = {
    "string": _NOT_A_STRING,
    "integer": st.one_of(
        st.text(max_size=5), st.floats(), st.booleans(), st.lists(st.integers(), max_size=2)
    ),
    "duration": st.one_of(
        st.booleans(),
        st.datetimes(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(_BARE_KEY, st.integers(), max_size=2),
    ),
    "strings": st.one_of(
        st.text(max_size=5), st.integers(), st.lists(_NOT_A_STRING, min_size=1, max_size=2)
    ),
}
_FLAG_NAMES = (
    "--web.listen-address",
    "--web.telemetry-path",
    "--log.level",
    "--log.format",
    "--config.file",
)


def _valid(password_file: Path) -> dict[str, dict[str, object]]:
    """A configuration with every section, valid as it is."""
    return {
        "database": {"host": "127.0.0.1", "port": 3306, "user": "u", "database": "d",
                     "password_file": str(password_file)},
        "tasks": {"table": "tasks", "expected_statuses": ["Success", "Pending", "Failed"]},
        "collection": {"interval": "15s", "timeout": "5s", "staleness": "1m"},
        "web": {"listen_addresses": ["127.0.0.1:9775"], "allow": ["127.0.0.0/8"]},
        "log": {"level": "info", "format": "logfmt"},
    }  # fmt: skip


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_secret(tmp_path_factory.mktemp("config") / "pw", "pw\n")


def _problems(text: str | bytes, overrides: Overrides | None = None) -> tuple[str, ...] | Config:
    """What loading the file says: its problems, or the Config it gives. Nothing else may come
    out of it: any other exception fails the test, as it would end the exporter in a traceback."""
    with tempfile.NamedTemporaryFile(suffix=".toml") as f:
        f.write(text.encode() if isinstance(text, str) else text)
        f.flush()
        try:
            return load(Path(f.name), overrides or Overrides(), {})
        except ConfigError as exc:
            return exc.problems


def _assert_clear(problems: tuple[str, ...], sections: dict[str, dict[str, object]]) -> None:
    """Each problem is one line naming a setting, a section or a flag."""
    assert problems
    for line in problems:
        assert line.isprintable(), line  # one line, however odd the value it quotes
        named = line.split(": ", 1)[0]
        assert named in _FLAG_NAMES or named.split(".")[0] in sections, line


_WRONG = st.dictionaries(st.sampled_from(sorted(_SETTINGS)), st.none(), min_size=1, max_size=4)


def _with_wrong_types(
    sections: dict[str, dict[str, object]], wrong: dict[tuple[str, str], None], data: st.DataObject
) -> dict[str, dict[str, object]]:
    for section, key in wrong:
        sections[section][key] = data.draw(_WRONG_TYPE[_SETTINGS[section, key]], f"{section}.{key}")
    return sections


@settings(_EXAMPLES, max_examples=200)
@given(wrong=_WRONG, data=st.data())
def test_each_wrong_type_is_one_line_naming_its_setting(
    password_file: Path, wrong: dict[tuple[str, str], None], data: st.DataObject
) -> None:
    """A value of the wrong type for any setting, one or several at once: each is reported on a
    line of its own naming its setting, and no configuration comes out."""
    sections = _with_wrong_types(_valid(password_file), wrong, data)
    problems = _problems(_document(sections))
    assert isinstance(problems, tuple), "a wrong configuration was accepted"
    _assert_clear(problems, sections)
    for section, key in wrong:
        assert any(p.startswith(f"{section}.{key}: ") for p in problems), (section, key, problems)


@settings(_EXAMPLES, max_examples=200)
@given(
    setting=st.sampled_from(sorted(k for k, kind in _SETTINGS.items() if kind == "string")),
    text=st.text(max_size=40),
)
@example(setting=("database", "password_file"), text="/no/such\nfile")
def test_any_text_in_a_text_setting_is_taken_or_refused_on_one_line(
    password_file: Path, setting: tuple[str, str], text: str
) -> None:
    """Any text at all (control characters, newlines, empty) in any text setting: accepted, or
    refused on one line naming a setting."""
    sections = _valid(password_file)
    sections[setting[0]][setting[1]] = text
    result = _problems(_document(sections))
    if isinstance(result, tuple):
        _assert_clear(result, sections)


@settings(_EXAMPLES, max_examples=300)
@given(
    changes=st.dictionaries(
        st.one_of(
            st.sampled_from(sorted(_SETTINGS)),  # a known setting
            st.tuples(st.sampled_from(["database", "tasks", "collection", "web", "log", "x"]),
                      _BARE_KEY),  # a typo, or a setting in the wrong section
        ),
        _VALUES, max_size=5,
    ),
    flags=st.fixed_dictionaries({}, optional={
        "listen_addresses": st.lists(st.text(max_size=20), max_size=2).map(tuple),
        "telemetry_path": st.text(max_size=20),
        "log_level": st.text(max_size=8),
        "log_format": st.text(max_size=8),
    }),
)  # fmt: skip
def test_any_value_anywhere_is_refused_clearly_or_gives_a_usable_config(
    password_file: Path, changes: dict[tuple[str, str], object], flags: dict[str, Any]
) -> None:
    """Any value for any setting, known or not, and any flag: either one line per problem,
    each naming a setting or flag, or a configuration whose durations every timer can take."""
    sections = _valid(password_file)
    for (section, key), v in changes.items():
        sections.setdefault(section, {})[key] = v
    result = _problems(_document(sections), Overrides(**flags))
    if isinstance(result, tuple):
        _assert_clear(result, sections)
        return
    web = result.web
    durations = (*astuple(result.collection), web.request_timeout, web.idle_timeout)
    assert all(0 < d < threading.TIMEOUT_MAX for d in durations), durations
    assert result.collection.timeout < result.collection.interval


@settings(_EXAMPLES, max_examples=200)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_a_file_that_is_not_a_config_gets_one_line(text: str | bytes) -> None:
    """Any text or bytes at all as the config file: problem lines, never an exception."""
    result = _problems(text)
    assert isinstance(result, tuple)  # there is never a [database] section in a few bytes
    assert all(line.isprintable() for line in result), result


@settings(_EXAMPLES, max_examples=10)
@given(wrong=_WRONG, data=st.data())
def test_started_with_a_broken_config_it_never_listens(
    password_file: Path, wrong: dict[tuple[str, str], None], data: st.DataObject
) -> None:
    """Started for real (not --config.check) with wrong settings: one line per problem on
    stderr, exit code 2, nothing else said and nothing listening."""
    port = free_port()
    sections = _valid(password_file)
    sections["web"]["listen_addresses"] = [f"127.0.0.1:{port}"]
    sections = _with_wrong_types(sections, wrong, data)
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "config.toml"
        config.write_text(_document(sections), encoding="utf-8")
        result = run_cli("--config.file", str(config), cwd=Path(workdir))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines
    assert all(line.startswith("tasks_exporter: config error: ") for line in lines), lines
    _assert_clear(tuple(line.split(": ", 2)[2] for line in lines), sections)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free: it never listened
