"""The web configuration file: what it accepts (as promtool does), what it refuses, and how basic
auth checks passwords."""

from __future__ import annotations

import base64
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest

from exporter.config import ConfigError, Overrides, load
from exporter.secret import Secret
from exporter.web.security.auth import BasicAuth, Credentials, Users, parse_basic
from exporter.web.security.webconfig import (
    RateLimit,
    RateLimitConfig,
    WebConfigError,
    allowed_sans,
    read_web_security,
)
from testing.certificates import CA, Cert
from testing.exporter_process import Exporters, lines_matching, run_cli, wait_for
from testing.prometheus_server import promtool

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "web-config.yml"
PLACEHOLDER = "$2y$10$THIS.IS.A.PLACEHOLDER.REPLACE.IT.WITH.YOUR.OWN.HASH.."


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "web-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Cert]:
    """A CA and a server certificate for 127.0.0.1, in a directory of their own."""
    ca = CA.create(tmp_path_factory.mktemp("pki"), "test-ca")
    return ca, ca.issue("server")


def _write(directory: Path, text: str, certs: tuple[CA, Cert] | None = None) -> Path:
    """A web config file in `directory`, next to copies of the server certificate and key."""
    if certs is not None:
        shutil.copy(certs[1].cert, directory / "server.crt")
        shutil.copy(certs[1].key, directory / "server.key")
        shutil.copy(certs[0].cert, directory / "ca.crt")
    path = directory / "web.yml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # it may hold a key inline
    return path


def _problems(path: Path) -> tuple[str, ...]:
    with pytest.raises(WebConfigError) as info:
        read_web_security(path)
    return info.value.problems


