"""The TOML file: schedule, checks, guardrail policy, action catalogue, runbook.

These are the things an operator tunes per fleet and reviews in a pull request, so they
live in a file rather than in environment variables. Unknown keys are errors: a typo in
a guardrail must never silently fall back to a default.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from agent.errors import ConfigError

#: Action ids every catalogue must define; the diagnosis and the guardrails rely on them.
REQUIRED_ACTIONS = (
    "restart",
    "start",
    "stop",
    "collect_logs",
    "inspect_resources",
    "health_check",
    "escalate",
    "none",
)


class Severity(StrEnum):
    """How bad a finding is; orders the diagnosis queue and picks the gateway priority."""

    critical = "critical"
    warning = "warning"
    info = "info"

    @property
    def rank(self) -> int:
        """Lower is more severe."""
        return {"critical": 0, "warning": 1, "info": 2}[self.value]


Priority = Literal["LOW", "NORMAL", "HIGH", "URGENT"]
#: May an action run without a human? ``auto``: yes (a changing action only when the model
#: and the runbook agree, see ``guardrails/autonomy.py``); ``approve``: a human approves
#: each one; ``observe``: decided as usual, never sent and nobody asked, what would have
#: happened recorded and the finding watched until it ends; ``never``: refused and
#: escalated.
Autonomy = Literal["auto", "approve", "observe", "never"]
#: From least to most trusted: ``policy.default_autonomy`` caps a catalogue tier at its own.
TRUST: dict[Autonomy, int] = {"never": 0, "observe": 1, "approve": 2, "auto": 3}
#: Actions that send nothing and ask nobody: no tier applies to them.
PASSIVE_ACTIONS = frozenset({"none", "escalate"})
#: The shipped tiers of changing actions; any other changing action needs approval.
MUTATING_AUTONOMY: dict[str, Autonomy] = {"restart": "auto", "start": "auto", "stop": "approve"}
FindingKind = Literal["alert", "health", "anomaly", "storm"]
#: Which source reported a finding: Prometheus (its alerts and the checks the agent runs
#: there), or Alertmanager only (an alert no queried Prometheus reports).
FindingSource = Literal["prometheus", "alertmanager"]
ModelFailure = Literal["approve", "runbook"]
ALL_KINDS: tuple[FindingKind, ...] = ("alert", "health", "anomaly")


def _duration(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*[smhd]", value):
        raise ValueError(f"must be a Prometheus duration like 30m or 2h, got {value!r}")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]*", value):
        raise ValueError(f"must be a plain identifier, got {value!r}")
    return value


Duration = Annotated[str, AfterValidator(_duration)]

# Every number is finite and bounded: an `inf` or a 1e300 must be refused by check-config,
# not crash the scheduler at start-up. The bounds are documented in config/agent.toml.
DAY = 86_400.0
Seconds = Annotated[float, Field(gt=0, le=DAY, allow_inf_nan=False)]
"""A positive duration of at most a day."""
WaitSeconds = Annotated[float, Field(ge=0, le=7 * DAY, allow_inf_nan=False)]
"""A duration from zero to a week."""
Count = Annotated[int, Field(ge=1, le=1_000_000)]
"""A positive count."""
Bytes = Annotated[int, Field(ge=1024, le=1_000_000_000)]
"""A size cap, from 1 KiB to 1 GB."""
Chars = Annotated[int, Field(ge=10, le=1_000_000)]
"""A text cap in characters."""
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A fraction from 0 to 1."""
Magnitude = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]
"""A non-negative value of a metric."""
Regex = Annotated[str, AfterValidator(_regex)]
Name = Annotated[str, AfterValidator(_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Section):
    sweep_interval_seconds: Seconds = 30.0
    verify_after_seconds: Seconds = 120.0
    misfire_grace_seconds: Seconds = 30.0
    shutdown_grace_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 20.0
    catch_up_window_seconds: Seconds = 900.0
    lease_seconds: Annotated[float, Field(ge=2.0, le=3600, allow_inf_nan=False)] = 30.0


class PrometheusOptions(_Section):
    query_timeout_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10.0
    max_answer_bytes: Bytes = 50_000_000
    tls_verify: bool = True
    ca_bundle: Path | None = None
    target_labels: list[str] = Field(
        default_factory=lambda: ["service", "container", "name", "job"], min_length=1
    )
    volatile_labels: list[str] = Field(
        default_factory=lambda: ["alertstate", "__name__", "instance_pod", "pod_ip"]
    )


class AlertmanagerOptions(_Section):
    timeout_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10.0
    max_answer_bytes: Bytes = 20_000_000


class WebhookOptions(_Section):
    max_body_bytes: Bytes = 1_000_000
    body_timeout_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 10.0
    coalesce_seconds: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 0.5


SweepSource = Literal["prometheus", "alertmanager"]


def _prometheus_only() -> list[SweepSource]:
    return ["prometheus"]


class SweepOptions(_Section):
    sources: list[SweepSource] = Field(default_factory=_prometheus_only, min_length=1)
    #: Anyone who can reach Alertmanager's API can post an alert: a changing action for a
    #: finding that only Alertmanager reports waits for a human unless this says otherwise.
    trust_alertmanager: bool = False


class HealthCheck(_Section):
    name: Name
    expr: Annotated[str, Field(min_length=1)]
    severity: Severity = Severity.warning
    target_label: Annotated[str, Field(min_length=1)]
    description: str = ""
    for_seconds: WaitSeconds = 0.0


class AnomalyCheck(_Section):
    name: Name
    selector: Annotated[str, Field(min_length=1)]
    target_label: Annotated[str, Field(min_length=1)]
    baseline_window: Duration = "30m"
    z_threshold: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 3.0
    min_abs_change: Magnitude = 0.0
    direction: Literal["up", "down", "both"] = "both"
    severity: Severity = Severity.warning
    description: str = ""
    for_seconds: WaitSeconds = 0.0


class Checks(_Section):
    health: list[HealthCheck] = Field(default_factory=list)
    anomaly: list[AnomalyCheck] = Field(default_factory=list)

    def all(self) -> list[HealthCheck | AnomalyCheck]:
        """Health checks, then anomaly checks."""
        return [*self.health, *self.anomaly]


class Policy(_Section):
    action_cooldown_seconds: WaitSeconds = 900.0
    max_actions_per_target_per_hour: Count = 3
    max_actions_per_hour: Count = 10
    circuit_breaker_failures: Count = 3
    storm_share: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.5
    storm_min_services: Count = 5
    recheck_before_dispatch: bool = True
    approval_ttl_seconds: Seconds = 900.0
    #: A problem back this soon after an action resolved it: that action did not help.
    recurrence_seconds: WaitSeconds = 3600.0
    #: With a model configured, a diagnosis whose model failed has one key, not two:
    #: ``approve`` holds the runbook's changing action for a human, ``runbook`` runs it
    #: within its tier as when no model is configured.
    model_failure: ModelFailure = "approve"
    #: Caps the catalogue's tier of every action (``observe`` for a fleet's first weeks);
    #: a service's own tier (``[services.NAME] autonomy``) still wins. Unset: no cap.
    default_autonomy: Autonomy | None = None


Price = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]


