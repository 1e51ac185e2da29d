"""The guardrail policy: may this action run now? A pure function over a snapshot.

Order matters only for the reason reported; every rule must pass. A *final* block ends
the incident: dry-run skips it; a stale incident (older than the catch-up window, e.g.
after a restart) and an open circuit breaker escalate it to humans. Any other block is
re-checked on the next sweep while the finding still fires.

Read-only actions (``mutating = false``: logs, resource usage, health check) skip the
cooldown and the budgets, which exist to stop restart loops; they still respect dry-run,
one action in flight per service, the storm and Prometheus-health rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agent.config import Policy


@dataclass(frozen=True)
class GuardContext:
    """Everything the policy looks at, gathered by the daemon just before dispatch."""

    action: str
    target: str
    mutating: bool
    now: datetime
    incident_opened_at: datetime
    dry_run: bool
    last_same_action_at: datetime | None
    target_actions_last_hour: int
    fleet_actions_last_hour: int
    in_flight_for_target: bool
    breaker_open: bool
    prometheus_healthy: bool
    silences_known: bool
    firing_services: int
    known_services: int
    #: A human approved this action just now: it is as fresh as the approval, so the
    #: catch-up window (meant for work left over from before a restart) does not apply.
    approved: bool = False


@dataclass(frozen=True)
class Block:
    """Why an action may not run; ``reason`` is a fixed snake_case label for metrics."""

    reason: str
    detail: str
    final: bool = False


def is_storm(firing: int, known: int, policy: Policy) -> bool:
    """Too many services firing at once: the monitoring or the network is suspect."""
    return known > 0 and firing >= policy.storm_min_services and firing > policy.storm_share * known


def check(ctx: GuardContext, policy: Policy, catch_up_seconds: float) -> Block | None:
    """The first rule the action breaks, or None when it may run."""
    age = (ctx.now - ctx.incident_opened_at).total_seconds()
    if age > catch_up_seconds and not ctx.approved:
        return Block(
            "stale_incident",
            f"incident is {age:.0f}s old (schedule.catch_up_window_seconds {catch_up_seconds:g}s)",
            final=True,
        )
    if ctx.breaker_open:
        return Block(
            "circuit_open",
            f"circuit breaker open for {ctx.target}; a human must reset it",
            final=True,
        )
    if not ctx.prometheus_healthy:
        return Block("prometheus_unhealthy", "Prometheus is unhealthy or a sweep source failed")
    if not ctx.silences_known:
        return Block(
            "silences_unknown", "Alertmanager did not answer: a human's silence could be missed"
        )
    if is_storm(ctx.firing_services, ctx.known_services, policy):
        return Block(
            "alert_storm", f"{ctx.firing_services} of {ctx.known_services} services firing at once"
        )
    if ctx.in_flight_for_target:
        return Block("in_flight", f"another action on {ctx.target} is still in flight")
    if ctx.mutating:
        block = _budgets(ctx, policy)
        if block is not None:
            return block
    if ctx.dry_run:
        return Block("dry_run", "DRY_RUN: decided, not dispatched", final=True)
    return None


def _budgets(ctx: GuardContext, policy: Policy) -> Block | None:
    if ctx.last_same_action_at is not None:
        since = (ctx.now - ctx.last_same_action_at).total_seconds()
        if since < policy.action_cooldown_seconds:
            return Block(
                "cooldown",
                f"{ctx.action} on {ctx.target} {since:.0f}s ago (policy.action_cooldown_seconds {policy.action_cooldown_seconds:g}s)",
            )
    if ctx.target_actions_last_hour >= policy.max_actions_per_target_per_hour:
        return Block(
            "target_budget",
            f"{ctx.target_actions_last_hour} actions on {ctx.target} in the last hour "
            "(policy.max_actions_per_target_per_hour)",
        )
    if ctx.fleet_actions_last_hour >= policy.max_actions_per_hour:
        return Block(
            "fleet_budget",
            f"{ctx.fleet_actions_last_hour} actions fleet-wide in the last hour "
            "(policy.max_actions_per_hour)",
        )
    return None
