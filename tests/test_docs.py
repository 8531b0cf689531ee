"""The documentation as its readers use it: README.md and docs/*.md link only to what exists,
their shell blocks parse and name files and subcommands that exist, their TOML blocks are
configurations `--config.check` accepts, their SQL runs on MariaDB, the README's path from
nothing to a first scrape works as written, and what they say of the demo and of the database
user is what the code does.

The production section of docs/operations.md is also run, step by step, by test_install.py
and test_systemd_boot.py.
"""

from __future__ import annotations

import inspect
import re
import secrets
import shlex
import subprocess
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_install import Moved, installed_in, sh

from exporter.config import CollectionConfig
from exporter.sources.demo import DemoDatabase
from testing.exporter_process import (
    free_port,
    parse_metrics,
    run_cli,
    task_counts,
    wait_for,
    write_secret,
)
from testing.tasks_table import TasksDB

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
# Directories of this repository that shell blocks name files in (the rest are the host's).
REPO_DIRS = ("bench", "docs", "examples", "grafana", "prometheus", "scripts", "systemd", "tests")


@dataclass(frozen=True)
class Block:
    doc: Path
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(REPO)}, a {self.lang} block:\n{self.text}"


def blocks(doc: Path, lang: str) -> list[Block]:
    """The fenced blocks of one language in a document, indentation removed."""
    text = doc.read_text(encoding="utf-8")
    fences = re.finditer(r"^( *)```(\w*)\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    return [Block(doc, m[2], textwrap.dedent(m[3])) for m in fences if m[2] == lang]


def all_blocks(lang: str) -> list[Block]:
    return [block for doc in DOCS for block in blocks(doc, lang)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


FENCED = re.compile(r"^ *```.*?^ *```", re.MULTILINE | re.DOTALL)


def prose(doc: Path) -> str:
    """A document without its fenced blocks."""
    return FENCED.sub("", doc.read_text(encoding="utf-8"))


def anchors(doc: Path) -> set[str]:
    text = prose(doc)
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def links(doc: Path) -> list[str]:
    """Every Markdown link target of a document, outside code blocks and code spans."""
    text = re.sub(r"`[^`]*`", "", prose(doc).replace("[`", "[").replace("`]", "]"))
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(REPO).as_posix())
def test_every_link_leads_to_a_file_and_heading_that_exist(doc: Path) -> None:
    """A reader following any link of the docs lands on a file of the repository, and on the
    heading the link names."""
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # web addresses: not followed here
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or REPO not in dest.parents:
            broken.append(f"{target}: no such file in the repository")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_docs_link_to_each_other() -> None:
    """Every guide in docs/ is reachable from the README."""
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(REPO / "README.md")}
    assert set(DOCS[1:]) <= linked


@pytest.mark.parametrize("block", all_blocks("sh"), ids=lambda b: b.doc.name)
def test_every_shell_block_parses(block: Block) -> None:
    """Each shell block is valid bash (`bash -n`), as it would be pasted."""
    result = subprocess.run(
        ["bash", "-n"], input=block.text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{block}\n{result.stderr}"


def test_shell_blocks_name_only_files_and_subcommands_that_exist() -> None:
    """A file of this repository that a shell block names (systemd/..., prometheus/...) exists,
    and every `scripts/dev` subcommand it runs is one the script knows."""
    subcommands = set(re.findall(r"^(\w+)\)$", (REPO / "scripts/dev").read_text(), re.MULTILINE))
    assert {"run", "test", "lint", "quick", "bench"} <= subcommands
    missing = []
    for block in all_blocks("sh"):
        for line in block.text.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                first = word.split("/", 1)[0]
                if first in REPO_DIRS and "*" not in word and not (REPO / word).exists():
                    missing.append(f"{block.doc.name}: {word}")
                after = words[i + 1 : i + 2]
                if word == "scripts/dev" and after and after[0] not in subcommands:
                    missing.append(f"{block.doc.name}: scripts/dev {after[0]}")
    assert not missing


@pytest.mark.parametrize("block", all_blocks("toml"), ids=lambda b: b.doc.name)
def test_every_toml_block_is_a_configuration_the_exporter_accepts(
    block: Block, tmp_path: Path
) -> None:
    """Each TOML block parses, and `--config.check` exits 0 on it once the password file or
    credential it names exists (with the mode the docs give it)."""
    config = tomllib.loads(block.text)
    text = block.text.replace("/etc/tasks_exporter/", f"{tmp_path}/")
    database = config.get("database", {})
    for key in ("password_file", "option_file"):
        if key in database:
            content = "[client]\npassword=x\n" if key == "option_file" else "x"
            write_secret(tmp_path / Path(database[key]).name, content)
    env = {}
    if "credential" in database:
        write_secret(tmp_path / database["credential"], "x")
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path)
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    result = run_cli("--config.file", "config.toml", "--config.check", cwd=tmp_path, env=env)
    assert result.returncode == 0, f"{block}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md"])
