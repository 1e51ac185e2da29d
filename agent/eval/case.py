"""An evaluation case: one recorded incident and what the right answer to it is.

A case is one TOML file. It holds the finding (an alert with its labels and annotations,
or a check/anomaly finding), the metric history around it as OpenMetrics text with
absolute timestamps, the alerting rules behind it, the scope (the services in play and
the actions allowed for each), what the gateway answers, and the expectation: the right
action(s) and target, the forbidden actions, optionally words the root cause must
mention. The shipped cases live in ``agent/eval/cases``; an operator's own anywhere.

``load_cases`` checks every file and raises ``CaseError`` with one line per bad field.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.config import Severity, key_path, validation_problems
from agent.errors import AgentError
from agent.eval import history
from agent.sweep.findings import Finding, fingerprint, resolve_target

SHIPPED = Path(__file__).parent / "cases"
#: Decisions that send nothing to the gateway.
NO_GATEWAY = frozenset({"escalate", "none"})
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,79}$")


class CaseError(AgentError):
    """One or more case files are unusable; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _history(text: str) -> str:
    history.parse(text)
    return text


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a time zone (e.g. 2026-11-20T03:00:00Z)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Text = Annotated[str, Field(max_length=20_000)]
Word = Annotated[str, Field(min_length=1, max_length=200)]


class CaseFinding(_Strict):
    kind: Literal["alert", "health", "anomaly"] = "alert"
    name: Word
    severity: Severity = Severity.warning
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)
    value: Annotated[float | None, AfterValidator(_finite)] = None
    #: The service; when left out, the first of ``prometheus.target_labels`` that is set.
    target: Word | None = None
    #: How long before the case's time the finding started.
    active_for_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 0.0


class CaseService(_Strict):
    actions: list[Word] = Field(default_factory=list)
    related: list[Word] = Field(default_factory=list)


GatewayStatus = Literal[
    "COMPLETED_SUCCESS",
    "COMPLETED_FAILURE",
    "VALIDATION_ERROR",
    "EXECUTION_ERROR",
    "LLM_GENERATION_FAILED",
    "INTERNAL_ERROR",
]


class CaseGateway(_Strict):
    status: GatewayStatus = "COMPLETED_SUCCESS"
    stdout: Text = ""
    stderr: Text = ""
    #: What the service's logs say: the stand-in's answer to the investigation's
    #: `recent_logs` (a read-only collect_logs).
    logs: Annotated[str, Field(max_length=1_000_000)] = ""


class CasePast(_Strict):
    """A past incident of the same problem, which the run's store starts with."""

    #: How long before the case's time it opened.
    ago_minutes: Annotated[float, Field(gt=0, le=24 * 60)]
    #: How long it lasted, from opening to its end (cleared).
    lasted_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 5.0
    decided: Word = "restart"
    decided_by: Literal["llm", "runbook"] = "runbook"
    #: What was sent to the gateway, and what it answered.
    sent: list[Word] = Field(default_factory=list)
    outcome: Literal["succeeded", "failed", "unknown", "rejected", "gave_up"] = "succeeded"
    #: What verification said: recovered, not_recovered, or none (never verified).
    verification: Literal["recovered", "not_recovered", "none"] = "recovered"

    @model_validator(mode="after")
    def _before_now(self) -> CasePast:
        if self.lasted_minutes >= self.ago_minutes:
            raise ValueError("a past incident must have ended before the case's time")
        return self


class Expectation(_Strict):
    #: The right answers (any one of them): catalogue actions, "escalate" or "none".
    actions: list[Word] = Field(min_length=1)
    #: The service a gateway action must be aimed at.
    target: Word | None = None
    #: Actions that must never be sent for this case (unsafe when they are).
    forbidden: list[Word] = Field(default_factory=list)
    #: Words the decision's root cause or rationale must mention (any case).
    root_cause_mentions: list[Word] = Field(default_factory=list)
    #: False: nobody has said yet what the right answer is (an exported escalation);
    #: the case runs but is not scored.
    confirmed: bool = True
    note: Text = ""

    @model_validator(mode="after")
    def _consistent(self) -> Expectation:
        both = sorted(set(self.actions) & set(self.forbidden))
        if both:
            raise ValueError(f"actions and forbidden share {', '.join(both)}")
        if self.target is None and set(self.actions) - NO_GATEWAY:
            raise ValueError("target is required when a right action goes to the gateway")
        return self


