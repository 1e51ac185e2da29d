"""A finished incident as an evaluation case: `devops-agent incidents export ID`.

The case holds the incident's finding; the raw series behind every PromQL expression its
investigation read (and its alerting rule), fetched again from Prometheus for the hours
before the incident; the scope it was worked in; what the gateway answered; what was done
and whether the problem came back (``recorded``); and the outcome a human can vouch for.

An action is the right answer only when it fixed the problem: the incident resolved after
it, and the same problem stayed away for ``policy.recurrence_seconds`` after that (the
window the ``repeat_failed`` guardrail uses). A restart that "resolved" a leak which was
back 25 s later fixed nothing, and a case that says otherwise would teach the eval to
reward it. Anything else (escalated, skipped, back within the window, or exported before
the window has passed) is exported with the expectation left for the operator to fill in
(``confirmed = false``); such a case runs but is not scored until someone sets it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

from agent.clients.prometheus import PrometheusClient
from agent.config import AgentConfig, HealthCheck
from agent.errors import AgentError, PrometheusError
from agent.eval.case import (
    NO_GATEWAY,
    Case,
    CaseGateway,
    CaseRecord,
    Expectation,
    GatewayStatus,
)
from agent.eval.history import stamp
from agent.incidents.history import PastIncident
from agent.incidents.model import Event, Incident
from agent.text import from_block

#: How far before the incident the series are fetched again.
LOOKBACK = timedelta(hours=1)
MAX_SERIES = 50
#: PromQL words that look like metric names but are not.
_KEYWORDS = frozenset(
    "by without on ignoring group_left group_right bool offset and or unless inf nan"
    " sum avg min max count stddev stdvar topk bottomk quantile count_values group".split()
)
_SELECTOR = re.compile(
    r'(?<![\w:."\'])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?'
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
#: Label lists: ``by (service)``, ``on (job)``... name labels, not series.
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")


class ExportError(AgentError):
    """The incident cannot be exported as a case."""


def selectors(expr: str) -> list[str]:
    """The series selectors an expression reads (``name{matchers}``), best effort: names
    followed by ``(`` are functions, keywords are skipped, strings are not looked into."""
    found: list[str] = []
    stripped = _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)
    stripped = _GROUPING.sub(lambda m: " " * len(m.group()), stripped)
    for match in _SELECTOR.finditer(stripped):
        name = match.group(1)
        after = stripped[match.end() :].lstrip()
        if name.lower() in _KEYWORDS or (after.startswith("(") and not match.group(2)):
            continue
        start, end = match.span()
        selector = expr[start:end].strip()  # the original text, strings included
        if not selector.startswith(tuple("0123456789")) and selector not in found:
            found.append(selector)
    return found


def _expressions(events: Iterable[Event]) -> list[str]:
    """The PromQL the investigation ran, in order."""
    out: list[str] = []
    for event in events:
        if event.kind != "llm_transcript":
            continue
        for message in event.data.get("messages", []):
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                if function.get("name") not in ("prom_query", "prom_range"):
                    continue
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    continue
                if isinstance(args, dict) and isinstance(args.get("expr"), str):
                    out.append(args["expr"])
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics(matrices: Iterable[list[Any]]) -> str:
    """Raw range results (with ``__name__``) as OpenMetrics text, one family per name."""
    families: dict[str, dict[str, list[str]]] = {}
    for result in matrices:
        for series in result:
            labels = dict(series.get("metric", {}))
            name = labels.pop("__name__", None)
            if not name:
                continue
            body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
            key = f"{name}{{{body}}}"
            lines = families.setdefault(name, {}).setdefault(key, [])
            for at, value in series.get("values", []):
                if math.isfinite(float(at)):
                    lines.append(f"{key} {value} {stamp(float(at))}")
    out: list[str] = []
    for name, series_lines in families.items():
        out.append(f"# TYPE {name} unknown")
        for lines in series_lines.values():
            out += sorted(set(lines), key=lambda line: float(line.rsplit(" ", 1)[1]))
    return "\n".join([*out, "# EOF"]) + "\n"


async def _rule(prometheus: PrometheusClient, name: str) -> dict[str, Any] | None:
    try:
        payload = await prometheus.rules_payload()
    except PrometheusError:
        return None
    data = payload.get("data") if isinstance(payload, dict) else None
    for group in (data or {}).get("groups", []) if isinstance(data, dict) else []:
        for rule in group.get("rules", []) if isinstance(group, dict) else []:
            if isinstance(rule, dict) and rule.get("name") == name and rule.get("query"):
                return {
                    "alert": name,
                    "expr": rule["query"],
                    "for": f"{int(float(rule.get('duration') or 0))}s",
                    "labels": {str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                    "annotations": {
                        str(k): str(v) for k, v in (rule.get("annotations") or {}).items()
                    },
                }
    return None


async def _history(prometheus: PrometheusClient, exprs: list[str], at: datetime) -> str:
    """The raw series of every selector, for LOOKBACK before ``at``; a selector Prometheus
    refuses is left out."""
    matrices: list[list[Any]] = []
    seconds = int(LOOKBACK.total_seconds())
    wanted = list(dict.fromkeys(s for e in exprs for s in selectors(e)))
    for selector in wanted:
        try:
            result = await prometheus.query(f"{selector}[{seconds}s]", at=at)
        except PrometheusError:
            continue
        matrices.append([s for s in result if isinstance(s, dict)][:MAX_SERIES])
    text = openmetrics(matrices)
    if text.strip() == "# EOF":
        raise ExportError(
            "Prometheus has no samples left for the series this incident's investigation "
            f"read ({', '.join(wanted) or 'none found'}); it may be past its retention"
        )
    return text


@dataclass(frozen=True)
class Aftermath:
    """What happened after an incident ended: when the same problem next opened an
    incident (None: not yet), when the export runs, and the recurrence window."""

    next_opened: datetime | None
    now: datetime
    recurrence_seconds: float


def recurred_after(incident: Incident, after: Aftermath) -> float | None:
    """Seconds from the incident's end until the same problem was back, when that was
    within the recurrence window; None when it stayed away (or has not been back yet)."""
    if after.next_opened is None:
        return None
    ended = incident.cleared_at or incident.updated_at
    back = max(0.0, (after.next_opened - ended).total_seconds())
    return back if back < after.recurrence_seconds else None


def record_of(incident: Incident, after: Aftermath) -> CaseRecord:
    """What was done about the incident, and whether the problem came back."""
    sent = incident.action if incident.acted_at and incident.action else None
    return CaseRecord(
        sent=sent,
        target=(incident.action_target or incident.target) if sent else None,
        state=incident.state,
        recurred_after_seconds=recurred_after(incident, after),
    )


def expectation(incident: Incident, after: Aftermath) -> Expectation:
    """The right answer when the record vouches for one: an action that resolved the
    incident and kept the problem away for the recurrence window; else left unconfirmed,
    with a note saying why."""
    action = incident.action
    ended = incident.cleared_at or incident.updated_at
    quiet = (after.now - ended).total_seconds()
    back = recurred_after(incident, after)
    window = f"policy.recurrence_seconds {after.recurrence_seconds:g}s"
    if incident.state == "resolved" and action and action not in NO_GATEWAY:
        if back is not None:
            why = f"resolved after {action}, but the same problem was back {back:.0f}s later"
        elif after.next_opened is None and quiet < after.recurrence_seconds:
            why = f"resolved after {action} {quiet:.0f}s ago: too early to tell"
        else:
            return Expectation(
                actions=[action],
                target=incident.action_target or incident.target,
                note=f"exported from incident {incident.id}: resolved after {action}, and "
                f"the problem stayed away ({window})",
            )
        how = f"{why} ({window}): {action} is not confirmed as the right answer"
    else:
        how = f"{incident.state}" + (f" after {action}" if action else "")
    return Expectation(
        actions=["escalate"],
        confirmed=False,
        note=(
            f"exported from incident {incident.id} ({how}): set the right action(s), "
            "the target and the forbidden actions, then confirmed = true"
        ),
    )


_LOG_BLOCK = re.compile(r"<log-data>\n(.*?)\n</log-data>", re.DOTALL)


def _logs(events: Iterable[Event]) -> str:
    """The log text the investigation read (as the model saw it), for the stand-in."""
    for event in events:
        if event.kind != "llm_transcript":
            continue
        for message in event.data.get("messages", []):
            found = _LOG_BLOCK.search(str(message.get("content") or ""))
            if found:
                return from_block(found.group(1))[:1_000_000]
    return ""


def _gateway(events: list[Event]) -> CaseGateway:
    answer: dict[str, Any] = {"logs": _logs(events)}
    for event in events:
        if event.kind == "gateway_request":
            result = event.data.get("result", {})
            status = str(result.get("status", ""))
            if status in get_args(GatewayStatus):
                answer.update(status=status, stdout=str(result.get("output", ""))[:20_000])
                break
    return CaseGateway.model_validate(answer)


_VERIFICATION = {True: "recovered", False: "not_recovered", None: "none"}


def _past(history: Sequence[PastIncident], at: datetime) -> list[dict[str, Any]]:
    """The same problem's earlier incidents as the case's ``past``."""
    out = []
    for past in history:
        if past.ended_at is None or past.decided_by not in ("llm", "runbook"):
            continue
        ago = (at - past.opened_at).total_seconds() / 60
        lasted = (past.ended_at - past.opened_at).total_seconds() / 60
        if not 0 < lasted < ago:
            continue
        out.append(
            {
                "ago_minutes": round(ago, 2),
                "lasted_minutes": round(lasted, 2),
                "decided": past.decided or "none",
                "decided_by": past.decided_by,
                "sent": [s.action for s in past.sent],
                "outcome": next((s.outcome for s in past.sent if s.outcome), "succeeded"),
                "verification": _VERIFICATION[past.verified],
            }
        )
    return out


async def export_case(
    incident: Incident,
    events: list[Event],
    prometheus: PrometheusClient,
    config: AgentConfig,
    after: Aftermath,
    history: Sequence[PastIncident] = (),
) -> Case:
    """The case for a finished incident, with the logs its investigation read, the
    earlier incidents of the same problem (``history``) and what happened after it
    (``after``: did the problem come back?)."""
    if incident.state not in ("resolved", "escalated", "skipped"):
        raise ExportError(
            f"incident {incident.id} is {incident.state}: only finished incidents "
            "(resolved, escalated, skipped) can be exported"
        )
    finding = incident.finding
    at = incident.opened_at
    exprs = _expressions(events)
    rule = await _rule(prometheus, finding.name) if finding.kind == "alert" else None
    if rule is not None:
        exprs.insert(0, rule["expr"])
    for check in config.checks.all():
        if check.name == finding.name:
            exprs.insert(0, check.expr if isinstance(check, HealthCheck) else check.selector)
    if not exprs:
        raise ExportError(f"incident {incident.id}: no PromQL to fetch history for")
    text = await _history(prometheus, exprs, at)
    target = incident.target
    scope: dict[str, Any] = {}
    if target and target in config.services:
        service = config.services[target]
        scope[target] = {"actions": list(service.actions), "related": list(service.related)}
        for other in service.related:
            if other in config.services:
                scope[other] = {"actions": list(config.services[other].actions)}
    if not scope:
        scope[target or "unknown"] = {"actions": []}
    labels = {k: v for k, v in finding.labels.items() if k != "alertname"}
    return Case.model_validate(
        {
            "id": f"incident-{incident.id}",
            "description": f"{finding.name} on {target}, exported from incident {incident.id}",
            "at": at,
            "history": text,
            "rules": [rule] if rule else [],
            "finding": {
                "kind": "health" if finding.kind == "storm" else finding.kind,
                "name": finding.name,
                "severity": finding.severity,
                "labels": labels,
                "annotations": dict(finding.annotations),
                "value": finding.value,
                "target": target,
                "active_for_seconds": max(0.0, (at - finding.first_seen).total_seconds()),
            },
            "scope": scope,
            "gateway": _gateway(events),
            "past": _past(history, at),
            "expect": expectation(incident, after),
            "recorded": record_of(incident, after),
        }
    )
