"""Configuration: a TOML file plus flags, validated once into frozen dataclasses.

Every problem is collected and reported together in one ConfigError, one line per problem, each
naming the setting (or the flag) it comes from. Nothing here touches the network.
"""

from __future__ import annotations

import ipaddress
import math
import re
import resource
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from exporter.secret import (
    Secret,
    SecretError,
    password_from_credential,
    password_from_file,
    read_option_file,
)
from exporter.tlsfiles import DATABASE_TLS_MODES, TLSFilesError, database_context

if TYPE_CHECKING:
    from exporter.web.security.webconfig import WebSecurity

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 9775
DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128")
DEFAULT_STATUSES = ("Success", "Pending", "Failed")
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready")

# Unquoted-identifier characters; anything else in a table or column name is refused, and what is
# accepted is still quoted, so an identifier can never carry SQL.
_IDENTIFIER = re.compile(r"[\w$]{1,64}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Longer than any sensible setting, and far within what the timers the durations feed accept
# (a thread's wait refuses anything beyond ~292 years, and would end the collection loop).
MAX_DURATION = 365 * 86400.0

TIME_COLUMN_TYPES = ("auto", "datetime", "timestamp", "epoch")
# Prometheus label names; those the exporter or Prometheus itself set on every series are taken.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = ("status", "job", "instance", "le", "quantile")


class ConfigError(Exception):
    """Every problem found in the configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        # A problem may quote a value from the file (a path, say) holding a newline or another
        # control character: escaped, so that each problem stays one line.
        self.problems = tuple(
            "".join(c if c.isprintable() else repr(c)[1:-1] for c in p) for p in problems
        )
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" means every interface (dual-stack where the host has IPv6)
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DatabaseTLS:
    """How the connection to MySQL/MariaDB is encrypted and the server checked."""

    mode: str = "preferred"  # one of DATABASE_TLS_MODES
    ca_file: Path | None = None
    cert_file: Path | None = None  # the exporter's client certificate, with key_file
    key_file: Path | None = None


@dataclass(frozen=True)
class DatabaseConfig:
    driver: Literal["mysql", "sqlite"]
    host: str = "127.0.0.1"
    port: int = 3306
    socket: str | None = None
    user: str = ""
    password: Secret | None = None
    database: str = ""
    path: str = ""  # sqlite only
    demo: bool = False
    tls: DatabaseTLS = field(default_factory=DatabaseTLS)

    def describe(self) -> str:
        """Where the data comes from, for logs and the landing page (never the password)."""
        if self.driver == "sqlite":
            return "embedded demo database" if self.demo else f"sqlite:{self.path}"
        where = self.socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}/{self.database}"


@dataclass(frozen=True)
class Window:
    """Which rows are counted by time: since local midnight ("today") or the last `seconds`."""

    today: bool = False
    seconds: float = 0.0  # rolling windows only

    def __str__(self) -> str:
        return "today" if self.today else f"{self.seconds:g}s"


@dataclass(frozen=True)
class TasksConfig:
    table: tuple[str, ...] = ("tasks",)  # one part, or schema and table
    status_column: str = "task_status"
    filter: str | None = None
    expected_statuses: tuple[str, ...] = DEFAULT_STATUSES
    max_statuses: int = 30
    other_status: str = "other"
    null_status: str = "NULL"
    time_column: str | None = None
    time_column_type: str = "auto"  # one of TIME_COLUMN_TYPES
    time_zone: str = "UTC"  # IANA name: how DATETIME values and the window's midnight are read
    window: Window | None = None
    label_columns: tuple[tuple[str, str], ...] = ()  # (label name, column), in config order
    max_kinds: int = 20  # distinct label_columns combinations at most, "other" included

    @property
    def zone(self) -> tzinfo:
        # UTC needs no time zone database: a machine without tzdata runs with the default.
        return UTC if self.time_zone == "UTC" else ZoneInfo(self.time_zone)


# The embedded demo's table (exporter/sources/demo.py): ages, today's window and kinds of tasks.
DEMO_TASKS = TasksConfig(
    time_column="created_at",
    window=Window(today=True),
    label_columns=(("queue", "task_queue"),),
)


@dataclass(frozen=True)
class CollectionConfig:
    interval: float = 15.0
    timeout: float = 5.0
    staleness: float = 60.0
    # Share of the interval the query may take; slower queries space the collections out.
    load_budget: float = 0.25
    # EXPLAIN estimates above this many rows, without an index serving the query, warn.
    scan_warning_rows: int = 100_000

    @property
    def max_interval(self) -> float:
        """The longest the interval is stretched: the next collection still lands before the
        counts of the last successful one go stale."""
        return max(self.interval, self.staleness - self.timeout)


@dataclass(frozen=True)
class WebConfig:
    listen_addresses: tuple[ListenAddress, ...] = (ListenAddress("", DEFAULT_PORT),)
    telemetry_path: str = "/metrics"
    allow: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_ALLOW)
    max_connections: int = 100
    max_requests: int = 40  # metrics requests answered at once (--web.max-requests); 0: any
    request_timeout: float = 10.0
    idle_timeout: float = 75.0
    systemd_socket: bool = False  # serve the sockets systemd passes instead of listening
    # The web configuration file (TLS, headers, basic auth users), read and validated at load.
    security: WebSecurity | None = None


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "logfmt"


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig
    tasks: TasksConfig = field(default_factory=TasksConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    web: WebConfig = field(default_factory=WebConfig)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass(frozen=True)
class Overrides:
    """Values given as flags; they win over the file."""

    listen_addresses: tuple[str, ...] = ()
    telemetry_path: str | None = None
    web_config_file: str | None = None
    max_requests: int | None = None
    log_level: str | None = None
    log_format: str | None = None
    demo: bool = False
    systemd_socket: bool = False


# Flags that override a setting, so a problem is reported under the name the user typed.
_FLAG_NAMES = {
    "web.listen_addresses": "--web.listen-address",
    "web.telemetry_path": "--web.telemetry-path",
    "web.systemd_socket": "--web.systemd-socket",
    "web.config_file": "--web.config.file",
    "web.max_requests": "--web.max-requests",
    "log.level": "--log.level",
    "log.format": "--log.format",
}


def parse_duration(value: object) -> float:
    """Seconds from a number or a Prometheus-style duration string such as "15s" or "1m30s"."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as 15 or "15s"')
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond any float
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip()
        position, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            position = match.end()
        if not text or position != len(text):
            raise ValueError(f'must be a duration such as "15s", "500ms" or "1m", got {value!r}')
    else:
        raise ValueError(f'must be a duration such as 15 or "15s", got {value!r}')
    if not seconds > 0:  # NaN too
        raise ValueError(f"must be a positive duration, got {value!r}")
    if not seconds <= MAX_DURATION:  # infinity too
        raise ValueError(f"must be a duration of at most 365d, got {value!r}")
    return seconds


def parse_listen_address(text: str) -> ListenAddress:
    """`host:port`, `[v6]:port` or `:port` (every interface)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"must be host:port, [ipv6]:port or :port, got {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unbalanced brackets in {text!r}")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"write IPv6 addresses in brackets, as [{host}]:{port_text}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r} in {text!r}")
    return ListenAddress(host, int(port_text))


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> Network:
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text.strip(), strict=False)
            raise ValueError(f"{text!r} has host bits set; did you mean {loose}?") from None
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 network (CIDR)") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        # Clients that arrive IPv4-mapped on a dual-stack socket are matched as IPv4, so this
        # entry could never match anyone.
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # noqa: S101 - inside ::ffff:0:0/96
        meant = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        raise ValueError(
            f"{text!r} is an IPv4-mapped IPv6 network, which never matches: IPv4 clients are"
            f" matched as IPv4 even on a dual-stack socket; write {meant}"
        )
    return network


def parse_identifier(text: str) -> str:
    if not _IDENTIFIER.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a plain identifier (letters, digits, _ and $; at most 64)"
        )
    return text


def parse_table(text: str) -> tuple[str, ...]:
    parts = text.split(".")
    if len(parts) > 2:
        raise ValueError(f"must be table or schema.table, got {text!r}")
    return tuple(parse_identifier(p) for p in parts)


class _Section:
    """Typed reads from one table of the TOML file, recording problems instead of raising."""

    def __init__(
        self, name: str, data: object, problems: list[str], flags: frozenset[str] = frozenset()
    ) -> None:
        self.name = name
        self.problems = problems
        self.flags = flags  # keys whose value came from a flag: problems are named after it
        self.used: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.append(f"{name}: must be a table ([{name}]), got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data

    def problem(self, key: str, message: str) -> None:
        label = f"{self.name}.{key}"
        if key in self.flags:
            label = _FLAG_NAMES[label]
        self.problems.append(f"{label}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except (ValueError, SecretError) as exc:
            self.problem(key, str(exc))
            return default

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.used):
            self.problems.append(f"{self.name}.{key}: unknown setting")


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _nonempty(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of strings, got {value!r}")
    return tuple(value)


def _int_in(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}, got {value!r}")
        return value

    return convert


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return convert


def _each(convert: Callable[[str], T]) -> Callable[[object], tuple[T, ...]]:
    def each(value: object) -> tuple[T, ...]:
        items = _string_list(value)
        errors: list[str] = []
        out: list[T] = []
        for item in items:
            try:
                out.append(convert(item))
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("; ".join(errors))
        return tuple(out)

    return each


_SECTIONS = ("database", "tasks", "collection", "web", "log")


def load(path: Path | None, overrides: Overrides, environ: Mapping[str, str]) -> Config:
    """Read, merge and validate everything; raise one ConfigError listing every problem."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"--config.file: cannot read {path}: {exc.strerror}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"--config.file: {path} is not valid UTF-8"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"--config.file: {path} is not valid TOML: {exc}"]) from None
        except ValueError:  # tomllib's int() refuses integers of thousands of digits
            raise ConfigError([f"--config.file: {path} holds a number too long to read"]) from None
    problems += [
        f"{key}: unknown section or setting (known: {', '.join(_SECTIONS)})"
        for key in sorted(set(raw) - set(_SECTIONS))
    ]

    web_flags: dict[str, object] = {
        "listen_addresses": list(overrides.listen_addresses) or None,
        "telemetry_path": overrides.telemetry_path,
        "systemd_socket": overrides.systemd_socket or None,
        "config_file": overrides.web_config_file,
        "max_requests": overrides.max_requests,
    }
    log_flags: dict[str, object] = {"level": overrides.log_level, "format": overrides.log_format}

    database = _database(raw, overrides.demo, environ, problems)
    tasks = _tasks(_Section("tasks", raw.get("tasks"), problems))
    if overrides.demo and "tasks" not in raw:  # the demo's table has these columns
        tasks = DEMO_TASKS
    collection = _collection(_Section("collection", raw.get("collection"), problems))
    web = _web(_Section("web", _merge(raw.get("web"), **web_flags), problems, _given(**web_flags)))
    log = _log(_Section("log", _merge(raw.get("log"), **log_flags), problems, _given(**log_flags)))
    if problems:
        raise ConfigError(problems)
    assert database is not None  # noqa: S101 - no problems means a database was built
    return Config(database=database, tasks=tasks, collection=collection, web=web, log=log)


