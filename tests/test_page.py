"""The landing page as rendered from a snapshot (pure): figures, notices, refresh."""

from __future__ import annotations

import pytest

from exporter.collect import Snapshot
from exporter.web.history import Point
from exporter.web.page import render
from testing.landing_page import Landing, read

NOW = 10_000.0


def _snapshot(**kwargs: object) -> Snapshot:
    base: dict[str, object] = {
        "interval": 15.0,
        "staleness": 60.0,
        "counts": (("Success", 5), ("Pending", 3), ("Failed", 2)),
        "last_success": NOW - 12,
        "up": True,
    }
    base.update(kwargs)
    return Snapshot(**base)  # type: ignore[arg-type]


def _page(**kwargs: object) -> Landing:
    html = render(_snapshot(**kwargs), NOW, version="1.2.3", telemetry_path="/metrics", source="db")
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
    assert "The database could not be read. timeout" in page.notices["unreachable"]
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


def _history(*points: tuple[float, dict[str, int]]) -> tuple[Point, ...]:
    return tuple(Point(at, tuple(counts.items())) for at, counts in points)


def _charted(history: tuple[Point, ...], **kwargs: object) -> Landing:
    return read(_charted_html(history, **kwargs))


def _charted_html(history: tuple[Point, ...], **kwargs: object) -> str:
    base: dict[str, object] = {
        "interval": 15.0,
        "staleness": 60.0,
        "counts": history[-1].counts if history else (("Success", 1),),
        "last_success": NOW - 12,
        "up": True,
    }
    base.update(kwargs)
    html = render(
        Snapshot(**base),  # type: ignore[arg-type]
        NOW,
        version="1.2.3",
        telemetry_path="/metrics",
        source="db",
        history=history,
    )
    return html.decode("utf-8")


def test_oldest_pending_task_shows_how_long_it_has_waited_and_since_when() -> None:
    """With a time column, a card says how long the oldest Pending task has waited, and since
    when in UTC (the date only when not today); other statuses' oldest times are not shown."""
    page = _page(oldest=(("Success", NOW - 90_000), ("Pending", NOW - 7_530)))
    assert page.oldest == "2 h 5 min"
    assert page.oldest_detail == "waiting since 00:41:10 UTC"  # today: the time is enough
    yesterday = _page(oldest=(("Pending", NOW - 86_400),))
    assert yesterday.oldest_detail == "waiting since 1969-12-31 02:46:40 UTC"
    assert _page(oldest=(("Pending", NOW - 45),)).oldest == "45 s"
    assert _page(oldest=(("Pending", NOW - 3 * 86_400 - 7_200),)).oldest == "3 d 2 h"


def test_oldest_card_says_none_waiting_or_nothing_known() -> None:
    """No Pending task: 'none'; Pending tasks whose times are all NULL: a dash and why; no time
    column configured: no card at all; stale data: no card either."""
    none = _page(oldest=(("Success", NOW - 50),), counts=(("Success", 5), ("Pending", 0)))
    assert (none.oldest, none.oldest_detail) == ("none", "no task is waiting")
    unknown = _page(oldest=(("Success", NOW - 50),))
    assert unknown.oldest == "\u2013"
    assert unknown.oldest_detail == "the waiting tasks have no time recorded"
    assert _page().oldest is None
    stale = _page(oldest=(("Pending", NOW - 50),), up=False, last_success=NOW - 600)
    assert stale.oldest is None


def test_a_task_time_in_the_future_waits_for_zero_seconds() -> None:
    """A clock ahead of the exporter's shows as 0 s, never as a negative age."""
    assert _page(oldest=(("Pending", NOW + 30),)).oldest == "0 s"


