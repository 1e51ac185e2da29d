"""The investigation's look at the logs: one read-only ``collect_logs`` for one incident.

The model may ask for a service's recent logs (the ``recent_logs`` tool). The agent then
sends the catalogue's own read-only intent ("show recent logs") to the gateway, with a
vouched context, at most once per diagnosis, within ``diagnosis.logs_timeout_seconds``.
It is no action on the incident: nothing is claimed and no budget is spent, but the
request is counted (``gateway_requests_total``) and logged. A gateway that is busy, slow
or failing costs the tool call an error text, never the diagnosis. What comes back is the
service's own text: the toolbox hands it to the model as untrusted data, and it never
goes back to the gateway.

It is still a request that makes the gateway run a command, so it obeys what any action
obeys: only services whose ``collect_logs`` tier is ``auto`` (``approve`` and ``never``
mean a human decides when logs are read), never while that service's circuit breaker is
open, and never in a dry run, where the tool is not offered and a call made anyway is
answered "logs not read: dry run" and recorded as a request that would have been sent.
"""

from __future__ import annotations

import asyncio

from agent.config import autonomy_of
from agent.diagnosis.safety import allowed_targets
from agent.diagnosis.tools import DRY_RUN_LOGS, LogAccess, LogReader, ServiceLogs
from agent.dispatch.dispatcher import build_request
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.findings import Finding

log = get_logger("agent.logs_tool")


def _refusal(rt: Runtime, service: str) -> str | None:
    """Why this service's logs may not be read now; None when they may."""
    tier = autonomy_of(rt.config, service, "collect_logs")
    if tier != "auto":
        return f"collect_logs is {tier!r} for this service"
    breaker = rt.store.breaker(service)
    if breaker is not None and breaker.is_open:
        return "its circuit breaker is open"
    return None


def log_reader(rt: Runtime, incident: Incident, finding: Finding) -> LogAccess | None:
    """Whose logs one incident's diagnosis may read, and the reader; None when the
    catalogue has no read-only collect_logs action."""
    catalogue = rt.config.actions.get("collect_logs")
    if catalogue is None or catalogue.mutating:
        return None
    refused: dict[str, str] = {}
    for service in allowed_targets(finding, rt.config):
        why = _refusal(rt, service)
        if why is not None:
            refused[service] = why
    services = frozenset(allowed_targets(finding, rt.config)) - refused.keys()
    if rt.dry_run:
        return LogAccess(_withheld(rt, incident, finding), services, refused, offer=False)
    return LogAccess(_reader(rt, incident, finding), services, refused)


def _withheld(rt: Runtime, incident: Incident, finding: Finding) -> LogReader:
    """A dry run's reader: records the request it would have sent, sends nothing."""

    async def read(service: str, lines: int) -> ServiceLogs | str:
        request = build_request(
            rt, incident, finding, "collect_logs", service, lines=lines, purpose="diagnosis"
        )
        rt.withheld.send(incident.id, request)
        return DRY_RUN_LOGS

    return read


def _reader(rt: Runtime, incident: Incident, finding: Finding) -> LogReader:
    timeout = rt.config.diagnosis.logs_timeout_seconds

    async def read(service: str, lines: int) -> ServiceLogs | str:
        why = _refusal(rt, service)  # again: a breaker may have opened since the start
        if why is not None:
            return f"refused: the logs of {service!r} may not be read now: {why}"
        request = build_request(
            rt, incident, finding, "collect_logs", service, lines=lines, purpose="diagnosis"
        )
        try:
            async with asyncio.timeout(timeout):
                result = await rt.gateway.execute(request)
        except TimeoutError:
            log.warning(
                "logs_collected", incident_id=incident.id, target=service, outcome="timeout"
            )
            return f"error: no logs within {timeout:g}s (diagnosis.logs_timeout_seconds)"
        log.info(
            "logs_collected",
            incident_id=incident.id,
            target=service,
            lines=lines,
            outcome=result.outcome,
            chars=len(result.output),
        )
        if result.outcome != "succeeded":
            return f"error: the gateway answered {result.outcome}: {result.error or 'no details'}"
        return ServiceLogs(result.output)

    return read
