"""The TOML file: the shipped file is valid, and every mistake is named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config, parse_config
from agent.errors import ConfigError
from tests.conftest import CONFIG

MINIMAL_ACTIONS: dict[str, Any] = {
    "restart": {"intent": "restart the service", "mutating": True},
    "start": {"intent": "start the service", "mutating": True},
    "stop": {"intent": "stop the service", "mutating": True},
    "collect_logs": {"intent": "show recent logs"},
    "inspect_resources": {"intent": "show memory and CPU usage"},
    "health_check": {"intent": "check if service is healthy"},
    "escalate": {},
    "none": {},
}


def _doc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"actions": dict(MINIMAL_ACTIONS), "services": {"svc": {"actions": []}}}
    doc.update(extra)
    return doc


def test_shipped_config_is_valid() -> None:
    """config/agent.toml as shipped passes validation."""
    config = load_config(CONFIG)
    assert config.checks.health and config.checks.anomaly and config.runbook


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_doc(schedule={"sweep_interval_seconds": 0}), "schedule.sweep_interval_seconds"),
        (_doc(schedule={"sweep_intervall": 5}), "schedule.sweep_intervall: Extra inputs"),
        (_doc(policy={"storm_share": 1.5}), "policy.storm_share"),
        (
            _doc(checks={"health": [{"name": "x", "target_label": "job"}]}),
            "checks.health[0].expr: required key is missing",
        ),
        (
            _doc(
                checks={
                    "anomaly": [
                        {
                            "name": "a",
                            "selector": "m",
                            "target_label": "n",
                            "baseline_window": "30 minutes",
                        }
                    ]
                }
            ),
            "checks.anomaly[0].baseline_window: must be a Prometheus duration",
        ),
        (
            _doc(runbook=[{"name": "r", "match": "(", "action": "restart"}]),
            "runbook[0].match: not a valid regular expression",
        ),
        (
            _doc(runbook=[{"name": "r", "match": "x", "action": "reboot"}]),
            "runbook[0].action: unknown action 'reboot'",
        ),
        (
            _doc(services={"svc": {"actions": ["nuke"]}}),
            "services.svc.actions: unknown action 'nuke'",
        ),
    ],
)
def test_mistakes_are_named(doc: dict[str, Any], expected: str) -> None:
    """Each mistake is reported with the path of the offending key."""
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "agent.toml")
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_missing_required_action_is_reported() -> None:
    """The catalogue must define every action the diagnosis can choose."""
    actions = dict(MINIMAL_ACTIONS)
    del actions["escalate"]
    with pytest.raises(ConfigError) as info:
        parse_config({"actions": actions, "services": {}}, "agent.toml")
    assert (
        "agent.toml: actions.escalate: the catalogue must define this action" in info.value.problems
    )


def test_missing_and_broken_files(tmp_path: Path) -> None:
    """A missing file and a file that is not TOML both give one clear line."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[schedule\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
