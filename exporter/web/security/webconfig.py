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

import contextlib
import dataclasses
import ipaddress
import os
import platform
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.log import Logger
from exporter.secret import Secret
from exporter.tlsfiles import reason, too_open
from exporter.web.security.auth import Users

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The toolkit's client_auth_type values that Python's ssl can honour. Its other ones
# (RequestClientCert, RequireAnyClientCert and its old name RequireClientCert) take a client
# certificate without verifying it; OpenSSL, as Python drives it, verifies every certificate it
# asks for and has no hook to accept one unverified, so those are refused.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
# The TLS 1.2 suites the toolkit accepts (Go's tls.CipherSuites()), by Go's name and OpenSSL's.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
# TLS 1.3's suites: accepted in the list, as by the toolkit, and always on (Go does not let
# them be chosen either; Python's ssl has no call for it).
TLS13_CIPHER_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
# Without cipher_suites, TLS 1.2 offers forward secret AEAD suites only: OpenSSL's default
# would add two CBC suites (ECDHE-*-AES128-SHA256, -AES256-SHA384).
DEFAULT_CIPHER_SUITES = tuple(n for n in CIPHER_SUITES if "_ECDHE_" in n and "_CBC_" not in n)
# The toolkit's curve names (Go's tls.CurveID) and OpenSSL's.
CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
_TLS_KEYS = (
    "cert",
    "cert_file",
    "key",
    "key_file",
    "client_ca",
    "client_ca_file",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_RATE_KEYS = ("interval", "burst")
# A Go duration (time.ParseDuration), as the toolkit reads rate_limit.interval.
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+|[-+]?0")
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6}
_GO_UNITS |= {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
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
    """tls_server_config, validated. The certificate, its key and the client CA each come from
    a file or inline (PEM in the YAML file); exactly one of each pair is set, the CA optional."""

    cert_file: Path | None
    key_file: Path | None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cert: str | None = None
    key: Secret | None = None
    client_ca: str | None = None
    client_allowed_sans: tuple[str, ...] | None = None  # None: any verified client
    cipher_suites: tuple[str, ...] = DEFAULT_CIPHER_SUITES  # Go's names, TLS 1.2 ones only
    prefer_server_cipher_suites: bool = True
    curve: str | None = None  # the one curve of curve_preferences (toolkit name), if set


@dataclass(frozen=True)
class RateLimitConfig:
    """rate_limit: at most `burst` requests at once, then one per `interval` seconds."""

    interval: float
    burst: int


class RateLimit:
    """The toolkit's rate limiter (golang.org/x/time/rate's token bucket): it starts full with
    `burst` tokens, gains one every `interval` seconds up to `burst`, and each request takes one
    or is refused. One bucket for the whole server, as in the toolkit, not one per client."""

    def __init__(self, config: RateLimitConfig, now: float) -> None:
        self.config = config
        self._tokens = float(config.burst)
        self._last = now

    def allow(self, now: float) -> bool:
        """Whether a request arriving at `now` (monotonic seconds) may be answered."""
        if now > self._last:
            gained = (now - self._last) / self.config.interval
            self._tokens = min(float(self.config.burst), self._tokens + gained)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def allowed_sans(peercert: Mapping[str, object], allowed: Collection[str]) -> bool:
    """Whether a verified client certificate (as SSLSocket.getpeercert() gives it) has a subject
    alternative name in `allowed`, compared as the toolkit does: exact DNS names, e-mail
    addresses, URIs, and IP addresses written as Go writes them (::1, not 0:0:...:1)."""
    names = peercert.get("subjectAltName", ())
    if not isinstance(names, tuple):
        return False
    for kind, value in names:
        name = value if kind in ("DNS", "email", "URI") else None
        if kind == "IP Address":
            with contextlib.suppress(ValueError):
                name = str(ipaddress.ip_address(value.strip()))
        if name is not None and name in allowed:
            return True
    return False


@dataclass(frozen=True)
class WebSecurity:
    """The web configuration file, validated: what TLS, headers and users it asks for."""

    path: Path
    tls: TLSServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, Secret], ...] = ()  # user name, bcrypt hash
    rate_limit: RateLimitConfig | None = None

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
    tls = _tls(data.get("tls_server_config"), path, problems)
    headers = _http(data.get("http_server_config"), problems)
    users = _users(data.get("basic_auth_users"), problems)
    rate_limit = _rate_limit(data.get("rate_limit"), problems)
    if problems:
        raise WebConfigError(problems)
    return WebSecurity(path=path, tls=tls, headers=headers, users=users, rate_limit=rate_limit)


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


