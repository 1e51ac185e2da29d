"""Health and anomaly checks: PromQL built from config, results turned into findings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.config import AnomalyCheck, HealthCheck, Severity
from agent.sweep.checks import (
    MemoryFailing,
    admit,
    anomaly_query,
    findings_from_vector,
    plan_failing,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HEALTH = HealthCheck(name="Down", expr="up == 0", target_label="job", severity=Severity.critical)


def _anomaly(**kw: Any) -> AnomalyCheck:
    base: dict[str, Any] = {"name": "Mem", "selector": "mem_bytes", "target_label": "name"}
    return AnomalyCheck.model_validate(base | kw)


@pytest.mark.parametrize(
    ("direction", "must_contain"),
    [
        ("up", ["> 3", ">= 1e+06"]),
        ("down", ["< -3", "<= -1e+06"]),
        ("both", ["abs(", "> 3", ">= 1e+06"]),
    ],
)
def test_anomaly_query_has_threshold_and_minimum_change(
    direction: str, must_contain: list[str]
) -> None:
    """The query filters on the z-score and the absolute change, computed in Prometheus."""
    query = anomaly_query(_anomaly(direction=direction, min_abs_change=1e6, z_threshold=3))
    assert "avg_over_time(mem_bytes[30m])" in query
    assert "stddev_over_time(mem_bytes[30m])" in query
    for part in must_contain:
        assert part in query


def _parse(result: list[Any], check: HealthCheck | AnomalyCheck = HEALTH) -> Any:
    return findings_from_vector(
        result, check, now=NOW, target_labels=["service", "job"], volatile_labels=["__name__"]
    )


def test_every_series_is_a_finding() -> None:
    """Each returned series becomes one finding with the check's name and severity."""
    result = [
        {"metric": {"__name__": "up", "job": "a"}, "value": [1.0, "0"]},
        {"metric": {"__name__": "up", "job": "b"}, "value": [1.0, "0"]},
    ]
    parsed = _parse(result)
    assert [f.target for f in parsed.findings] == ["a", "b"]
    assert {f.kind for f in parsed.findings} == {"health"}
    assert {f.severity for f in parsed.findings} == {Severity.critical}
    assert len({f.fingerprint for f in parsed.findings}) == 2


@pytest.mark.parametrize(
    "series",
    [None, "x", {"value": [1, "0"]}, {"metric": "nope", "value": [1, "0"]}],
)
def test_malformed_series_are_counted(series: Any) -> None:
    """A series without a label map yields no finding and is counted."""
    parsed = _parse([series])
    assert parsed.findings == [] and parsed.malformed == 1


def test_series_without_value_still_counts() -> None:
    """A series whose value is missing or garbled is still a finding, with no value."""
    [finding] = _parse([{"metric": {"job": "a"}, "value": "garbage"}]).findings
    assert finding.value is None


def test_anomaly_finding_carries_z_score() -> None:
    """Anomaly findings are of kind anomaly and note the z-score."""
    [finding] = _parse([{"metric": {"name": "svc"}, "value": [1, "4.5"]}], _anomaly()).findings
    assert finding.kind == "anomaly" and finding.target == "svc"
    assert finding.annotations["z_score"] == "4.50"


def _admit(pending: MemoryFailing, findings: list[Any], at: datetime) -> tuple[Any, Any]:
    since = pending.track_failing(
        {"health:Down": [f.fingerprint for f in findings]}, ["health:Down"], at
    )
    return admit(findings, since["health:Down"], 60, at)


def test_pending_checks_wait_for_duration_and_forget_clean_series() -> None:
    """A series must fail on consecutive sweeps for for_seconds; a clean sweep resets it."""
    pending = MemoryFailing()
    [finding] = _parse([{"metric": {"job": "a"}, "value": [1, "0"]}]).findings
    ready, waiting = _admit(pending, [finding], NOW)
    assert ready == [] and [w.first_seen for w in waiting] == [NOW]
    ready, waiting = _admit(pending, [finding], NOW + timedelta(seconds=61))
    assert waiting == [] and ready[0].first_seen == NOW
    _admit(pending, [], NOW + timedelta(seconds=62))  # clean sweep
    ready, _ = _admit(pending, [finding], NOW + timedelta(seconds=63))
    assert ready == []


@pytest.mark.parametrize(
    ("failing", "known", "add", "drop"),
    [
        # a new series starts now; a kept one keeps its start
        ({"c": ["old", "new"]}, ["c", "d"], [("c", "new")], []),
        # a check that ran forgets what no longer fails
        ({"c": []}, ["c", "d"], [], [("c", "old")]),
        # a check that could not run (absent from failing) forgets nothing
        ({}, ["c", "d"], [], []),
        # a check no longer configured is forgotten whole
        ({}, ["d"], [], [("c", "old")]),
    ],
)
def test_failing_plan(
    failing: dict[str, list[str]],
    known: list[str],
    add: list[tuple[str, str]],
    drop: list[tuple[str, str]],
) -> None:
    """What the kept failing series become after a sweep, check by check."""
    kept = {"c": {"old": NOW - timedelta(seconds=30)}}
    plan = plan_failing(kept, failing, known, NOW)
    assert (plan.add, plan.drop) == (add, drop)
    if "old" in failing.get("c", []):
        assert plan.since["c"] == {"old": NOW - timedelta(seconds=30), "new": NOW}
