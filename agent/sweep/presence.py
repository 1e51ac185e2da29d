"""Is one finding still there? Asked right before acting and when verifying an action.

``None`` means "cannot tell" (Prometheus failed): the caller waits and asks again rather
than acting, or escalating, on a guess.
"""

from __future__ import annotations

from datetime import datetime

from agent.errors import PrometheusError
from agent.incidents.model import group_key
from agent.logs import get_logger
from agent.sweep.collector import SweepDeps, fetch_alerts, fetch_check
from agent.sweep.findings import Finding

log = get_logger("agent.presence")


async def current_findings(
    deps: SweepDeps, kind: str, name: str, now: datetime
) -> list[Finding] | None:
    """The findings of one alert or check as Prometheus reports them now; None on failure."""
    opts = deps.config.prometheus
    try:
        if kind == "alert":
            parsed = await fetch_alerts(deps.prometheus, opts, now)
            return [f for f in parsed.findings if f.name == name]
        check = next((c for c in deps.config.checks.all() if c.name == name), None)
        if check is None:
            return None
        return (await fetch_check(deps.prometheus, opts, check, now, at=None)).findings
    except (PrometheusError, ValueError) as exc:
        log.warning("presence_check_failed", kind=kind, name=name, error=str(exc))
        return None


async def still_present(deps: SweepDeps, finding: Finding, now: datetime) -> bool | None:
    """Whether any finding of the same group (kind, name, service) is seen now."""
    findings = await current_findings(deps, finding.kind, finding.name, now)
    if findings is None:
        return None
    wanted = group_key(finding.kind, finding.name, finding.target, finding.fingerprint)
    return any(group_key(f.kind, f.name, f.target, f.fingerprint) == wanted for f in findings)
