"""Dispatch: from a decided incident to one request at the gateway, never two.

1. The guardrails that need nothing from the store (the incident's age, Prometheus'
   health, silences, a storm) are checked first: they are what holds most actions back,
   and they cost nothing.
2. The finding is re-checked in Prometheus right before acting.
3. Under the fleet-wide claim lock, the guardrails run again with what the store knows
   across every replica (cooldown, budgets, circuit breaker, an action in flight on the
   service), and either the block or the claim of (incident, action) is committed with
   the move to ``acting``.
4. Only after that commit is the request sent; its result is committed with the move to
   ``verifying`` (or ``escalated``). A crash between 3 and 4 leaves a claim whose result
   never came back: it is never sent again (see ``incidents.lifecycle.on_restart``).

The claim, and the cooldowns and budgets it is checked against, are dated when the claim
is made, not when the cycle began: a claim after a long diagnosis is not dated a minute
early. A human's yes (``answer``) that a passing guardrail holds back is remembered
(``approved``) and tried again by later cycles; one a final guardrail refuses ends the
wait as ``blocked``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from agent.errors import AgentError
from agent.gateway.request import (
    Facts,
    GatewayRequest,
    build_context,
    idempotency_key,
    priority_for,
)
from agent.gateway.response import GatewayResult
from agent.guardrails.policy import Block, GuardContext, check
from agent.incidents.lifecycle import (
    ESCALATING_BLOCKS,
    Answer,
    Step,
    ended_wait,
    on_approval_granted,
    on_approval_held,
    on_block,
    on_claim,
    on_gateway_result,
)
from agent.incidents.model import Incident
from agent.logs import bind_context, get_logger
from agent.runtime import Runtime
from agent.store.base import Applied, Conflict, GuardFacts
from agent.sweep.findings import Finding
from agent.sweep.presence import still_present

log = get_logger("agent.dispatch")

#: Store facts that block nothing: the cheap first pass looks at everything else.
_NO_FACTS = GuardFacts(None, 0, 0, False, False)


@dataclass(frozen=True)
class FleetView:
    """What this sweep says about the fleet and the monitoring, for the guardrails."""

    prometheus_healthy: bool
    silences_known: bool
    firing: int


async def fleet_now(rt: Runtime) -> FleetView:
    """The fleet as the guardrails need it now, without a sweep (for an approval, or a
    diagnosis that ended long after its sweep): Prometheus' health, whether silences can
    be read, and how many services have a current incident."""
    silences_known = True
    if rt.alertmanager is not None:
        try:
            await rt.alertmanager.suppressed_alerts()
        except AgentError:
            silences_known = False
    services = rt.config.services
    firing = {i.target for i in rt.store.current() if i.kind != "storm" and i.target in services}
    healthy: bool = await rt.prometheus.healthy()
    return FleetView(prometheus_healthy=healthy, silences_known=silences_known, firing=len(firing))


@dataclass
class Dispatched:
    """What one dispatch did: the committed steps (for their effects), the block that held
    it back, or the request sent and what came of it."""

    steps: list[tuple[Step, Applied]] = field(default_factory=list)
    block: Block | None = None
    request: GatewayRequest | None = None
    result: GatewayResult | None = None


def _context(
    rt: Runtime,
    incident: Incident,
    action: str,
    target: str,
    facts: GuardFacts,
    view: FleetView,
    now: datetime,
    *,
    dry_run: bool,
    approved: bool = False,
) -> GuardContext:
    return GuardContext(
        approved=approved,
        action=action,
        target=target,
        mutating=rt.config.actions[action].mutating,
        now=now,
        incident_opened_at=incident.opened_at,
        dry_run=dry_run,
        last_same_action_at=facts.last_same_action_at,
        target_actions_last_hour=facts.target_actions_last_hour,
        fleet_actions_last_hour=facts.fleet_actions_last_hour,
        in_flight_for_target=facts.in_flight_for_target,
        breaker_open=facts.breaker_open,
        prometheus_healthy=view.prometheus_healthy,
        silences_known=view.silences_known,
        firing_services=view.firing,
        known_services=len(rt.config.services),
    )


def build_request(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    action: str,
    target: str,
    *,
    lines: int | None = None,
    purpose: str = "remediation",
) -> GatewayRequest:
    """The request for one claimed action (or a diagnosis' read-only look): the
    catalogue's intent, a vouched context."""
    catalogue = rt.config.actions[action]
    facts = Facts(
        incident_id=incident.id,
        kind=finding.kind,
        name=finding.name,
        service=target,
        severity=finding.severity,
        value=finding.value,
        since=finding.first_seen,
        action=action,
        lines=lines,
    )
    return GatewayRequest(
        source_id=rt.settings.env.ai_command_gateway_source_id,
        target=target,
        action=action,
        intent=catalogue.intent,
        context=build_context(facts, rt.config.gateway.context_max_chars, rt.config.services),
        priority=priority_for(finding.severity, catalogue),
        idempotency_key=idempotency_key(
            incident.id, action if purpose == "remediation" else f"{purpose}:{action}"
        ),
        mutating=catalogue.mutating,
        purpose=purpose,
    )


def _commit(rt: Runtime, out: Dispatched, step: Step, expected: int) -> Applied | None:
    if not step.commit:
        out.steps.append((step, Applied(step.incident)))
        return Applied(step.incident)
    try:
        applied = rt.store.apply(step, expected_version=expected, owner=rt.replica, now=rt.clock())
    except Conflict as exc:
        log.info("step_dropped", incident_id=step.incident.id, reason=str(exc))
        return None
    out.steps.append((step, applied))
    return applied


async def _precheck(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    action: str,
    target: str,
    view: FleetView,
    now: datetime,
    *,
    approved: bool,
) -> Block | None:
    ctx = _context(
        rt, incident, action, target, _NO_FACTS, view, now, dry_run=False, approved=approved
    )
    block = check(ctx, rt.config.policy, rt.config.schedule.catch_up_window_seconds)
    if block is not None or not rt.config.policy.recheck_before_dispatch:
        return block
    present = await still_present(rt.sweep_deps, finding, now)
    if present is None:
        return Block("recheck_failed", "could not re-check the finding right before dispatch")
    if not present:
        return Block("no_longer_firing", "the finding cleared right before dispatch", final=True)
    return None


def _action_of(incident: Incident, answer: Answer | None) -> tuple[str, str]:
    """The action to carry out and its target: the decided one, or the approved one."""
    decision = incident.decision
    if decision is None:
        return "none", incident.target or ""
    if answer is not None:
        return decision.approval_action, decision.approval_target or incident.target or ""
    return decision.action, decision.target or incident.target or ""


def _blocked(incident: Incident, block: Block, now: datetime, answer: Answer | None) -> Step:
    """The step of a block. A human's yes held by a guardrail that passes is remembered
    (``approved``); one refused for good ends the wait as ``blocked``."""
    passing = not block.final and block.reason not in ESCALATING_BLOCKS
    if answer is not None and passing and incident.state == "awaiting_approval":
        return on_approval_held(incident, answer, block, now)
    step = on_block(incident, block, now)
    if answer is None or step.incident.asks:
        return step
    return replace(step, effects=(ended_wait(incident, "blocked"), *step.effects))


async def dispatch(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    view: FleetView,
    now: datetime,
    answer: Answer | None = None,
) -> Dispatched:
    """Carry a decided incident (or, with a human's ``answer``, the approved action of one
    that waits) as far as the guardrails allow.

    The caller holds the incident in ``rt.working`` meanwhile, so its lease is renewed
    however long the gateway takes.
    """
    out = Dispatched()
    bind_context(incident_id=incident.id, fingerprint=incident.fingerprint, target=incident.target)
    action, target = _action_of(incident, answer)
    if action not in rt.config.actions:
        out.block = Block(
            "unknown_action", f"action {action!r} is no longer in the catalogue", final=True
        )
        _commit(rt, out, _blocked(incident, out.block, now, answer), incident.version)
        return out
    approved = answer is not None
    out.block = await _precheck(rt, incident, finding, action, target, view, now, approved=approved)
    if out.block is not None:
        _commit(rt, out, _blocked(incident, out.block, now, answer), incident.version)
        return out
    mutating = rt.config.actions[action].mutating
    claim_at = rt.clock()
    claimed = _claim(
        rt, out, incident, action, target, view, claim_at, mutating=mutating, answer=answer
    )
    if claimed is None:
        _withheld(rt, out, incident, finding, action, target)
        return out
    await _send(rt, out, claimed, finding, action, target, mutating=mutating)
    return out


def _withheld(
    rt: Runtime, out: Dispatched, incident: Incident, finding: Finding, action: str, target: str
) -> None:
    """A dry run that held back only this: record the request it would have sent."""
    if out.block is not None and out.block.reason == "dry_run":
        rt.withheld.send(incident.id, build_request(rt, incident, finding, action, target))


def _claim(
    rt: Runtime,
    out: Dispatched,
    incident: Incident,
    action: str,
    target: str,
    view: FleetView,
    now: datetime,
    *,
    mutating: bool,
    answer: Answer | None,
) -> Incident | None:
    made: list[Step] = []
    approved = answer is not None

    def decide(fresh: Incident, facts: GuardFacts) -> Step:
        ctx = _context(
            rt, fresh, action, target, facts, view, now, dry_run=rt.dry_run, approved=approved
        )
        out.block = check(ctx, rt.config.policy, rt.config.schedule.catch_up_window_seconds)
        owner, until = rt.replica, rt.lease_until()
        if out.block is not None:
            made.append(_blocked(fresh, out.block, now, answer))
        elif answer is not None:
            made.append(
                on_approval_granted(
                    fresh, answer, mutating=mutating, owner=owner, lease_until=until, now=now
                )
            )
        else:
            made.append(
                on_claim(
                    fresh, target=target, mutating=mutating, owner=owner, lease_until=until, now=now
                )
            )
        return made[-1]

    try:
        applied = rt.store.decide_under_lock(incident, target, action, now, rt.replica, decide)
    except Conflict as exc:
        log.info("step_dropped", incident_id=incident.id, reason=str(exc))
        return None
    out.steps.append((made[-1], applied))
    return applied.incident if applied.incident.state == "acting" else None


async def _send(
    rt: Runtime,
    out: Dispatched,
    claimed: Incident,
    finding: Finding,
    action: str,
    target: str,
    *,
    mutating: bool,
) -> None:
    request = build_request(rt, claimed, finding, action, target)
    out.request = request
    log.info(
        "remediation_dispatched",
        incident_id=claimed.id,
        target=target,
        action=action,
        intent=request.intent,
    )
    result = await rt.gateway.execute(request)
    out.result = result
    rt.metrics.remediations.labels(result=result.outcome).inc()
    step = on_gateway_result(
        claimed,
        result,
        request.body(),
        rt.clock(),
        mutating=mutating,
        verify_after=rt.config.schedule.verify_after_seconds,
        breaker_open_at=rt.config.policy.circuit_breaker_failures,
        approval_ttl=rt.config.policy.approval_ttl_seconds,
    )
    _commit(rt, out, step, claimed.version)
