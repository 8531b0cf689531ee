"""The landing page at /: what a person without Grafana opens. Every database value is escaped."""

from __future__ import annotations

from exporter.collect import Snapshot

# The page runs no script and loads nothing: even an escaping bug could not execute anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)

# html.escape's replacements. The html module is not imported for them: it loads a table of
# 2,000 named entities (0.4 MiB of resident memory) that escaping never uses.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})


def escape(text: str) -> str:
    """Text made safe for HTML content and quoted attribute values, as html.escape does."""
    return text.translate(_ESCAPES)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:42rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .9rem;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{text-align:left}
.notice{padding:.6rem .9rem;border-radius:4px;background:#fdecea;border:1px solid #f5c2c0}
.ok{color:#2e7d32}.muted{color:#666}code{background:#f4f4f4;padding:0 .2rem}
"""


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    return f"{s // 3600} h {s % 3600 // 60} min ago"


def render(
    snapshot: Snapshot, now: float, *, version: str, telemetry_path: str, source: str
) -> bytes:
    counts = snapshot.fresh_counts(now)
    age = snapshot.age(now)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv=refresh content="{max(5, int(snapshot.interval))}">',
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>tasks_exporter</title><style>{_STYLE}</style></head><body>",
        "<h1>tasks_exporter</h1>",
        f"<p class=muted>version {escape(version)} &middot; {escape(source)}</p>",
    ]
    if not snapshot.up and snapshot.error:
        parts.append(
            f"<p class=notice role=alert><strong>The database could not be read.</strong> "
            f"{escape(snapshot.error)}</p>"
        )
    if counts is None:
        if snapshot.last_success is None:
            parts.append("<p class=notice role=alert>No successful collection yet.</p>")
        else:
            parts.append(
                f"<p class=notice role=alert><strong>Data is stale.</strong> The last successful"
                f" collection was {_age(age or 0)}, longer than the {snapshot.staleness:g} s"
                " allowed, so no counts are shown.</p>"
            )
    else:
        total = sum(n for _, n in counts)
        rows = "".join(
            f"<tr><td>{escape(status) if status else '<em>(empty)</em>'}</td>"
            f"<td class=n>{n:,}</td></tr>"
            for status, n in counts
        )
        parts.append(
            f"<table><thead><tr><th>Status</th><th>Tasks</th></tr></thead><tbody>{rows}</tbody>"
            f"<tfoot><tr><th>Total</th><td class=n>{total:,}</td></tr></tfoot></table>"
        )
        parts.append(
            f"<p class=ok>Last successful collection {_age(age or 0)};"
            f" refreshed every {snapshot.interval:g} s.</p>"
        )
    parts.append(
        f'<p><a href="{escape(telemetry_path)}">Metrics</a> &middot; '
        '<a href="/-/healthy">Health</a> &middot; <a href="/-/ready">Readiness</a></p>'
        "</body></html>"
    )
    return "".join(parts).encode("utf-8")
