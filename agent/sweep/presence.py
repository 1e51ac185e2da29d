"""Is one finding still there? Asked right before acting and when verifying an action.

The source that reported a finding is the one asked: Prometheus for its own alerts and
for the checks the agent runs there; Alertmanager (active: not silenced, not inhibited)
for an alert that only Alertmanager reports, such as one from a second Prometheus the
agent does not query. ``None`` means "cannot tell" (the source failed): the caller waits
and asks again rather than acting, or escalating, on a guess.
"""

from __future__ import annotations

from datetime import datetime

from agent.errors import AgentError
from agent.incidents.model import group_key
from agent.logs import get_logger
from agent.sweep.alerts import parse_alertmanager_alerts
from agent.sweep.collector import SweepDeps, fetch_alerts, fetch_check
from agent.sweep.findings import Finding

log = get_logger("agent.presence")


async def _from_alertmanager(deps: SweepDeps, name: str, now: datetime) -> list[Finding] | None:
    if deps.alertmanager is None:
        log.warning("presence_check_failed", kind="alert", name=name, error="no ALERTMANAGER_URL")
        return None
    opts = deps.config.prometheus
    parsed = parse_alertmanager_alerts(
        await deps.alertmanager.active_alerts(),
        now=now,
        target_labels=opts.target_labels,
        volatile_labels=opts.volatile_labels,
    )
    return [f for f in parsed.findings if f.name == name]


async def current_findings(
    deps: SweepDeps, kind: str, name: str, now: datetime, *, source: str = "prometheus"
) -> list[Finding] | None:
    """The findings of one alert or check as its source reports them now; None on failure."""
    opts = deps.config.prometheus
    try:
        if kind == "alert" and source == "alertmanager":
            return await _from_alertmanager(deps, name, now)
        if kind == "alert":
            parsed = await fetch_alerts(deps.prometheus, opts, now)
            return [f for f in parsed.findings if f.name == name]
        check = next((c for c in deps.config.checks.all() if c.name == name), None)
        if check is None:
            return None
        return (await fetch_check(deps.prometheus, opts, check, now, at=None)).findings
    except (AgentError, ValueError) as exc:
        log.warning("presence_check_failed", kind=kind, name=name, source=source, error=str(exc))
        return None


async def still_present(deps: SweepDeps, finding: Finding, now: datetime) -> bool | None:
    """Whether any finding of the same group (kind, name, service) is seen now by the
    source that reported ``finding``."""
    findings = await current_findings(deps, finding.kind, finding.name, now, source=finding.source)
    if findings is None:
        return None
    wanted = group_key(finding.kind, finding.name, finding.target, finding.fingerprint)
    return any(group_key(f.kind, f.name, f.target, f.fingerprint) == wanted for f in findings)
