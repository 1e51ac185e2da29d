"""Escalation: hand an incident to humans through the routing they already have.

Always a log event; with ``ALERTMANAGER_URL`` set, also an alert named
``DevopsAgentEscalation`` carrying the service, the original alert and the diagnosis.
A failed delivery is logged, never raised: the incident is escalated either way.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime, timedelta

from agent.clients.alertmanager import AlertmanagerClient
from agent.config import Severity
from agent.errors import AlertmanagerError
from agent.gateway.request import plain_name
from agent.logs import get_logger
from agent.store.base import Incident, IncidentStore
from agent.text import one_line

log = get_logger("agent.escalation")
SEVERITIES = frozenset(s.value for s in Severity)


def escalation_alert(
    incident: Incident, reason: str, now: datetime, services: Container[str]
) -> dict[str, object]:
    """The Alertmanager alert for an escalated incident.

    Labels route and group alerts, so they hold only what the agent vouches for: the service
    when it is in the catalogue, the original name when it is a plain identifier, the
    severity, the incident id. Free text goes in the annotations, for humans.
    """
    decision = incident.decision or {}
    in_scope = incident.target is not None and incident.target in services
    return {
        "labels": {
            "alertname": "DevopsAgentEscalation",
            "service": incident.target if in_scope and incident.target else "out-of-scope",
            "original_alertname": plain_name(incident.name),
            "severity": incident.severity if incident.severity in SEVERITIES else "warning",
            "incident_id": incident.id,
        },
        "annotations": {
            "summary": one_line(
                f"devops-agent escalated {incident.name} on {incident.target}", 300
            ),
            "reason": one_line(reason, 500),
            "root_cause": one_line(str(decision.get("root_cause") or ""), 500),
            "action_taken": str(incident.action or "none"),
            "decided_by": str(incident.decided_by or ""),
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


async def escalate(
    store: IncidentStore,
    incident: Incident,
    reason: str,
    now: datetime,
    alertmanager: AlertmanagerClient | None,
    services: Container[str],
) -> None:
    """Move the incident to escalated, log it, and tell Alertmanager when configured."""
    store.transition(incident, "escalated", now, reason=reason)
    incident.resolution = reason
    store.save(incident, now)
    log.warning(
        "incident_escalated",
        incident_id=incident.id,
        target=incident.target,
        name=incident.name,
        reason=reason,
    )
    if alertmanager is None:
        return
    try:
        await alertmanager.post_alerts([escalation_alert(incident, reason, now, services)])
    except AlertmanagerError as exc:
        log.error("escalation_delivery_failed", incident_id=incident.id, error=str(exc))
        return
    store.add_event(incident.id, "escalation_sent", now, {"to": "alertmanager"})
