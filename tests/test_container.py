"""The booted-systemd test's root file system cache: keyed by what goes in, never half built."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from testing import systemd_container as container


def test_the_cache_key_follows_the_suite_and_package_set_not_their_order() -> None:
    """Another package or suite is another root file system; the same set is the same one."""
    key = container.cache_key("bookworm", ["systemd", "curl"])
    assert key == container.cache_key("bookworm", ["curl", "systemd"])
    assert key != container.cache_key("bookworm", ["systemd", "curl", "procps"])
    assert key != container.cache_key("trixie", ["systemd", "curl"])


def test_the_mirror_is_the_one_apt_uses_in_either_sources_format(tmp_path: Path) -> None:
    """deb822 and one-line sources both name the archive; none falls back to Debian's CDN."""
    (tmp_path / "sources.list.d").mkdir()
    assert container.apt_mirror(tmp_path) == container.DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n", encoding="utf-8"
    )
    assert container.apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").unlink()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://archive.example/debian\nSuites: bookworm bookworm-updates\n",
        encoding="utf-8",
    )
    assert container.apt_mirror(tmp_path) == "http://archive.example/debian"


def test_an_interrupted_build_leaves_no_cache_and_the_next_run_builds_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build stopped half-way leaves nothing that looks built; the next one completes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def interrupted(target: Path, _suite: str, _packages: Sequence[str]) -> None:
        (target / "etc").mkdir(parents=True)
        raise KeyboardInterrupt

    def whole(target: Path, _suite: str, _packages: Sequence[str]) -> None:
        (target / "etc").mkdir(parents=True)
        (target / "etc" / "os-release").write_text("ID=debian\n", encoding="utf-8")

    monkeypatch.setattr(container, "_debootstrap", interrupted)
    with pytest.raises(KeyboardInterrupt):
        container.root_filesystem("bookworm", ["systemd"])
    assert list(container.cache_dir().iterdir()) == [container.cache_dir() / ".lock"]

    monkeypatch.setattr(container, "_debootstrap", whole)
    built = container.root_filesystem("bookworm", ["systemd"])
    assert built.built_seconds is not None
    assert (built.path / "etc" / "os-release").exists()
    assert built.path.name == f"bookworm-{container.cache_key('bookworm', ['systemd'])}"
    assert container.root_filesystem("bookworm", ["systemd"]) == container.RootFS(built.path, None)
