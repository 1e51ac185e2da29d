"""Guardrail policy from a table of cases: every rule blocks, and a clean context passes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agent.config import Policy
from agent.guardrails.policy import GuardContext, check, is_storm

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
POLICY = Policy(
    action_cooldown_seconds=900,
    max_actions_per_target_per_hour=3,
    max_actions_per_hour=10,
    storm_share=0.5,
    storm_min_services=5,
)
CLEAN = GuardContext(
    action="restart",
    target="market-predictor",
    mutating=True,
    now=NOW,
    incident_opened_at=NOW - timedelta(seconds=30),
    dry_run=False,
    last_same_action_at=None,
    target_actions_last_hour=0,
    fleet_actions_last_hour=0,
    in_flight_for_target=False,
    breaker_open=False,
    prometheus_healthy=True,
    silences_known=True,
    firing_services=1,
    known_services=3,
)


def test_clean_context_passes() -> None:
    """With nothing against it, the action may run."""
    assert check(CLEAN, POLICY, catch_up_seconds=900) is None


@pytest.mark.parametrize(
    ("changes", "reason", "final"),
    [
        ({"dry_run": True}, "dry_run", True),
        ({"incident_opened_at": NOW - timedelta(hours=2)}, "stale_incident", True),
        ({"breaker_open": True}, "circuit_open", True),
        ({"prometheus_healthy": False}, "prometheus_unhealthy", False),
        ({"silences_known": False}, "silences_unknown", False),
        ({"firing_services": 6, "known_services": 10}, "alert_storm", False),
        ({"in_flight_for_target": True}, "in_flight", False),
        ({"last_same_action_at": NOW - timedelta(seconds=60)}, "cooldown", False),
        ({"target_actions_last_hour": 3}, "target_budget", False),
        ({"fleet_actions_last_hour": 10}, "fleet_budget", False),
    ],
)
def test_each_rule_blocks(changes: dict[str, object], reason: str, final: bool) -> None:
    """Each rule blocks with its fixed reason; final blocks end the incident."""
    block = check(replace(CLEAN, **changes), POLICY, catch_up_seconds=900)  # type: ignore[arg-type]
    assert block is not None
    assert (block.reason, block.final) == (reason, final)
    assert block.detail


def test_cooldown_expires() -> None:
    """An action older than the cooldown no longer blocks."""
    ctx = replace(CLEAN, last_same_action_at=NOW - timedelta(seconds=901))
    assert check(ctx, POLICY, catch_up_seconds=900) is None


def test_read_only_actions_skip_budgets_but_not_dry_run() -> None:
    """collect_logs ignores cooldown and budgets, yet dry-run still holds it back."""
    ctx = replace(
        CLEAN,
        mutating=False,
        action="collect_logs",
        last_same_action_at=NOW,
        fleet_actions_last_hour=99,
    )
    assert check(ctx, POLICY, catch_up_seconds=900) is None
    block = check(replace(ctx, dry_run=True), POLICY, catch_up_seconds=900)
    assert block is not None and block.reason == "dry_run"


@pytest.mark.parametrize(
    ("firing", "known", "storm"),
    [
        (1, 1, False),  # a fleet of one with its one service sick must still be healed
        (3, 4, False),  # a small fleet: below the minimum number of services
        (5, 10, False),  # exactly half is not more than half
        (6, 10, True),
        (10, 10, True),
        (0, 0, False),
    ],
)
def test_storm_needs_share_and_minimum(firing: int, known: int, storm: bool) -> None:
    """A storm is more than storm_share of services and at least storm_min_services."""
    assert is_storm(firing, known, POLICY) is storm
