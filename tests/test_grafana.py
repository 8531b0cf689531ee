"""The Grafana dashboard and provisioning files under grafana/ follow CONVENTIONS.md."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from testing.grafana_dashboard import (
    DASHBOARD,
    DATASOURCE,
    REPO,
    interpolate,
    load,
    panels,
    queries,
    ranges,
    regex_escape,
    selectors,
)
from testing.prometheus_example import CONFIG, JOB

UID = "tasks-exporter"  # links and provisioning rely on it: never change it
PROVISIONING = REPO / "grafana" / "provisioning"
# Grafana's named reds and greens, and greys (equal red, green and blue) for "neutral".
REDS = {"red", "dark-red", "semi-dark-red", "light-red"}
GREENS = {"green", "dark-green", "semi-dark-green", "light-green"}

DASH = load()
VISIBLE = [p for p in panels(DASH) if p["type"] != "row"]


def _walk(node: object, key: str) -> list[Any]:
    """Every value stored under `key`, anywhere in a JSON document."""
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for child in node.values() for v in _walk(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in _walk(child, key)]
    return []


def test_dashboard_has_a_stable_identity_and_a_recent_schema() -> None:
    """A fixed uid, no id (Grafana assigns it), a recent schemaVersion, no import placeholders."""
    assert DASH["uid"] == UID
    assert DASH["id"] is None
    assert DASH["schemaVersion"] >= 39
    assert DASH["title"]
    text = DASHBOARD.read_text(encoding="utf-8")
    assert "__inputs" not in DASH
    assert "${DS_" not in text


def test_variables_choose_the_data_source_then_job_and_instance() -> None:
    """A datasource variable of type prometheus; job and instance: multi, All meaning `.+`."""
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".+"
        assert f", {name})" in variable["query"]["query"]
    assert 'job=~"$job"' in variables["instance"]["query"]["query"]


def test_no_data_source_is_hard_coded() -> None:
    """Every data source reference in the file, panels and targets alike, is the variable."""
    references = _walk(DASH, "datasource")
    assert len(references) > 2 * len(VISIBLE)
    assert all(ref == DATASOURCE for ref in references), references


@pytest.mark.parametrize("panel", VISIBLE, ids=lambda p: p["title"])
def test_every_panel_has_title_description_unit_and_uses_the_variable(
    panel: dict[str, Any],
) -> None:
    """Title, a plain-language description, a unit, and the datasource variable, panel and
    targets."""
    assert panel["title"]
    assert len(panel.get("description", "")) > 40
    assert panel["fieldConfig"]["defaults"].get("unit")
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()


def test_rows_are_headings_only() -> None:
    """Rows have a title and no query of their own."""
    rows = [p for p in panels(DASH) if p["type"] == "row"]
    assert rows
    for row in rows:
        assert row["title"]
        assert "targets" not in row


@pytest.mark.parametrize("query", queries(DASH), ids=lambda q: q.panel)
def test_every_selector_has_job_and_instance(query: Any) -> None:
    """Each series selector filters on the job and instance variables."""
    found = selectors(query.expr)
    assert found
    for metric, matchers in found:
        assert 'job=~"$job"' in matchers, f"{metric} in {query.expr}"
        assert 'instance=~"$instance"' in matchers, f"{metric} in {query.expr}"


@pytest.mark.parametrize("query", queries(DASH), ids=lambda q: q.panel)
def test_every_range_is_the_rate_interval(query: Any) -> None:
    """rate(), increase(), deriv() and any other range use $__rate_interval, never a constant."""
    assert all(r == "$__rate_interval" for r in ranges(query.expr)), query.expr
    for function in ("rate(", "increase(", "deriv(", "delta("):
        if function in query.expr:
            assert "[$__rate_interval]" in query.expr, query.expr


def test_the_lint_catches_what_it_must() -> None:
    """The checks above fail on a bare metric, a missing instance, a constant range."""
    expr = 'sum(rate(a_total{job=~"$job"}[5m])) / b / c{job=~"$job", instance=~"$instance"}'
    assert selectors(expr) == [
        ("a_total", 'job=~"$job"'),
        ("c", 'job=~"$job", instance=~"$instance"'),
        ("b", ""),
    ]
    assert ranges(expr) == ["5m"]
    assert selectors('sum by (status) (x{status="by (y)"}) and on (job) time()') == [
        ("x", 'status="by (y)"')
    ]


def test_status_colours_mean_what_they_say() -> None:
    """Wherever statuses are shown: Failed red, Success green, Pending a neutral grey."""
    by_status = [
        p for p in VISIBLE if any(t.get("legendFormat") == "{{status}}" for t in p["targets"])
    ]
    assert len(by_status) >= 3
    for panel in by_status:
        colours = {
            o["matcher"]["options"]: prop["value"]["fixedColor"]
            for o in panel["fieldConfig"]["overrides"]
            if o["matcher"]["id"] == "byName"
            for prop in o["properties"]
            if prop["id"] == "color" and prop["value"]["mode"] == "fixed"
        }
        assert colours["Failed"] in REDS, panel["title"]
        assert colours["Success"] in GREENS, panel["title"]
        grey = colours["Pending"].lstrip("#")
        assert len(grey) == 6, panel["title"]
        assert grey[0:2] == grey[2:4] == grey[4:6], panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    """Every panel lies within Grafana's 24 columns, and no two cover the same cell."""
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(DASH):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_variables_are_filled_in_as_grafana_does() -> None:
    """All is `.+`; chosen values are regex-escaped (PromQL-quoted), several are alternatives."""
    expr = 'up{job=~"$job", instance=~"$instance"}[$__rate_interval]'
    assert interpolate(expr, job=None, instance=None, rate_interval="1m") == (
        'up{job=~".+", instance=~".+"}[1m]'
    )
    filled = interpolate(expr, job=["a"], instance=["127.0.0.1:9775", "b"], rate_interval="4s")
    assert filled == r'up{job=~"a", instance=~"(127\\.0\\.0\\.1:9775|b)"}[4s]'
    assert regex_escape("a+b") == r"a\\+b"
    with pytest.raises(AssertionError, match="__interval"):
        interpolate("x[$__interval]", job=None, instance=None, rate_interval="1m")


def test_provisioning_files_point_grafana_at_prometheus_and_the_dashboard() -> None:
    """A Prometheus data source whose scrape interval is the example's, and a file provider."""
    datasources = yaml.safe_load(
        (PROVISIONING / "datasources" / "tasks_exporter.yaml").read_text(encoding="utf-8")
    )
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")
    prometheus = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == JOB]
    assert source["jsonData"]["timeInterval"] == job["scrape_interval"]

    dashboards = yaml.safe_load(
        (PROVISIONING / "dashboards" / "tasks_exporter.yaml").read_text(encoding="utf-8")
    )
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
