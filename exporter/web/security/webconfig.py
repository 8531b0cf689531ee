"""The web configuration file (--web.config.file): TLS, security headers and basic auth users.

The YAML format is prometheus/exporter-toolkit's (docs/web-configuration.md): the file every
official exporter reads and `promtool check web-config` validates. A key tasks_exporter does not
support is refused by name, never ignored: an operator who asks for a protection gets it or is
told. Relative paths are relative to the file's directory, as in the toolkit.

The file, and the certificate files it names, are followed while the exporter runs (LiveSecurity):
a change is picked up at the next connection, at most one check per second, so renewed
certificates and changed users take effect without a restart or a reload.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.secret import Secret
from exporter.tlsfiles import load_files
from exporter.web.security.auth import Users

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The toolkit's client_auth_type values that verify a client certificate, and how. Its other two
# (RequestClientCert, RequireClientCert) accept any certificate unverified: refused, as unsafe.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
)
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
_HTTP_KEYS = ("headers", "http2")
# The headers the toolkit allows, with the values it allows (None: any single-line text).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
# A bcrypt hash as htpasswd, the toolkit and the bcrypt library write it: version, cost, 22
# characters of salt and 31 of checksum, whose last characters carry only the bits they encode.
_BCRYPT = re.compile(
    r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{21}[.Oeu][./A-Za-z0-9]{30}[.CGKOSWaeimquy26]"
)


class WebConfigError(Exception):
    """Every problem found in the web configuration file, one per line, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True)
class WebSecurity:
    """The web configuration file, validated: what TLS, headers and users it asks for."""

    path: Path
    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, Secret], ...] = ()  # user name, bcrypt hash

    def files(self) -> tuple[Path, ...]:
        """Every file this configuration reads; a change to any of them is picked up live."""
        if self.tls is None:
            return (self.path,)
        tls_files = (self.tls.cert_file, self.tls.key_file, self.tls.client_ca_file)
        return (self.path, *(f for f in tls_files if f is not None))


def read_web_security(path: Path) -> WebSecurity:
    """Read and validate the file, certificates included; raise WebConfigError naming each
    problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise WebConfigError([f"{path} is not valid UTF-8"]) from None
    data = _parse_yaml(text, path)
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError([f"{path}: must be a YAML mapping of settings"])
    _unsupported("", data, _TOP_KEYS, problems)
    base = path.parent
    tls = _tls(data.get("tls_server_config"), base, problems)
    headers = _http(data.get("http_server_config"), problems)
    users = _users(data.get("basic_auth_users"), problems)
    if problems:
        raise WebConfigError(problems)
    return WebSecurity(path=path, tls=tls, headers=headers, users=users)


def _parse_yaml(text: str, path: Path) -> object:
    import yaml  # noqa: PLC0415 - only exporters given a web config file pay for PyYAML

    class StrictLoader(yaml.SafeLoader):
        """Safe YAML that refuses a key given twice (two entries for one user, say) instead of
        silently keeping the last, as the toolkit does."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is set twice", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc)
        raise WebConfigError([f"{path} is not valid YAML{where}: {problem}"]) from None


def _unsupported(
    prefix: str, data: Mapping[Any, Any], known: tuple[str, ...], problems: list[str]
) -> None:
    where = f" in {prefix[:-1]}" if prefix else ""
    problems.extend(
        f"{prefix}{key}: not supported by tasks_exporter; remove it"
        f" (supported{where}: {', '.join(known)})"
        for key in data
        if key not in known
    )


def _mapping(value: object, name: str, problems: list[str]) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{name}: must be a mapping, got {value!r}")
        return {}
    return value