class Prices(_Section):
    """What the model costs, per million tokens (in whatever currency the operator uses)."""

    prompt: Price
    completion: Price


class Diagnosis(_Section):
    use_llm: bool = True
    #: One whole diagnosis (every phase, retry, tool call and log read) ends by then, as a
    #: model failure.
    deadline_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 90.0
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    max_steps: Annotated[int, Field(ge=1, le=50)] = 5
    token_budget: Count = 12000
    tool_result_max_chars: Chars = 1500
    reply_max_chars: Chars = 4000
    max_tool_calls_per_reply: Annotated[int, Field(ge=1, le=100)] = 5
    max_tool_calls: Annotated[int, Field(ge=1, le=1000)] = 12
    untrusted_max_chars: Chars = 1500
    min_confidence: Share = 0.6
    request_timeout_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 30.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    max_answer_bytes: Bytes = 2_000_000
    noise_alerts: list[str] = Field(default_factory=lambda: ["Watchdog", "InfoInhibitor"])
    #: How far back the history of the same problem reaches (at most 10 incidents).
    history_hours: Annotated[float, Field(ge=0, le=720, allow_inf_nan=False)] = 24.0
    #: The investigation's `recent_logs` tool: one gateway request, bounded by this.
    logs_timeout_seconds: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = 20.0
    #: The model's prices, for the cost of each diagnosis (unset: cost unknown).
    prices: Prices | None = None
    #: How far back the series behind a finding, shown in every phase's prompt, reaches.
    evidence_minutes: Annotated[int, Field(ge=1, le=360)] = 30


class GatewayOptions(_Section):
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    deadline_seconds: Seconds = 120.0
    backoff_initial_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 1.0
    backoff_max_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 15.0
    output_max_chars: Chars = 4000
    context_max_chars: Annotated[int, Field(ge=200, le=10_000)] = 800
    max_answer_bytes: Bytes = 1_000_000


class Action(_Section):
    intent: str = ""
    mutating: bool = False
    critical_priority: Priority = "HIGH"
    #: Unset: ``auto`` for read-only actions, ``MUTATING_AUTONOMY`` (else ``approve``) for
    #: changing ones.
    autonomy: Autonomy | None = None


class Service(_Section):
    actions: list[str]
    related: list[str] = Field(default_factory=list)
    #: Per-action tiers for this service, over the catalogue's.
    autonomy: dict[str, Autonomy] = Field(default_factory=dict)


