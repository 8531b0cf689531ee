"""The example Prometheus configuration and alert rules under prometheus/, checked by promtool."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from testing.prometheus_example import CONFIG, RULES, RULES_TEST
from testing.prometheus_server import promtool


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_example_config_and_its_rules_pass_promtool_check() -> None:
    """`promtool check config` accepts the example, rule file included; `check rules` too."""
    config = _run("check", "config", str(CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout
    rules = _run("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in rules.stdout


def test_alert_unit_tests_pass() -> None:
    """`promtool test rules` runs every case of tasks_exporter.rules.test.yml successfully."""
    result = _run("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a unit test where it fires and one where it must stay silent."""
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for name in (rule["alert"] for rule in _alerts()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{name}: no case where it is silent"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_every_alert_says_how_bad_and_what_to_do(rule: dict[str, Any]) -> None:
    """Every alert waits (`for:`), has a severity, and a summary and description for a person."""
    assert rule.get("for"), "no for:"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert len(rule["annotations"]["summary"]) > 10
    assert len(rule["annotations"]["description"]) > 80
    assert 'job="tasks_exporter"' in rule["expr"]