def test_shipped_example_is_accepted_by_promtool_and_the_exporter(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """examples/web-config.yml, next to the certificate files it names, passes
    `promtool check web-config` and the exporter's --config.check."""
    shutil.copy(EXAMPLE, tmp_path / "web-config.yml")
    shutil.copy(certs[1].cert, tmp_path / "tasks_exporter.crt")
    shutil.copy(certs[1].key, tmp_path / "tasks_exporter.key")
    result = promtool_check(tmp_path / "web-config.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stderr
    check = run_cli(
        "--demo", "--web.config.file", str(tmp_path / "web-config.yml"), "--config.check",
        cwd=tmp_path,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    security = read_web_security(tmp_path / "web-config.yml")
    assert security.tls is not None
    assert security.tls.cert_file == tmp_path / "tasks_exporter.crt"  # relative to the file
    assert security.tls.min_version == "TLS12"
    assert [user for user, _ in security.users] == ["prometheus"]


def test_the_examples_commented_keys_work_once_uncommented(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """Uncommenting every optional key of examples/web-config.yml (mutual TLS with allowed
    SANs, a rate limit) gives a file the exporter accepts."""
    text = re.sub(
        r"^(\s*)# (\s*[a-z_]+:.*)$",
        r"\1\2",
        EXAMPLE.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert "\nrate_limit:\n" in text
    assert "\n  client_allowed_sans: [" in text
    path = _write(tmp_path, text)
    shutil.copy(certs[1].cert, tmp_path / "tasks_exporter.crt")
    shutil.copy(certs[1].key, tmp_path / "tasks_exporter.key")
    shutil.copy(certs[0].cert, tmp_path / "scrapers-ca.crt")
    security = read_web_security(path)
    assert security.tls is not None
    assert security.tls.client_allowed_sans == ("prometheus.example.org",)
    assert security.rate_limit == RateLimitConfig(interval=0.1, burst=10)


def test_the_example_placeholder_matches_no_password() -> None:
    """The example's hash is a placeholder: it is well formed, and an empty or obvious password
    does not match it, so a copied example locks everyone out rather than letting anyone in."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert f"prometheus: {PLACEHOLDER}" in text
    for guess in (b"", b"prometheus", b"password", b"PLACEHOLDER", b"change-me"):
        assert not bcrypt.checkpw(guess, PLACEHOLDER.encode())


def _tls(extra: str = "") -> str:
    """A tls_server_config with the test certificate, and `extra` lines in it."""
    return f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}"


GOOD = {
    "empty": "",
    "users only": f"basic_auth_users:\n  alice: '{PLACEHOLDER}'\n",
    "tls": _tls(),
    "mtls": _tls("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"),
    "tls 1.3 only": _tls("  min_version: TLS13\n"),
    "headers": (
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: sameorigin\n"
        "    Content-Security-Policy: \"default-src 'none'\"\n    X-XSS-Protection: '0'\n"
        "    Strict-Transport-Security: ''\n"
    ),
    "cipher suites": _tls(
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256,"
        " TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n  prefer_server_cipher_suites: false\n"
    ),
    "one curve": _tls("  curve_preferences: [CurveP521]\n"),
    "mtls with SANs": _tls(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        "  client_allowed_sans: [prometheus.example, 192.0.2.1]\n"
    ),
    "inline": "inline",  # made from the certificates by the test
    "rate limit": "rate_limit:\n  interval: 1m30s\n  burst: 10\n",
    "rate limit off": "rate_limit:\n  interval: 0s\n",
}
# Keys younger than the exporter-toolkit in Debian 12's promtool (2.42), which refuses them as
# unknown fields: for files using them, promtool's only complaint must be that.
NEWER_THAN_PROMTOOL = ("client_allowed_sans", "rate_limit", "cert", "key", "client_ca")


def _inline(certs: tuple[CA, Cert]) -> str:
    def block(path: Path) -> str:
        lines = path.read_text(encoding="ascii").strip().splitlines()
        return "|\n" + "".join(f"    {line}\n" for line in lines)

    return (
        f"tls_server_config:\n  cert: {block(certs[1].cert)}  key: {block(certs[1].key)}"
        f"  client_ca: {block(certs[0].cert)}  client_auth_type: VerifyClientCertIfGiven\n"
    )


def promtool_agrees(path: Path, *, accepted: bool) -> bool:
    """promtool accepts the file as expected, or refuses it only for a key it predates."""
    result = promtool_check(path)
    if (result.returncode == 0) == accepted:
        return True
    return any(
        f"field {key} not found in type web." in result.stdout + result.stderr
        for key in NEWER_THAN_PROMTOOL
    )


@pytest.mark.parametrize("name", GOOD)
def test_valid_files_are_accepted_like_promtool_does(
    tmp_path: Path, certs: tuple[CA, Cert], name: str
) -> None:
    """Files promtool accepts, in the subset of keys supported here, are accepted."""
    text = _inline(certs) if GOOD[name] == "inline" else GOOD[name]
    path = _write(tmp_path, text, certs)
    assert promtool_agrees(path, accepted=True)
    read_web_security(path)


BAD = {
    # Refused by promtool too: unknown keys, wrong values.
    "unknown top key": ("colour: blue\n", "colour: not supported by tasks_exporter"),
    "unknown tls key": (
        _tls("  session_tickets: false\n"),
        "tls_server_config.session_tickets: not supported",
    ),
    "unknown cipher": (
        _tls("  cipher_suites: [TLS_RSA_WITH_3DES_EDE_CBC_SHA]\n"),
        "tls_server_config.cipher_suites: unknown 'TLS_RSA_WITH_3DES_EDE_CBC_SHA'",
    ),
    "OpenSSL cipher name": (
        _tls("  cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]\n"),
        "the names are Go's",
    ),
    "unknown curve": (
        _tls("  curve_preferences: [CurveP224]\n"),
        "tls_server_config.curve_preferences: unknown 'CurveP224'",
    ),
    "unknown rate limit key": ("rate_limit:\n  per: client\n", "rate_limit.per: not supported"),
    "header not allowed": (
        "http_server_config:\n  headers:\n    X-Powered-By: me\n",
        "http_server_config.headers.X-Powered-By: this header cannot be configured",
    ),
    "frame options value": (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
    ),
    "nosniff only": (
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "http_server_config.headers.X-Content-Type-Options: must be one of nosniff",
    ),
    "bad client auth": (
        _tls("  client_auth_type: Maybe\n"),
        "tls_server_config.client_auth_type: must be one of",
    ),
    "ca without client auth": (
        _tls("  client_ca_file: ca.crt\n"),
        "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert",
    ),
    "unknown version": (
        _tls("  min_version: TLS99\n"),
        "tls_server_config.min_version: must be TLS12 or TLS13",
    ),
    "missing cert": (
        "tls_server_config:\n  cert_file: none.crt\n  key_file: server.key\n",
        "tls_server_config.cert_file: cannot load",
    ),
    "not a hash": ("basic_auth_users:\n  alice: hunter2\n", "basic_auth_users.alice: must be"),
    "low cost": (
        f"basic_auth_users:\n  alice: '{PLACEHOLDER.replace('$10$', '$03$')}'\n",
        "basic_auth_users.alice: bcrypt cost must be from 4 to 31, got 03",
    ),
    "user twice": (
        f"basic_auth_users:\n  alice: '{PLACEHOLDER}'\n  alice: '{PLACEHOLDER}'\n",
        "key 'alice' is set twice",
    ),
    # Accepted by promtool, refused here (stricter, and said why).
    "http2 on": ("http_server_config:\n  http2: true\n", "http_server_config.http2:"),
    "unverified client certs": (
        _tls("  client_auth_type: RequireClientCert\n  client_ca_file: ca.crt\n"),
        "RequireClientCert accepts client certificates without verifying them",
    ),
    "verify without a CA": (
        _tls("  client_auth_type: RequireAndVerifyClientCert\n"),
        "tls_server_config.client_ca_file: required with client_auth_type",
    ),
    "obsolete TLS": (
        _tls("  min_version: TLS10\n"),
        "TLS10 is obsolete (RFC 8996)",
    ),
    "max below min": (
        _tls("  min_version: TLS13\n  max_version: TLS12\n"),
        "tls_server_config.max_version: TLS12 is below min_version TLS13",
    ),
    "TLS settings without a certificate": (
        "tls_server_config:\n  min_version: TLS13\n",
        "tls_server_config.cert_file: required to serve TLS",
    ),
    "colon in user": (
        f"basic_auth_users:\n  'a:b': '{PLACEHOLDER}'\n",
        "basic_auth_users.a:b: a user name cannot contain ':'",
    ),
    "two curves": (
        _tls("  curve_preferences: [X25519, CurveP256]\n"),
        "tls_server_config.curve_preferences: Python's ssl can limit the key exchange to one",
    ),
    "only TLS 1.3 suites with TLS 1.2 on": (
        _tls("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
        "tls_server_config.cipher_suites: lists no TLS 1.2 suite",
    ),
    "RequireAnyClientCert": (
        _tls("  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.crt\n"),
        "which Python's ssl cannot do",
    ),
    "SANs without client certificates": (
        _tls("  client_allowed_sans: [prometheus.example]\n"),
        "tls_server_config.client_allowed_sans: set, but client_auth_type is NoClientCert",
    ),
    "empty SANs": (
        _tls(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
            "  client_allowed_sans: []\n"
        ),
        "tls_server_config.client_allowed_sans: empty, so every client would be refused",
    ),
    "cert and cert_file": (
        _tls("  cert: '-----BEGIN CERTIFICATE-----'\n"),
        "tls_server_config.cert: set with cert_file; give one of them",
    ),
    "key not PEM": (
        "tls_server_config:\n  cert_file: server.crt\n  key: hunter2\n",
        "tls_server_config.key: must be PEM text (-----BEGIN ...); the value is not shown here",
    ),
    "burst 0": (
        "rate_limit:\n  interval: 1s\n  burst: 0\n",
        "rate_limit.burst: 0 would refuse every request",
    ),
    "interval without unit": (
        "rate_limit:\n  interval: 1\n  burst: 5\n",
        'rate_limit.interval: must be a duration such as "1s", got 1',
    ),
    "negative interval": (
        "rate_limit:\n  interval: -1s\n  burst: 5\n",
        "rate_limit.interval: must not be negative",
    ),
    "typographic quote in a header": (
        (
            "http_server_config:\n  headers:\n"
            '    Content-Security-Policy: "default-src \u2019self\u2019"\n'
        ),
        (
            "http_server_config.headers.Content-Security-Policy: must be visible ASCII"
            " (and spaces); '\\u2019' at character 13 is not"
        ),
    ),
}
PROMTOOL_ACCEPTS = {
    "http2 on",
    "unverified client certs",
    "verify without a CA",
    "obsolete TLS",
    "max below min",
    "TLS settings without a certificate",
    "colon in user",
    "typographic quote in a header",
    "two curves",
    "only TLS 1.3 suites with TLS 1.2 on",
    "RequireAnyClientCert",
    "SANs without client certificates",
    "empty SANs",
    "cert and cert_file",
    "key not PEM",
    "burst 0",
    "interval without unit",
    "negative interval",
}


@pytest.mark.parametrize("name", BAD)
def test_invalid_files_are_refused_naming_the_key(
    tmp_path: Path, certs: tuple[CA, Cert], name: str
) -> None:
    """Each mistake is one line naming the key; promtool refuses the same files, except where
    tasks_exporter is deliberately stricter."""
    text, expected = BAD[name]
    path = _write(tmp_path, text, certs)
    problems = _problems(path)
    assert any(expected in p for p in problems), problems
    assert "hunter2" not in "".join(problems)
    assert promtool_agrees(path, accepted=name in PROMTOOL_ACCEPTS)


def test_every_problem_is_reported_at_once_under_the_flag(tmp_path: Path) -> None:
    """--config.check lists each problem of the web config file on its own line, under the flag
    that named the file, and exits 2."""
    path = _write(
        tmp_path,
        "rate_limit: {interval: 1s}\n"
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n  cipher_suites: [x]\n"
        "basic_auth_users:\n  alice: hunter2\n",
    )
    result = run_cli("--demo", "--web.config.file", str(path), "--config.check", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert all(
        line.startswith("tasks_exporter: config error: --web.config.file: ") for line in lines
    )
    text = result.stderr
    assert "rate_limit.burst: 0 would refuse every request" in text
    assert "tls_server_config.cipher_suites: unknown 'x'" in text
    assert "tls_server_config.key_file: cannot read" in text
    assert "basic_auth_users.alice: must be a bcrypt hash" in text
    assert "hunter2" not in text  # a wrong hash (perhaps a password) is not echoed
    assert len(lines) == 4


def test_a_header_edited_to_non_ascii_is_refused_and_the_previous_one_keeps_serving(
    exporters: Exporters,
    tmp_path: Path,
) -> None:
    """A typographic quote pasted into a header value is refused by --config.check and, in the
    file of a running exporter, logged naming the header while the previous headers keep
    being served on every path."""
    web = tmp_path / "web.yml"
    good = "http_server_config:\n  headers:\n    Content-Security-Policy: \"default-src 'none'\"\n"
    web.write_text(good, encoding="utf-8")
    exporter = exporters(tmp_path, "", "--demo", "--web.config.file", str(web)).start(ready=True)
    try:
        assert exporter.get("/metrics").headers["content-security-policy"] == "default-src 'none'"
        pasted = good.replace("'none'", "\u2018none\u2019")
        aside = web.with_suffix(".new")
        aside.write_text(pasted, encoding="utf-8")
        aside.replace(web)
        wait_for(
            lambda: exporter.get("/-/healthy") and "keeping the previous one" in exporter.log(),
            timeout=5,
            what="the edited file to be refused",
        )
        (line,) = lines_matching(exporter.log(), "keeping the previous one")
        assert "http_server_config.headers.Content-Security-Policy: must be visible ASCII" in line
        for path in ("/metrics", "/", "/-/healthy", "/-/ready", "/nope"):
            reply = exporter.get(path)
            assert reply.status in (200, 404), reply
            assert reply.headers["content-security-policy"].startswith("default-src 'none'")
    finally:
        exporter.stop()
    check = run_cli("--demo", "--web.config.file", str(web), "--config.check", cwd=tmp_path)
    assert check.returncode == 2
    assert "headers.Content-Security-Policy: must be visible ASCII" in check.stderr


def test_file_named_in_toml_is_reported_under_its_setting(tmp_path: Path) -> None:
    """[web] config_file works like the flag, and its problems are named web.config_file."""
    path = _write(tmp_path, "colour: blue\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[web]\nconfig_file = "{path}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(config, Overrides(demo=True), {})
    expected = (
        "web.config_file: colour: not supported by tasks_exporter; remove it"
        " (supported: tls_server_config, http_server_config, basic_auth_users, rate_limit)"
    )
    assert info.value.problems == (expected,)


def test_missing_file_and_invalid_yaml_are_one_clear_line(tmp_path: Path) -> None:
    """A missing file or broken YAML is one line saying which file and where."""
    assert _problems(tmp_path / "nope.yml") == (
        f"cannot read {tmp_path / 'nope.yml'}: No such file or directory",
    )
    path = _write(tmp_path, "basic_auth_users: [\n")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path} is not valid YAML (line 2, column 1)")


def test_private_key_readable_by_others_is_refused(tmp_path: Path, certs: tuple[CA, Cert]) -> None:
    """A TLS key that any local user may read is refused, with the chmod that fixes it."""
    path = _write(
        tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n", certs
    )
    (tmp_path / "server.key").chmod(0o644)
    (problem,) = _problems(path)
    assert "key_file" in problem
    assert "accessible by others (mode 0644)" in problem
    assert f"chmod 600 {tmp_path / 'server.key'}" in problem
    (tmp_path / "server.key").chmod(0o640)  # group-readable (ssl-cert, say) is fine
    read_web_security(path)


def test_inline_key_in_a_file_others_can_read_is_refused_without_showing_it(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """A key given inline makes the web config file a key file: readable by others, it is
    refused with the chmod that fixes it, and no line shows the key."""
    path = _write(tmp_path, _inline(certs), certs)
    read_web_security(path)
    path.chmod(0o644)
    (problem,) = _problems(path)
    assert problem.startswith("tls_server_config.key: the file holding it:")
    assert f"chmod 600 {path}" in problem
    key_lines = certs[1].key.read_text(encoding="ascii").splitlines()[1:-1]
    assert not any(line in problem for line in key_lines)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_private_key_owned_by_another_user_is_refused(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """A TLS key that another user owns is refused, even to root, naming the owner."""
    path = _write(
        tmp_path, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n", certs
    )
    os.chown(tmp_path / "server.key", 65534, 65534)  # nobody
    (problem,) = _problems(path)
    assert "key_file" in problem
    assert f"{tmp_path / 'server.key'} is owned by uid 65534" in problem
    os.chown(tmp_path / "server.key", 0, 0)
    read_web_security(path)


def test_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """A certificate with another certificate's key is refused at load, not at the first
    handshake."""
    other = certs[0].issue("other", directory=tmp_path)
    path = _write(
        tmp_path, f"tls_server_config:\n  cert_file: server.crt\n  key_file: {other.key}\n", certs
    )
    (problem,) = _problems(path)
    assert problem.startswith("tls_server_config.cert_file: cannot load")
    assert "KEY_VALUES_MISMATCH" in problem


# -- basic auth ----------------------------------------------------------------------------


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_authorization_header_parsing() -> None:
    """Only a well-formed Basic header yields credentials; the password may contain ':'."""
    assert parse_basic(_basic(b"alice:s:e:c")) == Credentials(b"alice", b"s:e:c")
    assert parse_basic("basic " + base64.b64encode(b"a:").decode()) == Credentials(b"a", b"")
    for header in (None, "", "Bearer xyz", "Basic", "Basic !!!", _basic(b"no-colon")):
        assert parse_basic(header) is None, header


def _users(password: bytes, cost: int = 4) -> Users:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(cost)).decode()
    return Users.from_hashes([("alice", Secret(hashed))])


def test_verified_password_is_remembered_and_a_changed_hash_voids_it() -> None:
    """After one bcrypt check the same password is accepted without bcrypt; another password
    is not, and a new hash for the user (a changed password) forgets the old one."""
    auth = BasicAuth()
    users = _users(b"right")
    good, bad = Credentials(b"alice", b"right"), Credentials(b"alice", b"wrong")
    assert not auth.remembered(users, good)
    assert auth.verify(users, good)
    assert auth.remembered(users, good)
    assert not auth.remembered(users, bad)
    assert not auth.verify(users, bad)
    assert auth.remembered(users, good)  # a wrong attempt does not evict the right one
    changed = _users(b"new")
    assert not auth.remembered(changed, good)
    assert not auth.verify(changed, good)
    assert auth.verify(changed, Credentials(b"alice", b"new"))


def test_unknown_user_is_refused_even_with_a_known_users_password() -> None:
    """A user that is not configured is refused whatever the password."""
    auth = BasicAuth()
    users = _users(b"right")
    assert not auth.verify(users, Credentials(b"mallory", b"right"))
    assert not auth.remembered(users, Credentials(b"mallory", b"right"))


def test_unknown_users_cost_a_bcrypt_of_the_users_cost() -> None:
    """The dummy hash unknown users are checked against has the users' cost, so checking them
    takes as much work as checking a real user's password (CPU time of this thread: unlike wall
    time, the load of other processes does not blur it)."""
    users = _users(b"right", cost=11)
    assert users.dummy.startswith(b"$2b$11$")
    auth = BasicAuth()

    def cpu(user: bytes) -> float:
        started = time.thread_time()
        assert not auth.verify(users, Credentials(user, b"wrong"))
        return time.thread_time() - started

    runs = [(cpu(b"alice"), cpu(b"mallory")) for _ in range(3)]
    known, unknown = min(k for k, _ in runs), min(u for _, u in runs)
    assert 0.8 < unknown / known < 1.25, runs


def test_passwords_longer_than_bcrypt_reads_are_checked_on_72_bytes() -> None:
    """As with htpasswd and Go's bcrypt, only the first 72 bytes of a password count."""
    auth = BasicAuth()
    long_password = b"x" * 72
    users = _users(long_password)
    assert auth.verify(users, Credentials(b"alice", long_password + b"ignored"))
    assert not auth.verify(users, Credentials(b"alice", b"x" * 71))


# -- rate limit and SANs, the pure parts ------------------------------------------------------


def test_rate_limit_is_a_token_bucket_that_starts_full() -> None:
    """`burst` requests pass at once, the next is refused, one more passes per interval, and
    an idle spell refills the bucket only up to `burst`."""
    limit = RateLimit(RateLimitConfig(interval=2.0, burst=3), now=100.0)
    assert [limit.allow(100.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.allow(101.9)
    assert limit.allow(102.0)
    assert not limit.allow(102.0)
    assert [limit.allow(1000.0) for _ in range(4)] == [True, True, True, False]
    assert not limit.allow(999.0)  # a clock that steps back grants nothing


def test_allowed_sans_matches_any_san_exactly_as_go_writes_it() -> None:
    """A certificate is allowed when one of its DNS, IP, e-mail or URI SANs is listed; IP
    addresses compare in Go's short form; the subject's common name does not count."""
    cert = {
        "subject": ((("commonName", "scraper.example"),),),
        "subjectAltName": (
            ("DNS", "a.example"),
            ("IP Address", "2001:DB8:0:0:0:0:0:7\n"),  # how Python's ssl writes IPv6
            ("email", "ops@example.org"),
            ("URI", "spiffe://example/prom"),
        ),
    }
    for allowed in ("a.example", "2001:db8::7", "ops@example.org", "spiffe://example/prom"):
        assert allowed_sans(cert, {allowed}), allowed
    for refused in ("scraper.example", "A.example", "2001:DB8:0:0:0:0:0:7", "example.org"):
        assert not allowed_sans(cert, {refused}), refused
    assert not allowed_sans({}, {"a.example"})


def _can_select_x25519() -> bool:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ecdh_curve("X25519")
    except ssl.SSLError:
        return False
    return True


def test_x25519_is_accepted_exactly_where_this_pythons_ssl_can_select_it(
    tmp_path: Path, certs: tuple[CA, Cert]
) -> None:
    """curve_preferences: [X25519] is accepted on a Python whose ssl can select it (3.11.7 and
    later here) and refused at --config.check, with the reason, where it cannot (Debian 12's
    3.11.2), rather than failing when the exporter starts."""
    path = _write(tmp_path, _tls("  curve_preferences: [X25519]\n"), certs)
    assert promtool_check(path).returncode == 0
    if _can_select_x25519():
        read_web_security(path)
    else:
        (problem,) = _problems(path)
        assert problem.startswith(
            "tls_server_config.curve_preferences: X25519 cannot be selected by this Python's ssl"
        )
