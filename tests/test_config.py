"""Configuration: defaults, every kind of mistake, and where the password may come from."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from exporter.config import (
    Config,
    ConfigError,
    ListenAddress,
    Overrides,
    load,
    parse_duration,
    parse_listen_address,
    parse_table,
)
from exporter.secret import Secret, read_option_file
from testing.exporter_process import write_secret


def _load(
    tmp_path: Path,
    text: str,
    overrides: Overrides | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load(path, overrides or Overrides(), environ or {})


def _problems(tmp_path: Path, text: str, **kwargs: object) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def _minimal(tmp_path: Path, extra: str = "") -> str:
    secret = write_secret(tmp_path / "pw", "s3cret\n")
    return f'[database]\nuser = "u"\ndatabase = "app"\npassword_file = "{secret}"\n{extra}'


def test_minimal_mysql_config_gets_documented_defaults(tmp_path: Path) -> None:
    """A [database] with user, database and password file is enough; the rest has defaults."""
    config = _load(tmp_path, _minimal(tmp_path))
    assert config.database.host == "127.0.0.1"
    assert config.database.port == 3306
    assert config.database.password == Secret("s3cret")
    assert config.tasks.table == ("tasks",)
    assert config.tasks.status_column == "task_status"
    assert config.tasks.expected_statuses == ("Success", "Pending", "Failed")
    assert config.collection.interval == 15
    assert config.collection.timeout == 5
    assert config.web.listen_addresses == (ListenAddress("", 9775),)
    assert config.web.allow == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def test_no_database_is_refused_with_a_pointer_to_demo(tmp_path: Path) -> None:
    """Without a [database] section the exporter says what to add, and mentions --demo."""
    (problem,) = _problems(tmp_path, "")
    assert problem.startswith("database: no database configured")
    assert "--demo" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes give one line each, each naming its setting."""
    problems = _problems(
        tmp_path,
        _minimal(tmp_path)
        + """
port = 99999
colour = "blue"
[tasks]
table = "tasks; DROP TABLE x"
status_column = "a b"
[collection]
interval = "fast"
[web]
allow = []
listen_addresses = ["nohost"]
[log]
level = "loud"
[extra]
""",
    )
    text = "\n".join(problems)
    for setting in (
        "database.port:",
        "database.colour: unknown setting",
        "tasks.table:",
        "tasks.status_column:",
        "collection.interval:",
        "web.allow:",
        "web.listen_addresses:",
        "log.level:",
        "extra: unknown section",
    ):
        assert setting in text, setting
    assert len(problems) == 9


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        (
            '[database]\ndatabase = "d"\npassword_file = "/nonexistent/pw"\n',
            "database.password_file",
        ),
        ('[database]\nuser = "u"\npassword_file = "/x"\n', "database.database"),
        ('[database]\nuser = "u"\ndatabase = "d"\npassword = "hunter2"\n', "database.password"),
        ('[database]\nuser = "u"\ndatabase = "d"\nsocket = "/s"\nhost = "h"\n', "database.socket"),
        ('[database]\ndriver = "sqlite"\n', "database.path"),
        ('[database]\ndriver = "oracle"\n', "database.driver"),
        ("database = 3\n", "database"),
    ],
)
def test_database_mistakes_name_the_setting(tmp_path: Path, text: str, setting: str) -> None:
    """Each database mistake is reported against the setting that holds it."""
    problems = _problems(tmp_path, text)
    assert any(p.startswith(f"{setting}:") for p in problems), problems


def test_a_wrong_value_is_reported_once(tmp_path: Path) -> None:
    """A setting with a wrong type gets one line, not also a 'required' line."""
    problems = _problems(tmp_path, '[database]\nuser = 1\ndatabase = "d"\n')
    assert [p for p in problems if p.startswith("database.user:")] == [
        "database.user: must be a string, got 1"
    ]


