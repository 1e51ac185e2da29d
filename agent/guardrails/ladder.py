"""The trust ladder: which (service, action) has earned another tier, by the evidence.

Operators move an action up the ladder in steps, ``observe`` then ``approve`` then
``auto``, and down again when it stops deserving it. The report's rows carry the evidence
(``ledger/report.py``); this is the policy that reads it, pure, beside the two keys
(``guardrails/autonomy.py``). It only suggests: the agent never changes its own tiers.
Each suggestion names its evidence and the exact TOML to paste.

- **promote** an ``approve`` or ``observe`` action to ``auto`` after ``[report]
  promote_after`` cases that earned it: approved actions that healed (verified) and did
  not come back, or observed problems that persisted where the runbook names the same
  action; with no denial and no recurrence in the range;
- **demote** an ``auto`` action to ``approve`` when the actions it sent alone failed
  verification or came back within ``policy.recurrence_seconds`` more often than
  ``[report] demote_share``.

Services no longer configured get no suggestion (there is no table to paste into), and
nor do ``never`` tiers (an operator's refusal is not the agent's to revisit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent.config import AgentConfig, Autonomy
from agent.ledger.report import Row, Tally

_BARE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Suggestion:
    """A tier change the evidence supports, and the TOML that makes it."""

    service: str
    action: str
    from_tier: str
    to_tier: Autonomy
    evidence: str
    toml: str

    def to_dict(self) -> dict[str, Any]:
        """As ``report --json`` prints it."""
        return {
            "service": self.service,
            "action": self.action,
            "from": self.from_tier,
            "to": self.to_tier,
            "evidence": self.evidence,
            "toml": self.toml,
        }


def _key(name: str) -> str:
    return name if _BARE.fullmatch(name) else json.dumps(name)


def toml_for(config: AgentConfig, service: str, action: str, tier: Autonomy) -> str:
    """The table header and the ``autonomy`` line that set ``action``'s tier on
    ``service``, keeping the service's other overrides (replace its autonomy line)."""
    tiers = dict(config.services[service].autonomy)
    tiers[action] = tier
    inner = ", ".join(f'{_key(a)} = "{t}"' for a, t in tiers.items())
    return f"[services.{_key(service)}]\nautonomy = {{ {inner} }}"


def _promotion(row: Row, config: AgentConfig) -> Suggestion | None:
    t: Tally = row.tally
    earned = t.approved_healed + t.observed_agreed
    if earned < config.report.promote_after or t.results["denied"] or t.recurred:
        return None
    parts = []
    if t.approved_healed:
        parts.append(f"{t.approved_healed} approved {row.action} healed and stayed healed")
    if t.observed_agreed:
        parts.append(
            f"{t.observed_agreed} observed {row.action} persisted where the runbook says "
            f"{row.action}"
        )
    evidence = (
        f"{' and '.join(parts)} on {row.service}; none denied, none came back within "
        f"{config.policy.recurrence_seconds:g}s (report.promote_after "
        f"{config.report.promote_after})"
    )
    return Suggestion(
        row.service,
        row.action,
        row.tier,
        "auto",
        evidence,
        toml_for(config, row.service, row.action, "auto"),
    )


def _demotion(row: Row, config: AgentConfig) -> Suggestion | None:
    t = row.tally
    bad = t.alone_failed + t.alone_recurred
    if not t.alone_verified or bad / t.alone_verified <= config.report.demote_share:
        return None
    evidence = (
        f"{bad} of {t.alone_verified} {row.action} sent alone on {row.service} failed "
        f"({t.alone_failed}) or came back within {config.policy.recurrence_seconds:g}s "
        f"({t.alone_recurred}): {bad / t.alone_verified:.0%} > report.demote_share "
        f"{config.report.demote_share:.0%}"
    )
    return Suggestion(
        row.service,
        row.action,
        "auto",
        "approve",
        evidence,
        toml_for(config, row.service, row.action, "approve"),
    )


def suggest(rows: list[Row], config: AgentConfig) -> list[Suggestion]:
    """The tier changes the report's (service, action) rows support, never applied."""
    out = []
    for row in rows:
        service = config.services.get(row.service)
        if service is None or row.action not in service.actions:
            continue
        if row.tier in ("approve", "observe"):
            found = _promotion(row, config)
        elif row.tier == "auto":
            found = _demotion(row, config)
        else:
            found = None
        if found is not None:
            out.append(found)
    return out
