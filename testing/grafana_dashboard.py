"""Reading the Grafana dashboard under grafana/: its panels, their queries, and the queries with
the variables filled in as Grafana's Prometheus data source fills them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "grafana" / "dashboards" / "tasks_exporter.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALL = ".+"  # the allValue of the job and instance variables

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_RANGE = re.compile(r"\[([^\]]*)\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves too."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])
    return out


@dataclass(frozen=True)
class Query:
    panel: str  # the panel's title
    expr: str
    instant: bool  # a stat panel's current value, rather than a graph over time


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target["expr"], bool(target.get("instant")))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def selectors(expr: str) -> list[tuple[str, str]]:
    """Every series selector in a PromQL expression: (metric name, label matchers).

    A metric name without braces gives empty matchers; so does `{...}` without a name (the
    metric name is then a matcher). Enough PromQL for the dashboard's own queries.
    """
    found = [(m.group(1) or "", m.group(2)) for m in _SELECTOR.finditer(expr)]
    rest = _SELECTOR.sub(" ", _STRING.sub('""', expr))
    rest = _LABEL_LIST.sub(" ", _RANGE.sub(" ", rest))
    for m in _IDENTIFIER.finditer(rest):
        name = m.group(0)
        followed_by = rest[m.end() :].lstrip()[:1]
        if name in _KEYWORDS or followed_by == "(":  # a keyword, a function or an aggregation
            continue
        found.append((name, ""))
    return found


def ranges(expr: str) -> list[str]:
    """The contents of every `[...]` range (or subquery) in an expression."""
    return _RANGE.findall(_STRING.sub('""', expr))


def variables(text: str) -> set[str]:
    return set(_VARIABLE.findall(text))


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: one value of a multi-value variable, as it is
    written into a `=~"..."` matcher (the backslashes are PromQL string escapes)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(0), value)


def multi_value(values: list[str] | None) -> str:
    """A multi-value variable with 'All' (None) or the selected values, as Grafana fills it in."""
    if values is None:
        return ALL
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    expr: str, *, job: list[str] | None, instance: list[str] | None, rate_interval: str
) -> str:
    """The query as Grafana sends it: `$job` and `$instance` (All or values), and
    `$__rate_interval`. Any other variable left is an error."""
    filled = {
        "job": multi_value(job),
        "instance": multi_value(instance),
        "__rate_interval": rate_interval,
    }
    unknown = variables(expr) - filled.keys()
    if unknown:
        raise AssertionError(f"unknown variables {sorted(unknown)} in {expr}")
    return _VARIABLE.sub(lambda m: filled[m.group(1)], expr)
