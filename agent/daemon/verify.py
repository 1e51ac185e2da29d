"""Verification: some time after an action, is the problem gone?

Resolved when the finding is no longer seen by the source that reported it, escalated
otherwise: the agent's own observation decides, never the model. The plan's verification
expression (the model's idea of how to tell) is run too, and its answer kept in the
timeline as evidence for humans; it cannot by itself fail a fix (a constant expression
would otherwise fail every fix, open the breaker and stop every restart). When the source
cannot tell, the verification waits for the next tick instead of deciding on a guess.
Replicas may verify the same incident at once: the first commit wins, the other's step is
dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.daemon.cycle import commit, isolated
from agent.daemon.watch import run_watches
from agent.errors import PrometheusError
from agent.incidents.lifecycle import on_verification
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.presence import still_present

log = get_logger("agent.verify")


async def verification_evidence(rt: Runtime, incident: Incident) -> dict[str, Any]:
    """What the plan's verification expression says now (empty when there is none): shown
    to humans, never the verdict."""
    expr = (incident.decision.verification if incident.decision else "").strip()
    if not expr:
        return {}
    try:
        series = len(await rt.prometheus.query(expr))
    except PrometheusError as exc:
        return {"verification_expr": expr, "verification_error": str(exc)}
    return {"verification_expr": expr, "verification_series": series}


async def recovered(rt: Runtime, incident: Incident, now: datetime) -> bool | None:
    """Whether the finding is gone; None when its source cannot tell."""
    present = await still_present(rt.sweep_deps, incident.finding, now)
    return None if present is None else not present


async def run_verifications(rt: Runtime, now: datetime) -> int:
    """Verify every incident whose time has come, and end the watches of observed actions
    whose verify time has come (``daemon/watch.py``); returns how many ended."""
    ended = await run_watches(rt, now)
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
            "verification_postponed",
            incident_id=incident.id,
            reason=f"{incident.finding.source} did not answer",
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
        evidence=await verification_evidence(rt, incident),
    )
    return await commit(rt, step, incident.version) is not None
