"""The report: a pure fold over outcome records, per service and action and per finding.

The store does only the time-range query (``IncidentStore.outcomes``); everything here is
arithmetic over the records it returns, so it is tested from tables of records. Rows say
what happened (incidents, sent, approved, denied, observed), how well it went (success
after acting, recurrence, time to recovery, how long humans took to answer, how often the
model agreed with the runbook, what a verified recovery cost in tokens and money), and
for observed rows how often the problem cleared by itself or persisted. Each row keeps
the counts ``guardrails/ladder.py`` reads to suggest a tier.

A recurrence is the next incident of the same problem (its group) opening within
``policy.recurrence_seconds`` of this one's end: told from every incident opened in the
range, ended or not.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.config import PASSIVE_ACTIONS, Autonomy
from agent.ledger.record import Outcome

#: The tier of (service, action) today, for "handled alone under today's tiers".
TierOf = Callable[[str, str], Autonomy]


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class Tally:
    """What one row counts, folded one record at a time."""

    incidents: int = 0
    alone_today: int = 0
    results: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Verified actions (sent alone or approved): recovered, and how many of those came back.
    verified: int = 0
    recovered: int = 0
    recurred: int = 0
    #: Actions sent alone (no human), verified: recovered, failed, came back.
    alone_verified: int = 0
    alone_failed: int = 0
    alone_recurred: int = 0
    #: Approved actions that recovered and did not come back.
    approved_healed: int = 0
    #: Observed actions: persisted where the runbook says the same action; cleared alone;
    #: cleared after another hand; persisted.
    observed_agreed: int = 0
    cleared_alone: int = 0
    other_hand: int = 0
    persisted: int = 0
    ttr: list[float] = field(default_factory=list)
    approval: list[float] = field(default_factory=list)
    model_decided: int = 0
    model_agreed: int = 0
    tokens: int = 0
    cost: float | None = 0.0
    first: datetime | None = None
    last: datetime | None = None

    def add(self, o: Outcome, *, recurred: bool, alone_today: bool) -> None:
        """Fold one record in."""
        self.incidents += 1
        self.alone_today += alone_today
        self.results[o.result] += 1
        self._acted(o, recurred)
        self._observed(o)
        if o.recovery_seconds is not None:
            self.ttr.append(o.recovery_seconds)
        if o.approval_seconds is not None:
            self.approval.append(o.approval_seconds)
        if o.agreed is not None:
            self.model_decided += 1
            self.model_agreed += o.agreed
        self.tokens += o.tokens
        if self.cost is not None:
            self.cost = None if o.cost is None else self.cost + o.cost
        self.first = o.ended_at if self.first is None else min(self.first, o.ended_at)
        self.last = o.ended_at if self.last is None else max(self.last, o.ended_at)

    def _acted(self, o: Outcome, recurred: bool) -> None:
        if o.result not in ("sent", "approved") or o.verification is None:
            return
        healed = o.verification == "recovered"
        self.verified += 1
        self.recovered += healed
        self.recurred += healed and recurred
        if o.result == "sent":
            self.alone_verified += 1
            self.alone_failed += not healed
            self.alone_recurred += healed and recurred
        elif healed and not recurred:
            self.approved_healed += 1

    def _observed(self, o: Outcome) -> None:
        if o.result != "observed":
            return
        self.cleared_alone += o.watch == "cleared_alone"
        self.other_hand += o.watch == "other_hand"
        if o.watch == "persisted":
            self.persisted += 1
            self.observed_agreed += o.action == o.runbook_action

    @property
    def watched(self) -> int:
        """Observed actions whose watch ended one way or another."""
        return self.cleared_alone + self.other_hand + self.persisted

    def figures(self) -> dict[str, Any]:
        """The row's figures, JSON-friendly (rates 0..1, seconds, None when unknown)."""
        r = self.results
        per_recovery = self.recovered or None
        return {
            "incidents": self.incidents,
            "alone_today": self.alone_today,
            "sent": r["sent"],
            "approved": r["approved"],
            "denied": r["denied"],
            "expired": r["expired"],
            "cleared": r["cleared"],
            "observed": r["observed"],
            "blocked": r["blocked"],
            "success_rate": _rate(self.recovered, self.verified),
            "recurrence_rate": _rate(self.recurred, self.recovered),
            "time_to_recovery_p50_seconds": quantile(self.ttr, 0.5),
            "time_to_recovery_p90_seconds": quantile(self.ttr, 0.9),
            "approval_latency_p50_seconds": quantile(self.approval, 0.5),
            "agreement_rate": _rate(self.model_agreed, self.model_decided),
            "tokens": self.tokens,
            "cost": self.cost,
            "tokens_per_recovery": self.tokens / per_recovery if per_recovery else None,
            "cost_per_recovery": (
                self.cost / per_recovery if per_recovery and self.cost is not None else None
            ),
            "observed_cleared_alone_rate": _rate(self.cleared_alone, self.watched),
            "observed_other_hand_rate": _rate(self.other_hand, self.watched),
            "observed_persisted_rate": _rate(self.persisted, self.watched),
        }


