"""Firing alerts from Prometheus' ``/api/v1/alerts``, and Alertmanager suppression.

Pure functions over decoded JSON. The payload is untrusted: any field can be missing,
of the wrong type or absurdly long; a bad entry is counted and skipped, never raised.
``pending`` alerts are not findings yet: Prometheus has not decided they are real.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent.config import FindingSource
from agent.sweep.findings import (
    Finding,
    fingerprint,
    parse_severity,
    parse_value,
    resolve_target,
    string_map,
)

#: The alerts the agent itself sends to Alertmanager when it escalates and when it asks a
#: human to approve an action. Read back from Alertmanager's API they are the agent's own
#: pages, never a new problem to work on.
ESCALATION_ALERT = "DevopsAgentEscalation"
APPROVAL_ALERT = "DevopsAgentApprovalRequired"
OWN_ALERTS = frozenset({ESCALATION_ALERT, APPROVAL_ALERT})
#: Alerts about the agent itself (``config/prometheus-rules.yml``: DevopsAgentDown,
#: DevopsAgentSweepsStalled, ...) are named so: they are for the humans who run it, and
#: never a finding it works on (it cannot heal itself, and would page twice).
OWN_PREFIX = "DevopsAgent"


def is_own_alert(name: object) -> bool:
    """Whether an alert is the agent's own page or about the agent itself."""
    return isinstance(name, str) and (name in OWN_ALERTS or name.startswith(OWN_PREFIX))


@dataclass
class AlertParse:
    """Findings from one alerts payload, and how many entries were unusable."""

    findings: list[Finding] = field(default_factory=list)
    malformed: int = 0


def parse_time(raw: object, default: datetime) -> datetime:
    """An RFC 3339 timestamp as Prometheus writes it; the default when unreadable."""
    if not isinstance(raw, str):
        return default
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return default
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default.tzinfo)


def alerts_from_payload(payload: object) -> list[object]:
    """The list of alerts inside a ``/api/v1/alerts`` envelope; ValueError when absent."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise ValueError(f"not a success envelope: {str(error or payload)[:200]}")
    data = payload.get("data")
    alerts = data.get("alerts") if isinstance(data, dict) else None
    if not isinstance(alerts, list):
        raise ValueError("envelope has no data.alerts list")
    return alerts


def parse_alerts(
    alerts: Sequence[object],
    *,
    now: datetime,
    target_labels: Sequence[str],
    volatile_labels: Sequence[str],
) -> AlertParse:
    """Turn the alert entries into findings, firing ones only; odd entries are counted.
    Alerts about the agent itself (``DevopsAgent...``) are left out."""
    out = AlertParse()
    volatile = frozenset(volatile_labels)
    times: dict[object, datetime] = {}  # a storm shares a handful of activeAt values
    for entry in alerts:
        state = entry.get("state") if isinstance(entry, dict) else None
        if state in ("pending", "inactive"):
            continue
        finding = None
        if state == "firing":
            finding = alert_finding(entry, now, target_labels, volatile, times)  # type: ignore[arg-type]
        if finding is None:
            if not _about_the_agent(entry):
                out.malformed += 1
        elif not is_own_alert(finding.name):
            out.findings.append(finding)
    return out


def _about_the_agent(entry: object) -> bool:
    labels = entry.get("labels") if isinstance(entry, dict) else None
    return isinstance(labels, dict) and is_own_alert(labels.get("alertname"))


def alert_finding(
    entry: dict[str, object],
    now: datetime,
    target_labels: Sequence[str],
    volatile: frozenset[str],
    times: dict[object, datetime] | None = None,
    source: FindingSource = "prometheus",
) -> Finding | None:
    """One firing alert entry as a finding; None when it has no usable labels or name."""
    labels = string_map(entry.get("labels"))
    name = labels.get("alertname") if labels else None
    if labels is None or not name:
        return None
    active = entry.get("activeAt")
    times = {} if times is None else times
    first_seen = times.get(active) if isinstance(active, str) else None
    if first_seen is None:
        first_seen = parse_time(active, now)
        if isinstance(active, str):
            times[active] = first_seen
    return Finding(
        kind="alert",
        name=name,
        target=resolve_target(labels, target_labels),
        severity=parse_severity(labels.get("severity")),
        labels=labels,
        annotations=string_map(entry.get("annotations")) or {},
        value=parse_value(entry.get("value")),
        first_seen=first_seen,
        fingerprint=fingerprint("alert", name, labels, volatile),
        source=source,
    )


@dataclass(frozen=True)
class Suppression:
    """An alert Alertmanager holds back, and why."""

    labels: Mapping[str, str]
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]


def parse_suppressions(payload: object) -> list[Suppression]:
    """Suppressed alerts from Alertmanager's ``/api/v2/alerts``; ValueError if not a list."""
    if not isinstance(payload, list):
        raise ValueError("Alertmanager /api/v2/alerts did not answer a list")
    out = []
    for entry in payload:
        if not isinstance(entry, dict):
            continue
        status = entry.get("status")
        labels = string_map(entry.get("labels"))
        if not isinstance(status, dict) or labels is None:
            continue
        silenced = tuple(str(s) for s in status.get("silencedBy") or ())
        inhibited = tuple(str(s) for s in status.get("inhibitedBy") or ())
        if silenced or inhibited:
            out.append(Suppression(labels, silenced, inhibited))
    return out


