"""The package's boundaries: each optional dependency is imported in one place, when needed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
# Where each optional or heavy dependency may be imported, as paths under exporter/.
OWNERS = {
    "pymysql": {"sources/mysql.py"},
    "yaml": {"web/security/webconfig.py"},
    "bcrypt": {"web/security/auth.py"},
}


def _imported(path: Path) -> set[str]:
    """The top-level names of every module a file imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_each_optional_dependency_is_imported_by_one_module_only() -> None:
    """pymysql only in sources/mysql.py; PyYAML and bcrypt only under web/security/."""
    found: dict[str, set[str]] = {name: set() for name in OWNERS}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in _imported(path) & set(OWNERS):
            found[name].add(path.relative_to(PACKAGE).as_posix())
    assert found == OWNERS


def test_starting_without_mysql_or_a_web_config_file_loads_none_of_them() -> None:
    """Loading every module the demo runs loads neither pymysql, PyYAML nor bcrypt."""
    modules = (
        "exporter.cli",
        "exporter.service",
        "exporter.web",
        "exporter.web.page",
        "exporter.metrics.registry",
        "exporter.sources.sqlite",
        "exporter.sources.demo",
    )
    script = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('pymysql', 'yaml', 'bcrypt') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
