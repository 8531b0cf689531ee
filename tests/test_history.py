"""The counts kept for the landing page's chart: bounded, one point a step, successes only."""

from __future__ import annotations

from exporter.collect import Snapshot
from exporter.web.history import History


def _ok(at: float, success: int) -> Snapshot:
    return Snapshot(
        interval=15.0, staleness=60.0, counts=(("Success", success),), last_success=at, up=True
    )


def test_history_keeps_one_point_a_step_the_newest_replacing_the_last() -> None:
    """Collections every 15 s with a 60 s step: the chart gets a point per minute, and its last
    point is always the latest collection."""
    history = History(span=600, points=10)
    for i in range(10):  # 0 s .. 135 s
        history.record(_ok(1000 + 15 * i, i))
    assert [(p.at, dict(p.counts)["Success"]) for p in history.points()] == [
        (1000, 0),
        (1060, 4),
        (1120, 8),
        (1135, 9),
    ]


def test_history_is_bounded_to_its_span() -> None:
    """A day of collections every second leaves at most points + 1 points, the oldest about one
    span before the newest."""
    history = History(span=600, points=10)
    for i in range(86_400):
        history.record(_ok(float(i), i))
    points = history.points()
    assert len(points) == 11
    assert points[-1].at == 86_399
    assert points[-1].at - points[0].at <= 600 + 60


def test_failed_and_repeated_collections_add_no_point() -> None:
    """A failed collection keeps the previous counts in its snapshot: they are not a new point;
    neither is the same snapshot recorded twice."""
    history = History(span=600, points=10)
    ok = _ok(1000, 5)
    history.record(ok)
    history.record(ok)
    history.record(Snapshot(interval=15.0, staleness=60.0, counts=ok.counts, last_success=1000))
    history.record(Snapshot(interval=15.0, staleness=60.0))
    assert [p.at for p in history.points()] == [1000]