def match_suppression(
    finding: Finding, suppressions: Sequence[Suppression], volatile: frozenset[str]
) -> Suppression | None:
    """The suppression whose labels carry all of the finding's identifying labels, if any.

    Alertmanager may hold extra (external) labels, so the finding's labels need only be a
    subset of the Alertmanager alert's labels.
    """
    wanted = {k: v for k, v in finding.labels.items() if k not in volatile}
    for suppression in suppressions:
        have = suppression.labels
        if all(have.get(k) == v for k, v in wanted.items()):
            return suppression
    return None


def parse_alertmanager_alerts(
    payload: object,
    *,
    now: datetime,
    target_labels: Sequence[str],
    volatile_labels: Sequence[str],
) -> AlertParse:
    """Active alerts from Alertmanager's ``/api/v2/alerts`` as findings; ValueError if the
    answer is not a list. Alertmanager has no sample value; ``startsAt`` is when it fired.
    The agent's own escalations and approval requests, and alerts about the agent itself,
    are left out."""
    if not isinstance(payload, list):
        raise ValueError("Alertmanager /api/v2/alerts did not answer a list")
    out = AlertParse()
    volatile = frozenset(volatile_labels)
    times: dict[object, datetime] = {}
    for entry in payload:
        status = entry.get("status") if isinstance(entry, dict) else None
        state = status.get("state") if isinstance(status, dict) else None
        finding = None
        if _about_the_agent(entry):
            continue
        if state == "active":
            shaped = {
                "labels": entry.get("labels"),
                "annotations": entry.get("annotations"),
                "activeAt": entry.get("startsAt"),
            }
            finding = alert_finding(shaped, now, target_labels, volatile, times, "alertmanager")
        if finding is None:
            out.malformed += state not in ("suppressed", "unprocessed")
        else:
            out.findings.append(finding)
    return out


def new_from_alertmanager(
    prometheus: Sequence[Finding], alertmanager: Sequence[Finding], volatile: frozenset[str]
) -> list[Finding]:
    """The Alertmanager findings that are not Prometheus alerts seen already.

    Alertmanager adds the external labels of the Prometheus that sent an alert, so an alert
    seen through both is one whose Alertmanager labels carry all of the Prometheus alert's
    identifying labels; it keeps the Prometheus finding (and fingerprint).
    """
    seen: dict[tuple[str, str | None], list[dict[str, str]]] = {}
    for f in prometheus:
        if f.kind == "alert":
            wanted = {k: v for k, v in f.labels.items() if k not in volatile}
            seen.setdefault((f.name, f.target), []).append(wanted)
    new = []
    for f in alertmanager:
        candidates = seen.get((f.name, f.target), [])
        if not any(all(f.labels.get(k) == v for k, v in c.items()) for c in candidates):
            new.append(f)
    return new