def _merge(section: object, **flags: object) -> object:
    """The file's section with the flags that were given laid over it."""
    given = {key: value for key, value in flags.items() if value is not None}
    if not given or not isinstance(section, dict | None):
        return section  # a malformed section is reported by _Section
    return {**(section or {}), **given}


def _given(**flags: object) -> frozenset[str]:
    return frozenset(key for key, value in flags.items() if value is not None)


def _database(
    raw: dict[str, Any], demo: bool, environ: Mapping[str, str], problems: list[str]
) -> DatabaseConfig | None:
    if demo:
        if "database" in raw:
            problems.append("--demo: cannot be combined with a [database] section; drop one")
            return None
        return DatabaseConfig(driver="sqlite", demo=True)
    if "database" not in raw:
        problems.append(
            "database: no database configured; add a [database] section to --config.file,"
            " or run with --demo to try the embedded demo database"
        )
        return None
    s = _Section("database", raw["database"], problems)
    driver = s.get("driver", "mysql", _choice(("mysql", "sqlite")))
    if driver == "sqlite":
        db_path = s.get("path", "", _nonempty)
        if not s.has("path"):
            s.problem("path", "required when driver is sqlite (the database file)")
        s.finish()
        return DatabaseConfig(driver="sqlite", path=db_path)

    host = s.get("host", "127.0.0.1", _nonempty)
    port = s.get("port", 3306, _int_in(1, 65535))
    socket = s.get("socket", None, _nonempty)
    if socket is not None and (s.has("host") or s.has("port")):
        s.problem("socket", "set either socket, or host and port, not both")
    user = s.get("user", "", _nonempty)
    database = s.get("database", "", _nonempty)
    if not s.has("database"):
        s.problem("database", "required (the schema that holds the tasks table)")

    password, options = _password(s, environ)
    if not user:
        user = options.get("user", "")
    if not user and not s.has("user"):  # a wrong value was reported already
        s.problem("user", "required (here, or as user= in the option_file's [client] section)")
    tls = _database_tls(s, socket)
    s.finish()
    return DatabaseConfig(
        driver="mysql",
        host=host,
        port=port,
        socket=socket,
        user=user,
        password=password,
        database=database,
        tls=tls,
    )