def _tls(value: object, base: Path, problems: list[str]) -> TLSServerConfig | None:
    data = _mapping(value, "tls_server_config", problems)
    if not data:
        return None
    _unsupported("tls_server_config.", data, _TLS_KEYS, problems)
    found: list[str] = []
    files: dict[str, Path | None] = {}
    for name in ("cert_file", "key_file", "client_ca_file"):
        item = data.get(name)
        files[name] = base / item if isinstance(item, str) and item.strip() else None
        if name in data and files[name] is None:
            found.append(f"{name}: must be a file name, got {item!r}")
        elif name != "client_ca_file" and name not in data:
            found.append(f"{name}: required to serve TLS")
    auth = data.get("client_auth_type", "NoClientCert")
    low, high = data.get("min_version", "TLS12"), data.get("max_version", "TLS13")
    found += _client_auth(auth, "client_ca_file" in data)
    found += _version("min_version", low) + _version("max_version", high)
    if low in TLS_VERSIONS and high in TLS_VERSIONS and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        found.append(f"max_version: {high} is below min_version {low}")
    problems += [f"tls_server_config.{problem}" for problem in found]
    cert, key, ca = files["cert_file"], files["key_file"], files["client_ca_file"]
    if cert is None or key is None:
        return None
    # The files exist, the key is private enough and matches, whatever else is wrong.
    problems += _load_files(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, ca)
    if found:
        return None
    return TLSServerConfig(cert, key, str(auth), ca, str(low), str(high))


def _client_auth(auth: object, has_ca: bool) -> list[str]:
    """Problems with client_auth_type and client_ca_file together."""
    if auth in ("RequestClientCert", "RequireClientCert"):
        problem = (
            f"client_auth_type: {auth} accepts certificates without verifying them and is not"
            " supported; use RequireAndVerifyClientCert with client_ca_file"
        )
    elif auth not in CLIENT_AUTH:
        problem = f"client_auth_type: must be one of {', '.join(CLIENT_AUTH)}, got {auth!r}"
    elif auth != "NoClientCert" and not has_ca:
        problem = (
            f"client_ca_file: required with client_auth_type {auth}"
            " (the CA that signs the scrapers' certificates)"
        )
    elif auth == "NoClientCert" and has_ca:
        problem = (
            "client_ca_file: set, but client_auth_type is NoClientCert, so no client"
            " certificate would be checked; set client_auth_type: RequireAndVerifyClientCert"
        )
    else:
        return []
    return [problem]


def _version(key: str, name: object) -> list[str]:
    if name in ("TLS10", "TLS11"):
        return [f"{key}: {name} is obsolete (RFC 8996) and not supported; use TLS12 or TLS13"]
    if name not in TLS_VERSIONS:
        return [f"{key}: must be TLS12 or TLS13, got {name!r}"]
    return []


def _http(value: object, problems: list[str]) -> tuple[tuple[str, str], ...]:
    data = _mapping(value, "http_server_config", problems)
    _unsupported("http_server_config.", data, _HTTP_KEYS, problems)
    if data.get("http2", False) is not False:
        problems.append(
            "http_server_config.http2: tasks_exporter serves HTTP/1.1 only; remove it or set false"
        )
    headers = _mapping(data.get("headers"), "http_server_config.headers", problems)
    out: list[tuple[str, str]] = []
    for name, item in headers.items():
        label = f"http_server_config.headers.{name}"
        if name not in _HEADERS:
            problems.append(
                f"{label}: this header cannot be configured (allowed: {', '.join(_HEADERS)})"
            )
            continue
        if item is None or item == "":
            continue  # the toolkit's "unset if blank"
        allowed = _HEADERS[name]
        if not isinstance(item, str) or not item.isprintable():
            problems.append(f"{label}: must be one line of text, got {item!r}")
        elif allowed is not None and item not in allowed:
            problems.append(f"{label}: must be one of {', '.join(allowed)}, got {item!r}")
        else:
            out.append((name, item))
    return tuple(out)