def test_password_in_config_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A password written into the TOML is refused, and the message does not repeat it."""
    problems = _problems(tmp_path, '[database]\nuser = "u"\ndatabase = "d"\npassword = "hunter2"\n')
    assert "hunter2" not in "\n".join(problems)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A password file readable by group or others is refused, naming the file and the fix."""
    secret = write_secret(tmp_path / "pw", "x", mode)
    (problem,) = _problems(
        tmp_path, f'[database]\nuser = "u"\ndatabase = "d"\npassword_file = "{secret}"\n'
    )
    assert problem.startswith("database.password_file:")
    assert str(secret) in problem
    assert "chmod 600" in problem


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("setting", ["password_file", "option_file"])
def test_secret_file_owned_by_another_user_is_refused(tmp_path: Path, setting: str) -> None:
    """A private password file that another user owns is refused, even to root, naming the
    owner and the fix; the same file owned by root is accepted."""
    secret = write_secret(tmp_path / "pw", "[client]\npassword=x\n", 0o600)
    config = f'[database]\nuser = "u"\ndatabase = "d"\n{setting} = "{secret}"\n'
    os.chown(secret, 65534, 65534)  # nobody
    (problem,) = _problems(tmp_path, config)
    assert problem.startswith(f"database.{setting}:")
    assert f"{secret} is owned by uid 65534" in problem
    assert f"chown 0 {secret}" in problem
    os.chown(secret, 0, 0)
    assert _load(tmp_path, config).database.user == "u"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_secret_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO or a directory given as the password file is refused at once, naming it."""
    secret = tmp_path / "pw"
    if kind == "fifo":
        os.mkfifo(secret, 0o600)
    else:
        secret.mkdir(mode=0o700)
    (problem,) = _problems(
        tmp_path, f'[database]\nuser = "u"\ndatabase = "d"\npassword_file = "{secret}"\n'
    )
    assert problem.startswith("database.password_file:")
    assert str(secret) in problem


def test_option_file_supplies_user_and_password(tmp_path: Path) -> None:
    """A MySQL option file's [client] section provides the password (and user if not set)."""
    opts = write_secret(
        tmp_path / "my.cnf",
        "[mysqld]\npassword=server\n# comment\n[client]\nuser = reporter\npassword = 'p#ss word'\n",
    )
    config = _load(tmp_path, f'[database]\ndatabase = "d"\noption_file = "{opts}"\n')
    assert config.database.user == "reporter"
    assert config.database.password == Secret("p#ss word")


def test_option_file_parser_reads_only_the_client_section(tmp_path: Path) -> None:
    """Options outside [client] are ignored and names are normalised like MySQL's."""
    opts = write_secret(tmp_path / "my.cnf", "[client]\nssl_ca=/ca.pem\nhost=db\n[mysql]\nuser=x\n")
    assert read_option_file(opts) == {"ssl-ca": "/ca.pem", "host": "db"}


