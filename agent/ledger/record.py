"""One outcome record per incident, derived when the incident ends and stored once.

"Which services and actions have earned which tier?" needs evidence kept in one shape:
what was found and by which rule, what was decided and by whom, what happened to the
action (sent alone, approved, denied, expired, cleared, observed, blocked, or none at
all), what verification said, how long recovery took, how long a human took to answer,
and what the model cost. ``outcome_of`` derives it from the incident as it ends and its
timeline, a pure function; the store writes it in the transaction that ends the
incident (``store/sql.py``), and ``ledger/report.py`` folds the records into the report.

Recurrence is not in the record: it is only known later, so the report tells it from the
next incident of the same problem (its ``group_key``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.config import PASSIVE_ACTIONS
from agent.incidents.history import NOT_RECOVERED
from agent.incidents.model import Event, Incident

#: What happened to the action: sent alone, approved (and so sent), denied, the wait
#: expired, the finding cleared while a human was asked (or before anything was sent),
#: held back by an ``observe`` tier, refused for good by a guardrail, or no action at all.
RESULTS = ("sent", "approved", "denied", "expired", "cleared", "observed", "blocked", "none")
#: How an approval wait ended (``approval_endings``) -> the record's result.
_APPROVAL_RESULTS = {
    "granted": "approved",
    "denied": "denied",
    "expired": "expired",
    "cleared": "cleared",
    "blocked": "blocked",
}


@dataclass(frozen=True)
class Outcome:
    """How one incident ended, for the report."""

    incident_id: str
    group_key: str
    opened_at: datetime
    ended_at: datetime
    #: The service the action runs on (a related service, when the plan named one), else
    #: the finding's own; kept as named then, so renamed services keep their old name.
    service: str
    name: str
    kind: str
    source: str
    #: The runbook rule that matched the finding ("" when none did).
    rule: str
    action: str
    decided_by: str
    keys: tuple[str, ...]
    result: str
    #: recovered, not_recovered, or None (never verified).
    verification: str | None = None
    #: For an observed action: persisted, cleared_alone or other_hand (None otherwise).
    watch: str | None = None
    #: From opening to verified recovery, or to the observed finding clearing.
    recovery_seconds: float | None = None
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: What the model cost at the prices configured then; None when unknown.
    cost: float | None = 0.0
    #: From the ask to a human's answer (granted or denied).
    approval_seconds: float | None = None
    #: What the diagnosis proposed, and what the runbook said, before the verdict.
    proposed: str = ""
    runbook_action: str = ""
    #: Whether the action would run alone were its tier ``auto``.
    alone: bool = False

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def agreed(self) -> bool | None:
        """Whether the model proposed what the runbook says (None: no model decided)."""
        return self.proposed == self.runbook_action if self.decided_by == "llm" else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view, as stored."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["opened_at"] = self.opened_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        data["keys"] = list(self.keys)
        return data

    def dumps(self) -> str:
        """The stored text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


