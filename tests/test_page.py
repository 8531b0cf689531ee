"""The landing page as rendered from a snapshot (pure): figures, notices, refresh."""

from __future__ import annotations

import pytest

from exporter.collect import Snapshot
from exporter.page import render
from landing import Landing, read

NOW = 10_000.0


def _page(**kwargs: object) -> Landing:
    base: dict[str, object] = {
        "interval": 15.0,
        "staleness": 60.0,
        "counts": (("Success", 5), ("Pending", 3), ("Failed", 2)),
        "last_success": NOW - 12,
        "up": True,
    }
    base.update(kwargs)
    snapshot = Snapshot(**base)  # type: ignore[arg-type]
    html = render(snapshot, NOW, version="1.2.3", telemetry_path="/metrics", source="db")
    return read(html.decode("utf-8"))


def test_fresh_page_shows_counts_total_completion_and_age() -> None:
    """Counts per status with their share, the total, Success's share and the data's age."""
    page = _page()
    assert page.rows == [
        ("Success", "5", "50.0 %"),
        ("Pending", "3", "30.0 %"),
        ("Failed", "2", "20.0 %"),
    ]
    assert page.total == "10"
    assert page.completion == "50.0 %"
    assert page.age == "12 s ago"
    assert page.notices == {}
    assert page.refresh == "15"
    assert page.colours == {"Success": "c-ok", "Pending": "c-wait", "Failed": "c-bad"}


def test_large_counts_are_grouped_and_shares_never_round_up_to_all_or_none() -> None:
    """1,999 of 2,000 is 99.9 %, not 100 %; one task in thousands is shown as < 0.1 %."""
    page = _page(counts=(("Success", 1999), ("Pending", 0), ("Failed", 0), ("Retry", 1)))
    assert page.completion == "99.9 %"
    assert page.total == "2,000"
    assert page.rows[-1] == ("Retry", "1", "< 0.1 %")
    assert page.rows[1] == ("Pending", "0", "0.0 %")
    few = _page(counts=(("Success", 1), ("Failed", 5000)))
    assert few.completion == "< 0.1 %"


def test_an_empty_table_has_a_total_of_zero_and_no_completion() -> None:
    """With no tasks there is nothing to divide: the completion is a dash, not an error."""
    page = _page(counts=(("Success", 0), ("Pending", 0), ("Failed", 0)))
    assert page.total == "0"
    assert page.completion == "\u2013"
    assert [share for _, _, share in page.rows] == ["\u2013"] * 3


def test_unreachable_database_with_fresh_counts_warns_and_keeps_the_counts() -> None:
    """A failed collection within the staleness window: a notice with the reason, the counts
    still shown, and when they will be hidden."""
    page = _page(up=False, error="(2003) Can't connect", last_success=NOW - 30)
    assert page.notices.keys() == {"unreachable"}
    assert "The database could not be read. (2003) Can't connect" in page.notices["unreachable"]
    assert "from the last successful collection, 30 s ago" in page.notices["unreachable"]
    assert "hidden if none succeeds within 60 s" in page.notices["unreachable"]
    assert page.counts == {"Success": 5, "Pending": 3, "Failed": 2}


def test_stale_data_is_replaced_by_a_notice_and_the_age_stays() -> None:
    """Past the staleness window no counts are shown (as on /metrics), only why and since when."""
    page = _page(up=False, error="timeout", last_success=NOW - 600)
    assert page.notices.keys() == {"unreachable", "stale"}
    assert "Data is stale." in page.notices["stale"]
    assert "10 min ago, longer than the 60 s allowed" in page.notices["stale"]
    assert (page.rows, page.total, page.completion) == ([], None, None)
    assert "table" not in page.tags
    assert page.age == "10 min ago"


def test_before_the_first_collection_the_page_says_so() -> None:
    """No collection has succeeded yet: no counts, a notice, and 'never' as the age."""
    page = _page(counts=None, last_success=None, up=False)
    assert page.notices.keys() == {"stale"}
    assert "No successful collection yet" in page.notices["stale"]
    assert page.age == "never"
    assert page.rows == []


@pytest.mark.parametrize(
    ("interval", "refresh"), [(0.5, "5"), (15.0, "15"), (7.2, "8"), (600, "60")]
)
def test_page_refreshes_with_each_collection_within_bounds(interval: float, refresh: str) -> None:
    """The page reloads itself once per collection, but not faster than 5 s nor slower than 60 s."""
    assert _page(interval=interval).refresh == refresh


def test_other_statuses_and_an_empty_status_have_rows_too() -> None:
    """Statuses outside Success/Pending/Failed get rows; an empty status is shown as (empty)."""
    page = _page(counts=(("Success", 1), ("Pending", 0), ("Failed", 0), ("", 2), ("Retry", 1)))
    assert [status for status, _, _ in page.rows] == [
        "Success",
        "Pending",
        "Failed",
        "(empty)",
        "Retry",
    ]
    assert page.total == "4"
