"""The two-keys rule and the autonomy tiers, from a table of cases: what runs alone, what
waits for a human, which keys turned."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from agent.config import AgentConfig, autonomy_of
from agent.diagnosis.models import Decision
from agent.diagnosis.runbook import runbook_decide
from agent.guardrails.autonomy import judge
from agent.sweep.findings import Finding
from tests.conftest import alert_finding, make_config

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
SERVICE = "market-predictor"


def _finding(name: str, service: str = SERVICE) -> Finding:
    return alert_finding(name, service, first_seen=NOW)


def _model(action: str, target: str = SERVICE, reason: str = "") -> Decision:
    return Decision(action, target, "llm", action != "none", reason=reason, confidence=0.9)


def _judge(
    decision: Decision, name: str, config: AgentConfig | None = None, **failures: str
) -> Decision:
    config = config or make_config()
    return judge(decision, runbook_decide(_finding(name), config), config, failures)


@pytest.mark.parametrize(
    ("model", "alert", "runs", "asks", "keys"),
    [
        # both keys turn: the model and the runbook rule 'memory' say restart
        ("restart", "MemoryLeak", "restart", "", ("model", "runbook")),
        # the model proposes more than the runbook: its proposal waits
        ("stop", "MemoryLeak", "none", "stop", ("model",)),
        ("restart", "DiskFull", "none", "restart", ("model",)),
        ("restart", "SomethingOdd", "none", "restart", ("model",)),
        ("start", "TargetDown", "none", "start", ("model",)),
        # the model proposes less: the runbook's restart waits (its key alone turned for
        # it), a read-only step runs
        ("none", "MemoryLeak", "none", "restart", ("runbook",)),
        ("escalate", "MemoryLeak", "none", "restart", ("runbook",)),
        ("collect_logs", "MemoryLeak", "collect_logs", "restart", ("runbook",)),
        # the model says none where the runbook escalates or looks: the runbook's step
        # still happens (humans are told; the read-only step runs within its tier)
        ("none", "DiskFull", "escalate", "", ("runbook",)),
        ("none", "SomethingOdd", "escalate", "", ("runbook",)),
        ("none", "LatencyHigh", "collect_logs", "", ("runbook",)),
        # nothing changing anywhere: read-only and passive run alone
        ("escalate", "DiskFull", "escalate", "", ("model",)),
        ("collect_logs", "SomethingOdd", "collect_logs", "", ("model",)),
        ("collect_logs", "LatencyHigh", "collect_logs", "", ("model",)),
    ],
)
def test_two_keys(model: str, alert: str, runs: str, asks: str, keys: tuple[str, ...]) -> None:
    """A changing action runs alone only when the model and the runbook agree."""
    verdict = _judge(_model(model), alert)
    assert (verdict.action, verdict.approval_action, verdict.keys) == (runs, asks, keys)
    if asks:
        assert verdict.approval_target == SERVICE and verdict.autonomy
    assert verdict.runbook_action == runbook_decide(_finding(alert), make_config()).action


def test_model_doubt_is_shown_when_the_runbook_would_act() -> None:
    """A model that answers none to a leak leaves the restart waiting, its doubt named."""
    verdict = _judge(_model("none", reason="triage: not actionable: looks benign"), "MemoryLeak")
    assert verdict.approval_action == "restart"
    assert "the runbook would restart market-predictor" in verdict.autonomy
    assert "looks benign" in verdict.autonomy


def test_the_runbooks_action_is_verified_by_the_finding_not_the_models_query() -> None:
    """The model's verification query belongs to its own proposal: when the runbook's
    restart is what waits, the query is dropped and the finding's presence decides."""
    model = replace(_model("escalate"), verification="process_resident_memory_bytes")
    verdict = _judge(model, "MemoryLeak")
    assert verdict.approval_action == "restart" and verdict.verification == ""
    agreed = _judge(replace(_model("restart"), verification="up == 0"), "MemoryLeak")
    assert agreed.verification == "up == 0"


