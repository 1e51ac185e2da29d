"""Human-readable renderings for the command line: tables and timelines.

Everything shown here may carry text from alert labels and annotations, so every value
goes through ``printable`` (control characters escaped) and long ones through ``clip``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent.config import AgentConfig, autonomy_of
from agent.gateway.response import error_line
from agent.incidents.model import Event, Incident
from agent.store.base import Unreadable
from agent.text import clip, printable

CELL_MAX = 40


def show(value: object, limit: int = 300) -> str:
    """One value as safe terminal text: '-' when empty, escaped, clipped."""
    return "-" if value in (None, "") else clip(printable(str(value)), limit)


def unreadable_row(bad: Unreadable) -> dict[str, Any]:
    """A stored incident that cannot be read, as a row of the listing."""
    return {"id": bad.id, "state": "unreadable", "error": bad.error}


def render_incidents(rows: Sequence[dict[str, Any]]) -> str:
    """Recent incidents as an aligned table; unreadable ones are counted below it."""
    if not rows:
        return "no incidents"
    bad = [r for r in rows if r.get("state") == "unreadable"]
    cols = ["id", "state", "target", "name", "action", "opened_at"]
    cells = [[show(_cell(r, c), CELL_MAX) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines += [f"incident {show(r['id'])} cannot be read: {show(r.get('error'))}" for r in bad]
    return "\n".join(line.rstrip() for line in lines)


def _cell(row: dict[str, Any], column: str) -> object:
    if column == "action" and row.get("observed"):
        return f"observed: {row['observed']}"
    if column == "action" and row.get("approval_action"):
        held = "approved, not sent" if row.get("state") == "approved" else "approve"
        return f"{row['approval_action']} {row.get('approval_target')}? ({held})"
    return row.get(column)


def _event_line(event: Event) -> str:
    data = dict(event.data)
    if event.kind == "llm_transcript":
        return f"{len(data.get('messages', []))} messages kept (use --json to read them)"
    if event.kind == "gateway_request":
        result = data.get("result", {})
        shown_error = error_line(result.get("error_code"), result.get("error_message"))
        return show(
            f"intent={data.get('request', {}).get('action_request', {}).get('intent')!r} "
            f"outcome={result.get('outcome')} status={result.get('status')} "
            f"attempts={result.get('attempts')} command={result.get('command')!r}"
            + (f" error={shown_error!r}" if shown_error else ""),
            2000,
        )
    return show(json.dumps(data, ensure_ascii=False, default=str))


def render_timeline(incident: Incident, events: Sequence[Event]) -> str:
    """One incident and its timeline."""
    head = [
        f"incident {incident.id}  {incident.state}",
        f"  {incident.kind} {show(incident.name)} on {show(incident.target)} "
        f"({show(incident.severity)}), reported by {incident.finding.source}",
        f"  fingerprint {incident.fingerprint}",
        f"  action {show(incident.action)} decided by {show(incident.decided_by)}",
    ]
    decision = incident.decision
    if decision is not None and decision.decided_by != "prefilter":
        keys = " + ".join(decision.keys) or "none"
        head.append(f"  keys: {keys}; runbook: {show(decision.runbook_action)}")
        if decision.model_failure:
            head.append(f"  the model failed: {show(decision.model_failure)}")
        if decision.autonomy:
            head.append(f"  autonomy: {show(decision.autonomy)}")
        if decision.approved_by:
            head.append(f"  approved by {show(decision.approved_by)}")
        if decision.observed:
            head.append(
                f"  OBSERVED (tier observe, nothing sent, nobody asked): {show(decision.observed)}"
            )
    if incident.asks:
        until = incident.approval_until.isoformat() if incident.approval_until else "-"
        action, target = show(incident.awaiting), show(incident.awaiting_target)
        if incident.state == "approved":
            by = show(incident.decision.approved_by if incident.decision else "")
            head.append(
                f"  APPROVED by {by}, not sent yet ({show(incident.blocked_reason)}): "
                f"{action} on {target}, until {until}"
            )
        else:
            head.append(
                f"  WAITING for approval of {action} on {target} until {until}: devops-agent "
                f"incidents approve {incident.id} --action {action} --target {target} --by NAME"
            )
        if incident.awaiting_target != incident.target:
            head.append(
                f"  note: {action} would run on {target}, not on {show(incident.target)} "
                "(the finding's service)"
            )
    if incident.resolution:
        head.append(f"  resolution: {show(incident.resolution)}")
    head += _history_lines(events)
    body = [
        f"  {e.at.isoformat(timespec='seconds')}  {e.kind:<16} {_event_line(e)}" for e in events
    ]
    return "\n".join([*head, "timeline:", *body])


def _history_lines(events: Sequence[Event]) -> list[str]:
    """The past incidents of the same problem the (last) decision saw."""
    decided = [e for e in events if e.kind == "decision"]
    seen = decided[-1].data.get("history") if decided else None
    if not isinstance(seen, list):
        return []
    lines = [f"  history the decision saw: {len(seen) or 'no'} past incident(s) of this problem"]
    for past in seen:
        if not isinstance(past, dict):
            continue
        said = past.get("verified")
        verified = "recovered" if said is True else "not recovered" if said is False else "-"
        quiet = past.get("quiet_seconds")
        back = f", back after {quiet}s" if quiet is not None else ""
        sent = ", ".join(str(s) for s in past.get("sent") or []) or "nothing sent"
        lines.append(
            show(
                f"    {past.get('opened_at')} {past.get('id')}: {past.get('state')}, decided "
                f"{past.get('decided')} by {past.get('decided_by')}, {sent}, verification "
                f"{verified}{back}",
                400,
            )
        )
    return lines


def render_cycle(report: Any) -> str:
    """A short summary of one cycle."""
    sweep = report.sweep
    failed = f" (failed sources: {show(', '.join(sweep.failed_sources))})"
    lines = [
        f"sweep {sweep.sweep_id}: {len(sweep.findings)} findings in {sweep.duration_seconds:.2f}s"
        + (failed if sweep.failed_sources else "")
    ]
    lines += [
        f"  decision {d['incident_id']}: {show(d['action'])} on {show(d['target'])}"
        f" ({d['decided_by']}: {show(d['reason'])})"
        + (f"; observed: {show(_observed(d))}" if d.get("observed_action") else "")
        for d in report.decisions
    ]
    lines += [
        f"  dispatched {show(d['action'])} on {show(d['target'])}: {d['outcome']}"
        for d in report.dispatches
    ]
    lines += [
        f"  skipped {show(s.get('name'))} on {show(s.get('target'))}: {s['reason']}"
        f" {show(s.get('detail', ''))}"
        for s in report.skips
    ]
    lines += [
        f"  skipped {show(s.name)} on {show(s.target)}: {s.reason} {show(s.detail)}"
        for s in sweep.skipped
    ]
    lines += [_would_send(w) for w in report.would_send]
    lines += [_would_escalate(w) for w in report.would_escalate]
    return "\n".join(lines)


def _observed(decision: dict[str, Any]) -> str:
    """What an observe tier held back, from a decision record."""
    what = "asked a human to approve" if decision.get("observed_would") == "ask" else "sent"
    return f"would have {what} {decision['observed_action']} on {decision.get('observed_target')}"


def _would_send(entry: dict[str, Any]) -> str:
    """A dry run's request it did not send, as one line."""
    why = "to read logs for the diagnosis" if entry["purpose"] == "diagnosis" else "as the action"
    return (
        f"  would send {show(entry['action'])} ({show(entry['intent'])!r}) for "
        f"{show(entry['target'])} to the gateway {why} (incident {entry['incident_id']})"
    )