class RunbookRule(_Section):
    name: Name
    match: Regex
    kinds: list[FindingKind] = Field(default_factory=lambda: list(ALL_KINDS))
    #: The severities the rule applies to (all by default).
    severities: list[Severity] = Field(default_factory=lambda: list(Severity))
    action: str


class ReportOptions(_Section):
    #: Outcome records older than this are dropped (the counts behind ``outcomes_total``
    #: are kept).
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 90
    #: Healed approvals (or persisting observations the runbook agreed with) before
    #: ``report`` suggests ``auto``.
    promote_after: Annotated[int, Field(ge=1, le=10_000)] = 5
    #: Share of actions sent alone that failed or recurred above which ``report`` suggests
    #: ``approve`` again.
    demote_share: Share = 0.3


class AgentConfig(_Section):
    schedule: Schedule = Field(default_factory=Schedule)
    prometheus: PrometheusOptions = Field(default_factory=PrometheusOptions)
    alertmanager: AlertmanagerOptions = Field(default_factory=AlertmanagerOptions)
    webhook: WebhookOptions = Field(default_factory=WebhookOptions)
    sweep: SweepOptions = Field(default_factory=SweepOptions)
    checks: Checks = Field(default_factory=Checks)
    policy: Policy = Field(default_factory=Policy)
    diagnosis: Diagnosis = Field(default_factory=Diagnosis)
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)
    actions: dict[str, Action]
    services: dict[str, Service]
    runbook: list[RunbookRule] = Field(default_factory=list)
    report: ReportOptions = Field(default_factory=ReportOptions)


Loc = tuple[int | str, ...]


def key_path(loc: Loc) -> str:
    """A pydantic error location as a TOML key path: ``checks.health[0].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_problems(
    exc: ValidationError, where: Callable[[Loc], str] = key_path, missing: str = "is required"
) -> list[str]:
    """One line per error of a pydantic ValidationError: where it is, then what is wrong."""
    return [
        f"{where(e['loc'])}: "
        + (missing if e["type"] == "missing" else e["msg"].removeprefix("Value error, "))
        for e in exc.errors(include_url=False, include_input=False)
    ]


def cross_check(config: AgentConfig) -> list[str]:
    """Problems that span sections: unknown action ids or services, missing catalogue
    entries."""
    problems = [
        f"actions.{action}: the catalogue must define this action"
        for action in REQUIRED_ACTIONS
        if action not in config.actions
    ]
    for action_id, action in config.actions.items():
        if action.mutating and not action.intent:
            problems.append(f"actions.{action_id}.intent: a mutating action needs an intent")
    for name, service in config.services.items():
        problems += [
            f"services.{name}.actions: unknown action {a!r}"
            for a in service.actions
            if a not in config.actions
        ]
    for name, service in config.services.items():
        problems += [
            f"services.{name}.related: {r!r} is not a configured service"
            for r in service.related
            if r not in config.services
        ]
    for name, service in config.services.items():
        problems += [
            f"services.{name}.autonomy.{a}: unknown action {a!r}"
            for a in service.autonomy
            if a not in config.actions
        ]
    problems += [
        f"runbook[{i}].action: unknown action {rule.action!r}"
        for i, rule in enumerate(config.runbook)
        if rule.action not in config.actions
    ]
    names = [c.name for c in config.checks.all()]
    problems += [
        f"checks: check name {n!r} is used twice"
        for n in sorted({n for n in names if names.count(n) > 1})
    ]
    return problems


def parse_config(data: dict[str, Any], source: str) -> AgentConfig:
    """Validate an already parsed TOML document."""
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, missing="required key is missing")
        raise ConfigError([f"{source}: {p}" for p in problems]) from None
    if problems := cross_check(config):
        raise ConfigError([f"{source}: {p}" for p in problems])
    return config


def load_config(path: Path) -> AgentConfig:
    """Read and validate the TOML file; every problem is named in the ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"AGENT_CONFIG: no such file {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"AGENT_CONFIG: cannot read {path}: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data, str(path))


def autonomy_of(config: AgentConfig, service: str | None, action: str) -> Autonomy:
    """The effective tier of ``action`` on ``service``: the service's own, else the
    catalogue's (``auto`` for read-only and the shipped tier for changing actions when
    unset) capped by ``policy.default_autonomy``."""
    entry = config.services.get(service or "")
    if entry is not None and action in entry.autonomy:
        return entry.autonomy[action]
    catalogue = config.actions.get(action)
    if catalogue is None:
        return "never"
    tier: Autonomy = catalogue.autonomy or (
        MUTATING_AUTONOMY.get(action, "approve") if catalogue.mutating else "auto"
    )
    cap = config.policy.default_autonomy
    if cap is None or action in PASSIVE_ACTIONS:
        return tier
    return min(tier, cap, key=TRUST.__getitem__)