def _text(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    return value


def _maybe_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    return value


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is not a number")
    return float(value)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is not a count")
    return value


def loads(text: str) -> Outcome:
    """The record a ``dumps`` wrote; ValueError naming what is wrong when it is not one."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("an outcome must be a JSON object")
    keys = data.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("keys is not a list of names")
    result = _text(data, "result")
    if result not in RESULTS:
        raise ValueError(f"unknown result {result!r}")
    return Outcome(
        incident_id=_text(data, "incident_id"),
        group_key=_text(data, "group_key"),
        opened_at=datetime.fromisoformat(_text(data, "opened_at")),
        ended_at=datetime.fromisoformat(_text(data, "ended_at")),
        service=_text(data, "service"),
        name=_text(data, "name"),
        kind=_text(data, "kind"),
        source=_text(data, "source", "prometheus"),
        rule=_text(data, "rule", ""),
        action=_text(data, "action"),
        decided_by=_text(data, "decided_by", ""),
        keys=tuple(keys),
        result=result,
        verification=_maybe_text(data, "verification"),
        watch=_maybe_text(data, "watch"),
        recovery_seconds=_number(data, "recovery_seconds"),
        model_calls=_count(data, "model_calls"),
        prompt_tokens=_count(data, "prompt_tokens"),
        completion_tokens=_count(data, "completion_tokens"),
        cost=_number(data, "cost"),
        approval_seconds=_number(data, "approval_seconds"),
        proposed=_text(data, "proposed", ""),
        runbook_action=_text(data, "runbook_action", ""),
        alone=bool(data.get("alone", False)),
    )


def _action_of(incident: Incident) -> tuple[str, str]:
    """The action the record is about, and the service it runs on."""
    d, own = incident.decision, incident.target or ""
    if d is None:
        return "none", own
    if d.observed_action:
        return d.observed_action, d.observed_target or own
    if d.approval_action:
        return d.approval_action, d.approval_target or own
    return d.action, d.target or own


def _result(incident: Incident, action: str, approval: str | None) -> str:
    d = incident.decision
    if d is not None and d.observed_action:
        return "observed"
    if approval in _APPROVAL_RESULTS:
        return _APPROVAL_RESULTS[approval]
    if incident.acted_at is not None:
        return "sent"
    if action in PASSIVE_ACTIONS:
        return "none"
    if incident.cleared_at is not None and incident.cleared_at >= incident.updated_at:
        return "cleared"
    return "blocked"


def _verification(incident: Incident) -> str | None:
    if incident.acted_at is None:
        return None
    if incident.state == "resolved":
        return "recovered"
    if incident.state == "escalated" and (incident.resolution or "").startswith(NOT_RECOVERED):
        return "not_recovered"
    return None


@dataclass
class _Usage:
    calls: int = 0
    prompt: int = 0
    completion: int = 0
    cost: float | None = 0.0


def _usage(events: Sequence[Event]) -> _Usage:
    """Calls, tokens and cost over every committed diagnosis of the incident."""
    out = _Usage()
    for event in events:
        if event.kind != "decision":
            continue
        usage = event.data.get("usage")
        phases = usage.values() if isinstance(usage, dict) else ()
        tokens = 0
        for phase in phases:
            if isinstance(phase, dict):
                out.calls += int(phase.get("calls", 0) or 0)
                prompt, completion = (
                    phase.get("prompt_tokens", 0),
                    phase.get("completion_tokens", 0),
                )
                out.prompt += int(prompt or 0)
                out.completion += int(completion or 0)
                tokens += int(prompt or 0) + int(completion or 0)
        cost = event.data.get("cost")
        if out.cost is not None and isinstance(cost, int | float):
            out.cost += float(cost)
        elif tokens:
            out.cost = None
    return out


def _approval_seconds(events: Sequence[Event]) -> float | None:
    """From the first ask to the first human answer."""
    asked = next(
        (
            e.at
            for e in events
            if e.kind == "transition" and e.data.get("to") == "awaiting_approval"
        ),
        None,
    )
    answered = next((e.at for e in events if e.kind == "approval"), None)
    if asked is None or answered is None:
        return None
    return max(0.0, (answered - asked).total_seconds())


def _watch(events: Sequence[Event]) -> str | None:
    ends = [e.data.get("watch") for e in events if e.kind == "transition" and e.data.get("watch")]
    return str(ends[-1]) if ends else None


def outcome_of(incident: Incident, events: Sequence[Event], approval: str | None) -> Outcome:
    """The record of ``incident`` as it ends: ``events`` is its timeline (this step's
    included), ``approval`` how its last wait for a human ended, if it had one."""
    d = incident.decision
    action, service = _action_of(incident)
    verification = _verification(incident)
    watch = _watch(events)
    took = (incident.updated_at - incident.opened_at).total_seconds()
    healed = verification == "recovered" or watch in ("cleared_alone", "other_hand")
    usage = _usage(events)
    return Outcome(
        incident_id=incident.id,
        group_key=incident.group_key,
        opened_at=incident.opened_at,
        ended_at=incident.updated_at,
        service=service,
        name=incident.name,
        kind=incident.kind,
        source=incident.finding.source,
        rule=d.runbook_rule if d else "",
        action=action,
        decided_by=d.decided_by if d else "",
        keys=d.keys if d else (),
        result=_result(incident, action, approval),
        verification=verification,
        watch=watch,
        recovery_seconds=max(0.0, took) if healed else None,
        model_calls=usage.calls,
        prompt_tokens=usage.prompt,
        completion_tokens=usage.completion,
        cost=usage.cost,
        approval_seconds=_approval_seconds(events),
        proposed=d.proposed if d else "",
        runbook_action=d.runbook_action if d else "",
        alone=d.alone if d else False,
    )
