"""The landing page's chart of the last hours: stacked areas of the counts per status, as inline
SVG drawn on the server (the page runs no script). Status names only ever appear escaped."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from exporter.web.history import Point

WIDTH, HEIGHT = 720, 220
# Room for the axis labels: left for the counts, bottom for the times.
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24
# Spacing of the time axis's labels: the first that gives at most five of them.
_TICKS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)


def _nice_ceiling(n: int) -> int:
    """The smallest of 1, 2, 5 times a power of ten that is at least n (and at least 1)."""
    magnitude = 1
    while True:
        for m in (1, 2, 5):
            if m * magnitude >= n:
                return m * magnitude
        magnitude *= 10


def _clock(at: float, *, seconds: bool = False) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.gmtime(at))


def _anchor(x: float) -> str:
    """Labels at the plot's edges are aligned inwards, so that none is cut off."""
    if x < LEFT + 20:
        return "start"
    return "end" if x > WIDTH - RIGHT - 20 else "middle"


def stack_order(points: Sequence[Point], first: str, last: str) -> list[str]:
    """Every status seen, in the newest point's order, `first` at the bottom, `last` on top."""
    names: dict[str, None] = {}
    for point in reversed(points):
        names.update((s, None) for s, _ in point.counts if s not in names)
    order = list(names)
    if first in names:
        order = [first, *(s for s in order if s != first)]
    if last in names:
        order = [*(s for s in order if s != last), last]
    return order


def svg(
    points: Sequence[Point],
    order: Sequence[str],
    css_class: Callable[[str], str],
    escape: Callable[[str], str],
) -> str:
    """Stacked areas, one per status of `order` (bottom first), from the first point to the last.

    Needs at least two points. Each area carries the status as its tooltip (a <title>).
    """
    start, end = points[0].at, points[-1].at
    span = max(end - start, 1.0)
    counts = [dict(p.counts) for p in points]
    highest = max(sum(c.values()) for c in counts)
    # Four or five round steps on the count axis, the top one at or just above the highest.
    every = _nice_ceiling(-(-highest // 4))
    top = max(every, -(-highest // every) * every)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: float) -> float:
        return LEFT + (at - start) * plot_w / span

    def y(n: float) -> float:
        return TOP + plot_h - n * plot_h / top

    below = [0] * len(points)
    areas = []
    for status in order:
        above = [b + c.get(status, 0) for b, c in zip(below, counts, strict=True)]
        if above != below:
            upper = " ".join(
                f"{x(p.at):.1f},{y(n):.1f}" for p, n in zip(points, above, strict=True)
            )
            lower = " ".join(
                f"{x(p.at):.1f},{y(n):.1f}"
                for p, n in zip(reversed(points), reversed(below), strict=True)
            )
            areas.append(
                f"<path class={css_class(status)} d='M{upper} L{lower} Z'>"
                f"<title>{escape(status) or '(empty)'}</title></path>"
            )
        below = above
    grid = "".join(
        f"<line x1={LEFT} x2={WIDTH - RIGHT} y1={y(n):.1f} y2={y(n):.1f}></line>"
        f"<text x={LEFT - 6} y={y(n) + 4:.1f} text-anchor=end>{n:,}</text>"
        for n in range(0, top + 1, every)
    )
    step = next((t for t in _TICKS if span / t <= 4), _TICKS[-1])
    first_tick = -(-start // step) * step
    ticks = "".join(
        f"<text x={x(t):.1f} y={HEIGHT - 6} text-anchor={_anchor(x(t))}>{_clock(t)}</text>"
        for t in range(int(first_tick), int(end) + 1, step)
    )
    if not ticks:  # less than a minute, between two whole minutes: label both ends
        ticks = (
            f"<text x={LEFT} y={HEIGHT - 6} text-anchor=start>{_clock(start, seconds=True)}</text>"
            f"<text x={WIDTH - RIGHT} y={HEIGHT - 6} text-anchor=end>"
            f"{_clock(end, seconds=True)}</text>"
        )
    label = (
        f"Tasks per status from {_clock(start)} to {_clock(end)} UTC,"
        f" {sum(counts[-1].values()):,} at the end"
    )
    return (
        f"<svg id=chart viewBox='0 0 {WIDTH} {HEIGHT}' role=img aria-label='{label}'>"
        f"<title>{label}</title><g class=grid>{grid}</g><g class=areas>{''.join(areas)}</g>"
        f"<g class=ticks>{ticks}</g></svg>"
    )