def test_disagreement_names_what_the_runbook_said() -> None:
    """The reason says what each key said."""
    odd = _judge(_model("restart"), "SomethingOdd")
    assert "the runbook has no rule for this finding" in odd.autonomy
    stop = _judge(_model("stop"), "MemoryLeak")
    assert "the model proposes stop on market-predictor, the runbook says restart" in stop.autonomy


def test_runbook_only_is_one_key_within_its_tier() -> None:
    """No model: the runbook's own restart runs alone (its tier is auto)."""
    runbook = runbook_decide(_finding("MemoryLeak"), make_config(), "no model configured")
    verdict = _judge(runbook, "MemoryLeak")
    assert (verdict.action, verdict.approval_action, verdict.keys) == ("restart", "", ("runbook",))


def test_runbook_only_respects_an_approve_tier() -> None:
    """A service whose restart is set to approve waits for a human even on the runbook alone."""
    config = make_config(
        services={
            SERVICE: {"actions": ["restart", "collect_logs"], "autonomy": {"restart": "approve"}}
        }
    )
    runbook = runbook_decide(_finding("MemoryLeak"), config)
    verdict = _judge(runbook, "MemoryLeak", config)
    assert (verdict.action, verdict.approval_action) == ("none", "restart")


def test_stop_needs_approval_even_with_two_keys() -> None:
    """stop ships as approve: agreement is not enough."""
    config = make_config(runbook=[{"name": "halt", "match": "Runaway", "action": "stop"}])
    verdict = _judge(_model("stop"), "RunawayJob", config)
    assert (verdict.action, verdict.approval_action) == ("none", "stop")
    assert "needs approval" in verdict.autonomy and verdict.keys == ("model", "runbook")


@pytest.mark.parametrize("decided_by", ["llm", "runbook"])
def test_never_refuses_and_escalates(decided_by: str) -> None:
    """A tier of never turns the action into an escalation, whoever proposed it."""
    config = make_config(
        services={SERVICE: {"actions": ["restart"], "autonomy": {"restart": "never"}}}
    )
    decision = replace(_model("restart"), decided_by=decided_by)  # type: ignore[arg-type]
    verdict = _judge(decision, "MemoryLeak", config)
    assert (verdict.action, verdict.approval_action) == ("escalate", "")
    assert "never" in verdict.autonomy


def test_never_on_the_runbooks_action_asks_nothing() -> None:
    """The model says none and the runbook's restart is never: nothing waits."""
    config = make_config(
        services={SERVICE: {"actions": ["restart"], "autonomy": {"restart": "never"}}}
    )
    verdict = _judge(_model("none"), "MemoryLeak", config)
    assert (verdict.action, verdict.approval_action) == ("none", "")


def test_read_only_set_to_approve_waits() -> None:
    """An operator may make even a read-only action wait for a human."""
    config = make_config(
        services={SERVICE: {"actions": ["collect_logs"], "autonomy": {"collect_logs": "approve"}}}
    )
    verdict = _judge(_model("collect_logs"), "SomethingOdd", config)
    assert (verdict.action, verdict.approval_action) == ("none", "collect_logs")


@pytest.mark.parametrize("decided_by", ["llm", "runbook"])
def test_repeat_failed_never_runs_alone(decided_by: str) -> None:
    """An action that did not resolve this problem recently waits, with the history named."""
    decision = replace(_model("restart"), decided_by=decided_by)  # type: ignore[arg-type]
    verdict = _judge(decision, "MemoryLeak", restart="restart at 02:10 did not resolve it")
    assert (verdict.action, verdict.approval_action) == ("none", "restart")
    assert verdict.autonomy.startswith("repeat_failed: restart at 02:10")


def test_prefilter_is_left_alone() -> None:
    """A prefiltered finding has no verdict to make."""
    skip = Decision("none", SERVICE, "prefilter", False, reason="noise")
    assert _judge(skip, "Watchdog") == skip


