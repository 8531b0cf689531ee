"""The counts of the last hours, kept in memory for the landing page's chart."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from exporter.collect import Snapshot

# Six hours at one point a minute: a working morning or afternoon on one small chart. At most
# max_statuses counts per point, so a few hundred kilobytes at the very worst.
SPAN = 6 * 3600.0
POINTS = 360


@dataclass(frozen=True)
class Point:
    """The counts per status as of one successful collection."""

    at: float  # unix time the collection finished
    counts: tuple[tuple[str, int], ...]


class History:
    """A bounded ring of points, at most one per `span / points` seconds.

    record() is called by the collection thread after each collection; points() by the page.
    Points are kept a step apart; until the last one is a step after the one before it, each
    collection replaces it, so the last point is always the latest collection and the oldest is
    about `span` (plus a step) before it.
    """

    def __init__(self, *, span: float = SPAN, points: int = POINTS) -> None:
        self._step = span / points
        self._points: deque[Point] = deque(maxlen=points + 1)  # + the point being replaced
        self._lock = threading.Lock()

    def record(self, snapshot: Snapshot) -> None:
        """Keep the counts of a snapshot from a successful collection not yet recorded."""
        if not snapshot.up or snapshot.counts is None or snapshot.last_success is None:
            return
        point = Point(snapshot.last_success, snapshot.counts)
        with self._lock:
            if self._points and point.at <= self._points[-1].at:
                return
            if len(self._points) >= 2 and self._points[-1].at - self._points[-2].at < self._step:
                self._points[-1] = point  # the last point is less than a step on: the newer wins
            else:
                self._points.append(point)

    def points(self) -> tuple[Point, ...]:
        with self._lock:
            return tuple(self._points)