def test_chart_stacks_success_at_the_bottom_and_pending_on_top() -> None:
    """The chart's areas stack Success first, Pending last, each status's count on top of the
    ones below, from the first point (left edge) to the last (right edge); the count axis has
    round steps up to just above the highest total, the time axis round times in UTC."""
    history = _history(
        (7_200.0, {"Success": 0, "Pending": 4, "Failed": 0}),
        (9_000.0, {"Success": 3, "Pending": 3, "Failed": 1, "Retry": 1}),
        (10_800.0, {"Success": 10, "Pending": 2, "Failed": 2}),
    )
    page = _charted(history)
    assert [(a.status, a.colour) for a in page.chart] == [
        ("Success", "c-ok"),
        ("Failed", "c-bad"),
        ("Retry", "c-o1"),
        ("Pending", "c-wait"),
    ]
    # Plot area: x from 48 to 712, y from 196 (zero) up to 10 (the top, 15 tasks).
    assert page.chart_labels == ["0", "5", "10", "15", "02:00", "02:15", "02:30", "02:45", "03:00"]

    def y(n: int) -> float:
        return round(196 - n * 186 / 15, 1)

    success, failed, retry, pending = page.chart
    assert success.upper == [(48.0, y(0)), (380.0, y(3)), (712.0, y(10))]
    assert success.lower == [(712.0, y(0)), (380.0, y(0)), (48.0, y(0))]
    assert failed.upper == [(48.0, y(0)), (380.0, y(4)), (712.0, y(12))]
    assert retry.upper == [(48.0, y(0)), (380.0, y(5)), (712.0, y(12))]
    assert pending.upper == [(48.0, y(4)), (380.0, y(8)), (712.0, y(14))]
    assert pending.lower == list(reversed(retry.upper))
    assert "svg" in page.tags
    assert "script" not in page.tags


def test_chart_waits_for_two_points_and_hides_with_stale_data() -> None:
    """One point is no chart, but a sentence on how it fills in; stale data shows no chart."""
    one = _charted(_history((NOW - 12, {"Success": 1})))
    assert one.chart == []
    assert "svg" not in one.tags
    html = _charted_html(_history((NOW - 12, {"Success": 1})))
    assert "The chart of the counts fills in as collections succeed" in html
    two = _history((NOW - 40, {"Success": 1}), (NOW - 12, {"Success": 2}))
    assert len(_charted(two).chart) == 1
    stale = _charted(two, up=False, last_success=NOW - 600)
    assert stale.chart == []
    assert "svg" not in stale.tags


def test_chart_shorter_than_a_minute_labels_both_ends_to_the_second() -> None:
    """Just after start, with no whole minute inside, the time axis names its two ends."""
    page = _charted(_history((3_601.0, {"Success": 1}), (3_640.0, {"Success": 3})))
    assert page.chart_labels == ["0", "1", "2", "3", "01:00:01", "01:00:40"]


def test_chart_status_names_are_text() -> None:
    """A status made of markup is an area's tooltip text, and creates no element."""
    hostile = "<img src=x onerror=alert(1)>"
    page = _charted(_history((NOW - 40, {hostile: 1}), (NOW - 12, {hostile: 2})))
    assert [a.status for a in page.chart] == [hostile]
    assert "img" not in page.tags


def test_window_start_is_named_above_the_chart() -> None:
    """With a counting window, the page says since when the tasks are counted."""
    page = _charted(_history((NOW - 40, {"Success": 1})), window_start=3_600.0)
    assert page.window == "Counting the tasks of the window, since 1970-01-01 01:00:00 UTC."
    assert _charted(_history((NOW - 40, {"Success": 1}))).window is None


@pytest.mark.parametrize(
    ("highest", "steps"),
    [
        (0, ["0", "1"]),
        (120, ["0", "50", "100", "150"]),
        (2_000, ["0", "500", "1,000", "1,500", "2,000"]),
    ],
)
def test_count_axis_has_round_steps_just_above_the_highest_total(
    highest: int, steps: list[str]
) -> None:
    """The count axis goes up in round steps to the first one at or above the highest total,
    so the chart uses its height; an empty table still has an axis."""
    page = _charted(_history((3_600.0, {"Success": highest}), (7_200.0, {"Success": highest})))
    assert page.chart_labels[: len(steps) + 1] == [*steps, "01:00"]


def test_landing_page_escapes_database_values() -> None:
    """A status holding HTML or script is shown as text on the landing page."""
    hostile = '<script>alert("x")</script>&'
    page = render(
        _snapshot(counts=((hostile, 1),)),
        NOW,
        version="1",
        telemetry_path="/metrics",
        source="<b>",
    ).decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "<b>" not in page
