"""The incident lifecycle: every allowed and every forbidden move, and each step's branches,
from tables of cases."""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.config import AgentConfig, Severity
from agent.diagnosis.models import Decision, Diagnosis, PhaseUsage
from agent.gateway.response import GatewayResult, Outcome
from agent.guardrails.policy import Block
from agent.incidents.lifecycle import (
    ActionOutcome,
    Answer,
    ApprovalEnded,
    AskApproval,
    Blocked,
    BreakerChange,
    Claim,
    Cleared,
    Dispatch,
    Escalate,
    Opened,
    Resolved,
    Skipped,
    StormEnded,
    TakenOver,
    on_approval_denied,
    on_approval_expired,
    on_approval_granted,
    on_approval_held,
    on_block,
    on_claim,
    on_decision,
    on_diagnosis_started,
    on_failure,
    on_finding,
    on_gateway_result,
    on_gone,
    on_hold,
    on_release,
    on_restart,
    on_storm,
    on_storm_end,
    on_verification,
    on_withdrawn,
    storm_finding,
    withdrawal,
    work_queue,
)
from agent.incidents.model import (
    STATES,
    TERMINAL,
    TRANSITIONS,
    ForbiddenTransition,
    Incident,
    State,
    group_of,
)
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import CONFIG, make_config

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
LABELS = {"alertname": "MemoryLeak", "service": "market-predictor"}
FINDING = Finding(
    kind="alert",
    name="MemoryLeak",
    target="market-predictor",
    severity=Severity.critical,
    labels=LABELS,
    annotations={"summary": "memory grows"},
    value=4.2e8,
    first_seen=NOW - timedelta(minutes=3),
    fingerprint=fingerprint("alert", "MemoryLeak", LABELS, ()),
)
RESTART = Decision("restart", "market-predictor", "llm", True, confidence=0.9)

#: Every move the table allows, written out: the table and this list must agree.
ALLOWED: set[tuple[State, State]] = {
    ("open", "diagnosing"),
    ("open", "skipped"),
    ("open", "escalated"),
    ("diagnosing", "decided"),
    ("diagnosing", "skipped"),
    ("diagnosing", "escalated"),
    ("diagnosing", "open"),
    ("diagnosing", "awaiting_approval"),
    ("awaiting_approval", "acting"),
    ("awaiting_approval", "escalated"),
    ("awaiting_approval", "skipped"),
    ("awaiting_approval", "approved"),
    ("approved", "acting"),
    ("approved", "escalated"),
    ("approved", "skipped"),
    ("acting", "awaiting_approval"),
    ("decided", "acting"),
    ("decided", "skipped"),
    ("decided", "escalated"),
    ("acting", "verifying"),
    ("acting", "escalated"),
    ("verifying", "resolved"),
    ("verifying", "escalated"),
    ("open", "held"),
    ("open", "watching"),
    ("held", "open"),
    ("held", "skipped"),
    ("held", "escalated"),
    ("watching", "resolved"),
    ("watching", "escalated"),
    # an observe tier held the action back: the finding is watched, then the incident ends
    ("diagnosing", "watching"),
    ("acting", "watching"),
    ("watching", "skipped"),
}


