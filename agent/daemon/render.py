"""Human-readable renderings for the command line: tables and timelines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent.store.base import Event, Incident


def _cell(value: object, width: int) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_incidents(rows: Sequence[dict[str, Any]]) -> str:
    """Recent incidents as an aligned table."""
    if not rows:
        return "no incidents"
    cols = [
        ("id", 12),
        ("state", 10),
        ("target", 20),
        ("name", 24),
        ("action", 14),
        ("opened_at", 25),
    ]
    lines = ["  ".join(name.upper().ljust(width) for name, width in cols)]
    lines += [
        "  ".join(_cell(r.get(name), width).ljust(width) for name, width in cols) for r in rows
    ]
    return "\n".join(lines)


def _event_line(event: Event) -> str:
    data = dict(event.data)
    if event.kind == "llm_transcript":
        return f"{len(data.get('messages', []))} messages kept (use --json to read them)"
    if event.kind == "gateway_request":
        result = data.get("result", {})
        return (
            f"intent={data.get('request', {}).get('action_request', {}).get('intent')!r} "
            f"outcome={result.get('outcome')} status={result.get('status')} "
            f"attempts={result.get('attempts')} command={result.get('command')!r}"
        )
    return json.dumps(data, ensure_ascii=False, default=str)[:300]


def render_timeline(incident: Incident, events: Sequence[Event]) -> str:
    """One incident and its timeline."""
    head = [
        f"incident {incident.id}  {incident.state}",
        f"  {incident.kind} {incident.name} on {incident.target} ({incident.severity})",
        f"  fingerprint {incident.fingerprint}",
        f"  action {incident.action or '-'} decided by {incident.decided_by or '-'}",
    ]
    if incident.resolution:
        head.append(f"  resolution: {incident.resolution}")
    body = [
        f"  {e.at.isoformat(timespec='seconds')}  {e.kind:<16} {_event_line(e)}" for e in events
    ]
    return "\n".join([*head, "timeline:", *body])


def render_cycle(report: Any) -> str:
    """A short summary of one cycle."""
    sweep = report.sweep
    lines = [
        f"sweep {sweep.sweep_id}: {len(sweep.findings)} findings in {sweep.duration_seconds:.2f}s"
        + (f" (failed sources: {', '.join(sweep.failed_sources)})" if sweep.failed_sources else "")
    ]
    lines += [
        f"  decision {d['incident_id']}: {d['action']} on {d['target']} ({d['decided_by']}: {d['reason']})"
        for d in report.decisions
    ]
    lines += [
        f"  dispatched {d['action']} on {d['target']}: {d['outcome']}" for d in report.dispatches
    ]
    lines += [
        f"  skipped {s.get('name')} on {s.get('target')}: {s['reason']} {s.get('detail', '')}"
        for s in report.skips
    ]
    lines += [f"  skipped {s.name} on {s.target}: {s.reason} {s.detail}" for s in sweep.skipped]
    return "\n".join(lines)
