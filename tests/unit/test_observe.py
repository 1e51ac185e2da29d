"""The observe tier from tables of cases: every path that could send or ask is held back
and says what it would have done; the watch that follows ends as the finding does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.cli.main import main
from agent.cli.render import render_cycle
from agent.config import AgentConfig, autonomy_of
from agent.diagnosis.models import Decision, Diagnosis, PhaseUsage
from agent.diagnosis.runbook import runbook_decide
from agent.eval.case import load_cases
from agent.eval.runner import settings_for_case
from agent.gateway.response import GatewayResult
from agent.guardrails.autonomy import judge
from agent.incidents.lifecycle import (
    AskApproval,
    Cleared,
    Observed,
    Skipped,
    on_decision,
    on_finding,
    on_gateway_result,
    on_gone,
    on_restart,
    on_storm,
    on_watch_ended,
    storm_finding,
)
from agent.incidents.model import Incident
from agent.settings import Settings, load_settings
from tests.conftest import BASE_ENV, alert_finding, make_config
from tests.integration.daemon_support import write_config

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
MP, CA = "market-predictor", "coding-ai-agent"


def _config(restart: str = "observe", **policy: Any) -> AgentConfig:
    services = {
        MP: {
            "actions": ["restart", "start", "stop", "collect_logs", "inspect_resources"],
            "related": [CA],
            "autonomy": {"restart": restart} if restart else {},
        },
        CA: {"actions": ["restart", "start", "collect_logs"]},
    }
    return (
        make_config(services=services, policy=policy) if policy else make_config(services=services)
    )


def _model(action: str, target: str = MP) -> Decision:
    return Decision(action, target, "llm", action != "none", confidence=0.9)


def _judge(decision: Decision, name: str, config: AgentConfig, **kw: Any) -> Decision:
    finding = alert_finding(name, MP, first_seen=NOW)
    return judge(decision, runbook_decide(finding, config), config, **kw)


def _runbook(name: str, config: AgentConfig, failure: str = "") -> Decision:
    decision = runbook_decide(alert_finding(name, MP, first_seen=NOW), config, failure)
    return replace(decision, model_failure=failure)


@pytest.mark.parametrize(
    ("case", "runs", "observed", "would", "alone"),
    [
        # both keys turn: it would have run alone
        ("agrees", "none", "restart", "send", True),
        # the model holds back where the runbook restarts: a human would have been asked
        ("holds_back", "none", "restart", "ask", False),
        # a read-only step of its own tier still runs first; the ask is observed
        ("looks_first", "collect_logs", "restart", "ask", False),
        # the model proposes a restart of a related service the runbook does not name
        ("related", "none", "", "", False),
        # runbook only (no model configured): the operator's own key, alone
        ("runbook_only", "none", "restart", "send", True),
        # the model failed: one key missing, a human would have been asked
        ("model_failed", "none", "restart", "ask", False),
        # a finding only Alertmanager reports: a human would have been asked
        ("alertmanager_only", "none", "restart", "ask", False),
    ],
)
def test_every_path_that_could_send_or_ask_is_observed(
    case: str, runs: str, observed: str, would: str, alone: bool
) -> None:
    """With restart on market-predictor set to observe, no path leaves a restart to run or
    to ask for: the verdict records what would have happened instead."""
    config = _config()
    decisions = {
        "agrees": (_model("restart"), {}),
        "holds_back": (_model("none"), {}),
        "looks_first": (_model("collect_logs"), {}),
        "related": (_model("restart", CA), {}),
        "runbook_only": (_runbook("MemoryLeak", config), {}),
        "model_failed": (_runbook("MemoryLeak", config, "HTTP 500"), {}),
        "alertmanager_only": (_model("restart"), {"source": "alertmanager"}),
    }
    decision, kw = decisions[case]
    verdict = _judge(decision, "MemoryLeak", config, **kw)
    assert verdict.action == runs
    if case == "related":
        # restart on coding-ai-agent is not observed: it waits for a human as before
        assert (verdict.approval_action, verdict.approval_target) == ("restart", CA)
        return
    assert verdict.approval_action == ""
    assert (verdict.observed_action, verdict.observed_target) == (observed, MP)
    assert verdict.observed_would == would and verdict.alone is alone
    assert verdict.observed.startswith("would have")
    assert verdict.autonomy.startswith(f"observe: {verdict.observed}")
    assert verdict.proposed == decision.action and verdict.runbook_rule == "memory"


def test_never_stays_never_and_other_tiers_are_untouched() -> None:
    """never refuses and escalates under observe too; approve still asks, and a verdict
    that only the tier holds back is counted as one that would run alone."""
    refused = _judge(_model("restart"), "MemoryLeak", _config("never"))
    assert refused.action == "escalate" and not refused.observed_action
    asked = _judge(_model("restart"), "MemoryLeak", _config("approve"))
    assert (asked.approval_action, asked.observed_action, asked.alone) == ("restart", "", True)
    disagreed = _judge(_model("stop"), "MemoryLeak", _config("approve"))
    assert (disagreed.approval_action, disagreed.alone) == ("stop", False)


def test_default_autonomy_caps_the_catalogue_and_a_service_line_wins() -> None:
    """policy.default_autonomy = observe makes every tier observe, read-only ones too
    (nothing is sent, logs are not read); a service's own line wins; none and escalate
    have no tier; a cap of auto changes nothing."""
    fleet = make_config(policy={"default_autonomy": "observe"})
    assert autonomy_of(fleet, MP, "restart") == "observe"
    assert autonomy_of(fleet, MP, "collect_logs") == "observe"
    assert autonomy_of(fleet, MP, "escalate") == "auto"
    promoted = make_config(
        policy={"default_autonomy": "observe"},
        services={MP: {"actions": ["restart", "collect_logs"], "autonomy": {"restart": "auto"}}},
    )
    assert autonomy_of(promoted, MP, "restart") == "auto"
    assert autonomy_of(promoted, MP, "collect_logs") == "observe"
    assert autonomy_of(make_config(policy={"default_autonomy": "auto"}), MP, "stop") == "approve"
    capped = make_config(policy={"default_autonomy": "approve"})
    assert autonomy_of(capped, MP, "restart") == "approve"
    looks = _judge(_model("collect_logs"), "MemoryLeak", fleet)
    assert (looks.action, looks.approval_action, looks.observed_action) == ("none", "", "restart")
    assert "collect_logs on market-predictor is observed too" in looks.autonomy


def _diagnosis(decision: Decision) -> Diagnosis:
    return Diagnosis(decision, usage={"plan": PhaseUsage(1, 100, 20)}, cost=0.5)


def _opened() -> Incident:
    return on_finding(alert_finding("MemoryLeak", MP, first_seen=NOW), "obs0001", NOW).incident


def _observed_decision(would: str = "send", action: str = "none") -> Decision:
    return replace(
        _model("restart"),
        action=action,
        observed_action="restart",
        observed_target=MP,
        observed_would=would,
        autonomy="observe: would have sent restart on market-predictor",
    )


def test_an_observed_decision_is_watched_and_nobody_is_asked() -> None:
    """diagnosing -> watching until the verify time, with what would have happened in the
    record; its effect is Observed, never AskApproval."""
    diagnosing = replace(_opened(), state="diagnosing", lease_owner="r1")
    step = on_decision(diagnosing, _diagnosis(_observed_decision()), NOW, verify_after=60)
    watching = step.incident
    assert watching.state == "watching" and watching.lease_owner is None
    assert watching.verify_at == NOW + timedelta(seconds=60)
    assert watching.observing and "would have sent restart on market-predictor" in (
        watching.resolution or ""
    )
    assert [type(e) for e in step.effects] == [Observed]
    assert not any(isinstance(e, AskApproval) for e in step.effects)
    moved = [e for e in step.events if e.kind == "transition"][-1].data
    assert (moved["to"], moved["would"], moved["observed"]) == (
        "watching",
        "send",
        "would have sent restart on market-predictor",
    )


def test_a_read_only_step_runs_then_the_watch_begins() -> None:
    """A decided collect_logs with the restart observed: after the gateway answers, the
    incident watches instead of asking; a replica that died during the step leaves the
    watch to the next one."""
    acting = replace(
        _opened(),
        state="acting",
        decision=_observed_decision("ask", action="collect_logs"),
        action_target=MP,
    )
    result = GatewayResult("succeeded", "COMPLETED_SUCCESS", 1, 0.1, "key")
    step = on_gateway_result(
        acting, result, {}, NOW, mutating=False, verify_after=30, breaker_open_at=3
    )
    assert step.incident.state == "watching" and step.outcome is not None
    assert [type(e) for e in step.effects] == [Observed]
    taken = on_restart(acting, NOW, verify_after=30)
    assert taken.incident.state == "watching" and taken.incident.dispatch_outcome == "unknown"


@pytest.mark.parametrize(
    ("present", "other", "watch", "cleared", "says"),
    [
        (True, None, "persisted", False, "still firing 10 min after it opened"),
        (False, None, "cleared_alone", True, "cleared on its own after 10 min"),
        (
            False,
            "a restart of market-predictor (process_start_time_seconds changed in Prometheus)",
            "other_hand",
            True,
            "cleared after 10 min, after a restart of market-predictor",
        ),
    ],
)
def test_the_watch_ends_as_the_finding_does(
    present: bool, other: str | None, watch: str, cleared: bool, says: str
) -> None:
    """Still firing at the verify time, cleared on its own, or cleared after another
    hand: the incident ends skipped, says which, and stays current while it fires."""
    watching = replace(_opened(), state="watching", decision=_observed_decision())
    later = NOW + timedelta(minutes=10)
    step = on_watch_ended(watching, later, present=present, other_hand=other)
    assert step.incident.state == "skipped" and step.ends
    assert says in (step.incident.resolution or "")
    assert "would have sent restart on market-predictor" in (step.incident.resolution or "")
    assert (step.incident.cleared_at is not None) is cleared
    assert (Cleared in [type(e) for e in step.effects]) is cleared
    assert isinstance(step.effects[0], Skipped)
    event = [e for e in step.events if e.kind == "transition"][0]
    assert (event.data["watch"], event.data["seconds"]) == (watch, 600.0)


def test_the_finding_going_away_ends_a_watch_but_not_a_storm() -> None:
    """on_gone ends an observed watch (with what another hand did); a storm's watching
    incident is left to the storm's own end."""
    watching = replace(_opened(), state="watching", decision=_observed_decision())
    gone = on_gone(watching, NOW, other_hand="restart on market-predictor sent by the agent")
    assert gone is not None and gone.incident.state == "skipped"
    assert "after restart on market-predictor sent by the agent" in (gone.incident.resolution or "")
    storm = on_storm(storm_finding([MP, CA], 3, NOW), "storm001", NOW).incident
    assert on_gone(storm, NOW) is None