def _users(value: object, problems: list[str]) -> tuple[tuple[str, Secret], ...]:
    data = _mapping(value, "basic_auth_users", problems)
    out: list[tuple[str, Secret]] = []
    for user, hashed in data.items():
        if not isinstance(user, str):
            problems.append(
                f"basic_auth_users: user name {user!r} is not a string (YAML reads yes, no, on,"
                " off and numbers as other types); quote it"
            )
            continue
        label = f"basic_auth_users.{user}"
        match = _BCRYPT.fullmatch(hashed) if isinstance(hashed, str) else None
        if ":" in user:
            problems.append(f"{label}: a user name cannot contain ':' (basic auth splits on it)")
        elif match is None:
            problems.append(
                f"{label}: must be a bcrypt hash ($2y$10$ and 53 more characters), as"
                " `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints; the value is not shown here"
            )
        elif not 4 <= int(match["cost"]) <= 31:
            problems.append(f"{label}: bcrypt cost must be from 4 to 31, got {match['cost']}")
        else:
            out.append((user, Secret(hashed)))
    return tuple(out)


@dataclass(frozen=True)
class ActiveSecurity:
    """A web configuration ready to serve with: its TLS context, users and headers."""

    config: WebSecurity
    context: ssl.SSLContext | None
    users: Users | None
    headers: tuple[tuple[str, str], ...]

    def describe(self) -> dict[str, object]:
        """What the web configuration enforces, for log lines."""
        tls = self.config.tls
        return {
            "web_config": str(self.config.path),
            "tls": "off" if tls is None else f"{tls.min_version}+",
            "client_auth": "off" if tls is None else tls.client_auth_type,
            "basic_auth_users": len(self.config.users),
        }


def activate(security: WebSecurity) -> ActiveSecurity:
    """Load the certificates and prepare the users; WebConfigError if a file does not do."""
    context = None if security.tls is None else server_context(security.tls)
    users = Users.from_hashes(security.users) if security.users else None
    return ActiveSecurity(security, context, users, security.headers)


def server_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """The SSLContext new connections are wrapped with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    context.options |= ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation costs CPU
    context.set_alpn_protocols(["http/1.1"])
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    problems = _load_files(context, tls.cert_file, tls.key_file, tls.client_ca_file)
    if problems:
        raise WebConfigError(problems)
    return context


_SETTINGS = {"cert": "cert_file", "key": "key_file", "ca": "client_ca_file"}


def _load_files(context: ssl.SSLContext, cert: Path, key: Path, ca: Path | None) -> list[str]:
    """Load the certificate, key and client CA into the context; the problems, if any."""
    return [
        f"tls_server_config.{_SETTINGS[p.which]}: {p.message}"
        for p in load_files(context, cert=cert, key=key, ca=ca)
    ]


def _fingerprint(files: tuple[Path, ...]) -> tuple[tuple[int, ...] | None, ...]:
    """What identifies the current version of each file (None: missing)."""
    out: list[tuple[int, ...] | None] = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class LiveSecurity:
    """The configured web security as it is now: re-read when the file or the certificate files
    it names change, checked at most once per `every` seconds.

    A changed file that is invalid is logged once and the last valid configuration stays in
    force: a half-written certificate never drops TLS or auth.
    """

    def __init__(
        self,
        security: WebSecurity,
        logger: logging.Logger,
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = security
        self._log = logger
        self._every = every
        self._clock = clock
        self._seen = _fingerprint(security.files())
        self._active = activate(security)
        self._checked = clock()

    def current(self) -> ActiveSecurity:
        now = self._clock()
        if now - self._checked >= self._every:
            self._checked = now
            self._refresh()
        return self._active

    def _refresh(self) -> None:
        path = self.configured.path
        seen = _fingerprint(self._active.config.files())
        if seen == self._seen:
            return
        self._seen = seen
        try:
            active = activate(read_web_security(path))
        except WebConfigError as exc:
            self._log.error(
                "web config file changed but is invalid; keeping the previous one",
                extra={"kv": {"file": str(path), "err": "; ".join(exc.problems)}},
            )
            return
        # The new file may name other certificate files: follow those from now on.
        self._seen = _fingerprint(active.config.files())
        self._active = active
        self._log.info("web config file reloaded", extra={"kv": active.describe()})