def _tls(value: object, path: Path, problems: list[str]) -> TLSServerConfig | None:
    data = _mapping(value, "tls_server_config", problems)
    if not data:
        return None
    _unsupported("tls_server_config.", data, _TLS_KEYS, problems)
    found: list[str] = []
    files, inline = _sources(data, path, found)
    if "key" in data and (problem := too_open(path)) is not None:
        found.append(f"key: the file holding it: {problem}")
    auth = data.get("client_auth_type", "NoClientCert")
    low, high = data.get("min_version", "TLS12"), data.get("max_version", "TLS13")
    has_ca = "client_ca_file" in data or "client_ca" in data
    found += _client_auth(auth, has_ca)
    found += _version("min_version", low) + _version("max_version", high)
    if low in TLS_VERSIONS and high in TLS_VERSIONS and TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        found.append(f"max_version: {high} is below min_version {low}")
    sans = _sans(data, auth, found)
    suites = _cipher_suites(data.get("cipher_suites"), tls12=low == "TLS12", found=found)
    prefer = data.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        found.append(f"prefer_server_cipher_suites: must be true or false, got {prefer!r}")
    curve = _curve(data.get("curve_preferences"), found)
    problems += [f"tls_server_config.{problem}" for problem in found]
    key = inline["key"]
    material = TLSServerConfig(
        cert_file=files["cert_file"],
        key_file=files["key_file"],
        client_ca_file=files["client_ca_file"],
        cert=inline["cert"],
        key=None if key is None else Secret(key),
        client_ca=inline["client_ca"],
        curve=curve,
    )
    has_cert = material.cert_file is not None or material.cert is not None
    if not has_cert or (material.key_file is None and material.key is None):
        return None
    # The files exist, the key is private enough and matches, the CA loads, this Python can
    # select the curve: checked whatever else is wrong, so that every problem is reported at once.
    load_problems = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), material)
    problems += load_problems
    if found or load_problems:
        return None
    return dataclasses.replace(
        material,
        client_auth_type=str(auth),
        min_version=str(low),
        max_version=str(high),
        client_allowed_sans=sans,
        cipher_suites=suites,
        prefer_server_cipher_suites=bool(prefer),
    )


