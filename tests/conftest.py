"""Shared fixtures: private MariaDB servers and a seeded `tasks` table on them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from testing.exporter_process import Exporters
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB, make_tasks_db

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# Figures measured by the robustness suite, printed together at the end of the run.
_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def exporters() -> Iterator[Exporters]:
    """Makes exporters for one test; those still running after it are killed."""
    made = Exporters()
    yield made
    made.close()


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure: printed under "robustness figures" at the end of the run."""
    figures = request.config.stash.setdefault(_FIGURES, [])

    def record(text: str) -> None:
        figures.append(f"{request.node.name}: {text}")

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    figures = config.stash.get(_FIGURES, [])
    if figures:
        terminalreporter.section("robustness figures")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def mariadb_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MariaDB datadir, created once per session and copied for each server."""
    datadir = tmp_path_factory.mktemp("mariadb-template") / "data"
    MariaDB.initialise(datadir)
    return datadir


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory, mariadb_template: Path) -> Iterator[MariaDB]:
    """A MariaDB shared by the whole session; tests must not stop or break it."""
    server = MariaDB(tmp_path_factory.mktemp("mariadb"), template=mariadb_template)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_mariadb(tmp_path: Path, mariadb_template: Path) -> Iterator[MariaDB]:
    """A fresh MariaDB for one test, which may stop, restart, kill or pause it."""
    server = MariaDB(tmp_path / "mariadb", template=mariadb_template)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tasks_db(mariadb: MariaDB) -> Iterator[TasksDB]:
    """A seeded tasks table (5 Success, 3 Pending, 2 Failed) on the shared MariaDB."""
    db = make_tasks_db(mariadb)
    yield db
    db.drop()


@pytest.fixture
def private_tasks_db(private_mariadb: MariaDB) -> TasksDB:
    """A seeded tasks table (5 Success, 3 Pending, 2 Failed) on a private MariaDB."""
    return make_tasks_db(private_mariadb)