def test_systemd_credential_is_read_from_credentials_directory(tmp_path: Path) -> None:
    """credential = NAME reads $CREDENTIALS_DIRECTORY/NAME, as LoadCredential= provides."""
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "db", "from-systemd", 0o400)
    config = _load(
        tmp_path,
        '[database]\nuser = "u"\ndatabase = "d"\ncredential = "db"\n',
        environ={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert config.database.password == Secret("from-systemd")


def test_credential_without_systemd_is_explained(tmp_path: Path) -> None:
    """Asking for a credential outside systemd says $CREDENTIALS_DIRECTORY is not set."""
    (problem,) = _problems(tmp_path, '[database]\nuser = "u"\ndatabase = "d"\ncredential = "db"\n')
    assert "CREDENTIALS_DIRECTORY" in problem


def test_two_password_sources_are_refused(tmp_path: Path) -> None:
    """Only one password source may be configured."""
    pw = write_secret(tmp_path / "pw", "x")
    problems = _problems(
        tmp_path,
        f'[database]\nuser = "u"\ndatabase = "d"\npassword_file = "{pw}"\noption_file = "{pw}"\n',
    )
    assert any("choose one password source" in p for p in problems)


def test_secret_never_shows_in_repr() -> None:
    """The password wrapper hides its value from repr, str and f-strings."""
    secret = Secret("hunter2")
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"
    assert secret.reveal() == "hunter2"


def test_flags_override_file_and_are_named_in_errors(tmp_path: Path) -> None:
    """--web.listen-address wins over the file, and a bad one is reported under the flag name."""
    base = _minimal(tmp_path, '[web]\nlisten_addresses = [":1"]\n')
    config = _load(tmp_path, base, Overrides(listen_addresses=("[::1]:9", "127.0.0.1:8")))
    assert config.web.listen_addresses == (ListenAddress("::1", 9), ListenAddress("127.0.0.1", 8))
    (problem,) = _problems(tmp_path, base, overrides=Overrides(listen_addresses=("::1:9",)))
    assert problem.startswith("--web.listen-address:")
    assert "brackets" in problem


def test_max_requests_from_the_flag_or_the_file(tmp_path: Path) -> None:
    """--web.max-requests (default 40, 0: no limit) wins over web.max_requests; a negative
    number is refused under the flag's name."""
    assert _load(tmp_path, _minimal(tmp_path)).web.max_requests == 40
    base = _minimal(tmp_path, "[web]\nmax_requests = 0\n")
    assert _load(tmp_path, base).web.max_requests == 0
    assert _load(tmp_path, base, Overrides(max_requests=3)).web.max_requests == 3
    (problem,) = _problems(tmp_path, base, overrides=Overrides(max_requests=-1))
    assert problem.startswith("--web.max-requests:")


def test_demo_conflicts_with_a_database_section(tmp_path: Path) -> None:
    """--demo and a configured database cannot both be meant."""
    (problem,) = _problems(tmp_path, _minimal(tmp_path), overrides=Overrides(demo=True))
    assert problem.startswith("--demo:")


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ('[collection]\ninterval = "10s"\ntimeout = "10s"\n', "collection.timeout"),
        ('[collection]\ninterval = "10s"\nstaleness = "5s"\n', "collection.staleness"),
        ("[collection]\ninterval = -1\n", "collection.interval"),
        ('[tasks]\nexpected_statuses = ["A", "A"]\n', "tasks.expected_statuses"),
        ('[tasks]\nexpected_statuses = ["other"]\n', "tasks.other_status"),
        ("[tasks]\nmax_statuses = 3\n", "tasks.max_statuses"),
        ('[tasks]\nnull_status = "other"\n', "tasks.null_status"),
        ('[tasks]\nfilter = ""\n', "tasks.filter"),
        ('[web]\ntelemetry_path = "metrics"\n', "web.telemetry_path"),
        ('[web]\ntelemetry_path = "/-/ready"\n', "web.telemetry_path"),
        ('[web]\nallow = ["10.0.0.1/8"]\n', "web.allow"),
        ('[web]\nallow = ["everyone"]\n', "web.allow"),
        ("[web]\nmax_connections = 1\n", "web.max_connections"),
        ('[log]\nformat = "xml"\n', "log.format"),
    ],
)
def test_setting_mistakes_name_the_setting(tmp_path: Path, extra: str, setting: str) -> None:
    """Each out-of-range or inconsistent value is reported against its setting."""
    problems = _problems(tmp_path, _minimal(tmp_path) + extra)
    assert any(p.startswith(f"{setting}:") for p in problems), problems


def test_host_bits_set_suggests_the_network(tmp_path: Path) -> None:
    """An allowlist entry with host bits set suggests the network that was probably meant."""
    (problem,) = _problems(tmp_path, _minimal(tmp_path) + '[web]\nallow = ["10.1.2.3/8"]\n')
    assert "did you mean 10.0.0.0/8" in problem


@pytest.mark.parametrize(
    ("entry", "meant"),
    [("::ffff:10.0.0.0/104", "10.0.0.0/8"), ("::ffff:192.0.2.7/128", "192.0.2.7/32")],
)
def test_ipv4_mapped_network_is_refused_with_its_ipv4_form(
    tmp_path: Path, entry: str, meant: str
) -> None:
    """An IPv4-mapped IPv6 network in the allowlist, which could never match because IPv4
    clients are matched as IPv4, is refused with the IPv4 network to write instead."""
    text = _minimal(tmp_path) + f'[web]\nallow = ["{entry}"]\n'
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith("web.allow:"), problem
    assert f"{entry!r} is an IPv4-mapped IPv6 network" in problem
    assert f"write {meant}" in problem


