"""Mapping findings to incidents: open new ones, recognise old ones, clear the gone."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from agent.logs import get_logger
from agent.store.base import Incident, IncidentStore
from agent.sweep.findings import Finding, fingerprint

log = get_logger("agent.incidents")

#: States in which an incident whose findings are gone is simply dropped.
_NOT_ACTED = ("open", "diagnosing")


def group_key(kind: str, name: str, target: str | None, finding_fp: str) -> str:
    """One incident per (kind, name, service); without a service, per finding."""
    return fingerprint(kind, name, {"target": target or f"fp:{finding_fp}"}, ())


def finding_group(finding: Finding) -> str:
    """The group key of a finding."""
    return group_key(finding.kind, finding.name, finding.target, finding.fingerprint)


def open_new(
    store: IncidentStore, findings: Sequence[Finding], now: datetime
) -> list[tuple[Incident, Finding]]:
    """An incident for each finding whose group has none yet; the rest are recognised."""
    opened: list[tuple[Incident, Finding]] = []
    seen: set[str] = set()
    for finding in sorted(findings, key=lambda f: f.queue_key):
        key = finding_group(finding)
        if key in seen or store.current_for(key) is not None:
            continue
        seen.add(key)
        incident = Incident(
            id=uuid.uuid4().hex[:12],
            group_key=key,
            fingerprint=finding.fingerprint,
            kind=finding.kind,
            name=finding.name,
            target=finding.target,
            severity=finding.severity.value,
            state="open",
            opened_at=now,
            updated_at=now,
            finding=finding.to_dict(),
        )
        store.open_incident(incident)
        log.info(
            "incident_opened",
            incident_id=incident.id,
            fingerprint=finding.fingerprint,
            target=finding.target,
            name=finding.name,
            kind=finding.kind,
        )
        opened.append((incident, finding))
    return opened


def clear_gone(store: IncidentStore, findings: Sequence[Finding], now: datetime) -> list[Incident]:
    """Mark incidents cleared whose findings are no longer seen (verifying ones excepted)."""
    current = {finding_group(f) for f in findings}
    cleared = []
    for incident in store.uncleared():
        if incident.group_key in current or incident.state in ("acting", "verifying"):
            continue
        incident.cleared_at = now
        if incident.state in _NOT_ACTED:
            store.transition(incident, "skipped", now, reason="finding cleared before any action")
        else:
            store.save(incident, now)
        store.add_event(incident.id, "cleared", now, {})
        log.info(
            "incident_cleared",
            incident_id=incident.id,
            target=incident.target,
            state=incident.state,
        )
        cleared.append(incident)
    return cleared
