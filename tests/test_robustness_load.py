"""Robustness: many scrapers, idle and trickling connections, and refused floods."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conftest import TasksDB
from support import collections, db_exporter, wait_for

pytestmark = [pytest.mark.robustness, pytest.mark.mariadb]


def test_one_query_per_interval_however_many_scrapes(
    tmp_path: Path, private_tasks_db: TasksDB
) -> None:
    """Hundreds of concurrent scrapes cause no query: one SELECT per collection, no more."""
    db = private_tasks_db
    exporter = db_exporter(tmp_path, db, interval="1s", timeout="0.5s")
    try:
        first = collections(exporter, "success")
        wait_for(lambda: collections(exporter, "success") > first, timeout=5, what="a collection")
        # Just after a collection: the next one is about a second away.
        before_selects, before_collections = (
            db.server.status("Com_select"),
            collections(exporter, "success"),
        )
        errors: list[BaseException] = []

        def scrape(n: int) -> None:
            try:
                for _ in range(n):
                    assert exporter.get("/metrics").status == 200
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=scrape, args=(40,)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.5)
        wait_for(lambda: exporter.get("/-/ready").status == 200, timeout=5, what="ready")
        after_collections = collections(exporter, "success")
        after_selects = db.server.status("Com_select")
        assert errors == []
        collected = after_collections - before_collections
        assert collected >= 1
        assert after_selects - before_selects == collected
    finally:
        exporter.stop()
