"""One cycle of the daemon: sweep, open incidents, diagnose, apply guardrails, dispatch.

``run_cycle(rt, now)`` is a plain coroutine: the scheduler calls it on the interval, the
``sweep`` command calls it once, tests call it directly. Diagnoses run concurrently up to
the configured limit; dispatches run one at a time, so the in-flight and budget rules
always see the previous dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.daemon.escalation import escalate
from agent.daemon.incidents import clear_gone, finding_group, open_new
from agent.daemon.runtime import Runtime
from agent.daemon.verify import note_failure, still_present
from agent.diagnosis.engine import diagnose_many
from agent.diagnosis.models import Decision
from agent.gateway.request import (
    Facts,
    GatewayRequest,
    build_context,
    idempotency_key,
    priority_for,
)
from agent.guardrails.policy import Block, GuardContext, check
from agent.logs import bind_context, get_logger
from agent.store.base import STATES, ActionRecord, Incident
from agent.sweep.collector import SweepReport, sweep
from agent.sweep.findings import Finding

log = get_logger("agent.cycle")

#: Final blocks that hand the incident to humans instead of just ending it.
ESCALATING_BLOCKS = frozenset({"circuit_open", "stale_incident"})


@dataclass(frozen=True)
class _FleetView:
    """What this sweep says about the fleet and the monitoring, for the guardrails."""

    prometheus_healthy: bool
    silences_known: bool
    firing: int


@dataclass
class CycleReport:
    """What one cycle saw, decided and did."""

    sweep: SweepReport
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    skips: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `devops-agent sweep --json` prints."""
        data = self.sweep.to_dict()
        skipped = data.pop("skipped")
        return {
            **data,
            "decisions": self.decisions,
            "dispatches": self.dispatches,
            "skips": [*skipped, *self.skips],
        }


async def run_cycle(rt: Runtime, now: datetime) -> CycleReport:
    """Sweep once and carry every finding as far as the guardrails allow."""
    report = await sweep(rt.sweep_deps, now)
    cycle = CycleReport(sweep=report)
    if not report.failed_sources:
        clear_gone(rt.store, report.findings, now)
    open_new(rt.store, report.findings, now)
    current = {finding_group(f): f for f in report.findings}
    await _diagnose_pending(rt, current, now, cycle)
    ready = [
        (incident, current[incident.group_key])
        for incident in rt.store.in_state("diagnosing")
        if incident.decision is not None and incident.group_key in current
    ]
    if ready:  # Prometheus' own health is only asked when something may be acted on
        prometheus_failed = [s for s in report.failed_sources if s != "alertmanager"]
        view = _FleetView(
            prometheus_healthy=not prometheus_failed and await rt.prometheus.healthy(),
            silences_known="alertmanager" not in report.failed_sources,
            firing=len({f.target for f in report.findings if f.target in rt.config.services}),
        )
        for incident, finding in ready:
            await _act(rt, incident, finding, now, view, cycle)
    _publish_state_counts(rt)
    rt.metrics.sweeps.labels(result="partial" if report.failed_sources else "ok").inc()
    rt.metrics.sweep_duration.observe(report.duration_seconds)
    rt.metrics.last_sweep.set(now.timestamp())
    log.info(
        "sweep_finished",
        findings=len(report.findings),
        failed_sources=report.failed_sources,
        decisions=len(cycle.decisions),
        dispatches=len(cycle.dispatches),
        skips=len(cycle.skips) + len(report.skipped),
        duration_seconds=round(report.duration_seconds, 3),
    )
    return cycle


async def _diagnose_pending(
    rt: Runtime, current: dict[str, Finding], now: datetime, cycle: CycleReport
) -> None:
    pending: list[tuple[Incident, Finding]] = []
    for incident in rt.store.in_state("open", "diagnosing"):
        finding = current.get(incident.group_key)
        if incident.decision is None and finding is not None:
            if incident.state == "open":
                rt.store.transition(incident, "diagnosing", now)
            pending.append((incident, finding))
    if not pending:
        return
    by_fp = {f.fingerprint: i for i, f in pending}
    results = await diagnose_many([f for _, f in pending], rt.diagnosis, now)
    for finding, decision in results:
        await _record(rt, by_fp[finding.fingerprint], decision, now, cycle)


async def _record(
    rt: Runtime, incident: Incident, decision: Decision, now: datetime, cycle: CycleReport
) -> None:
    incident.decision = decision.summary()
    incident.action = decision.action
    incident.decided_by = decision.decided_by
    rt.store.save(incident, now)
    rt.store.add_event(incident.id, "decision", now, decision.summary())
    if decision.transcript:
        rt.store.add_event(incident.id, "llm_transcript", now, {"messages": decision.transcript})
    cycle.decisions.append(
        {"incident_id": incident.id, "fingerprint": incident.fingerprint, **decision.summary()}
    )
    if not decision.actionable or decision.action == "none":
        rt.store.transition(incident, "skipped", now, reason=decision.reason)
    elif decision.action == "escalate":
        await escalate(
            rt.store,
            incident,
            decision.reason or "diagnosis chose escalate",
            now,
            rt.alertmanager,
            rt.config.services,
        )


async def _act(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    now: datetime,
    view: _FleetView,
    cycle: CycleReport,
) -> None:
    bind_context(incident_id=incident.id, fingerprint=incident.fingerprint, target=incident.target)
    action = str(incident.action)
    target = str((incident.decision or {}).get("target") or incident.target)
    if action not in rt.config.actions:
        reason = f"action {action!r} is no longer in the catalogue"
        await escalate(rt.store, incident, reason, now, rt.alertmanager, rt.config.services)
        return
    block = check(
        _guard_context(rt, incident, action, target, now, view),
        rt.config.policy,
        rt.config.schedule.catch_up_window_seconds,
    )
    if block is None and rt.config.policy.recheck_before_dispatch:
        block = await _recheck(rt, incident, now)
    if block is not None:
        await _blocked(rt, incident, block, now, cycle)
        return
    await _dispatch(rt, incident, finding, action, target, now, cycle)


