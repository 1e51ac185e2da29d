"""Is the problem still there? Used right before acting and after an action.

``None`` means "cannot tell" (Prometheus failed): the caller waits and asks again rather
than acting, or escalating, on a guess.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agent.config import AgentConfig, AnomalyCheck, HealthCheck
from agent.daemon.escalation import escalate
from agent.daemon.incidents import finding_group
from agent.daemon.runtime import Runtime
from agent.errors import PrometheusError, PrometheusPermanentError
from agent.logs import get_logger
from agent.store.base import Incident
from agent.sweep.collector import fetch_alerts, fetch_check
from agent.sweep.findings import Finding

log = get_logger("agent.verify")


def _check(config: AgentConfig, name: str) -> HealthCheck | AnomalyCheck | None:
    return next((c for c in config.checks.all() if c.name == name), None)


async def current_findings(
    rt: Runtime, kind: str, name: str, now: datetime
) -> list[Finding] | None:
    """The findings of one alert or check as Prometheus reports them now; None on failure."""
    opts = rt.config.prometheus
    try:
        if kind == "alert":
            parsed = await fetch_alerts(rt.prometheus, opts, now)
            return [f for f in parsed.findings if f.name == name]
        check = _check(rt.config, name)
        if check is None:
            return None
        return (await fetch_check(rt.prometheus, opts, check, now, at=None)).findings
    except (PrometheusError, ValueError) as exc:
        log.warning("presence_check_failed", kind=kind, name=name, error=str(exc))
        return None


async def still_present(rt: Runtime, incident: Incident, now: datetime) -> bool | None:
    """Whether any finding of the incident's group is seen now."""
    findings = await current_findings(rt, incident.kind, incident.name, now)
    if findings is None:
        return None
    return any(finding_group(f) == incident.group_key for f in findings)


async def verification_clean(rt: Runtime, incident: Incident) -> bool | None:
    """Whether the plan's verification expression is empty (True when there is none)."""
    expr = str((incident.decision or {}).get("verification") or "").strip()
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
    """Alert gone or check clean, and the verification expression empty."""
    present = await still_present(rt, incident, now)
    if present is None:
        return None
    if present:
        return False
    return await verification_clean(rt, incident)


async def run_verifications(rt: Runtime, now: datetime) -> int:
    """Verify every incident whose verification time has come; returns how many ended."""
    ended = 0
    for incident in rt.store.in_state("verifying"):
        if incident.verify_at is None or incident.verify_at > now:
            continue
        outcome = await recovered(rt, incident, now)
        if outcome is None:
            log.info(
                "verification_postponed",
                incident_id=incident.id,
                reason="Prometheus did not answer",
            )
            continue
        ended += 1
        if outcome:
            await _resolve(rt, incident, now)
        else:
            await _not_recovered(rt, incident, now)
    return ended


async def _resolve(rt: Runtime, incident: Incident, now: datetime) -> None:
    ttr = (now - incident.opened_at).total_seconds()
    incident.resolution = f"recovered after {incident.action}"
    incident.cleared_at = now
    rt.store.transition(incident, "resolved", now, time_to_recovery_seconds=round(ttr, 3))
    rt.store.set_breaker(incident.target or "", 0, False, now)
    rt.metrics.time_to_recovery.observe(ttr)
    rt.metrics.remediations.labels(result="recovered").inc()
    log.info(
        "incident_resolved",
        incident_id=incident.id,
        target=incident.target,
        action=incident.action,
        time_to_recovery_seconds=round(ttr, 1),
    )


async def _not_recovered(rt: Runtime, incident: Incident, now: datetime) -> None:
    rt.metrics.remediations.labels(result="not_recovered").inc()
    note_failure(rt, incident.target, now)
    await escalate(
        rt.store,
        incident,
        f"not recovered {rt.config.schedule.verify_after_seconds:g}s after {incident.action}",
        now,
        rt.alertmanager,
        rt.config.services,
    )


def note_failure(rt: Runtime, target: str | None, now: datetime) -> None:
    """Count a failed remediation; open the breaker at the configured number."""
    if not target:
        return
    failures, is_open = rt.store.breaker(target)
    failures += 1
    opened = is_open or failures >= rt.config.policy.circuit_breaker_failures
    rt.store.set_breaker(target, failures, opened, now)
    if opened and not is_open:
        log.error("circuit_breaker_opened", target=target, failures=failures)


def recover_after_restart(rt: Runtime, now: datetime) -> None:
    """Incidents left in 'acting' by a crash may have acted: verify them, never act again."""
    for incident in rt.store.in_state("acting"):
        incident.verify_at = now + timedelta(seconds=rt.config.schedule.verify_after_seconds)
        rt.store.transition(incident, "verifying", now, reason="agent restarted while acting")
        log.warning(
            "incident_recovered_after_restart", incident_id=incident.id, target=incident.target
        )
