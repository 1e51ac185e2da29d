"""The alerting rules for the agent itself (config/prometheus-rules.yml): every rule is a
page a human can act on, reads only metrics the agent exports, and is unit-tested by
promtool (tests/rules/) both firing and quiet. `make test` runs promtool itself."""

from __future__ import annotations

import re
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric

from agent.metrics import AgentMetrics
from agent.sweep.alerts import is_own_alert
from tests.conftest import REPO

RULES = REPO / "config" / "prometheus-rules.yml"
TESTS = sorted((REPO / "tests" / "rules").glob("*.yml"))
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
}


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _exported() -> set[str]:
    names = set()
    families: list[Metric] = list(AgentMetrics().registry.collect())
    for family in families:
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
    return names


def test_every_rule_is_a_page_a_human_can_act_on() -> None:
    """Each alert has a severity (critical or warning), a summary and a runbook line, and
    its name marks it as the agent's own (the agent never works on it)."""
    rules = _rules()
    assert len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "runbook"}, rule["alert"]
        assert is_own_alert(rule["alert"]), rule["alert"]


def test_every_rule_reads_metrics_the_agent_exports() -> None:
    """No rule watches a series the agent does not export (a typo would never fire)."""
    exported = _exported()
    for rule in _rules():
        used = set(re.findall(r"devops_agent_[a-z_]+", rule["expr"]))
        assert used <= exported, (rule["alert"], sorted(used - exported))


def test_every_rule_is_tested_firing_and_quiet() -> None:
    """Every rule of the file has a promtool test where it fires and one where it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        document = yaml.safe_load(path.read_text())
        assert "../../config/prometheus-rules.yml" in document["rule_files"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names - firing == set(), "never tested firing"
    assert names - quiet == set(), "never tested quiet"
