"""What the agent sends to the AI Command Gateway, built from trusted parts only.

The ``intent`` is the catalogue's fixed sentence for the action, never model text: the
gateway's own LLM turns it into a docker command, so whatever reaches it is effectively
code. The ``context`` is evidence the agent assembles itself, stripped of control
characters, capped, and passed through the secret redactor.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import Action, Priority, Severity
from agent.logs import Redactor
from agent.text import one_line

_IDEMPOTENCY_NS = uuid.UUID("1f0c2b9e-4a57-4f3e-9d8e-6a1c1d5e0b77")


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


def priority_for(severity: Severity, action: Action) -> Priority:
    """critical -> HIGH (or the catalogue's URGENT), warning -> NORMAL, info -> LOW."""
    if severity is Severity.critical:
        return action.critical_priority
    return "NORMAL" if severity is Severity.warning else "LOW"


def idempotency_key(incident_id: str, action: str) -> str:
    """Stable for one (incident, action), different for any other pair."""
    return str(uuid.uuid5(_IDEMPOTENCY_NS, f"{incident_id}\x00{action}"))


def build_context(evidence: Iterable[str], limit: int, secrets: Iterable[str] = ()) -> str:
    """Join evidence fragments into the capped, redacted ``context`` string."""
    redactor = Redactor(secrets)
    parts = [redactor.text(one_line(e, limit)) for e in evidence if e and e.strip()]
    return one_line("; ".join(parts), limit)
