"""TLS to MariaDB, the grants check, and where the password must never show."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import bcrypt
import pytest

from exporter.config import ConfigError, DatabaseConfig, Overrides, TasksConfig, load
from exporter.log import Logger
from exporter.secret import Secret
from exporter.sources.grants import excess_privileges
from exporter.sources.mysql import MySQLSource, is_local
from testing.certificates import CA, Cert
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB, make_tasks_db

if TYPE_CHECKING:
    from pymysql.connections import Connection
    from pymysql.cursors import Cursor

from testing.exporter_process import (
    Exporters,
    lines_matching,
    mysql_config,
    parse_metrics,
    run_cli,
    task_counts,
    value,
    wait_for,
    write_secret,
)


def _config(
    tmp_path: Path, db: TasksDB, *, host: str = "127.0.0.1", tls: str = "", password: str = ""
) -> Path:
    """A config file for `db` over TCP, with `tls` lines in [database]."""
    path = tmp_path / "config.toml"
    text = mysql_config(
        host=host,
        port=db.server.port,
        user=db.user,
        database=db.database,
        password_file=write_secret(tmp_path / "password", password or db.password),
        extra_database=tls,
    )
    path.write_text(text, encoding="utf-8")
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


# -- grants ------------------------------------------------------------------------------------


def test_excess_privileges_are_read_from_show_grants() -> None:
    """Everything beyond SELECT and USAGE is excess, with where it applies; column lists, roles
    and the password hash MariaDB shows after TO are handled."""
    lines = [
        "GRANT USAGE ON *.* TO `u`@`localhost` IDENTIFIED BY PASSWORD '*D821809F681A40A6E3'",
        "GRANT SELECT ON `app`.`tasks` TO `u`@`localhost`",
        "GRANT SELECT (`a`, `b ON c`), INSERT (`x`) ON `app`.`t` TO `u`@`%` WITH GRANT OPTION",
        "GRANT `reporting` TO `u`@`localhost`",
        "GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION",
    ]
    assert excess_privileges(lines) == (
        "INSERT ON `app`.`t`",
        "GRANT OPTION ON `app`.`t`",
        "ALL PRIVILEGES ON *.*",
        "GRANT OPTION ON *.*",
    )
    assert excess_privileges(lines[:2]) == ()


def _exporter_connections(db: TasksDB) -> list[int]:
    rows = db.server.execute(
        "SELECT id FROM information_schema.PROCESSLIST WHERE user = %s", (db.user,)
    )
    return [int(r[0]) for r in rows]


def _reconnect(db: TasksDB) -> None:
    """Kill the exporter's connection and wait until it has made a new one."""
    (old,) = wait_for(lambda: _exporter_connections(db), timeout=5, what="the connection")
    db.server.execute(f"KILL {old}")
    wait_for(
        lambda: _exporter_connections(db) not in ([], [old]),
        timeout=5,
        what="a new connection",
    )


