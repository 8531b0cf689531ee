"""The landing page at /: what a person without Grafana opens. Every database value is escaped."""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Sequence

from exporter.collect import Snapshot
from exporter.web import chart
from exporter.web.history import POINTS, SPAN, Point

# The page runs no script and loads nothing: even an escaping bug could not execute anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)

# The status whose share of the total is the completion ratio; the Grafana dashboard and the
# alert rules use the same name (the exporter's default expected statuses).
SUCCESS_STATUS = "Success"
# The status whose oldest task is the waiting time shown, and drawn on top of the chart.
PENDING_STATUS = "Pending"
# Colours that mean what they say; statuses outside this map get neutral hues in turn.
_STATUS_CLASS = {"Success": "ok", "Failed": "bad", "Pending": "wait"}
_OTHER_CLASSES = ("o1", "o2", "o3", "o4")


def escape(text: str) -> str:
    """Text made safe for HTML content and quoted attribute values."""
    return html.escape(text, quote=True)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:54rem;padding:0 1rem;color:#222;
overflow-wrap:anywhere}
h1{margin-bottom:.2rem}.muted{color:#666}code{background:#f4f4f4;padding:0 .2rem}
.notice{padding:.6rem .9rem;border-radius:4px;margin:1rem 0}
.bad{background:#fdecea;border:1px solid #e0a09c}.warn{background:#fff4e0;border:1px solid #e8c07a}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{flex:1 1 9rem;border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem}
.card .v{font-size:1.8rem;font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .k,.card .s{color:#555;font-size:.9rem}
.bar{display:flex;height:.9rem;border-radius:4px;overflow:hidden;background:#eee}
table{border-collapse:collapse;margin:1rem 0;width:100%}
td,th{padding:.35rem .9rem;border-bottom:1px solid #ddd;text-align:left}
.n{text-align:right;font-variant-numeric:tabular-nums}
.bar span{background:var(--c)}
#counts tbody td:first-child::before{content:"";display:inline-block;width:.7rem;height:.7rem;
border-radius:50%;margin-right:.5rem;background:var(--c)}
.c-ok{--c:#2e7d32}.c-bad{--c:#c62828}.c-wait{--c:#8e8e8e}
#chart{width:100%;height:auto;display:block;margin:.4rem 0 1.2rem}
#chart text{font-size:12px;fill:#555}#chart line{stroke:#e4e4e4}
#chart path{fill:var(--c);fill-opacity:.8;stroke:var(--c)}
h2{font-size:1.1rem;margin:1.6rem 0 .2rem}
.legend{margin:0}.legend span{margin-right:.8rem;white-space:nowrap}
.legend i{display:inline-block;width:.7rem;height:.7rem;margin-right:.3rem;background:var(--c);
border-radius:2px}
.c-o1{--c:#1565c0}.c-o2{--c:#6a1b9a}.c-o3{--c:#00838f}.c-o4{--c:#8d6e63}
"""


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _age(seconds: float) -> str:
    return f"{_duration(seconds)} ago"


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _percent(part: int, whole: int) -> str:
    """A share rounded down to 0.1 %, so that 100 % means all and 0 % means none."""
    tenths = part * 1000 // whole
    return "&lt; 0.1 %" if part and not tenths else f"{tenths / 10:.1f} %"


def _classes(counts: tuple[tuple[str, int], ...]) -> list[str]:
    others = itertools.cycle(_OTHER_CLASSES)
    return [_STATUS_CLASS.get(status) or next(others) for status, _ in counts]


def _oldest(snapshot: Snapshot, now: float) -> str:
    """A card with how long the oldest Pending task has waited; none without a time_column."""
    oldest = snapshot.fresh_oldest(now)
    if oldest is None:
        return ""
    since = dict(oldest).get(PENDING_STATUS)
    if since is not None:
        value = _duration(now - since)
        same_day = time.gmtime(since)[:3] == time.gmtime(now)[:3]
        at = time.strftime("%H:%M:%S UTC", time.gmtime(since)) if same_day else _utc(since)
        detail = f"waiting since {at}"
    elif dict(snapshot.counts or ()).get(PENDING_STATUS):
        value, detail = "&ndash;", "the waiting tasks have no time recorded"
    else:
        value, detail = "none", "no task is waiting"
    return (
        f"<div class=card><div class=k>Oldest {escape(PENDING_STATUS)} task</div>"
        f"<div class=v id=oldest>{value}</div><div class=s>{detail}</div></div>"
    )


_EVERY = "one point a minute" if SPAN / POINTS == 60 else f"one point every {SPAN / POINTS:g} s"


def _chart(snapshot: Snapshot, history: Sequence[Point], now: float) -> str:
    """The counts of the last hours as a chart, once two points are kept; hidden when stale."""
    if snapshot.fresh_counts(now) is None:
        return ""
    heading = "<h2>The last hours</h2>"
    if snapshot.window_start is not None:
        heading += (
            f"<p class=muted id=window>Counting the tasks of the window, since"
            f" {_utc(snapshot.window_start)}.</p>"
        )
    if len(history) < 2:
        return (
            f"{heading}<p class=muted id=chart-empty>The chart of the counts fills in as"
            f" collections succeed: {_EVERY}, the last {SPAN / 3600:g} hours, kept in memory"
            " since the exporter started.</p>"
        )
    order = chart.stack_order(history, SUCCESS_STATUS, PENDING_STATUS)
    latest = dict(history[-1].counts)
    classes = dict(zip(order, _classes(tuple((s, latest.get(s, 0)) for s in order)), strict=True))
    legend = "".join(
        f"<span class=c-{classes[s]}><i></i>{escape(s) if s else '<em>(empty)</em>'}</span>"
        for s in reversed(order)
    )
    drawing = chart.svg(history, order, lambda s: f"c-{classes[s]}", escape)
    return (
        f"{heading}{drawing}<p class=legend>{legend}</p><p class=muted>Tasks per status,"
        f" {_EVERY} since {_utc(history[0].at)}; times in UTC.</p>"
    )


def _counts(counts: tuple[tuple[str, int], ...]) -> tuple[str, str]:
    """The total and completion cards; the bar of shares and the table of counts per status."""
    total = sum(n for _, n in counts)
    done = dict(counts).get(SUCCESS_STATUS, 0)
    if total:
        completion = _percent(done, total)
        detail = f"{done:,} of {total:,} tasks are {escape(SUCCESS_STATUS)}"
    else:
        completion, detail = "&ndash;", "no tasks in the table"
    classes = _classes(counts)
    bar = "".join(
        f'<span class=c-{c} style="width:{n * 100 / total:.3f}%"></span>'
        for (_, n), c in zip(counts, classes, strict=True)
        if total and n
    )
    rows = "".join(
        f"<tr class=c-{c}><td>{escape(status) if status else '<em>(empty)</em>'}</td>"
        f"<td class=n>{n:,}</td><td class=n>{_percent(n, total) if total else '&ndash;'}</td></tr>"
        for (status, n), c in zip(counts, classes, strict=True)
    )
    return (
        f"<div class=card><div class=k>Total tasks</div><div class=v id=total>{total:,}</div>"
        f"<div class=s>{len(counts)} status{'' if len(counts) == 1 else 'es'}</div></div>"
        f"<div class=card><div class=k>Completed</div><div class=v id=completion>{completion}</div>"
        f"<div class=s>{detail}</div></div>"
    ), (
        f"<div class=bar aria-hidden=true>{bar}</div>"
        "<table id=counts><thead><tr><th>Status</th><th class=n>Tasks</th><th class=n>Share</th>"
        f"</tr></thead><tbody>{rows}</tbody><tfoot><tr><th>Total</th>"
        f"<td class=n>{total:,}</td><td class=n>{'100.0 %' if total else '&ndash;'}</td></tr>"
        "</tfoot></table>"
    )


def _notices(snapshot: Snapshot, now: float, stale: bool) -> str:
    age = snapshot.age(now)
    parts = []
    if not snapshot.up and snapshot.error:
        if stale:
            consequence = ""
        else:
            consequence = (
                f"<br>The counts below are from the last successful collection, {_age(age or 0)};"
                f" they are hidden if none succeeds within {snapshot.staleness:g} s of it."
            )
        parts.append(
            f"<p class='notice {'bad' if stale else 'warn'}' role=alert id=unreachable>"
            f"<strong>The database could not be read.</strong> {escape(snapshot.error)}"
            f"{consequence}</p>"
        )
    if stale:
        if snapshot.last_success is None:
            text = "<strong>No successful collection yet</strong>, so no counts are shown."
        else:
            text = (
                f"<strong>Data is stale.</strong> The last successful collection was"
                f" {_age(age or 0)}, longer than the {snapshot.staleness:g} s allowed,"
                " so no counts are shown."
            )
        parts.append(f"<p class='notice bad' role=alert id=stale>{text}</p>")
    return "".join(parts)


def refresh_seconds(snapshot: Snapshot) -> int:
    """How often the page reloads itself: every collection, within 5 s to 60 s."""
    return min(60, max(5, math.ceil(snapshot.interval)))


def render(
    snapshot: Snapshot,
    now: float,
    *,
    version: str,
    telemetry_path: str,
    source: str,
    history: Sequence[Point] = (),
) -> bytes:
    counts = snapshot.fresh_counts(now)
    age = snapshot.age(now)
    refresh = refresh_seconds(snapshot)
    if snapshot.last_success is None:
        last = "<div class=v id=age>never</div><div class=s>no collection has succeeded</div>"
    else:
        at = _utc(snapshot.last_success)
        last = (
            f"<div class=v id=age>{_age(age or 0)}</div>"
            f"<div class=s>at {at}; collected every {snapshot.interval:g} s</div>"
        )
    cards, table = _counts(counts) if counts is not None else ("", "")
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv=refresh content="{refresh}">'
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>tasks_exporter</title><style>{_STYLE}</style></head><body>"
        "<h1>Tasks</h1>"
        f"<p class=muted>tasks_exporter {escape(version)} &middot; {escape(source)}</p>"
        f"{_notices(snapshot, now, counts is None)}"
        f"<div class=cards>{cards}{_oldest(snapshot, now)}"
        "<div class=card><div class=k>Last successful collection</div>"
        f"{last}</div></div>{_chart(snapshot, history, now)}{table}"
        f"<p class=muted>This page refreshes itself every {refresh} s. "
        f'<a href="{escape(telemetry_path)}">Metrics</a> &middot; '
        '<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>'
        "</body></html>"
    )
    return page.encode("utf-8")