@dataclass(frozen=True)
class Row:
    """One row of the report: a (service, action) or a finding name, and its tally."""

    service: str
    action: str
    name: str
    tally: Tally
    #: The tier today ("" for a finding-name row); whether the service is still configured.
    tier: str = ""
    configured: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The row as ``report --json`` prints it."""
        head: dict[str, Any] = (
            {"name": self.name}
            if self.name
            else {
                "service": self.service,
                "action": self.action,
                "tier": self.tier,
                "configured": self.configured,
            }
        )
        return {**head, **self.tally.figures()}


@dataclass(frozen=True)
class Report:
    """The whole report over a time range."""

    since: datetime
    until: datetime
    rows: list[Row]
    by_name: list[Row]
    #: Records that could not be read: skipped and counted.
    unreadable: int = 0
    #: Incidents that ended per day (``YYYY-MM-DD``, UTC) per service.
    per_day: dict[str, dict[str, int]] = field(default_factory=dict)


def recurrences(
    outcomes: Iterable[Outcome], openings: Iterable[tuple[str, datetime]], within: float
) -> set[str]:
    """The incidents whose problem came back: the next incident of the same group opened
    within ``within`` seconds of their end."""
    opened: dict[str, list[datetime]] = defaultdict(list)
    for group, at in openings:
        opened[group].append(at)
    for times in opened.values():
        times.sort()
    back = set()
    for o in outcomes:
        times = opened.get(o.group_key, [])
        i = bisect.bisect_right(times, o.opened_at)
        if i < len(times) and (times[i] - o.ended_at).total_seconds() <= within:
            back.add(o.incident_id)
    return back


def fold(
    outcomes: Sequence[Outcome],
    openings: Iterable[tuple[str, datetime]],
    *,
    since: datetime,
    until: datetime,
    tier_of: TierOf,
    services: Mapping[str, object],
    recurrence_seconds: float,
    service: str | None = None,
    unreadable: int = 0,
) -> Report:
    """The report over ``outcomes`` (one service only, with ``service``)."""
    back = recurrences(outcomes, openings, recurrence_seconds)
    by_action: dict[tuple[str, str], Tally] = defaultdict(Tally)
    by_name: dict[str, Tally] = defaultdict(Tally)
    tiers: dict[tuple[str, str], Autonomy] = {}
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for o in outcomes:
        if service is not None and o.service != service:
            continue
        per_day[o.ended_at.strftime("%Y-%m-%d")][o.service] += 1
        key = (o.service, o.action)
        if key not in tiers:
            tiers[key] = tier_of(o.service, o.action)
        alone = o.alone and (o.action in PASSIVE_ACTIONS or tiers[key] == "auto")
        recurred = o.incident_id in back
        by_action[key].add(o, recurred=recurred, alone_today=alone)
        by_name[o.name].add(o, recurred=recurred, alone_today=alone)
    rows = [
        Row(
            s,
            a,
            "",
            t,
            tier="-" if a in PASSIVE_ACTIONS else tiers[(s, a)],
            configured=s in services,
        )
        for (s, a), t in sorted(by_action.items())
    ]
    names = [Row("", "", n, t) for n, t in sorted(by_name.items())]
    days = {day: dict(counts) for day, counts in sorted(per_day.items())}
    return Report(since, until, rows, names, unreadable, days)
