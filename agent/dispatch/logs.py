"""The investigation's look at the logs: one read-only ``collect_logs`` for one incident.

The model may ask for a service's recent logs (the ``recent_logs`` tool). The agent then
sends the catalogue's own read-only intent ("show recent logs") to the gateway, with a
vouched context, at most once per diagnosis, within ``diagnosis.logs_timeout_seconds``.
It is no action on the incident: nothing is claimed and no budget is spent, but the
request is counted (``gateway_requests_total``) and logged. A gateway that is busy, slow
or failing costs the tool call an error text, never the diagnosis. What comes back is the
service's own text: the toolbox hands it to the model as untrusted data, and it never
goes back to the gateway.
"""

from __future__ import annotations

import asyncio

from agent.diagnosis.tools import LogReader
from agent.dispatch.dispatcher import build_request
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.findings import Finding

log = get_logger("agent.logs_tool")


def log_reader(rt: Runtime, incident: Incident, finding: Finding) -> LogReader | None:
    """The reader for one incident's diagnosis; None when the catalogue has no read-only
    collect_logs action."""
    catalogue = rt.config.actions.get("collect_logs")
    if catalogue is None or catalogue.mutating:
        return None
    timeout = rt.config.diagnosis.logs_timeout_seconds

    async def read(service: str, lines: int) -> str:
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
        return result.output

    return read