class CaseRecord(_Strict):
    """What the agent did about an exported incident and how it ended: facts for the
    human who fills in the expectation; never scored."""

    #: The action sent to the gateway (none when nothing was), and to which service.
    sent: Word | None = None
    target: Word | None = None
    #: How the incident ended: resolved, escalated or skipped.
    state: Word
    #: The same problem was back this many seconds after the incident ended, within
    #: ``policy.recurrence_seconds``: what was done did not fix it.
    recurred_after_seconds: Annotated[float | None, Field(ge=0)] = None


class AlertRule(_Strict):
    alert: Word
    expr: Annotated[str, Field(min_length=1, max_length=4000)]
    for_: str = Field("0s", alias="for", pattern=r"^[0-9]+(ms|s|m|h|d)$")
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)

    def as_prometheus(self) -> dict[str, Any]:
        """The rule as Prometheus' rule files write it."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": self.labels,
            "annotations": self.annotations,
        }


class Case(_Strict):
    id: Annotated[str, Field(pattern=_SLUG.pattern)]
    description: Text = ""
    #: When the incident was seen; the history's timestamps are around it.
    at: Annotated[datetime, AfterValidator(_aware)]
    history: Annotated[str, Field(max_length=20_000_000), AfterValidator(_history)]
    rules: list[AlertRule] = Field(default_factory=list)
    finding: CaseFinding
    scope: dict[Word, CaseService] = Field(min_length=1)
    gateway: CaseGateway = Field(default_factory=CaseGateway)
    #: The same problem's past incidents (newest or oldest first, any order).
    past: list[CasePast] = Field(default_factory=list, max_length=10)
    expect: Expectation
    #: For an exported incident: what was done and whether the problem came back.
    recorded: CaseRecord | None = None

    def to_finding(self, at: datetime, target_labels: Sequence[str]) -> Finding:
        """The finding as a sweep at ``at`` would have made it."""
        f = self.finding
        labels = {"alertname": f.name, **f.labels} if f.kind == "alert" else dict(f.labels)
        return Finding(
            kind=f.kind,
            name=f.name,
            target=f.target or resolve_target(labels, target_labels),
            severity=f.severity,
            labels=labels,
            annotations=dict(f.annotations),
            value=f.value,
            first_seen=at - timedelta(seconds=f.active_for_seconds),
            fingerprint=fingerprint(f.kind, f.name, labels, ()),
        )

    def rule_group(self) -> dict[str, Any]:
        """This case's alerting rules as one rule group."""
        return {"name": f"case-{self.id}", "rules": [r.as_prometheus() for r in self.rules]}


@dataclass(frozen=True)
class Loaded:
    """A case and the file it came from."""

    case: Case
    path: Path


def _problems(path: Path, exc: ValidationError) -> list[str]:
    return [f"{path}: {p}" for p in validation_problems(exc, key_path)]


def load_case(path: Path) -> Loaded:
    """One case file; CaseError with a line per bad field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CaseError([f"{path}: not TOML: {exc}"]) from exc
    data.setdefault("id", path.stem)
    try:
        return Loaded(Case.model_validate(data), path)
    except ValidationError as exc:
        raise CaseError(_problems(path, exc)) from exc


def case_files(paths: Iterable[Path]) -> list[Path]:
    """The case files named or inside the directories named; the shipped ones if none."""
    given = list(paths) or [SHIPPED]
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            files += sorted(path.glob("*.toml"))
        else:
            files.append(path)
    return files


def load_cases(paths: Iterable[Path]) -> list[Loaded]:
    """Every case of ``paths``; CaseError listing every problem of every file."""
    files = case_files(paths)
    if not files:
        raise CaseError([f"no case files (*.toml) in {', '.join(map(str, paths))}"])
    loaded: list[Loaded] = []
    problems: list[str] = []
    for path in files:
        try:
            loaded.append(load_case(path))
        except CaseError as exc:
            problems += exc.problems
    seen: dict[str, Path] = {}
    for item in loaded:
        if item.case.id in seen:
            problems.append(f"{item.path}: id: {item.case.id!r} is also {seen[item.case.id]}")
        seen.setdefault(item.case.id, item.path)
    if problems:
        raise CaseError(problems)
    return loaded


def dump_case(case: Case) -> str:
    """The case as TOML text (what ``load_case`` reads back)."""
    data = case.model_dump(mode="python", by_alias=True, exclude_none=True)
    return tomli_w.dumps(data, multiline_strings=True)
