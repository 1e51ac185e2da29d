"""Escalation: hand an incident to humans through the routing they already have.

Always a log event; with ``ALERTMANAGER_URL`` set, also an alert named
``DevopsAgentEscalation`` carrying the service, the original alert and the diagnosis (for
a fleet storm: the services firing). A failed delivery is logged, never raised: the
incident is escalated either way.
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
from agent.sweep.alerts import APPROVAL_ALERT, ESCALATION_ALERT
from agent.text import one_line

log = get_logger("agent.escalation")


def escalation_alert(
    incident: Incident,
    reason: str,
    now: datetime,
    services: Container[str],
    ends_at: datetime | None = None,
) -> dict[str, object]:
    """The Alertmanager alert for an escalated incident (``ends_at`` now resolves it).

    Labels route and group alerts, so they hold only what the agent vouches for: the
    service when it is in the catalogue (``fleet`` for a storm), the original name when it
    is a plain identifier, the severity, the incident id. Free text goes in the
    annotations, for humans; a storm's annotations list the services firing.
    """
    decision = incident.decision
    in_scope = incident.target is not None and incident.target in services
    service = incident.target if in_scope and incident.target else "out-of-scope"
    summary = f"devops-agent escalated {incident.name} on {incident.target}"
    annotations = {
        "reason": one_line(reason, 500),
        "root_cause": one_line(decision.root_cause if decision else "", 500),
        "action_taken": str(incident.action or "none"),
        "decided_by": str(incident.decided_by or ""),
    }
    if incident.kind == "storm":
        service = "fleet"
        summary = incident.finding.annotations.get("summary", summary)
        annotations["services"] = one_line(incident.finding.annotations.get("services", ""), 4000)
    return {
        "labels": {
            "alertname": ESCALATION_ALERT,
            "service": service,
            "original_alertname": plain_name(incident.name),
            "severity": incident.severity.value,
            "incident_id": incident.id,
        },
        "annotations": {"summary": one_line(summary, 300), **annotations},
        "startsAt": incident.opened_at.isoformat(),
        "endsAt": (ends_at or now + timedelta(hours=1)).isoformat(),
    }


def approval_alert(
    incident: Incident,
    action: str,
    target: str,
    until: datetime,
    now: datetime,
    *,
    console_url: str | None = None,
    ends: bool = False,
) -> dict[str, object]:
    """The Alertmanager alert that asks a human to approve ``action`` on ``target``.

    Its labels are the catalogue's words only (service, action, incident id), so routing
    never depends on alert text; its annotations are the agent's own summary of the
    evidence, why it asks, and the exact commands that answer. It ends by itself at the
    approval deadline, and is ended at once when the wait ends (``ends``).
    """
    decision = incident.decision
    finding = incident.finding
    value = "" if finding.value is None else f" at value {finding.value:g}"
    evidence = (
        f"{plain_name(incident.name)} ({incident.severity.value}) on {target}{value}, "
        f"firing since {finding.first_seen:%Y-%m-%d %H:%M:%SZ}"
    )
    if decision is not None:
        keys = " and ".join(decision.keys) or "no key"
        evidence += f"; decided by {decision.decided_by}; keys for the {action}: {keys}; "
        evidence += f"runbook: {decision.runbook_action or 'no rule'}"
    elsewhere = (
        f", for {plain_name(incident.name)} on {incident.target}"
        if incident.target and target != incident.target
        else ""
    )
    annotations = {
        "summary": f"devops-agent asks to {action} {target} (incident {incident.id}{elsewhere})",
        "evidence": one_line(evidence, 500),
        "reason": one_line(decision.autonomy if decision else "", 500),
        "approve": f"devops-agent incidents approve {incident.id} --action {action} "
        f"--target {target} --by YOUR_NAME",
        "deny": f'devops-agent incidents deny {incident.id} --by YOUR_NAME --reason "..."',
        "expires": until.isoformat(timespec="seconds"),
    }
    if console_url:
        annotations["console"] = console_url
    return {
        "labels": {
            "alertname": APPROVAL_ALERT,
            "service": target,
            "action": action,
            "incident_id": incident.id,
        },
        "annotations": annotations,
        **({} if ends else {"startsAt": now.isoformat()}),
        "endsAt": (now if ends else until).isoformat(),
    }


async def deliver(
    store: IncidentStore,
    incident: Incident,
    reason: str,
    now: datetime,
    alertmanager: AlertmanagerClient | None,
    services: Container[str],
    *,
    resolved: bool = False,
) -> None:
    """Tell Alertmanager about an escalated incident (or that its escalation is over)."""
    if alertmanager is None:
        return
    alert = escalation_alert(incident, reason, now, services, ends_at=now if resolved else None)
    try:
        await alertmanager.post_alerts([alert])
    except AlertmanagerError as exc:
        log.error("escalation_delivery_failed", incident_id=incident.id, error=str(exc))
        return
    kind = "escalation_resolved" if resolved else "escalation_sent"
    store.note(incident.id, Event(now, kind, {"to": "alertmanager"}))
