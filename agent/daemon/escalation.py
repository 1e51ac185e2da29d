"""Escalation: hand an incident to humans through the routing they already have.

Always a log event; with ``ALERTMANAGER_URL`` set, also an alert named
``DevopsAgentEscalation`` carrying the service, the original alert and the diagnosis.
A failed delivery is logged, never raised: the incident is escalated either way.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from agent.clients.alertmanager import AlertmanagerClient
from agent.errors import AlertmanagerError
from agent.logs import get_logger
from agent.store.base import Incident, IncidentStore
from agent.text import one_line

log = get_logger("agent.escalation")


def escalation_alert(incident: Incident, reason: str, now: datetime) -> dict[str, object]:
    """The Alertmanager alert for an escalated incident."""
    decision = incident.decision or {}
    return {
        "labels": {
            "alertname": "DevopsAgentEscalation",
            "service": incident.target or "unknown",
            "original_alertname": incident.name,
            "severity": incident.severity,
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
        await alertmanager.post_alerts([escalation_alert(incident, reason, now)])
    except AlertmanagerError as exc:
        log.error("escalation_delivery_failed", incident_id=incident.id, error=str(exc))
        return
    store.add_event(incident.id, "escalation_sent", now, {"to": "alertmanager"})
