"""Escalation: hand an incident to humans through the routing they already have.

Always a log event; with ``ALERTMANAGER_URL`` set, also an alert named
``DevopsAgentEscalation`` carrying the service, the original alert and the diagnosis.
A failed delivery is logged, never raised: the incident is escalated either way.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime, timedelta

from agent.clients.alertmanager import AlertmanagerClient
from agent.errors import AlertmanagerError
from agent.gateway.request import plain_name
from agent.incidents.model import Event, Incident
from agent.logs import get_logger
from agent.store.base import IncidentStore
from agent.text import one_line

log = get_logger("agent.escalation")


def escalation_alert(
    incident: Incident, reason: str, now: datetime, services: Container[str]
) -> dict[str, object]:
    """The Alertmanager alert for an escalated incident.

    Labels route and group alerts, so they hold only what the agent vouches for: the
    service when it is in the catalogue, the original name when it is a plain identifier,
    the severity, the incident id. Free text goes in the annotations, for humans.
    """
    decision = incident.decision
    in_scope = incident.target is not None and incident.target in services
    return {
        "labels": {
            "alertname": "DevopsAgentEscalation",
            "service": incident.target if in_scope and incident.target else "out-of-scope",
            "original_alertname": plain_name(incident.name),
            "severity": incident.severity.value,
            "incident_id": incident.id,
        },
        "annotations": {
            "summary": one_line(
                f"devops-agent escalated {incident.name} on {incident.target}", 300
            ),
            "reason": one_line(reason, 500),
            "root_cause": one_line(decision.root_cause if decision else "", 500),
            "action_taken": str(incident.action or "none"),
            "decided_by": str(incident.decided_by or ""),
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
    }


async def deliver(
    store: IncidentStore,
    incident: Incident,
    reason: str,
    now: datetime,
    alertmanager: AlertmanagerClient | None,
    services: Container[str],
) -> None:
    """Tell Alertmanager about an escalated incident, when one is configured."""
    if alertmanager is None:
        return
    try:
        await alertmanager.post_alerts([escalation_alert(incident, reason, now, services)])
    except AlertmanagerError as exc:
        log.error("escalation_delivery_failed", incident_id=incident.id, error=str(exc))
        return
    store.note(incident.id, Event(now, "escalation_sent", {"to": "alertmanager"}))