_TLS_FILE_SETTINGS = {"ca": "tls_ca_file", "cert": "tls_cert_file", "key": "tls_key_file"}


def _database_tls(s: _Section, socket: str | None) -> DatabaseTLS:
    """tls_mode and the files it uses; the files are loaded, so a bad one is found now."""
    before = len(s.problems)
    mode = s.get("tls_mode", "preferred", _choice(DATABASE_TLS_MODES))
    ca, cert, key = (
        s.get(name, None, lambda v: Path(_nonempty(v))) for name in _TLS_FILE_SETTINGS.values()
    )
    given = [name for name in _TLS_FILE_SETTINGS.values() if s.has(name)]
    if mode in ("disabled", "preferred") and given:
        s.problem(
            given[0],
            f'set, but tls_mode = "{mode}" does not use it; set tls_mode = "verify_identity"'
            ' (or "verify_ca", or "required")',
        )
    elif mode == "required" and s.has("tls_ca_file"):
        s.problem(
            "tls_ca_file",
            'set, but tls_mode = "required" does not verify the server with it;'
            ' set tls_mode = "verify_identity" (or "verify_ca")',
        )
    if s.has("tls_cert_file") != s.has("tls_key_file"):
        s.problem(
            "tls_key_file" if s.has("tls_cert_file") else "tls_cert_file",
            "tls_cert_file and tls_key_file go together (the client certificate and its key)",
        )
    if mode == "verify_identity" and socket is not None:
        s.problem(
            "tls_mode",
            "verify_identity checks the server's host name, and a unix socket has none;"
            ' connect with host and port, or use "verify_ca"',
        )
    if len(s.problems) == before and mode not in ("disabled", "preferred"):
        try:
            database_context(mode, ca=ca, cert=cert, key=key)
        except TLSFilesError as exc:
            for problem in exc.problems:
                s.problem(_TLS_FILE_SETTINGS[problem.which], problem.message)
    return DatabaseTLS(mode=mode, ca_file=ca, cert_file=cert, key_file=key)