def test_the_database_user_is_the_one_the_config_logs_in_as(doc: str) -> None:
    """The configuration logs in as an account the SQL beside it creates: an @'localhost' user
    over the unix socket, a user @'HOST' over TCP from HOST (anything else is "Access
    denied")."""
    accounts = {
        account
        for sql in blocks(REPO / doc, "sql")
        for account in re.findall(r"'(\w+)'@'([^']+)'", sql.text)
    }
    configs = [tomllib.loads(toml.text)["database"] for toml in blocks(REPO / doc, "toml")]
    assert accounts
    assert configs
    for database in configs:
        reached = (database["user"], "localhost" if "socket" in database else database["host"])
        assert reached in accounts, f"{doc}: logs in as {reached}, SQL creates {accounts}"


def test_the_readme_path_needs_no_developer_script() -> None:
    """After the two commands, the README's steps use only what `pip install` gives a user:
    no `scripts/dev`, no `.venv/` that only the developer script creates."""
    first, *rest = blocks(REPO / "README.md", "sh")
    assert "scripts/dev run" in first.text
    assert "scripts/dev test" in first.text
    for block in rest:
        assert "scripts/dev" not in block.text, block
        assert ".venv/" not in block.text, block


def test_the_readme_tells_the_demo_as_it_runs() -> None:
    """The README's demo moves every `step` seconds and is collected every default interval,
    the figures the code uses."""
    step = inspect.signature(DemoDatabase).parameters["step"].default
    interval = CollectionConfig().interval
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"a task finishes every {step:g} seconds" in text
    assert f"collects every {interval:g} seconds" in text


@pytest.mark.mariadb
def test_a_newcomer_following_the_readme_gets_a_first_scrape(
    tmp_path: Path, tasks_db: TasksDB
) -> None:
    """The README's steps as written (only paths, names and the port moved to the test's) install
    the exporter with pip into a new venv of Debian's python3, create its user, check, collect
    once, serve, and the scrape shows the table's counts."""
    readme = REPO / "README.md"
    _, install, password, run, scrape = (block.text for block in blocks(readme, "sh"))
    (create_user,) = (block.text for block in blocks(readme, "sql"))
    (config,) = (block.text for block in blocks(readme, "toml"))
    db = tasks_db
    user, pw = f"tx_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    prefix, etc, port = tmp_path / "opt", tmp_path / "etc", free_port()
    moved = Moved(
        {
            "python3 -m venv": "/usr/bin/python3 -m venv",  # Debian's, whatever PATH holds
            "pip install .": f"pip install --quiet {REPO}",
            **installed_in(prefix, etc, db, user, pw),
            "127.0.0.1:9775": f"127.0.0.1:{port}",
        }
    )
    steps = [line for line in install.splitlines() if not line.startswith("apt-get ")]
    result = sh(moved("\n".join(steps), "pip install .", "/opt/tasks_exporter"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for statement in moved(create_user, "CHANGE-ME", "flasktest.tasks").split(";"):
        if statement.strip():
            db.server.execute(statement)
    try:
        assert sh(moved(password, "/etc/tasks_exporter"), tmp_path).returncode == 0
        (etc / "tasks_exporter.toml").write_text(moved(config, "mysqld.sock"), encoding="utf-8")
        *once, serve = moved(run, "--config.check", "--once").splitlines()
        result = sh("\n".join(once), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "configuration is valid" in result.stdout
        log = (tmp_path / "exporter.log").open("w", encoding="utf-8")
        server = subprocess.Popen(
            [*shlex.split(serve), f"--web.listen-address=127.0.0.1:{port}"],
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
        try:
            wait_for(
                lambda: "Pending" in sh(moved(scrape, "127.0.0.1:9775"), tmp_path).stdout or None,
                timeout=15,
                what="the README's scrape",
            )
            lines = sh(moved(scrape, "127.0.0.1:9775"), tmp_path).stdout
            assert task_counts(parse_metrics(lines)) == {"Success": 5, "Pending": 3, "Failed": 2}
        finally:
            server.terminate()
            assert server.wait(10) == 0, (tmp_path / "exporter.log").read_text(encoding="utf-8")
            log.close()
    finally:
        db.server.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")


@pytest.mark.mariadb
@pytest.mark.parametrize("block", all_blocks("sql"), ids=lambda b: b.doc.name)
def test_every_sql_block_runs_on_mariadb(block: Block, tasks_db: TasksDB) -> None:
    """Each SQL block runs on MariaDB as written, with the user and the table moved to the
    test's (a statement the server refuses fails the test)."""
    user = f"tx_{secrets.token_hex(4)}"
    sql = (
        block.text.replace("'tasks_exporter'@", f"'{user}'@")
        .replace("flasktest.tasks", tasks_db.qualified_table)
        .replace("ALTER TABLE tasks ", f"ALTER TABLE {tasks_db.qualified_table} ")
    )
    assert sql != block.text, f"nothing of the test's moved into {block}"
    try:
        for statement in sql.split(";"):
            if statement.strip():
                tasks_db.server.execute(statement)
    finally:
        tasks_db.server.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