@pytest.mark.mariadb
def test_over_privileged_user_is_warned_of_once(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A user that can write gets one warning at start naming each excess privilege (never its
    password hash), and no repeat when the exporter reconnects with the same grants."""
    tasks_db.server.execute(
        f"GRANT INSERT, DELETE ON `{tasks_db.database}`.* TO '{tasks_db.user}'@'127.0.0.1'"
    )
    exporter = exporters(tmp_path, _config(tmp_path, tasks_db).read_text()).start(ready=True)
    try:
        (warning,) = wait_for(
            lambda: lines_matching(exporter.log(), "can do more than read"),
            timeout=5,
            what="the grants warning",
        )
        assert f"user={tasks_db.user}" in warning
        assert f"INSERT ON `{tasks_db.database}`.*" in warning
        assert f"DELETE ON `{tasks_db.database}`.*" in warning
        assert "SELECT" not in warning.split("excess=")[1]
        assert "PASSWORD" not in exporter.log()
        _reconnect(tasks_db)
        _reconnect(tasks_db)
        assert len(lines_matching(exporter.log(), "can do more than read")) == 1
    finally:
        exporter.stop()


@pytest.mark.mariadb
def test_least_privilege_user_gets_no_warning_until_granted_more(
    exporters: Exporters, tmp_path: Path, tasks_db: TasksDB
) -> None:
    """A SELECT-only user gets no warning, at start or after reconnecting; a grant added while
    the exporter runs is warned of at the next connection, and its revocation noted."""
    exporter = exporters(tmp_path, _config(tmp_path, tasks_db).read_text()).start(ready=True)
    try:
        _reconnect(tasks_db)
        assert value(exporter.scrape(), "tasks_exporter_up") == 1
        assert "can do more than read" not in exporter.log()
        grant = f"UPDATE ON `{tasks_db.database}`.`tasks` TO '{tasks_db.user}'@'127.0.0.1'"
        tasks_db.server.execute(f"GRANT {grant}")
        _reconnect(tasks_db)
        wait_for(
            lambda: f'excess="UPDATE ON `{tasks_db.database}`.`tasks`"' in exporter.log(),
            timeout=5,
            what="the warning",
        )
        tasks_db.server.execute(f"REVOKE {grant.replace(' TO ', ' FROM ')}")
        _reconnect(tasks_db)
        wait_for(lambda: "can now only read" in exporter.log(), timeout=5, what="the all-clear")
    finally:
        exporter.stop()
    code, _, err = _once(tmp_path, tasks_db)  # --once checks too, and finds nothing
    assert code == 0
    assert "can do more than read" not in err


@pytest.mark.mariadb
def test_connection_killed_during_the_grants_check_costs_no_collection(tasks_db: TasksDB) -> None:
    """A connection KILLed while its grants are read is dropped, and the next collection
    reconnects instead of failing on the dead connection. (The KILL is real; a subclass only
    times it to land inside the check, which no test could hit reliably otherwise.)"""

    class KilledDuringCheck(MySQLSource):
        def _check_grants(self, conn: Connection[Cursor]) -> None:
            (own,) = _exporter_connections(tasks_db)
            tasks_db.server.execute(f"KILL CONNECTION {own}")
            super()._check_grants(conn)

    db = DatabaseConfig(
        driver="mysql",
        port=tasks_db.server.port,
        user=tasks_db.user,
        password=Secret(tasks_db.password),
        database=tasks_db.database,
    )
    seed = {"Success": 5, "Pending": 3, "Failed": 2}
    source = KilledDuringCheck(db, TasksConfig(), timeout=2, logger=Logger("test"))
    try:
        assert {
            row.status: row.n for row in source.count()
        } == seed  # connects, counts, then is KILLed in the check
        assert {
            row.status: row.n for row in source.count()
        } == seed  # a fresh connection, not "query failed"
    finally:
        source.close()


# -- secret hygiene ---------------------------------------------------------------------------


@pytest.mark.mariadb
def test_passwords_show_nowhere(exporters: Exporters, tmp_path: Path, tasks_db: TasksDB) -> None:
    """With a known database password and a known web password, running at debug level through
    a working collection, a failing one and a config error, neither password appears in the
    command line, the environment, the log, /metrics, the landing page or any error message."""
    web_password = secrets.token_urlsafe(16)
    hashed = bcrypt.hashpw(web_password.encode(), bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n", encoding="utf-8")
    config = _config(tmp_path, tasks_db)
    exporter = exporters(
        tmp_path / "run", config.read_text(), "--web.config.file", str(web), "--log.level", "debug",
        auth=("prometheus", web_password),
    ).start(ready=True)  # fmt: skip
    seen: list[str] = []
    try:
        seen += [exporter.get(path).text for path in ("/metrics", "/", "/-/ready")]
        seen.append(exporter.get("/metrics", auth=("prometheus", "wrong")).text)
        tasks_db.server.execute(
            f"REVOKE SELECT ON {tasks_db.qualified_table} FROM '{tasks_db.user}'@'127.0.0.1'"
        )
        wait_for(
            lambda: value(exporter.scrape(), "tasks_exporter_up") == 0,
            timeout=5,
            what="the failing collection",
        )
        seen += [exporter.get(path).text for path in ("/metrics", "/", "/-/ready")]
        assert "command denied" in seen[-2]  # the landing page shows the error...
        assert exporter.process is not None
        proc = Path(f"/proc/{exporter.process.pid}")
        seen.append((proc / "cmdline").read_bytes().decode(errors="replace"))
        seen.append((proc / "environ").read_bytes().decode(errors="replace"))
    finally:
        exporter.stop()
    seen.append(exporter.log())
    write_secret(tmp_path / "password", tasks_db.password, mode=0o644)  # a config error
    check = run_cli("--config.file", str(config), "--config.check", cwd=tmp_path)
    assert check.returncode == 2
    assert "chmod 600" in check.stderr
    seen += [check.stdout, check.stderr]
    write_secret(tmp_path / "password", tasks_db.password)
    once = run_cli("--config.file", str(config), "--once", cwd=tmp_path)  # a failing --once
    assert once.returncode == 1
    seen += [once.stdout, once.stderr]
    for text in seen:
        assert tasks_db.password not in text
        assert web_password not in text
        assert hashed not in text


@pytest.mark.parametrize(
    ("host", "socket_path", "local"),
    [
        ("127.0.0.1", None, True),
        ("127.3.2.1", None, True),
        ("::1", None, True),
        ("localhost", None, True),
        ("192.0.2.7", None, False),
        ("db.example.com", None, False),
        ("db.example.com", "/run/mysqld/mysqld.sock", True),
    ],
)
def test_tls_is_left_off_only_for_a_database_on_this_machine(
    host: str, socket_path: str | None, local: bool
) -> None:
    """A unix socket or a loopback address is local (no TLS); any other host is not."""
    assert is_local(DatabaseConfig(driver="mysql", host=host, socket=socket_path)) is local
