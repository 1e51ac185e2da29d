"""What the agent sends to the AI Command Gateway, built from facts it can vouch for.

The gateway's own model turns ``intent`` and ``context`` into one docker command, and the
gateway's check of that command lets ``docker system prune`` and ``docker exec ... sh -c``
through for any container. Whatever reaches those two fields is therefore code. So:

- ``intent`` is the catalogue's fixed sentence for the action, never model text;
- ``context`` is made of fixed sentences of the agent's own, filled in only with facts the
  agent produced: the alert or check name when it is a plain identifier
  (``[A-Za-z0-9_:]+``, else a placeholder), the service from the catalogue, the severity,
  the finding's value as a number, when it started, the action id and the incident id.

Annotations, label values, tool output and the diagnosing model's prose never go on the
wire; the incident's own record keeps them for humans.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.config import Action, Priority, Severity
from agent.text import clip

_IDEMPOTENCY_NS = uuid.UUID("1f0c2b9e-4a57-4f3e-9d8e-6a1c1d5e0b77")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_:]+")
#: What the context says instead of a name that is not a plain identifier.
UNNAMED = "an alert whose name is not a plain identifier"
NAME_MAX = 120


@dataclass(frozen=True)
class GatewayRequest:
    """One recovery intent for one service, ready to send."""

    source_id: str
    target: str
    action: str
    intent: str
    context: str
    priority: Priority
    idempotency_key: str
    #: Whether the action changes the service: a mutating request is never sent twice.
    mutating: bool
    #: Why it is sent: ``remediation`` (an incident's action), or ``diagnosis`` (a read-only
    #: look the investigation asked for). Sent as a header, which gateways ignore.
    purpose: str = "remediation"

    def body(self) -> dict[str, Any]:
        """The JSON body of POST /execute-docker-command."""
        return {
            "source_id": self.source_id,
            "target_resource": {"name": self.target},
            "action_request": {
                "intent": self.intent,
                "context": self.context,
                "priority": self.priority,
            },
        }


@dataclass(frozen=True)
class Facts:
    """What the context may say: each field typed, each produced or checked by the agent."""

    incident_id: str
    kind: str
    name: str
    service: str
    severity: Severity
    value: float | None
    since: datetime
    action: str
    #: How many log lines a ``collect_logs`` asks for (a number the agent bounded).
    lines: int | None = None


def priority_for(severity: Severity, action: Action) -> Priority:
    """critical -> HIGH (or the catalogue's URGENT), warning -> NORMAL, info -> LOW."""
    if severity is Severity.critical:
        return action.critical_priority
    return "NORMAL" if severity is Severity.warning else "LOW"


def idempotency_key(incident_id: str, action: str) -> str:
    """Stable for one (incident, action), different for any other pair."""
    return str(uuid.uuid5(_IDEMPOTENCY_NS, f"{incident_id}\x00{action}"))


def plain_name(name: str) -> str:
    """The name itself when it is a plain identifier, else a fixed placeholder."""
    return clip(name, NAME_MAX) if _PLAIN_NAME.fullmatch(name) else UNNAMED


def build_context(facts: Facts, limit: int, services: Container[str]) -> str:
    """The ``context`` field: fixed sentences filled in with vouched facts only.

    ``services`` is the catalogue; a service outside it is a bug in the caller.
    """
    if facts.service not in services:
        raise ValueError(f"service {facts.service!r} is not in the catalogue")
    kind = {"alert": "alert", "health": "health check", "anomaly": "anomaly check"}.get(
        facts.kind, "finding"
    )
    value = (
        f" Current value {facts.value:.6g}."
        if facts.value is not None and math.isfinite(facts.value)
        else ""
    )
    text = (
        f"devops-agent incident {facts.incident_id}: {kind} {plain_name(facts.name)} "
        f"({facts.severity.value}) on service {facts.service} since "
        f"{facts.since.isoformat(timespec='seconds')}.{value} "
        f"Requested action: {facts.action}."
    )
    if facts.lines is not None:
        text += f" Show the last {int(facts.lines)} lines."
    return clip(text, limit)
