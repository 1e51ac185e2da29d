"""What a diagnosis produces: a typed decision, who made it, and what it cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agent.config import validation_problems
from agent.text import clip

DecidedBy = Literal["prefilter", "llm", "runbook"]
#: One evidence item of a plan, at most (a longer one is clipped, not refused).
EVIDENCE_ITEM_MAX = 500


class RecoveryPlan(BaseModel):
    """The model's structured answer; validated, then checked by ``safety.refusal``."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=64)
    target: str = Field(min_length=1, max_length=256)
    confidence: float = Field(ge=0.0, le=1.0)
    root_cause: str = Field(max_length=2000)
    rationale: str = Field(max_length=2000)
    evidence: list[str] = Field(max_length=20)
    verification: str = Field(max_length=1000)

    @field_validator("evidence")
    @classmethod
    def _no_blank_evidence(cls, items: list[str]) -> list[str]:
        """Blank items are dropped (small models send ``[""]``); each is clipped."""
        return [clip(item.strip(), EVIDENCE_ITEM_MAX) for item in items if item.strip()]


class TriageAnswer(BaseModel):
    """The model's triage verdict."""

    model_config = ConfigDict(extra="ignore")

    actionable: bool
    urgency: Literal["low", "medium", "high"] = "medium"
    reason: str = Field(default="", max_length=1000)


def plan_schema(actions: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """The strict JSON schema of a plan for one finding: ``action`` and ``target`` are enums
    of what this finding may use, so a model that follows the schema cannot name anything
    else. Models that ignore schemas are still checked in code (``safety.refusal``)."""
    return {
        "name": "recovery_plan",
        "strict": True,
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "action",
                "target",
                "confidence",
                "root_cause",
                "rationale",
                "evidence",
                "verification",
            ],
            "properties": {
                "action": {"type": "string", "enum": list(actions)},
                "target": {"type": "string", "enum": list(targets)},
                "confidence": {"type": "number"},
                "root_cause": {"type": "string"},
                "rationale": {"type": "string"},
                "evidence": {"type": "array", "items": {"type": "string"}},
                "verification": {"type": "string"},
            },
        },
    }


TRIAGE_SCHEMA: dict[str, Any] = {
    "name": "triage",
    "strict": True,
    "schema": {
        "type": "object",
        "additionalProperties": False,
        "required": ["actionable", "urgency", "reason"],
        "properties": {
            "actionable": {"type": "boolean"},
            "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
            "reason": {"type": "string"},
        },
    },
}


@dataclass
class PhaseUsage:
    """Calls and tokens spent in one phase."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def total_tokens(usage: Mapping[str, PhaseUsage]) -> int:
    """Prompt and completion tokens over all phases."""
    return sum(u.prompt_tokens + u.completion_tokens for u in usage.values())


@dataclass(frozen=True)
class Decision:
    """What to do about one finding, and why: the only thing a diagnosis hands on."""

    action: str
    target: str | None
    decided_by: DecidedBy
    actionable: bool
    reason: str = ""
    confidence: float = 0.0
    root_cause: str = ""
    rationale: str = ""
    evidence: tuple[str, ...] = ()
    verification: str = ""
    #: Why the LLM path was left for the runbook, if it was.
    fallback_reason: str = ""
    #: How the configured model failed (error, unusable answer, token budget, deadline),
    #: when it did: then only the runbook's key turned (``guardrails/autonomy.py``).
    model_failure: str = ""
    #: What the runbook's matching rule says for this finding: the operator's key.
    runbook_action: str = ""
    #: Which keys turned for the changing action that runs or waits ("model", "runbook"),
    #: or for the passive or read-only one when nothing changing is proposed; "human" is
    #: added when an approval is granted.
    keys: tuple[str, ...] = ()
    #: A changing action that waits for a human's approval, and its target ("" if none).
    approval_action: str = ""
    approval_target: str = ""
    #: Why the action may run alone, or why it waits for a human (the autonomy verdict).
    autonomy: str = ""
    #: Who approved the action that ran (set when an approval is granted).
    approved_by: str = ""
    #: What the diagnosis itself proposed, before the verdict (the model's plan, or the
    #: runbook's decision when it decided alone).
    proposed: str = ""
    #: The runbook rule that matched the same finding ("" when none did).
    runbook_rule: str = ""
    #: An action whose tier is ``observe``: decided, never sent, nobody asked. ``observed_would``
    #: says what would have happened under ``auto``: ``send`` (it would have run alone) or
    #: ``ask`` (a human would still have been asked).
    observed_action: str = ""
    observed_target: str = ""
    observed_would: str = ""
    #: Whether the action would run alone were its tier ``auto`` (the keys, the source and
    #: the history allow it): what ``report`` counts as handled alone under today's tiers.
    alone: bool = False

    @property
    def observed(self) -> str:
        """What the ``observe`` tier held back, in words ("" when nothing was)."""
        if not self.observed_action:
            return ""
        where = f" on {self.observed_target}" if self.observed_target else ""
        if self.observed_would == "ask":
            return f"would have asked a human to approve {self.observed_action}{where}"
        return f"would have sent {self.observed_action}{where}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        data = asdict(self)
        data["evidence"] = list(self.evidence)
        data["keys"] = list(self.keys)
        return data

    @classmethod
    def from_dict(cls, data: object) -> Decision:
        """The decision a ``to_dict`` wrote; ValueError when the data is not one."""
        if not isinstance(data, dict):
            raise ValueError("a decision must be a JSON object")
        try:
            return _DECISION.validate_python(data)
        except ValidationError as exc:
            raise ValueError(f"not a decision: {'; '.join(validation_problems(exc)[:3])}") from exc


_DECISION: TypeAdapter[Decision] = TypeAdapter(Decision)


@dataclass(frozen=True)
class Diagnosis:
    """A decision with what it cost and the conversation that led to it."""

    decision: Decision
    usage: Mapping[str, PhaseUsage] = field(default_factory=dict)
    transcript: tuple[dict[str, Any], ...] = ()
    #: The past incidents of the same problem the decision saw.
    history: tuple[dict[str, Any], ...] = ()
    #: What the model's tokens cost at ``[diagnosis.prices]``; None when unknown.
    cost: float | None = None

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over all phases."""
        return sum(u.prompt_tokens for u in self.usage.values())

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens over all phases."""
        return total_tokens(self.usage)

    def summary(self) -> dict[str, Any]:
        """The decision, the per-phase usage and the history it saw, without the transcript."""
        return {
            **self.decision.to_dict(),
            "usage": {k: asdict(v) for k, v in self.usage.items()},
            "history": list(self.history),
            "cost": self.cost,
        }


def priced(
    usage: Mapping[str, PhaseUsage], prompt: float | None, completion: float | None
) -> float | None:
    """What the tokens of ``usage`` cost at prices per million tokens: 0 with no tokens,
    None when a price is unknown."""
    prompt_tokens = sum(u.prompt_tokens for u in usage.values())
    completion_tokens = sum(u.completion_tokens for u in usage.values())
    if prompt_tokens + completion_tokens == 0:
        return 0.0
    if prompt is None or completion is None:
        return None
    return (prompt_tokens * prompt + completion_tokens * completion) / 1_000_000
