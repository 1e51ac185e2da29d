"""Verification: some time after an action, is the problem gone?

Resolved when the finding is no longer seen and the plan's verification expression (if
any) is empty; escalated otherwise. When Prometheus cannot tell, the verification waits
for the next tick instead of deciding on a guess. Replicas may verify the same incident
at once: the first commit wins, the other's step is dropped.
"""

from __future__ import annotations

from datetime import datetime

from agent.daemon.cycle import commit, isolated
from agent.errors import PrometheusError, PrometheusPermanentError
from agent.incidents.lifecycle import on_verification
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.presence import still_present

log = get_logger("agent.verify")


async def verification_clean(rt: Runtime, incident: Incident) -> bool | None:
    """Whether the plan's verification expression is empty (True when there is none)."""
    expr = (incident.decision.verification if incident.decision else "").strip()
    if not expr:
        return True
    try:
        return not await rt.prometheus.query(expr)
    except PrometheusPermanentError as exc:
        # The model wrote an expression Prometheus refuses: the finding's own presence decides.
        log.warning("verification_query_invalid", incident_id=incident.id, error=str(exc))
        return True
    except PrometheusError as exc:
        log.warning("verification_query_failed", incident_id=incident.id, error=str(exc))
        return None


async def recovered(rt: Runtime, incident: Incident, now: datetime) -> bool | None:
    """Finding gone and the verification expression empty; None when Prometheus cannot tell."""
    present = await still_present(rt.sweep_deps, incident.finding, now)
    if present is None:
        return None
    if present:
        return False
    return await verification_clean(rt, incident)


async def run_verifications(rt: Runtime, now: datetime) -> int:
    """Verify every incident whose time has come; returns how many ended."""
    ended = 0
    due = [
        i
        for i in rt.store.current()
        if i.state == "verifying"
        and i.verify_at is not None
        and i.verify_at <= now
        and i.id not in rt.working
    ]
    for incident in due:
        if incident.id in rt.poisoned:
            continue
        rt.working.add(incident.id)
        try:
            ended += bool(await isolated(rt, incident, _verify(rt, incident, now)))
        finally:
            rt.working.discard(incident.id)
    return ended


async def _verify(rt: Runtime, incident: Incident, now: datetime) -> bool:
    """Verify one incident; whether it ended."""
    outcome = await recovered(rt, incident, now)
    if outcome is None:
        log.info(
            "verification_postponed", incident_id=incident.id, reason="Prometheus did not answer"
        )
        return False
    if not outcome:
        rt.metrics.remediations.labels(result="not_recovered").inc()
    step = on_verification(
        incident,
        outcome,
        rt.clock(),
        verify_after=rt.config.schedule.verify_after_seconds,
        breaker_open_at=rt.config.policy.circuit_breaker_failures,
    )
    return await commit(rt, step, incident.version) is not None