def _password(s: _Section, environ: Mapping[str, str]) -> tuple[Secret | None, dict[str, str]]:
    """The password from its one source, and the option file's [client] options if used."""
    sources = [k for k in ("password_file", "option_file", "credential") if s.has(k)]
    if len(sources) > 1:
        s.problem(sources[1], f"choose one password source, not {' and '.join(sources)}")
    for key in ("password", "pass", "passwd"):
        if s.has(key):
            s.used.add(key)
            s.problem(
                key,
                "passwords are not accepted in the config file; use password_file,"
                " option_file or credential",
            )
    password = s.get("password_file", None, lambda v: password_from_file(Path(_nonempty(v))))
    credential = s.get(
        "credential", None, lambda v: password_from_credential(_nonempty(v), dict(environ))
    )
    options: dict[str, str] = s.get(
        "option_file", {}, lambda v: read_option_file(Path(_nonempty(v)))
    )
    if s.has("option_file") and "password" in options:
        password = Secret(options["password"])
    password = password or credential
    return password, options


def _tasks(s: _Section) -> TasksConfig:
    d = TasksConfig()
    table = s.get("table", d.table, lambda v: parse_table(_string(v)))
    column = s.get("status_column", d.status_column, lambda v: parse_identifier(_string(v)))
    where = s.get("filter", None, _nonempty)
    expected = s.get("expected_statuses", d.expected_statuses, _string_list)
    if len(set(expected)) != len(expected):
        s.problem("expected_statuses", f"lists a status twice: {list(expected)!r}")
    if any(not status for status in expected):
        s.problem("expected_statuses", "must not contain an empty status")
    other = s.get("other_status", d.other_status, _nonempty)
    null = s.get("null_status", d.null_status, _nonempty)
    if other in expected:
        s.problem("other_status", f"{other!r} is also an expected status; choose another name")
    if null == other:
        s.problem("null_status", f"must differ from other_status ({other!r})")
    cap = s.get("max_statuses", d.max_statuses, _int_in(1, 10_000))
    if cap < len(expected) + 1:
        s.problem(
            "max_statuses",
            f"must leave room for the {len(expected)} expected statuses and {other!r}"
            f" (at least {len(expected) + 1}), got {cap}",
        )
    time_column = s.get("time_column", None, lambda v: parse_identifier(_string(v)))
    time_type = s.get("time_column_type", d.time_column_type, _choice(TIME_COLUMN_TYPES))
    zone = s.get("time_zone", d.time_zone, _time_zone)
    window = s.get("window", None, parse_window)
    for key in ("time_column_type", "time_zone", "window"):
        if s.has(key) and time_column is None and not s.has("time_column"):
            s.problem(key, "needs time_column (the column holding each task's time)")
    labels = s.get("label_columns", d.label_columns, _label_columns)
    if any(c == column for _, c in labels):
        s.problem("label_columns", f"{column!r} is the status_column; it is the status label")
    kinds = s.get("max_kinds", d.max_kinds, _int_in(2, 10_000))
    s.finish()
    return TasksConfig(
        table=table,
        status_column=column,
        filter=where,
        expected_statuses=expected,
        max_statuses=cap,
        other_status=other,
        null_status=null,
        time_column=time_column,
        time_column_type=time_type,
        time_zone=zone,
        window=window,
        label_columns=labels,
        max_kinds=kinds,
    )