_SOURCES = (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file"))


def _sources(
    data: Mapping[str, object], path: Path, found: list[str]
) -> tuple[dict[str, Path | None], dict[str, str | None]]:
    """The certificate, key and client CA: each a file (relative to the web config file) or
    inline PEM text, never both."""
    files: dict[str, Path | None] = {}
    inline: dict[str, str | None] = {}
    for text_key, file_key in _SOURCES:
        item = data.get(file_key)
        files[file_key] = path.parent / item if isinstance(item, str) and item.strip() else None
        if file_key in data and files[file_key] is None:
            found.append(f"{file_key}: must be a file name, got {item!r}")
        pem = data.get(text_key)
        inline[text_key] = pem if isinstance(pem, str) and "-----BEGIN " in pem else None
        if text_key in data and inline[text_key] is None:
            shown = "the value is not shown here" if text_key == "key" else f"got {pem!r}"
            found.append(f"{text_key}: must be PEM text (-----BEGIN ...); {shown}")
        if text_key in data and file_key in data:
            found.append(f"{text_key}: set with {file_key}; give one of them")
        elif text_key != "client_ca" and text_key not in data and file_key not in data:
            found.append(f"{file_key}: required to serve TLS (or {text_key}, inline)")
    return files, inline


def _client_auth(auth: object, has_ca: bool) -> list[str]:
    """Problems with client_auth_type and client_ca_file together."""
    if auth in _UNVERIFIED_CLIENT_AUTH:
        problem = (
            f"client_auth_type: {auth} accepts client certificates without verifying them, which"
            " Python's ssl cannot do (it verifies every certificate it asks for); use"
            " RequireAndVerifyClientCert with client_ca_file"
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


def _strings(value: object, key: str, found: list[str]) -> tuple[str, ...] | None:
    """A YAML list of strings, or None (and a problem) if it is not one."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        found.append(f"{key}: must be a list of strings, got {value!r}")
        return None
    return tuple(value)


def _sans(data: Mapping[str, object], auth: object, found: list[str]) -> tuple[str, ...] | None:
    if "client_allowed_sans" not in data:
        return None
    sans = _strings(data["client_allowed_sans"], "client_allowed_sans", found)
    if sans is None:
        return None
    if not sans:
        found.append("client_allowed_sans: empty, so every client would be refused; remove it")
    if auth == "NoClientCert":
        found.append(
            "client_allowed_sans: set, but client_auth_type is NoClientCert, so no client"
            " certificate would be asked for; set client_auth_type: RequireAndVerifyClientCert"
        )
    return sans


def _cipher_suites(value: object, *, tls12: bool, found: list[str]) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_CIPHER_SUITES
    names = _strings(value, "cipher_suites", found)
    if names is None:
        return DEFAULT_CIPHER_SUITES
    unknown = [n for n in names if n not in CIPHER_SUITES and n not in TLS13_CIPHER_SUITES]
    if unknown:
        found.append(
            f"cipher_suites: unknown {', '.join(map(repr, unknown))}; the names are Go's, as"
            f" the toolkit takes them: {', '.join(CIPHER_SUITES)} (and TLS 1.3's, always on)"
        )
    suites = tuple(dict.fromkeys(n for n in names if n in CIPHER_SUITES))
    if names and not suites and tls12 and not unknown:
        found.append(
            "cipher_suites: lists no TLS 1.2 suite, so TLS 1.2 clients could not connect"
            " (TLS 1.3's suites are always on); add one or set min_version: TLS13"
        )
    return suites or DEFAULT_CIPHER_SUITES


def _curve(value: object, found: list[str]) -> str | None:
    if value is None:
        return None
    names = _strings(value, "curve_preferences", found)
    if not names:
        return None
    unknown = [n for n in names if n not in CURVES]
    if unknown:
        found.append(
            f"curve_preferences: unknown {', '.join(map(repr, unknown))};"
            f" must be among {', '.join(CURVES)}"
        )
    elif len(names) > 1:
        found.append(
            "curve_preferences: Python's ssl can limit the key exchange to one curve"
            " (SSLContext.set_ecdh_curve) but not set an order of several; list one curve,"
            " or remove the key for OpenSSL's default order"
        )
    else:
        return names[0]
    return None


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
        if not isinstance(item, str):
            problems.append(f"{label}: must be one line of text, got {item!r}")
        elif (bad := _not_visible_ascii(item)) is not None:
            problems.append(f"{label}: {bad}")
        elif allowed is not None and item not in allowed:
            problems.append(f"{label}: must be one of {', '.join(allowed)}, got {item!r}")
        else:
            out.append((name, item))
    return tuple(out)


def _not_visible_ascii(value: str) -> str | None:
    """Why a header value cannot be sent, or None. HTTP field values are visible ASCII and
    spaces (RFC 9110 5.5): anything else, a typographic quote pasted from a document say, would
    fail every response or be read differently by each client."""
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            return f"must be visible ASCII (and spaces); {char!a} at character {position} is not"
    return None


def _rate_limit(value: object, problems: list[str]) -> RateLimitConfig | None:
    data = _mapping(value, "rate_limit", problems)
    _unsupported("rate_limit.", data, _RATE_KEYS, problems)
    interval, burst = data.get("interval", "0s"), data.get("burst", 0)
    seconds = None
    if not isinstance(interval, str) or not _GO_DURATION.fullmatch(interval.strip()):
        problems.append(f'rate_limit.interval: must be a duration such as "1s", got {interval!r}')
    elif interval.strip().startswith("-"):
        problems.append(f"rate_limit.interval: must not be negative, got {interval!r}")
    else:
        parts = _GO_DURATION_PART.findall(interval)
        seconds = sum(float(number) * _GO_UNITS[unit] for number, unit in parts)
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        problems.append(f"rate_limit.burst: must be a whole number of requests, got {burst!r}")
    elif seconds and burst == 0:
        problems.append(
            "rate_limit.burst: 0 would refuse every request (the bucket holds no token);"
            " set it to at least 1"
        )
    elif seconds:
        return RateLimitConfig(seconds, burst)
    return None  # interval 0 (or unset): no limit, as in the toolkit


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
        tls, limit = self.config.tls, self.config.rate_limit
        return {
            "web_config": str(self.config.path),
            "tls": "off" if tls is None else f"{tls.min_version}+",
            "client_auth": "off" if tls is None else tls.client_auth_type,
            "basic_auth_users": len(self.config.users),
            "rate_limit": (
                "off" if limit is None else f"{limit.burst}, then 1 per {limit.interval:g}s"
            ),
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
    problems = _load(context, tls)
    if problems:
        raise WebConfigError(problems)
    return context


def _load(context: ssl.SSLContext, tls: TLSServerConfig) -> list[str]:
    """Set up the context as `tls` asks: certificate and key, client CA, cipher suites and
    their order, curve. The problems, if any, named by setting."""
    context.set_ciphers(":".join(CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    problems = []
    if tls.curve is not None:
        try:
            context.set_ecdh_curve(CURVES[tls.curve])  # the only group offered, TLS 1.3 too
        except ssl.SSLError as exc:  # X25519 on Python 3.11.2, whose call knows NIST curves only
            problems.append(
                f"tls_server_config.curve_preferences: {tls.curve} cannot be selected by this"
                f" Python's ssl (Python {platform.python_version()}: {reason(exc)});"
                " use CurveP256, CurveP384 or CurveP521, or remove the key"
            )
    problems += _load_cert_chain(context, tls)
    try:
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=tls.client_ca_file)
        elif tls.client_ca is not None:
            context.load_verify_locations(cadata=tls.client_ca)
    except (OSError, ssl.SSLError) as exc:
        source = "client_ca" if tls.client_ca_file is None else "client_ca_file"
        where = "" if tls.client_ca_file is None else f" {tls.client_ca_file}"
        problems.append(f"tls_server_config.{source}: cannot load{where}: {reason(exc)}")
    return problems


def _load_cert_chain(context: ssl.SSLContext, tls: TLSServerConfig) -> list[str]:
    if tls.key_file is not None and (problem := too_open(tls.key_file)) is not None:
        return [f"tls_server_config.key_file: {problem}"]
    cert_name = "cert_file" if tls.cert_file is not None else "cert"
    what = "the inline certificate" if tls.cert_file is None else str(tls.cert_file)
    with_key = "the inline key" if tls.key_file is None else f"key {tls.key_file}"
    with contextlib.ExitStack() as stack:
        cert = tls.cert_file or stack.enter_context(_private_file(tls.cert or ""))
        key = tls.key_file or stack.enter_context(
            _private_file("" if tls.key is None else tls.key.reveal())
        )
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            return [
                f"tls_server_config.{cert_name}: cannot load {what} with {with_key}: {reason(exc)}"
            ]
    return []


@contextlib.contextmanager
def _private_file(text: str) -> Iterator[Path]:
    """A file holding `text` for as long as the block runs: ssl loads certificates and keys
    only from files. On Linux it lives in memory (memfd) and never reaches a disk; elsewhere it
    is a temporary file only its owner can read. Either way it is gone when the block ends."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tasks_exporter-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "w", encoding="utf-8", closefd=False) as out:
                out.write(text)
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="tasks_exporter-tls-") as directory:  # mode 0700
        private = Path(directory) / "pem"
        private.write_text(text, encoding="utf-8")
        yield private


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
        logger: Logger,
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
                file=str(path),
                err="; ".join(exc.problems),
            )
            return
        # The new file may name other certificate files: follow those from now on.
        self._seen = _fingerprint(active.config.files())
        self._active = active
        self._log.info("web config file reloaded", **active.describe())
