"""The harness's exporter process: what a test starts is stopped when the test ends."""

from __future__ import annotations

from pathlib import Path

from testing.exporter_process import Exporters


def test_an_exporter_left_running_is_killed_when_its_owner_closes(tmp_path: Path) -> None:
    """An exporter a test starts and does not stop is killed by the fixture that made it."""
    exporters = Exporters()
    exporter = exporters(tmp_path, "", "--demo").start()
    assert exporter.process is not None
    assert exporter.process.poll() is None
    exporters.close()
    assert exporter.process.poll() is not None
