"""The web configuration file: what it accepts (as promtool does), what it refuses, and how basic
auth checks passwords."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest

from exporter.config import ConfigError, Overrides, load
from exporter.secret import Secret
from exporter.web.security.auth import BasicAuth, Credentials, Users, parse_basic
from exporter.web.security.webconfig import WebConfigError, read_web_security
from pki import CA, Cert
from support import run_cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "web-config.yml"
PLACEHOLDER = "$2y$10$THIS.IS.A.PLACEHOLDER.REPLACE.IT.WITH.YOUR.OWN.HASH.."


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, (
        "promtool missing: run `scripts/dev test` as root, or apt-get install prometheus"
    )
    return subprocess.run(
        [promtool, "check", "web-config", str(path)],
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
}


@pytest.mark.parametrize("name", GOOD)
def test_valid_files_are_accepted_like_promtool_does(
    tmp_path: Path, certs: tuple[CA, Cert], name: str
) -> None:
    """Files promtool accepts, in the subset of keys supported here, are accepted."""
    path = _write(tmp_path, GOOD[name], certs)
    assert promtool_check(path).returncode == 0
    read_web_security(path)


BAD = {
    # Refused by promtool too: unknown keys, wrong values.
    "unknown top key": ("colour: blue\n", "colour: not supported by tasks_exporter"),
    "unknown tls key": (
        _tls("  client_allowed_sans: [a]\n"),
        "tls_server_config.client_allowed_sans: not supported",
    ),
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
        "RequireClientCert accepts certificates without verifying them",
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
}
PROMTOOL_ACCEPTS = {
    "http2 on",
    "unverified client certs",
    "verify without a CA",
    "obsolete TLS",
    "max below min",
    "TLS settings without a certificate",
    "colon in user",
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
    assert (promtool_check(path).returncode == 0) == (name in PROMTOOL_ACCEPTS)


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
    assert "rate_limit: not supported" in text
    assert "tls_server_config.cipher_suites: not supported" in text
    assert "tls_server_config.key_file: cannot read" in text
    assert "basic_auth_users.alice: must be a bcrypt hash" in text
    assert "hunter2" not in text  # a wrong hash (perhaps a password) is not echoed
    assert len(lines) == 4


def test_file_named_in_toml_is_reported_under_its_setting(tmp_path: Path) -> None:
    """[web] config_file works like the flag, and its problems are named web.config_file."""
    path = _write(tmp_path, "colour: blue\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[web]\nconfig_file = "{path}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(config, Overrides(demo=True), {})
    expected = (
        "web.config_file: colour: not supported by tasks_exporter; remove it"
        " (supported: tls_server_config, http_server_config, basic_auth_users)"
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