def test_effective_tiers() -> None:
    """Shipped tiers: read-only auto, restart/start auto, stop approve, overrides win."""
    config = make_config(
        services={SERVICE: {"actions": ["restart", "stop"], "autonomy": {"restart": "approve"}}}
    )
    assert autonomy_of(config, SERVICE, "restart") == "approve"
    assert autonomy_of(config, "coding-ai-agent", "restart") == "auto"
    assert autonomy_of(config, SERVICE, "start") == "auto"
    assert autonomy_of(config, SERVICE, "stop") == "approve"
    assert autonomy_of(config, SERVICE, "collect_logs") == "auto"
    assert autonomy_of(config, SERVICE, "no_such_action") == "never"


def test_unknown_action_in_a_service_tier_is_a_config_error() -> None:
    """A tier for an action the catalogue does not have is refused by check-config."""
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"services.market-predictor.autonomy.reboot"):
        make_config(services={SERVICE: {"actions": ["restart"], "autonomy": {"reboot": "auto"}}})


def _failed(action: str = "restart", reason: str = "HTTP 500 from the model") -> Decision:
    decision = runbook_decide(_finding("MemoryLeak"), make_config(), reason)
    return replace(decision, action=action, model_failure=reason)


def test_a_failed_model_is_one_key_missing() -> None:
    """With a model configured, a model that failed leaves the runbook's restart waiting for
    a human, the failure named; with policy.model_failure = runbook it runs in its tier."""
    config = make_config()
    verdict = judge(_failed(), runbook_decide(_finding("MemoryLeak"), config), config)
    assert (verdict.action, verdict.approval_action, verdict.keys) == (
        "none",
        "restart",
        ("runbook",),
    )
    assert "the model failed (HTTP 500 from the model)" in verdict.autonomy
    lenient = make_config(policy={"model_failure": "runbook"})
    alone = judge(_failed(), runbook_decide(_finding("MemoryLeak"), lenient), lenient)
    assert (alone.action, alone.approval_action) == ("restart", "")
    assert "policy.model_failure = runbook" in alone.autonomy


@pytest.mark.parametrize("action", ["escalate", "collect_logs"])
def test_a_failed_model_never_holds_back_what_needs_no_second_key(action: str) -> None:
    """Escalations and read-only runbook steps still run when the model failed."""
    config = make_config()
    verdict = judge(_failed(action), runbook_decide(_finding("X"), config), config)
    assert (verdict.action, verdict.approval_action) == (action, "")


@pytest.mark.parametrize("decided_by", ["llm", "runbook"])
def test_a_finding_only_alertmanager_reports_cannot_act_alone(decided_by: str) -> None:
    """Both keys turn, but the finding rests on Alertmanager alone: the restart waits for a
    human unless sweep.trust_alertmanager; read-only steps still run."""
    config = make_config()
    runbook = runbook_decide(_finding("MemoryLeak"), config)
    decision = _model("restart") if decided_by == "llm" else runbook
    asked = judge(decision, runbook, config, source="alertmanager")
    assert (asked.action, asked.approval_action) == ("none", "restart")
    assert "rests on Alertmanager alone" in asked.autonomy
    trusted = make_config(
        sweep={"sources": ["prometheus", "alertmanager"], "trust_alertmanager": True}
    )
    alone = judge(
        decision, runbook_decide(_finding("MemoryLeak"), trusted), trusted, source="alertmanager"
    )
    assert (alone.action, alone.approval_action) == ("restart", "")
    looks = judge(_model("collect_logs"), runbook, config, source="alertmanager")
    assert looks.action == "collect_logs"


def test_the_runbooks_escalation_wins_over_a_models_none() -> None:
    """The runbook escalates a full disk; the model says none: humans are told, and the
    record says the model disagreed."""
    verdict = _judge(_model("none", reason="disk usage looks normal"), "DiskFull")
    assert verdict.action == "escalate" and verdict.actionable
    assert "the model proposes none (disk usage looks normal)" in verdict.autonomy
    assert verdict.keys == ("runbook",)