def test_invalid_toml_is_one_clear_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file."""
    (problem,) = _problems(tmp_path, "[database\n")
    assert problem.startswith("--config.file:")
    assert "not valid TOML" in problem


def test_a_problem_quoting_a_control_character_stays_one_line(tmp_path: Path) -> None:
    """A password file path holding a newline is named in one line, the newline escaped."""
    (problem,) = _problems(
        tmp_path, '[database]\nuser = "u"\ndatabase = "d"\npassword_file = "/no/such\\nfile"\n'
    )
    assert problem == (
        "database.password_file: cannot read /no/such\\nfile: No such file or directory"
    )


def test_a_number_too_long_to_read_is_one_clear_line(tmp_path: Path) -> None:
    """An integer of thousands of digits, which the TOML reader refuses with a ValueError of
    its own, is one line naming the file, like any other unreadable file."""
    (problem,) = _problems(tmp_path, "[web]\nmax_connections = " + "9" * 5000 + "\n")
    assert problem == f"--config.file: {tmp_path / 'config.toml'} holds a number too long to read"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (15, 15.0),
        (0.5, 0.5),
        ("15s", 15.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("365d", 365 * 86400.0),
    ],
)
def test_durations_accept_numbers_and_prometheus_strings(text: object, seconds: float) -> None:
    """Durations are seconds as numbers, or Prometheus-style strings."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        *("", "15", "s", "1.5.s", "-1s", "0s", "15 s", True, [1], float("nan"), float("inf")),
        *("366d", "400000d", 10**400),  # beyond a year: the last would not even fit a float
    ],
)
def test_bad_durations_are_refused(text: object) -> None:
    """Anything that is not a positive duration is refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9775", ListenAddress("", 9775)),
        ("127.0.0.1:80", ListenAddress("127.0.0.1", 80)),
        ("[::1]:9775", ListenAddress("::1", 9775)),
        ("localhost:0", ListenAddress("localhost", 0)),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress) -> None:
    """Listen addresses take host:port, [ipv6]:port and :port."""
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    "text", ["tasks`", "a.b.c", "t-1", "", "x" * 65, "tasks;", "t'", 't"', "a b", "db.`t`"]
)
def test_identifiers_that_could_carry_sql_are_refused(text: str) -> None:
    """Table names are plain identifiers, optionally schema-qualified, and nothing else."""
    with pytest.raises(ValueError, match=r"identifier|table or schema\.table"):
        parse_table(text)


def test_schema_qualified_table_is_split() -> None:
    """schema.table becomes two identifiers, each quoted on its own."""
    assert parse_table("app.tasks") == ("app", "tasks")


def test_shipped_example_config_is_valid(tmp_path: Path) -> None:
    """examples/tasks_exporter.toml passes validation once its option file exists."""
    example = (Path(__file__).parent.parent / "examples" / "tasks_exporter.toml").read_text()
    opts = write_secret(tmp_path / "my.cnf", "[client]\npassword=x\n")
    text = example.replace("/etc/tasks_exporter/my.cnf", str(opts))
    config = _load(tmp_path, text)
    defaults = _load(tmp_path, _minimal(tmp_path))
    # The example documents the defaults: apart from the database, they are the same.
    assert (config.tasks, config.collection, config.web, config.log) == (
        defaults.tasks,
        defaults.collection,
        defaults.web,
        defaults.log,
    )


def test_the_example_time_settings_are_valid_once_uncommented(tmp_path: Path) -> None:
    """The example's commented time, window and kind settings load as documented."""
    example = (Path(__file__).parent.parent / "examples" / "tasks_exporter.toml").read_text()
    opts = write_secret(tmp_path / "my.cnf", "[client]\npassword=x\n")
    names = ("time_column", "time_column_type", "time_zone", "window", "label_columns", "max_kinds")
    for name in names:
        example = example.replace(f"# {name} =", f"{name} =")
    config = _load(tmp_path, example.replace("/etc/tasks_exporter/my.cnf", str(opts)))
    assert config.tasks.time_column == "created_at"
    assert config.tasks.time_zone == "Europe/Paris"
    assert str(config.tasks.window) == "today"
    assert config.tasks.label_columns == (("queue", "task_queue"),)
