"""TLS to MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TasksDB, make_tasks_db
from exporter.config import ConfigError, Overrides, load
from mariadb import MariaDB
from pki import CA, Cert
from support import (
    parse_metrics,
    run_cli,
    task_counts,
    write_secret,
)


def _config(
    tmp_path: Path,
    db: TasksDB,
    *,
    host: str = "127.0.0.1",
    tls: str = "",
    password: str | None = None,
    extra: str = "",
) -> Path:
    """A config file for `db` over TCP, with `tls` lines in [database]."""
    secret = write_secret(tmp_path / "password", password or db.password)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[database]\nhost = "{host}"\nport = {db.server.port}\nuser = "{db.user}"\n'
        f'database = "{db.database}"\npassword_file = "{secret}"\n{tls}\n'
        f'[collection]\ninterval = "0.5s"\ntimeout = "0.3s"\n{extra}',
        encoding="utf-8",
    )
    return path


def _once(tmp_path: Path, db: TasksDB, **kwargs: str) -> tuple[int, str, str]:
    config = _config(tmp_path, db, **kwargs)
    result = run_cli("--config.file", str(config), "--once", cwd=tmp_path)
    return result.returncode, result.stdout, result.stderr


# -- TLS to the database ---------------------------------------------------------------------


@dataclass(frozen=True)
class TLSServer:
    server: MariaDB
    ca: CA
    client: Cert  # signed by the server's CA, CN=tasks_exporter
    foreign_ca: CA  # signed nothing the server presents
    db: TasksDB  # its user must connect with TLS (REQUIRE SSL)


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, mariadb_template: Path
) -> Iterator[TLSServer]:
    """A private MariaDB serving TLS with a certificate for 127.0.0.1 that the test made."""
    base = tmp_path_factory.mktemp("db-tls")
    ca = CA.create(base / "ca", "db-ca")
    server_cert = ca.issue("mariadb", sans="IP:127.0.0.1")
    server = MariaDB(base / "server", template=mariadb_template)
    server.start(
        extra_args=[
            f"--ssl-ca={ca.cert}",
            f"--ssl-cert={server_cert.cert}",
            f"--ssl-key={server_cert.key}",
        ]
    )
    db = make_tasks_db(server)
    server.execute(f"ALTER USER '{db.user}'@'127.0.0.1', '{db.user}'@'localhost' REQUIRE SSL")
    yield TLSServer(
        server=server,
        ca=ca,
        client=ca.issue("tasks_exporter", client=True, sans="DNS:tasks-exporter"),
        foreign_ca=CA.create(base / "foreign", "foreign-ca"),
        db=db,
    )
    server.stop()


@pytest.mark.mariadb
def test_verified_tls_to_a_server_that_requires_it(tmp_path: Path, tls_server: TLSServer) -> None:
    """With tls_mode verify_identity and the server's CA the exporter connects and counts; the
    same user without TLS is refused by the server, so the counts did come over TLS."""
    tls = f'tls_mode = "verify_identity"\ntls_ca_file = "{tls_server.ca.cert}"'
    code, out, err = _once(tmp_path, tls_server.db, tls=tls)
    assert code == 0, err
    assert task_counts(parse_metrics(out)) == {"Success": 5, "Pending": 3, "Failed": 2}
    code, _, err = _once(tmp_path, tls_server.db, tls='tls_mode = "disabled"')
    assert code == 1
    assert "Access denied" in err


@pytest.mark.mariadb
def test_untrusted_server_certificate_is_refused_with_a_clear_error(
    tmp_path: Path, tls_server: TLSServer
) -> None:
    """A server whose certificate is not signed by tls_ca_file is refused: the error says the
    certificate is not trusted and which setting to check, and no data is read."""
    tls = f'tls_mode = "verify_ca"\ntls_ca_file = "{tls_server.foreign_ca.cert}"'
    code, out, err = _once(tmp_path, tls_server.db, tls=tls)
    assert code == 1
    assert out == ""
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert "the server's TLS certificate is not trusted" in err
    assert "database.tls_ca_file" in err
    assert "Traceback" not in err


@pytest.mark.mariadb
def test_host_name_is_verified_in_verify_identity_only(
    tmp_path: Path, tls_server: TLSServer
) -> None:
    """The server's certificate names 127.0.0.1, not localhost: connecting to localhost is
    refused in verify_identity with a message saying so, and allowed in verify_ca."""
    ca = f'tls_ca_file = "{tls_server.ca.cert}"'
    code, _, err = _once(
        tmp_path, tls_server.db, host="localhost", tls=f'tls_mode = "verify_identity"\n{ca}'
    )
    assert code == 1
    assert "Hostname mismatch" in err
    assert "does not name localhost" in err
    verify_ca = f'tls_mode = "verify_ca"\n{ca}'
    code, _, err = _once(tmp_path, tls_server.db, host="localhost", tls=verify_ca)
    assert code == 0, err


@pytest.mark.mariadb
def test_client_certificate_is_presented(tmp_path: Path, tls_server: TLSServer) -> None:
    """A user that requires a client certificate with a given subject is refused without one,
    and let in when tls_cert_file and tls_key_file hold it."""
    db = make_tasks_db(tls_server.server)
    for host in ("127.0.0.1", "localhost"):
        tls_server.server.execute(
            f"ALTER USER '{db.user}'@'{host}' REQUIRE SUBJECT '/CN=tasks_exporter'"
        )
    try:
        verify = f'tls_mode = "verify_identity"\ntls_ca_file = "{tls_server.ca.cert}"'
        code, _, err = _once(tmp_path, db, tls=verify)
        assert code == 1
        assert "Access denied" in err
        client = tls_server.client
        files = f'tls_cert_file = "{client.cert}"\ntls_key_file = "{client.key}"'
        code, _, err = _once(tmp_path, db, tls=f"{verify}\n{files}")
        assert code == 0, err
    finally:
        db.drop()


@pytest.mark.mariadb
def test_required_tls_against_a_server_without_it_is_refused(
    tmp_path: Path, tasks_db: TasksDB
) -> None:
    """tls_mode required never falls back to plain text: a server without TLS is refused."""
    code, _, err = _once(tmp_path, tasks_db, tls='tls_mode = "required"')
    assert code == 1
    assert "SSL is required but the server doesn't support it" in err


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            'tls_ca_file = "{ca}"',
            'database.tls_ca_file: set, but tls_mode = "preferred" does not use it',
        ),
        (
            'tls_mode = "required"\ntls_ca_file = "{ca}"',
            'database.tls_ca_file: set, but tls_mode = "required" does not verify the server',
        ),
        (
            'tls_mode = "verify_ca"\ntls_cert_file = "{cert}"',
            "database.tls_key_file: tls_cert_file and tls_key_file go together",
        ),
        (
            'tls_mode = "verify_ca"\ntls_ca_file = "/nonexistent/ca.crt"',
            "database.tls_ca_file: cannot load",
        ),
        ('tls_mode = "sometimes"', "database.tls_mode: must be one of disabled, preferred"),
        (
            'tls_mode = "verify_identity"\nsocket = "/run/mysqld/mysqld.sock"',
            "database.tls_mode: verify_identity checks the server's host name",
        ),
    ],
)
def test_database_tls_mistakes_name_the_setting(tmp_path: Path, lines: str, expected: str) -> None:
    """Each TLS setting mistake is one line naming the setting, found before connecting."""
    ca = CA.create(tmp_path / "ca", "ca")
    cert = ca.issue("client", client=True)
    secret = write_secret(tmp_path / "pw", "pw")
    text = lines.format(ca=ca.cert, cert=cert.cert)
    if "socket" not in text:
        text += '\nhost = "db.example"'
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nuser = "u"\ndatabase = "d"\npassword_file = "{secret}"\n{text}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load(config, Overrides(), {})
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
