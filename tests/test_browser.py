"""The landing page in a real browser (headless Chromium), against a real MariaDB table."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from testing.chromium_browser import capture, png_pixels
from testing.exporter_process import Exporter, Exporters, mysql_config, wait_for, write_secret
from testing.landing_page import read
from testing.mariadb_server import MariaDB
from testing.tasks_table import TasksDB

pytestmark = pytest.mark.mariadb

# Status values a hostile or careless writer could put in the table (the column is VARCHAR(50)).
HOSTILE = (
    "<img src=x onerror=\"document.title='pwned'\">",
    "<script>document.title='pwned'</script>",
)
WINDOW = (1000, 900)


def _exporter(exporters: Exporters, tmp_path: Path, db: TasksDB, extra_tasks: str = "") -> Exporter:
    password = write_secret(tmp_path / "password", db.password)
    config = mysql_config(
        socket_path=db.server.socket,
        user=db.user,
        database=db.database,
        password_file=password,
        interval="0.5s",
        timeout="0.3s",
        staleness="2s",
        extra_tasks=extra_tasks,
    )
    return exporters(tmp_path / "exporter", config)


def test_chromium_shows_the_table_and_runs_none_of_its_values(
    exporters: Exporters, tmp_path: Path, private_mariadb: MariaDB, private_tasks_db: TasksDB
) -> None:
    """Chromium shows each status's count, the total and the completion as the table holds them;
    statuses made of HTML or script appear as text, create no element and run nothing; once the
    database is gone, the counts give way to notices that say why."""
    db = private_tasks_db
    for status in HOSTILE:
        db.insert(status)
    db.insert("Pending", 4)
    exporter = _exporter(exporters, tmp_path, db).start(ready=True)
    url = f"http://{exporter.host}:{exporter.port}/"
    try:
        shot = capture(url, tmp_path, name="page", window=WINDOW)
        page = read(shot.dom)
        table = {str(status): n for status, n in db.rows().items()}
        total = sum(table.values())
        assert page.counts == table
        assert page.total == f"{total:,}"
        assert page.completion == f"{math.floor(table['Success'] * 1000 / total) / 10:.1f} %"
        assert page.age is not None
        assert page.age.endswith(" s ago")
        assert page.notices == {}
        # Shown as text, never parsed as markup, never run.
        assert set(HOSTILE) <= {status for status, _, _ in page.rows}
        assert "img" not in page.tags
        assert "script" not in page.tags
        assert page.title == "tasks_exporter"
        assert "pwned" not in page.title
        assert shot.size == WINDOW
        assert shot.screenshot.stat().st_size > 10_000  # a rendered page, not a blank image

        private_mariadb.stop()
        wait_for(lambda: exporter.get("/-/ready").status == 503, timeout=10, what="stale data")
        stale = read(capture(url, tmp_path, name="page-stale", window=WINDOW).dom)
        assert stale.notices.keys() == {"unreachable", "stale"}
        assert stale.notices["unreachable"].startswith("The database could not be read.")
        assert "Data is stale." in stale.notices["stale"]
        assert (stale.rows, stale.total, stale.completion) == ([], None, None)
    finally:
        exporter.stop()


def _share_of_colour(rows: list[list[tuple[int, int, int]]], rgb: tuple[int, int, int]) -> float:
    """The share of pixels within a small distance of a colour (anti-aliasing aside)."""
    near = sum(
        1 for row in rows for p in row if sum(abs(a - b) for a, b in zip(p, rgb, strict=True)) < 40
    )
    return near / (len(rows) * len(rows[0]))


def test_chromium_draws_the_chart_of_the_demo_under_the_pages_policy(
    exporters: Exporters, tmp_path: Path
) -> None:
    """On the demo, once two collections have succeeded, Chromium shows the chart of the last
    hours: Success at the bottom, Pending on top, with axis labels, and paints its areas in the
    statuses' colours, so the Content-Security-Policy let the inline SVG and its styles apply;
    the page still has no script."""
    exporter = exporters(tmp_path / "exporter", '[collection]\ninterval = "0.5s"\n', "--demo")
    exporter.start(ready=True)
    url = f"http://{exporter.host}:{exporter.port}/"
    try:
        wait_for(lambda: b"<svg id=chart" in exporter.get("/").body, timeout=10, what="chart")
        shot = capture(url, tmp_path, name="demo", window=WINDOW)
    finally:
        exporter.stop()
    page = read(shot.dom)
    statuses = [area.status for area in page.chart]
    assert statuses[0] == "Success"
    assert statuses[-1] == "Pending"
    assert set(statuses) == {"Success", "Failed", "Pending"}
    assert [area.colour for area in page.chart] == ["c-ok", "c-bad", "c-wait"]
    assert page.chart_labels[0] == "0"
    assert len(page.chart_labels) >= 4  # three counts, and times
    assert "script" not in page.tags
    pixels = png_pixels(shot.screenshot)
    # The areas' colours at 80 % over white: Success green, Pending grey, a few Failed reds.
    assert _share_of_colour(pixels, (88, 151, 91)) > 0.01
    assert _share_of_colour(pixels, (165, 165, 165)) > 0.005


def test_chromium_shows_how_long_the_oldest_pending_task_has_waited(
    exporters: Exporters, tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """With a time_column, Chromium shows the oldest Pending task's wait and since when, as
    the table's times say."""
    db = private_tasks_db
    db.server.execute(
        f"ALTER TABLE {db.qualified_table}"
        " ADD COLUMN created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
    )
    db.server.execute(  # 2 h 0 min 30 s: the page shows "2 h 0 min" for the next 59 s
        f"UPDATE {db.qualified_table} SET created_at = NOW() - INTERVAL 7230 SECOND"
        " WHERE task_status = 'Pending' ORDER BY task_id LIMIT 1"
    )
    ((since,),) = db.server.execute(
        f"SELECT MIN(UNIX_TIMESTAMP(created_at)) FROM {db.qualified_table}"
        " WHERE task_status = 'Pending'"
    )
    exporter = _exporter(exporters, tmp_path, db, extra_tasks='time_column = "created_at"').start(
        ready=True
    )
    url = f"http://{exporter.host}:{exporter.port}/"
    try:
        page = read(capture(url, tmp_path, name="oldest").dom)
    finally:
        exporter.stop()
    assert page.oldest == "2 h 0 min"
    at = time.gmtime(int(since))
    same_day = at[:3] == time.gmtime()[:3]
    expected = time.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC", at)
    assert page.oldest_detail == f"waiting since {expected}"