def parse_window(value: object) -> Window:
    """ "today" (since local midnight in time_zone) or a rolling duration such as "24h"."""
    if value == "today":
        return Window(today=True)
    try:
        return Window(seconds=parse_duration(value))
    except ValueError:
        raise ValueError(f'must be "today" or a duration such as "24h", got {value!r}') from None


def _time_zone(value: object) -> str:
    name = _nonempty(value)
    if name == "UTC":
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if not available_timezones():
            raise ValueError(
                f"{name!r} cannot be read: this machine has no time zone database;"
                " install it (apt-get install tzdata)"
            ) from None
        raise ValueError(
            f'{name!r} is not an IANA time zone such as "UTC" or "Europe/Paris"'
        ) from None
    return name


def _label_columns(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError(f'must be a table of label = "column", got {value!r}')
    problems: list[str] = []
    out: list[tuple[str, str]] = []
    for name, column in value.items():
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            problems.append(
                f"{name!r} is not a Prometheus label name (letters, digits and _, not starting"
                " with a digit or __)"
            )
        elif name in RESERVED_LABELS:
            problems.append(f"{name!r} is taken (by the exporter or Prometheus); choose another")
        elif name.startswith("exported_"):
            problems.append(f"{name!r} is what Prometheus renames clashing labels to")
        try:
            out.append((name, parse_identifier(_string(column))))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    columns = [c for _, c in out]
    if len(set(columns)) != len(columns):
        problems.append("names a column twice")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(out)


def _collection(s: _Section) -> CollectionConfig:
    d = CollectionConfig()
    interval = s.get("interval", d.interval, parse_duration)
    timeout = s.get("timeout", min(d.timeout, interval / 2), parse_duration)
    staleness = s.get("staleness", max(d.staleness, 4 * interval), parse_duration)
    if timeout >= interval:
        s.problem("timeout", f"must be shorter than collection.interval ({interval:g}s)")
    if staleness < interval + timeout:
        s.problem(
            "staleness",
            f"must be at least interval + timeout ({interval + timeout:g}s),"
            " or fresh data would be dropped between collections",
        )
    budget = s.get("load_budget", d.load_budget, _share)
    scan = s.get("scan_warning_rows", d.scan_warning_rows, _int_in(0, 10**15))
    s.finish()
    return CollectionConfig(
        interval=interval,
        timeout=timeout,
        staleness=staleness,
        load_budget=budget,
        scan_warning_rows=scan,
    )


def _share(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"must be a share of the interval, above 0 and at most 1, got {value!r}")
    return float(value)


def _telemetry_path(value: object) -> str:
    text = _string(value)
    if not text.startswith("/") or any(c.isspace() or c in "?#" for c in text):
        raise ValueError(f"must be a path starting with / (no spaces, ? or #), got {text!r}")
    if text in RESERVED_PATHS:
        raise ValueError(f"{text!r} is taken by the landing page or health endpoints")
    return text


def _web(s: _Section) -> WebConfig:
    d = WebConfig()
    listen = s.get("listen_addresses", d.listen_addresses, _each(parse_listen_address))
    if not listen:
        s.problem("listen_addresses", "must name at least one address")
    systemd_socket = s.get("systemd_socket", d.systemd_socket, _boolean)
    if systemd_socket and s.has("listen_addresses"):
        s.problem(
            "systemd_socket",
            "the sockets come from systemd (ListenStream= in the .socket unit); drop"
            " listen_addresses / --web.listen-address, or socket activation",
        )
    allow = s.get("allow", d.allow, _each(parse_network))
    if not allow:
        s.problem(
            "allow",
            "is empty, which would refuse everyone; list the networks Prometheus scrapes from"
            ' (to allow every client, say so: ["0.0.0.0/0", "::/0"])',
        )
    max_connections = s.get("max_connections", d.max_connections, _int_in(2, 100_000))
    if (files := open_files_needed(max_connections)) > (limit := open_files_limit()):
        s.problem(
            "max_connections",
            f"{max_connections} connections need up to {files} open files, above this process's"
            f" limit of {limit} (ulimit -Hn; LimitNOFILE= in a systemd unit): lower"
            " max_connections or raise the limit",
        )
    config = WebConfig(
        listen_addresses=listen,
        telemetry_path=s.get("telemetry_path", d.telemetry_path, _telemetry_path),
        allow=allow,
        max_connections=max_connections,
        max_requests=s.get("max_requests", d.max_requests, _int_in(0, 100_000)),
        request_timeout=s.get("request_timeout", d.request_timeout, parse_duration),
        idle_timeout=s.get("idle_timeout", d.idle_timeout, parse_duration),
        systemd_socket=systemd_socket,
        security=_web_security(s),
    )
    s.finish()
    return config


# Files the exporter holds besides its clients' connections: listening sockets, the database
# connection, the log, Python's own, with room to spare.
RESERVED_OPEN_FILES = 64


def open_files_needed(max_connections: int) -> int:
    """Open files the exporter may need at most: two per connection (a TLS handshake holds the
    connection and a duplicate of it while it waits for the first byte) and the reserve."""
    return 2 * max_connections + RESERVED_OPEN_FILES


def open_files_limit() -> int:
    """The most open files this process can have: its hard limit, to which the exporter raises
    its soft limit when it starts (as Go programs do)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def _web_security(s: _Section) -> WebSecurity | None:
    """The web configuration file, with each of its problems reported on its own line."""
    path = s.get("config_file", None, _nonempty)
    if path is None:
        return None
    # Only exporters given a web config file load its code (and PyYAML, bcrypt): memory.
    from exporter.web.security.webconfig import WebConfigError, read_web_security  # noqa: PLC0415

    try:
        return read_web_security(Path(path))
    except WebConfigError as exc:
        for problem in exc.problems:
            s.problem("config_file", problem)
        return None


def _log(s: _Section) -> LogConfig:
    level = s.get("level", "info", _choice(LOG_LEVELS))
    fmt = s.get("format", "logfmt", _choice(LOG_FORMATS))
    s.finish()
    return LogConfig(level=level, format=fmt)