def test_eval_judges_an_observe_tier_as_auto(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """eval measures what the agent would do: a fleet at observe, or a catalogue action at
    observe, is judged as auto there (and nowhere else)."""
    config = make_config(
        policy={"default_autonomy": "observe"},
        actions={
            **{k: v.model_dump(exclude_none=True) for k, v in make_config().actions.items()},
            "restart": {"intent": "restart the service", "mutating": True, "autonomy": "observe"},
        },
    )
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    settings = Settings(env=load_settings(env_file=None).env, config=config)
    case = load_cases([])[0].case
    judged = settings_for_case(settings, case, tmp_path / "agent.db").config
    service = next(iter(case.scope))
    assert autonomy_of(judged, service, "restart") == "auto"
    assert autonomy_of(config, service, "restart") == "observe"


def test_check_config_prints_the_observe_tier(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config prints an observe tier like the others."""
    config = write_config(
        tmp_path / "agent.toml",
        services={MP: {"actions": ["restart", "collect_logs"], "autonomy": {"restart": "observe"}}},
    )
    for key, value in dict(BASE_ENV, AGENT_CONFIG=str(config)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == 0
    assert f"{MP}: restart=observe, collect_logs=auto" in capsys.readouterr().out


def test_sweep_prints_what_an_observe_tier_held_back() -> None:
    """The one-shot sweep's summary says what would have been sent or asked."""
    sweep = SimpleNamespace(
        sweep_id="s1", findings=[], duration_seconds=0.1, failed_sources=[], skipped=[]
    )
    decision = {
        "incident_id": "obs0001",
        "action": "none",
        "target": MP,
        "decided_by": "runbook",
        "reason": "runbook rule 'memory' matched",
        "observed_action": "restart",
        "observed_target": MP,
        "observed_would": "send",
    }
    report = SimpleNamespace(
        sweep=sweep, decisions=[decision], dispatches=[], skips=[], would_send=[], would_escalate=[]
    )
    assert "observed: would have sent restart on market-predictor" in render_cycle(report)


def test_observing_never_silences_the_runbooks_escalation() -> None:
    """The fleet at observe, a full disk the runbook escalates, a model proposing to start
    another service: the ask is held back (observed), and the escalation still happens,
    naming what was held back; where the runbook looks first, its read-only step runs."""
    fleet = make_config(
        policy={"default_autonomy": "observe"},
        services={
            MP: {"actions": ["restart", "start", "collect_logs"], "related": ["coding-ai-agent"]},
            "coding-ai-agent": {"actions": ["restart", "start", "collect_logs"]},
        },
    )
    told = _judge(_model("start", "coding-ai-agent"), "DiskFull", fleet)
    assert (told.action, told.approval_action, told.observed_action) == ("escalate", "", "start")
    assert told.observed_would == "ask" and "the runbook escalates" in told.autonomy
    step = on_decision(_opened(), _diagnosis(told), NOW)
    assert step.incident.state == "escalated"
    assert "would have asked a human to approve start" in (step.incident.resolution or "")
    looked = _judge(_model("restart"), "LatencyHigh", fleet)
    assert (looked.action, looked.observed_action) == ("none", "restart")