def _guard_context(
    rt: Runtime,
    incident: Incident,
    action: str,
    target: str,
    now: datetime,
    view: _FleetView,
) -> GuardContext:
    last = rt.store.last_action(target, action)
    actions = rt.config.actions
    recent = [
        a
        for a in rt.store.actions_since(now - timedelta(hours=1))
        if a.action in actions and actions[a.action].mutating
    ]
    return GuardContext(
        action=action,
        target=target,
        mutating=rt.config.actions[action].mutating,
        now=now,
        incident_opened_at=incident.opened_at,
        dry_run=rt.dry_run,
        last_same_action_at=last.at if last else None,
        target_actions_last_hour=sum(a.target == target for a in recent),
        fleet_actions_last_hour=len(recent),
        in_flight_for_target=any(i.target == target for i in rt.store.in_state("acting")),
        breaker_open=rt.store.breaker(target)[1],
        prometheus_healthy=view.prometheus_healthy,
        silences_known=view.silences_known,
        firing_services=view.firing,
        known_services=len(rt.config.services),
    )


async def _recheck(rt: Runtime, incident: Incident, now: datetime) -> Block | None:
    present = await still_present(rt, incident, now)
    if present is None:
        return Block("recheck_failed", "could not re-check the finding right before dispatch")
    if not present:
        return Block("no_longer_firing", "the finding cleared right before dispatch", final=True)
    return None


async def _blocked(
    rt: Runtime, incident: Incident, block: Block, now: datetime, cycle: CycleReport
) -> None:
    rt.metrics.guardrail_blocks.labels(reason=block.reason).inc()
    log.info(
        "guardrail_blocked",
        incident_id=incident.id,
        target=incident.target,
        action=incident.action,
        reason=block.reason,
        detail=block.detail,
        final=block.final,
    )
    cycle.skips.append(
        {
            "incident_id": incident.id,
            "fingerprint": incident.fingerprint,
            "name": incident.name,
            "target": incident.target,
            "reason": block.reason,
            "detail": block.detail,
        }
    )
    if block.reason in ESCALATING_BLOCKS:
        await escalate(rt.store, incident, block.detail, now, rt.alertmanager, rt.config.services)
    elif block.final:
        rt.store.transition(incident, "skipped", now, reason=block.reason, detail=block.detail)
    elif incident.blocked_reason != block.reason:
        incident.blocked_reason = block.reason
        rt.store.save(incident, now)
        rt.store.add_event(
            incident.id, "blocked", now, {"reason": block.reason, "detail": block.detail}
        )


def _request(
    rt: Runtime, incident: Incident, finding: Finding, action: str, target: str
) -> GatewayRequest:
    facts = Facts(
        incident_id=incident.id,
        kind=finding.kind,
        name=finding.name,
        service=target,
        severity=finding.severity,
        value=finding.value,
        since=finding.first_seen,
        action=action,
    )
    catalogue = rt.config.actions[action]
    return GatewayRequest(
        source_id=rt.settings.env.ai_command_gateway_source_id,
        target=target,
        action=action,
        intent=catalogue.intent,
        context=build_context(facts, rt.config.gateway.context_max_chars, rt.config.services),
        priority=priority_for(finding.severity, catalogue),
        idempotency_key=idempotency_key(incident.id, action),
        mutating=catalogue.mutating,
    )


async def _dispatch(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    action: str,
    target: str,
    now: datetime,
    cycle: CycleReport,
) -> None:
    request = _request(rt, incident, finding, action, target)
    incident.blocked_reason = None
    incident.acted_at = now
    rt.store.transition(incident, "acting", now, action=action, target=target)
    action_id = rt.store.record_action(ActionRecord(incident.id, target, action, now))
    log.info(
        "remediation_dispatched",
        incident_id=incident.id,
        target=target,
        action=action,
        intent=request.intent,
    )
    result = await rt.gateway.execute(request)
    rt.store.finish_action(action_id, result.outcome)
    rt.store.add_event(
        incident.id, "gateway_request", now, {"request": request.body(), "result": result.to_dict()}
    )
    rt.metrics.remediations.labels(result=result.outcome).inc()
    cycle.dispatches.append(
        {"incident_id": incident.id, "target": target, "action": action, **result.to_dict()}
    )
    if result.outcome in ("rejected", "gave_up"):
        note_failure(rt, target, now)
        await escalate(
            rt.store,
            incident,
            f"gateway {result.outcome}: {result.error}",
            now,
            rt.alertmanager,
            rt.config.services,
        )
        return
    if not rt.config.actions[action].mutating:
        await escalate(
            rt.store,
            incident,
            f"{action} {result.outcome}; the output needs a human",
            now,
            rt.alertmanager,
            rt.config.services,
        )
        return
    incident.verify_at = now + timedelta(seconds=rt.config.schedule.verify_after_seconds)
    rt.store.transition(
        incident,
        "verifying",
        now,
        gateway_outcome=result.outcome,
        verify_at=incident.verify_at.isoformat(),
    )


def _publish_state_counts(rt: Runtime) -> None:
    counts = rt.store.counts_by_state()
    for state in STATES:
        rt.metrics.incidents.labels(state=state).set(counts.get(state, 0))