def _incident(state: State = "open", **changes: Any) -> Incident:
    base = Incident(
        id="inc0001",
        group_key=group_of(FINDING),
        state=state,
        opened_at=NOW,
        updated_at=NOW,
        finding=FINDING,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(("before", "after"), list(itertools.product(STATES, STATES)))
def test_every_move_is_allowed_or_forbidden_as_the_table_says(before: State, after: State) -> None:
    """Each of the 144 (from, to) pairs either moves or raises ForbiddenTransition."""
    incident = _incident(before)
    if (before, after) in ALLOWED:
        moved = incident.move(after, LATER)
        assert (moved.state, moved.updated_at, moved.id) == (after, LATER, incident.id)
    else:
        with pytest.raises(ForbiddenTransition):
            incident.move(after, LATER)


def test_the_table_is_the_list() -> None:
    """The table allows exactly the listed moves, and terminal states allow none."""
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_update_never_changes_state() -> None:
    """update() keeps the state; asking it to change the state is refused."""
    assert _incident("decided").update(LATER, blocked_reason="cooldown").state == "decided"
    with pytest.raises(ForbiddenTransition):
        _incident("decided").update(LATER, state="acting")


def test_on_finding_opens_an_incident() -> None:
    """A new finding opens an incident in state open, grouped by kind, name and service."""
    step = on_finding(FINDING, "abc", NOW)
    assert (step.incident.state, step.incident.group_key) == ("open", group_of(FINDING))
    assert step.effects == (Opened(),) and [e.kind for e in step.events] == ["opened"]


def test_on_diagnosis_started_takes_a_lease() -> None:
    """Diagnosis starts under this replica's lease."""
    step = on_diagnosis_started(_incident(), "r1", LATER, NOW)
    assert (step.incident.state, step.incident.lease_owner, step.incident.lease_until) == (
        "diagnosing",
        "r1",
        LATER,
    )


DECISIONS = [
    # decision, state, effect type, resolution
    (RESTART, "decided", None, None),
    (
        Decision("none", "market-predictor", "llm", False, reason="triage: noise"),
        "skipped",
        Skipped,
        "triage: noise",
    ),
    (
        Decision("none", "market-predictor", "runbook", True, reason="nothing"),
        "skipped",
        Skipped,
        "nothing",
    ),
    (
        Decision("escalate", "market-predictor", "llm", True, reason="plan refused: x"),
        "escalated",
        Escalate,
        "plan refused: x",
    ),
    (
        Decision("none", None, "prefilter", False, reason="outside the scope"),
        "skipped",
        Skipped,
        "outside the scope",
    ),
]


@pytest.mark.parametrize(("decision", "state", "effect", "resolution"), DECISIONS)
def test_on_decision(
    decision: Decision, state: State, effect: type | None, resolution: str | None
) -> None:
    """A decision ends the incident, escalates it, or leaves it decided for the guardrails;
    the lease is released and the decision and transcript are recorded."""
    diagnosis = Diagnosis(decision, {"triage": PhaseUsage(1, 100, 10)}, ({"role": "user"},))
    step = on_decision(
        _incident("diagnosing", lease_owner="r1", lease_until=LATER), diagnosis, LATER
    )
    assert step.incident.state == state and step.incident.decision == decision
    assert step.incident.lease_owner is None and step.incident.resolution == resolution
    assert [type(e) for e in step.effects] == ([effect] if effect else [])
    assert [e.kind for e in step.events][:2] == ["decision", "llm_transcript"]


@pytest.mark.parametrize(
    ("block", "state", "effects"),
    [
        (Block("circuit_open", "breaker open", final=True), "escalated", [Blocked, Escalate]),
        (Block("stale_incident", "too old", final=True), "escalated", [Blocked, Escalate]),
        (Block("unknown_action", "gone", final=True), "escalated", [Blocked, Escalate]),
        (Block("dry_run", "DRY_RUN", final=True), "skipped", [Blocked, Skipped]),
        (Block("no_longer_firing", "cleared", final=True), "skipped", [Blocked, Skipped]),
        (Block("cooldown", "recent"), "decided", [Blocked]),
        (Block("alert_storm", "8 of 10"), "decided", [Blocked]),
    ],
)
def test_on_block(block: Block, state: State, effects: list[type]) -> None:
    """Escalating blocks escalate, final ones skip, the others wait with the reason kept."""
    step = on_block(_incident("decided", decision=RESTART), block, LATER)
    assert step.incident.state == state
    assert [type(e) for e in step.effects] == effects
    if state == "decided":
        assert step.incident.blocked_reason == block.reason and step.commit


def test_the_same_block_again_commits_nothing() -> None:
    """A block with the reason already recorded is logged, not written again."""
    step = on_block(
        _incident("decided", decision=RESTART, blocked_reason="cooldown"),
        Block("cooldown", "x"),
        LATER,
    )
    assert not step.commit and step.events == () and [type(e) for e in step.effects] == [Blocked]


def test_on_claim_claims_before_sending() -> None:
    """The claim travels with the move to acting; sending is an effect after the commit."""
    step = on_claim(
        _incident("decided", decision=RESTART, blocked_reason="cooldown"),
        target="market-predictor",
        mutating=True,
        owner="r1",
        lease_until=LATER,
        now=NOW,
    )
    assert step.incident.state == "acting" and step.incident.action_target == "market-predictor"
    assert step.incident.blocked_reason is None and step.incident.lease_owner == "r1"
    assert step.claim == Claim("inc0001", "market-predictor", "restart", NOW, True)
    assert step.effects == (Dispatch("restart", "market-predictor"),)


def _result(outcome: Outcome, error: str | None = None) -> GatewayResult:
    return GatewayResult(
        outcome=outcome,
        status="S",
        attempts=1,
        elapsed_seconds=0.1,
        idempotency_key="k",
        error_message=error,
    )


@pytest.mark.parametrize(
    ("outcome", "mutating", "state", "breaker_failed"),
    [
        ("succeeded", True, "verifying", None),
        ("failed", True, "verifying", None),
        ("unknown", True, "verifying", None),
        ("rejected", True, "escalated", True),
        ("gave_up", True, "escalated", True),
        ("succeeded", False, "escalated", None),
        ("unknown", False, "escalated", None),
    ],
)
def test_on_gateway_result(
    outcome: Outcome, mutating: bool, state: State, breaker_failed: bool | None
) -> None:
    """What may have run is verified; what never ran is escalated and counts against the
    breaker; a read-only action's output goes to a human."""
    acting = _incident(
        "acting", decision=RESTART, action_target="market-predictor", lease_owner="r1"
    )
    step = on_gateway_result(
        acting,
        _result(outcome, "E"),
        {"body": 1},
        LATER,
        mutating=mutating,
        verify_after=60,
        breaker_open_at=3,
    )
    assert step.incident.state == state and step.incident.dispatch_outcome == outcome
    assert step.incident.lease_owner is None
    assert step.outcome == ActionOutcome("inc0001", "restart", outcome)
    assert step.events[0].kind == "gateway_request"
    if state == "verifying":
        assert step.incident.verify_at == LATER + timedelta(seconds=60)
    expected = BreakerChange("market-predictor", True, 3) if breaker_failed else None
    assert step.breaker == expected


@pytest.mark.parametrize(
    ("recovered", "dispatch_outcome", "state", "effect", "failed"),
    [
        (True, "succeeded", "resolved", Resolved, False),
        (False, "succeeded", "escalated", Escalate, True),
        (False, "unknown", "escalated", Escalate, True),
    ],
)
def test_on_verification(
    recovered: bool, dispatch_outcome: str, state: State, effect: type, failed: bool
) -> None:
    """Recovered: resolved, cleared and the breaker reset; not: escalated, counted."""
    verifying = _incident(
        "verifying",
        decision=RESTART,
        action_target="market-predictor",
        dispatch_outcome=dispatch_outcome,
    )
    step = on_verification(verifying, recovered, LATER, verify_after=60, breaker_open_at=3)
    assert step.incident.state == state
    assert [type(e) for e in step.effects] == [effect]
    assert step.breaker == BreakerChange("market-predictor", failed, 3)
    if recovered:
        assert step.incident.cleared_at == LATER
    else:
        assert ("answer was lost" in (step.incident.resolution or "")) == (
            dispatch_outcome == "unknown"
        )


@pytest.mark.parametrize(
    ("state", "result_state", "effects"),
    [
        ("open", "skipped", [Skipped, Cleared]),
        ("diagnosing", "skipped", [Skipped, Cleared]),
        ("decided", "skipped", [Skipped, Cleared]),
        ("escalated", "escalated", [Cleared]),
        ("skipped", "skipped", [Cleared]),
        ("held", "skipped", [Skipped, Cleared]),
        ("awaiting_approval", "skipped", [ApprovalEnded, Skipped, Cleared]),
        ("acting", None, None),
        ("verifying", None, None),
        ("watching", None, None),
    ],
)
def test_on_gone(state: State, result_state: State | None, effects: list[type] | None) -> None:
    """Gone before any action: skipped and cleared; ended: cleared; in flight: verification decides."""
    step = on_gone(_incident(state), LATER)
    if result_state is None:
        assert step is None
        return
    assert step is not None
    assert step.incident.state == result_state and step.incident.cleared_at == LATER
    assert [type(e) for e in step.effects] == effects


def test_on_restart_never_sends_a_claimed_action_again() -> None:
    """A replica stopped in acting: verifying with an unknown outcome, no second claim."""
    acting = _incident(
        "acting",
        decision=RESTART,
        action_target="market-predictor",
        lease_owner="dead",
        lease_until=NOW,
    )
    step = on_restart(acting, LATER, verify_after=60)
    assert step.incident.state == "verifying" and step.incident.dispatch_outcome == "unknown"
    assert step.incident.verify_at == LATER + timedelta(seconds=60)
    assert step.claim is None and step.outcome == ActionOutcome("inc0001", "restart", "unknown")
    assert [type(e) for e in step.effects] == [TakenOver] and step.incident.lease_owner is None


def test_on_restart_diagnoses_again_and_releases_other_leases() -> None:
    """A stopped diagnosis starts over from open; any other state just loses the lease."""
    step = on_restart(
        _incident("diagnosing", lease_owner="dead", lease_until=NOW), LATER, verify_after=60
    )
    assert step.incident.state == "open" and step.incident.lease_owner is None
    released = on_restart(
        _incident("decided", lease_owner="dead", lease_until=NOW), LATER, verify_after=60
    )
    assert released.incident.state == "decided" and released.incident.lease_owner is None


def test_leased_by_other() -> None:
    """A live lease of another replica holds; one's own, an expired one or none does not."""
    leased = _incident(lease_owner="r2", lease_until=LATER)
    assert leased.leased_by_other("r1", NOW)
    assert not leased.leased_by_other("r2", NOW)
    assert not leased.leased_by_other("r1", LATER + timedelta(seconds=1))
    assert not _incident().leased_by_other("r1", NOW)


def test_decision_round_trips_and_refuses_garbage() -> None:
    """A stored decision reads back equal; a malformed one is a ValueError, not a crash."""
    assert Decision.from_dict(RESTART.to_dict()) == RESTART
    for bad in (None, [], {"action": 3}, {"action": "restart"}):
        with pytest.raises(ValueError):
            Decision.from_dict(bad)


def test_finding_round_trips_and_refuses_garbage() -> None:
    """A stored finding reads back equal; a malformed one is a ValueError."""
    assert Finding.from_dict(FINDING.to_dict()) == FINDING
    for bad in (None, {"kind": "alert"}, {**FINDING.to_dict(), "severity": "extreme"}):
        with pytest.raises(ValueError):
            Finding.from_dict(bad)


def test_work_queue_takes_the_most_severe_then_the_oldest_first() -> None:
    """Open and decided incidents of firing findings are worked most severe first, then
    oldest; busy ones, other replicas' live leases and gone findings wait."""

    def incident(
        name: str, severity: Severity, minutes: int, **changes: Any
    ) -> tuple[Incident, Finding]:
        labels = {"alertname": name, "service": "svc"}
        finding = replace(
            FINDING,
            name=name,
            severity=severity,
            labels=labels,
            first_seen=NOW - timedelta(minutes=minutes),
            fingerprint=fingerprint("alert", name, labels, ()),
        )
        base = Incident(name, group_of(finding), "open", NOW, NOW, finding)
        return replace(base, **changes), finding

    rows = [
        incident("Info", Severity.info, 50),
        incident("CritNew", Severity.critical, 1),
        incident("CritOld", Severity.critical, 9, state="decided"),
        incident("Warn", Severity.warning, 5),
        incident("Busy", Severity.critical, 60),
        incident("Leased", Severity.critical, 60, lease_owner="r2", lease_until=LATER),
        incident("Acting", Severity.critical, 60, state="acting"),
    ]
    current = {i.group_key: f for i, f in rows}
    gone, _ = incident("Gone", Severity.critical, 90)
    queue = work_queue([*(i for i, _ in rows), gone], current, replica="r1", busy={"Busy"}, now=NOW)
    assert [i.id for i in queue] == ["CritOld", "CritNew", "Warn", "Info"]


def test_a_storm_is_one_incident_escalated_once_and_watched() -> None:
    """The storm incident opens straight into watching, with one escalation listing the
    services; it resolves (and resolves its escalation) when the storm ends."""
    finding = storm_finding(["svc-b", "svc-a"], 12, NOW)
    assert finding.annotations["services"] == "svc-a, svc-b"
    step = on_storm(finding, "storm1", NOW)
    assert step.incident.state == "watching" and step.incident.kind == "storm"
    assert [type(e) for e in step.effects] == [Opened, Escalate]
    assert "2 of 12 services" in step.effects[1].reason  # type: ignore[union-attr]
    ended = on_storm_end(step.incident, LATER)
    assert ended.incident.state == "resolved" and ended.incident.cleared_at == LATER
    assert [type(e) for e in ended.effects] == [StormEnded]
    assert on_finding(finding, "x", NOW).incident.group_key == step.incident.group_key


def test_members_are_held_by_the_storm_and_released_after() -> None:
    """An open incident is held while the storm lasts and open again once it ends."""
    held = on_hold(_incident("open"), "storm1", NOW)
    assert held.incident.state == "held" and held.events[0].data["storm"] == "storm1"
    released = on_release(held.incident, LATER)
    assert released.incident.state == "open"


@pytest.mark.parametrize(
    ("state", "escalates"),
    [
        ("open", True),
        ("diagnosing", True),
        ("decided", True),
        ("verifying", True),
        ("held", True),
        ("watching", True),
        ("acting", False),
        ("resolved", False),
        ("escalated", False),
    ],
)
def test_on_failure(state: State, escalates: bool) -> None:
    """A failure escalates with the reason, except in acting (verification decides) or once ended."""
    step = on_failure(_incident(state), "ValueError: boom", LATER)
    if not escalates:
        assert step is None
        return
    assert step is not None and step.incident.state == "escalated"
    assert "internal error while working the incident: ValueError: boom" in (
        step.incident.resolution or ""
    )


#: A model that said none to a leak: the runbook's restart waits for a human.
ASKING = Decision(
    "none",
    "market-predictor",
    "llm",
    False,
    approval_action="restart",
    approval_target="market-predictor",
    autonomy="the runbook would restart market-predictor, but the model proposes none",
    keys=("runbook",),
)


def test_a_decision_that_asks_waits_for_a_human() -> None:
    """Nothing runs alone: awaiting_approval until now + ttl, and a human is asked."""
    diagnosing = _incident("diagnosing", lease_owner="r1", lease_until=LATER)
    step = on_decision(diagnosing, Diagnosis(ASKING), NOW, approval_ttl=600)
    until = NOW + timedelta(seconds=600)
    assert step.incident.state == "awaiting_approval" and step.incident.approval_until == until
    assert step.incident.lease_owner is None and step.incident.awaiting == "restart"
    assert step.effects == (AskApproval("restart", "market-predictor", until),)
    assert step.events[-1].data["to"] == "awaiting_approval"
    assert step.claim is None


def test_a_read_only_step_runs_before_the_human_is_asked() -> None:
    """collect_logs runs alone; once its result is in, the restart waits for approval."""
    decision = replace(ASKING, action="collect_logs", actionable=True)
    diagnosing = _incident("diagnosing")
    decided = on_decision(diagnosing, Diagnosis(decision), NOW).incident
    assert decided.state == "decided" and decided.action == "collect_logs"
    acting = replace(decided, state="acting", action_target="market-predictor")
    step = on_gateway_result(
        acting,
        _result("succeeded"),
        {"body": 1},
        LATER,
        mutating=False,
        verify_after=60,
        breaker_open_at=3,
        approval_ttl=300,
    )
    assert step.incident.state == "awaiting_approval"
    assert step.incident.approval_until == LATER + timedelta(seconds=300)
    assert step.outcome == ActionOutcome("inc0001", "collect_logs", "succeeded")
    assert [type(e) for e in step.effects] == [AskApproval]


def test_an_approval_is_a_claim_of_the_waiting_action() -> None:
    """Granted: the waiting restart becomes the decided action, claimed, then sent."""
    waiting = _incident("awaiting_approval", decision=ASKING, approval_until=LATER)
    answer = Answer(True, "alice", "looked at the graph", NOW)
    step = on_approval_granted(
        waiting, answer, mutating=True, owner="r2", lease_until=LATER, now=NOW
    )
    assert step.incident.state == "acting" and step.incident.action == "restart"
    assert step.incident.decision is not None
    assert step.incident.decision.approved_by == "alice"
    assert step.incident.decision.keys == ("runbook", "human")
    assert step.incident.awaiting is None
    assert step.claim == Claim("inc0001", "market-predictor", "restart", NOW, True)
    assert step.effects == (
        ApprovalEnded("granted", "restart", "market-predictor"),
        Dispatch("restart", "market-predictor"),
    )
    assert step.events[0].data == {
        "result": "granted",
        "by": "alice",
        "reason": "looked at the graph",
    }


def test_a_denial_and_an_expiry_escalate() -> None:
    """No: escalated with who said no and why; nobody: escalated as expired."""
    waiting = _incident("awaiting_approval", decision=ASKING, approval_until=LATER)
    denied = on_approval_denied(waiting, Answer(False, "bob", "deploy in progress", NOW), NOW)
    assert denied.incident.state == "escalated"
    assert denied.incident.resolution == "approval denied by bob: deploy in progress"
    assert [type(e) for e in denied.effects] == [ApprovalEnded, Escalate]
    expired = on_approval_expired(waiting, LATER)
    assert expired.incident.state == "escalated"
    assert (expired.incident.resolution or "").startswith("approval expired")
    assert expired.effects[0] == ApprovalEnded("expired", "restart", "market-predictor")


def test_a_block_at_approval_time_keeps_it_waiting() -> None:
    """A cooldown when the human says yes: still waiting, the reason recorded."""
    waiting = _incident("awaiting_approval", decision=ASKING, approval_until=LATER)
    step = on_block(waiting, Block("cooldown", "restart 60s ago"), NOW)
    assert step.incident.state == "awaiting_approval" and step.incident.blocked_reason == "cooldown"


def test_a_yes_held_by_a_passing_guardrail_is_remembered_then_sent() -> None:
    """A cooldown when the human says yes: the yes is kept (approved), the ask withdrawn but
    not counted; a later cycle's grant sends it without recording the answer twice."""
    waiting = _incident("awaiting_approval", decision=ASKING, approval_until=LATER)
    answer = Answer(True, "alice", "looked", NOW)
    held = on_approval_held(waiting, answer, Block("cooldown", "restart 60s ago"), NOW)
    assert held.incident.state == "approved" and held.incident.blocked_reason == "cooldown"
    assert held.incident.decision is not None and held.incident.decision.approved_by == "alice"
    assert held.incident.awaiting == "restart" and held.incident.asks
    assert held.effects[0] == ApprovalEnded("approved", "restart", "market-predictor", final=False)
    assert [e.kind for e in held.events] == ["approval", "transition"]
    sent = on_approval_granted(
        held.incident,
        replace(answer, at=LATER),
        mutating=True,
        owner="r1",
        lease_until=LATER,
        now=LATER,
    )
    assert sent.incident.state == "acting" and sent.claim is not None
    assert [e.kind for e in sent.events] == ["transition"]  # the answer is not recorded twice
    assert sent.effects[0] == ApprovalEnded("granted", "restart", "market-predictor")


def test_a_yes_not_sent_in_time_ends_blocked_and_a_cleared_one_skips() -> None:
    """An approved action still held at the deadline escalates as blocked (not granted); if
    the finding goes away first, it is skipped and cleared."""
    approved = _incident(
        "approved",
        decision=replace(ASKING, approved_by="alice"),
        approval_until=LATER,
        blocked_reason="in_flight",
    )
    expired = on_approval_expired(approved, LATER)
    assert expired.incident.state == "escalated"
    assert "approved by alice but not sent" in (expired.incident.resolution or "")
    assert "in_flight" in (expired.incident.resolution or "")
    assert expired.effects[0] == ApprovalEnded("blocked", "restart", "market-predictor")
    gone = on_gone(approved, LATER)
    assert gone is not None and gone.incident.state == "skipped"
    assert gone.effects[0] == ApprovalEnded("cleared", "restart", "market-predictor")


def test_the_ask_names_a_related_service_as_its_target() -> None:
    """A restart of a related service waits with that service named, in the row too."""
    related = replace(ASKING, approval_target="coding-ai-agent")
    step = on_decision(_incident("diagnosing"), Diagnosis(related), NOW, approval_ttl=60)
    until = NOW + timedelta(seconds=60)
    assert step.effects == (AskApproval("restart", "coding-ai-agent", until),)
    row = step.incident.row()
    assert (row["approval_action"], row["approval_target"], row["target"]) == (
        "restart",
        "coding-ai-agent",
        "market-predictor",
    )


def test_a_replica_dying_during_the_read_only_step_keeps_the_ask() -> None:
    """The read-only step's lease expired: the changing action still waits for a human and
    is asked again; the read-only step is not repeated."""
    acting = _incident(
        "acting",
        decision=replace(ASKING, action="collect_logs"),
        action_target="market-predictor",
        lease_owner="dead",
        lease_until=NOW,
    )
    step = on_restart(acting, LATER, verify_after=60, approval_ttl=300)
    until = LATER + timedelta(seconds=300)
    assert step.incident.state == "awaiting_approval" and step.incident.approval_until == until
    assert step.outcome == ActionOutcome("inc0001", "collect_logs", "unknown")
    assert [type(e) for e in step.effects] == [TakenOver, AskApproval]
    assert step.claim is None


def test_verification_keeps_the_models_expression_as_evidence_only() -> None:
    """The finding decides; what the plan's expression said is kept in the record."""
    verifying = _incident("verifying", decision=RESTART, action_target="market-predictor")
    evidence = {"verification_expr": "vector(1)", "verification_series": 1}
    step = on_verification(
        verifying, True, LATER, verify_after=60, breaker_open_at=3, evidence=evidence
    )
    assert step.incident.state == "resolved"
    assert step.events[-1].data["verification_series"] == 1
    failed = on_verification(
        verifying, False, LATER, verify_after=60, breaker_open_at=3, evidence=evidence
    )
    assert failed.incident.state == "escalated"
    assert failed.events[0].kind == "verification" and failed.events[0].data == evidence


def _config(**changes: Any) -> AgentConfig:
    """The shipped configuration with services' entries and tiers changed."""
    services = tomllib.loads(CONFIG.read_text())["services"]
    for name, entry in changes.items():
        if entry is None:
            services.pop(name)
        else:
            services[name] = {**services[name], **entry}
    return make_config(services=services)


ALONE = replace(RESTART, decided_by="runbook", keys=("runbook",))
LOGS_FIRST = replace(ASKING, action="collect_logs", actionable=True)
MP = "market-predictor"


@pytest.mark.parametrize(
    ("state", "decision", "source", "config", "reason"),
    [
        ("awaiting_approval", ASKING, "prometheus", {}, None),
        (
            "awaiting_approval",
            ASKING,
            "prometheus",
            {MP: {"autonomy": {"restart": "never"}}},
            "restart on market-predictor is now set to autonomy 'never'",
        ),
        (
            "approved",
            ASKING,
            "prometheus",
            {MP: {"actions": ["start", "collect_logs"]}},
            "restart is no longer allowed on market-predictor (services.market-predictor.actions)",
        ),
        (
            "awaiting_approval",
            ASKING,
            "prometheus",
            {MP: None},
            "service market-predictor is no longer in [services]",
        ),
        # a tier raised to approve does not withdraw an ask: it asks already
        (
            "awaiting_approval",
            ASKING,
            "prometheus",
            {MP: {"autonomy": {"restart": "approve"}}},
            None,
        ),
        # the read-only step that runs before the ask is not run for an ask now refused
        (
            "decided",
            LOGS_FIRST,
            "prometheus",
            {MP: {"autonomy": {"restart": "never"}}},
            "restart on market-predictor is now set to autonomy 'never'",
        ),
        ("decided", ALONE, "prometheus", {}, None),
        (
            "decided",
            ALONE,
            "prometheus",
            {MP: {"autonomy": {"restart": "approve"}}},
            "restart on market-predictor now needs a human's approval (autonomy 'approve')",
        ),
        (
            "decided",
            ALONE,
            "alertmanager",
            {},
            "restart on market-predictor rests on Alertmanager alone (sweep.trust_alertmanager)",
        ),
        # nothing waits in other states, whatever the configuration says
        ("acting", ALONE, "prometheus", {MP: None}, None),
        ("verifying", ALONE, "prometheus", {MP: None}, None),
    ],
)
def test_withdrawal_names_what_the_configuration_in_force_refuses(
    state: State, decision: Decision, source: str, config: dict[str, Any], reason: str | None
) -> None:
    """An ask (or a lone action) the configuration in force refuses is named with the
    reason; anything it still allows, or that no longer waits, is not."""
    finding = replace(FINDING, source=source)
    incident = _incident(state, decision=decision, finding=finding, approval_until=LATER)
    assert withdrawal(incident, _config(**config)) == reason


@pytest.mark.parametrize(
    ("state", "effects"),
    [
        ("awaiting_approval", [ApprovalEnded, Escalate]),
        ("approved", [ApprovalEnded, Escalate]),
        ("decided", [Escalate]),
    ],
)
def test_a_withdrawn_ask_ends_its_wait_and_escalates(state: State, effects: list[type]) -> None:
    """Withdrawn: escalated with the reason, the ask's alert ended and counted as
    withdrawn; a decided action that was never asked for just escalates."""
    incident = _incident(state, decision=ASKING, approval_until=LATER, lease_owner="r1")
    step = on_withdrawn(incident, "restart on market-predictor is now never", NOW)
    assert step.incident.state == "escalated" and step.incident.lease_owner is None
    assert step.incident.resolution == (
        "configuration changed: restart on market-predictor is now never"
    )
    assert [type(e) for e in step.effects] == effects
    if incident.asks:
        assert step.effects[0] == ApprovalEnded("withdrawn", "restart", MP)