def _would_escalate(entry: dict[str, Any]) -> str:
    """A dry run's alert it did not post, as one line."""
    what = "end" if entry["ends"] else "post"
    why = f": {show(entry['reason'], 200)}" if entry["reason"] else ""
    return (
        f"  would {what} {show(entry['alert'])} for {show(entry['service'])} "
        f"(incident {entry['incident_id']}){why}"
    )


def render_pending(rows: Sequence[dict[str, Any]]) -> str:
    """Incidents waiting for approval: what each asks for, until when, and how to answer."""
    if not rows:
        return "no incident waits for approval"
    lines = []
    for r in rows:
        held = (
            f", approved by {show(r.get('approved_by'))}, not sent yet"
            if r.get("state") == "approved"
            else ""
        )
        lines.append(
            f"{show(r.get('id'))}  {show(r.get('approval_action'))} on "
            f"{show(r.get('approval_target'))}  ({show(r.get('name'))} on "
            f"{show(r.get('target'))}, until {show(r.get('approval_until'))}{held})"
        )
    lines.append(
        "answer with: devops-agent incidents approve|deny ID --action ACTION --target SERVICE "
        "--by NAME [--reason TEXT]"
    )
    return "\n".join(lines)


def render_autonomy(config: AgentConfig) -> str:
    """The effective autonomy tier of every action of every service."""
    lines = [
        "autonomy (auto: alone; changing actions only when model and runbook agree; "
        "approve: a human says yes; observe: decided, never sent, nobody asked; never: refused):"
    ]
    for name, service in config.services.items():
        tiers = ", ".join(f"{a}={autonomy_of(config, name, a)}" for a in service.actions)
        lines.append(f"  {show(name)}: {tiers or '-'}")
    return "\n".join(lines)
