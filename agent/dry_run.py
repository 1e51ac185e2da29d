"""What a dry run held back: the gateway requests it would have sent and the alerts it
would have posted.

A dry run (``DRY_RUN=true``, ``devops-agent sweep --dry-run``) decides exactly as the real
run would, but sends nothing to the gateway (neither an action nor the investigation's
look at the logs) and posts nothing to Alertmanager (neither an escalation nor an approval
ask). Each place that would have sent or posted something records it here instead: a log
event (``would_send``, ``would_escalate``) and an entry the ``sweep`` command reports.

The daemon never reads the entries back, so they are kept in bounded queues: a dry-run
daemon that runs for weeks holds the last few hundred, not all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.gateway.request import GatewayRequest
from agent.logs import get_logger
from agent.text import clip

log = get_logger("agent.dry_run")

#: Entries kept of each kind; a one-shot dry run never comes near it.
KEPT = 1000


def _queue() -> deque[dict[str, Any]]:
    return deque(maxlen=KEPT)


@dataclass
class Withheld:
    """The requests and alerts a dry run did not send, newest last."""

    sent: deque[dict[str, Any]] = field(default_factory=_queue)
    escalated: deque[dict[str, Any]] = field(default_factory=_queue)

    def send(self, incident_id: str, request: GatewayRequest) -> None:
        """Record a gateway request the dry run did not send."""
        entry = {
            "incident_id": incident_id,
            "target": request.target,
            "action": request.action,
            "intent": request.intent,
            "purpose": request.purpose,
        }
        log.info("would_send", **entry)
        self.sent.append(entry)

    def post(self, incident_id: str, alert: Mapping[str, Any], *, ends: bool = False) -> None:
        """Record an Alertmanager alert the dry run did not post: an escalation or an
        approval ask, or (``ends``) the alert that would have ended one."""
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        entry = {
            "incident_id": incident_id,
            "alert": str(labels.get("alertname", "")),
            "service": str(labels.get("service", "")),
            "summary": clip(str(annotations.get("summary", "")), 300),
            "reason": clip(str(annotations.get("reason", "")), 300),
            "ends": ends,
        }
        log.info("would_escalate", **entry)
        self.escalated.append(entry)

    def drain(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Everything recorded so far (requests, alerts), forgotten here."""
        sent, escalated = list(self.sent), list(self.escalated)
        self.sent.clear()
        self.escalated.clear()
        return sent, escalated
