"""What happens after a step committed: log it, count it, tell Alertmanager.

The lifecycle's steps return typed effects; this is the one place that turns them into
I/O. Sending a claimed action (``Dispatch``) is the dispatcher's business, not done here.
In a dry run nothing is posted: each alert that would have been is recorded instead
(``agent/dry_run.py``).
"""

from __future__ import annotations

from agent.daemon.escalation import approval_alert, deliver, escalation_alert
from agent.errors import AlertmanagerError
from agent.incidents.lifecycle import (
    ApprovalEnded,
    AskApproval,
    Blocked,
    Cleared,
    Effect,
    Escalate,
    Observed,
    Opened,
    Resolved,
    Skipped,
    Step,
    StormEnded,
    TakenOver,
)
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Applied
from agent.text import clip

log = get_logger("agent.incidents")


async def run_effects(rt: Runtime, step: Step, applied: Applied) -> None:
    """Carry out the effects of a committed step."""
    incident = applied.incident
    for effect in step.effects:
        if isinstance(effect, Escalate):
            log.warning(
                "incident_escalated",
                incident_id=incident.id,
                target=incident.target,
                name=clip(incident.name, 200),
                reason=effect.reason,
            )
            await _escalation(rt, incident, effect.reason)
        elif isinstance(effect, StormEnded):
            log.info("storm_ended", incident_id=incident.id)
            await _escalation(rt, incident, incident.resolution or "the storm ended", resolved=True)
        elif isinstance(effect, AskApproval | ApprovalEnded):
            await _approval(rt, incident, effect)
        else:
            _record(rt, incident, effect)
    if applied.breaker_opened:
        target = incident.action_target or incident.target
        log.error("circuit_breaker_opened", target=target, incident_id=incident.id)


async def _escalation(
    rt: Runtime, incident: Incident, reason: str, *, resolved: bool = False
) -> None:
    """Tell Alertmanager about an escalation (or its end); in a dry run, record it."""
    now = rt.clock()
    if rt.dry_run:
        alert = escalation_alert(
            incident, reason, now, rt.config.services, ends_at=now if resolved else None
        )
        rt.withheld.post(incident.id, alert, ends=resolved)
        return
    await deliver(
        rt.store, incident, reason, now, rt.alertmanager, rt.config.services, resolved=resolved
    )


async def _approval(rt: Runtime, incident: Incident, effect: AskApproval | ApprovalEnded) -> None:
    """Ask a human (log, and an alert to Alertmanager), or withdraw the ask (how the wait
    ended is counted by the store, with the step). In a dry run nobody is asked (nothing
    would run after a yes): the ask is recorded as one that would have been posted."""
    decision = incident.decision
    if isinstance(effect, AskApproval):
        action, target, until = effect.action, effect.target, effect.until
        log.warning(
            "approval_requested",
            incident_id=incident.id,
            target=target,
            action=action,
            until=until.isoformat(),
            reason=decision.autonomy if decision else "",
            dry_run=rt.dry_run,
        )
    else:
        action, target = effect.action, effect.target
        until = incident.approval_until or rt.clock()
        log.info(
            "approval_ended",
            incident_id=incident.id,
            target=target,
            action=action,
            result=effect.result,
        )
    if rt.alertmanager is None and not rt.dry_run:
        return
    ends = isinstance(effect, ApprovalEnded)
    alert = approval_alert(
        incident,
        action,
        target,
        until,
        rt.clock(),
        console_url=rt.console_url(incident.id),
        ends=ends,
    )
    if rt.dry_run or rt.alertmanager is None:
        rt.withheld.post(incident.id, alert, ends=ends)
        return
    try:
        await rt.alertmanager.post_alerts([alert])
    except AlertmanagerError as exc:
        log.error("approval_delivery_failed", incident_id=incident.id, error=str(exc))


def _record(rt: Runtime, incident: Incident, effect: Effect) -> None:
    """Log (and count) an effect that needs no I/O."""
    fields = {"incident_id": incident.id, "target": incident.target}
    match effect:
        case Opened():
            log.info(
                "incident_opened",
                **fields,
                fingerprint=incident.fingerprint,
                name=clip(incident.name, 200),
                kind=incident.kind,
            )
        case Blocked(block=block):
            rt.metrics.guardrail_blocks.labels(reason=block.reason).inc()
            log.info(
                "guardrail_blocked",
                **fields,
                action=incident.action,
                reason=block.reason,
                detail=block.detail,
                final=block.final,
            )
        case Resolved(seconds=seconds):
            rt.metrics.time_to_recovery.observe(seconds)
            rt.metrics.remediations.labels(result="recovered").inc()
            log.info(
                "incident_resolved",
                **fields,
                action=incident.action,
                time_to_recovery_seconds=round(seconds, 1),
            )
        case Observed(action=action, target=target, would=would):
            log.info(
                "action_observed",
                **fields,
                action=action,
                action_target=target,
                would=would,
                reason=incident.decision.autonomy if incident.decision else "",
            )
        case Skipped(reason=reason):
            log.info("incident_skipped", **fields, reason=reason)
        case Cleared():
            log.info("incident_cleared", **fields, state=incident.state)
        case TakenOver(reason=reason):
            log.warning("incident_taken_over", **fields, state=incident.state, reason=reason)
        case _:
            pass  # Dispatch: the dispatcher sends it
