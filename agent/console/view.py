"""What the console's pages show, from the store's records: pure functions, no I/O.

Everything here may hold text from alert labels and annotations, the model or the
gateway; the templates escape all of it (Jinja2's autoescape), so these functions only
pick and shape, and never mark anything safe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent.console.plot import Marker
from agent.incidents.model import Event, Incident
from agent.text import clip

TEXT_MAX = 4000


def age(since: datetime, now: datetime) -> str:
    """How long ago, in the largest unit that fits."""
    seconds = max(0.0, (now - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def row(incident: Incident, now: datetime) -> dict[str, Any]:
    """One line of the incident list."""
    return {
        "id": incident.id,
        "state": incident.state,
        "service": incident.target or "-",
        "name": incident.name,
        "age": age(incident.opened_at, now),
        "action": incident.action or "-",
        "awaiting": incident.awaiting if incident.asks else None,
        "approval_target": incident.awaiting_target if incident.asks else None,
        "approved_by": (incident.decision.approved_by or None) if incident.decision else None,
        "outcome": incident.resolution or incident.dispatch_outcome or "-",
        "observed": incident.decision.observed if incident.decision else "",
    }


def matches(incident: Incident, state: str, service: str, action: str = "", name: str = "") -> bool:
    """Whether the list's filters keep an incident (a service matches the finding's own or
    the one its action runs on, as the report counts it)."""
    where = {incident.target, incident.action_target, incident.awaiting_target}
    if incident.decision is not None:
        where |= {incident.decision.target, incident.decision.observed_target}
        did = {
            incident.decision.action,
            incident.decision.approval_action,
            incident.decision.observed_action,
        }
    else:
        did = {"none"}
    return (
        (not state or incident.state == state)
        and (not service or service in where)
        and (not action or action in did)
        and (not name or incident.name == name)
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _secs(value: float | None) -> str:
    return "-" if value is None else age_of(value)


def age_of(seconds: float) -> str:
    """A duration in the largest unit that fits."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def report_row(figures: dict[str, Any]) -> dict[str, Any]:
    """One report row's figures as the page shows them."""
    cost = figures["cost_per_recovery"]
    per = figures["tokens_per_recovery"]
    return {
        **figures,
        "success": _pct(figures["success_rate"]),
        "recurrence": _pct(figures["recurrence_rate"]),
        "ttr_p50": _secs(figures["time_to_recovery_p50_seconds"]),
        "ttr_p90": _secs(figures["time_to_recovery_p90_seconds"]),
        "answer_p50": _secs(figures["approval_latency_p50_seconds"]),
        "agreement": _pct(figures["agreement_rate"]),
        "tokens_per": "-" if per is None else f"{per:.0f}",
        "cost_per": (("unknown" if figures["tokens"] else "-") if cost is None else f"{cost:.4f}"),
        "cleared_alone": _pct(figures["observed_cleared_alone_rate"]),
        "persisted": _pct(figures["observed_persisted_rate"]),
    }


def _dump(value: object) -> str:
    return clip(json.dumps(value, ensure_ascii=False, indent=1, default=str), TEXT_MAX)


def timeline(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The timeline, oldest first, each event's data as text (transcripts left to their own
    section)."""
    out = []
    for event in events:
        data = dict(event.data)
        if event.kind == "llm_transcript":
            detail = f"{len(data.get('messages', []))} messages (see the model's transcript)"
        elif event.kind == "decision":
            detail = f"{data.get('action')} by {data.get('decided_by')}: {data.get('reason', '')}"
        else:
            detail = _dump(data)
        out.append(
            {"at": event.at.isoformat(timespec="seconds"), "kind": event.kind, "detail": detail}
        )
    return out


def decision_of(events: Sequence[Event]) -> dict[str, Any] | None:
    """The last decision record: the action, both keys, the verdict, the evidence."""
    decided = [e.data for e in events if e.kind == "decision"]
    return dict(decided[-1]) if decided else None


def transcript(events: Sequence[Event]) -> list[dict[str, str]]:
    """The model's conversation, message by message."""
    out = []
    for event in events:
        if event.kind != "llm_transcript":
            continue
        for message in event.data.get("messages", []):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            calls = message.get("tool_calls")
            text = content if isinstance(content, str) else ""
            if calls:
                text = (text + "\n" if text else "") + _dump(calls)
            out.append(
                {
                    "phase": str(message.get("phase", "")),
                    "role": str(message.get("role", "")),
                    "name": str(message.get("name", "")),
                    "text": clip(text, TEXT_MAX),
                }
            )
    return out


def exchanges(events: Sequence[Event]) -> list[dict[str, Any]]:
    """What went to the gateway and what came back."""
    out = []
    for event in events:
        if event.kind != "gateway_request":
            continue
        request = event.data.get("request", {})
        result = event.data.get("result", {})
        action = request.get("action_request", {}) if isinstance(request, dict) else {}
        out.append(
            {
                "at": event.at.isoformat(timespec="seconds"),
                "target": (request.get("target_resource") or {}).get("name")
                if isinstance(request, dict)
                else None,
                "intent": action.get("intent"),
                "context": action.get("context"),
                "outcome": result.get("outcome") if isinstance(result, dict) else None,
                "result": _dump(result),
            }
        )
    return out


def markers(incident: Incident, events: Sequence[Event]) -> list[Marker]:
    """Where the incident opened, each action went out, and verification ended."""
    out = [Marker(incident.opened_at, "opened")]
    for event in events:
        data = event.data
        if event.kind == "transition" and data.get("to") == "acting":
            out.append(Marker(event.at, f"{data.get('action', 'action')} sent"))
        if event.kind == "transition" and data.get("from") == "verifying":
            out.append(Marker(event.at, f"verified: {data.get('to')}"))
    return out
