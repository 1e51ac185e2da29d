"""The lifecycle's steps: pure functions from an incident and what happened to a ``Step``.

A step is everything one change commits together, in one transaction: the new incident,
its timeline events, the claim of an action (or the outcome of a claimed one) and a
change to the service's circuit breaker. Its ``effects`` are what the caller does once the
commit succeeded: send the claimed action, tell Alertmanager, log and count.

Claim before send: ``on_claim`` moves the incident to ``acting`` and carries the claim of
(incident, action), which the store keeps under a unique constraint; only after that
commit is the request sent. A claimed action whose result never comes back (timeout,
crash, kill -9) is found by ``on_restart`` once its lease expires and goes to
``verifying`` with an unknown outcome: it is never sent again, verification decides.

Waiting for a human: a decision whose changing action may not run alone (two keys, tiers,
``guardrails/autonomy.py``) moves to ``awaiting_approval`` with ``AskApproval``; an answer
(``on_approval_granted``, ``on_approval_denied``), the end of the wait
(``on_approval_expired``) or the finding going away (``on_gone``) ends it with
``ApprovalEnded``; so does a change of the configuration that refuses the action now
(``on_withdrawn``). A granted approval is a claim like any other, committed before the send.
A yes that a passing guardrail holds back is remembered (``on_approval_held``: the
``approved`` state) and sent by the first cycle that can, until the approval's deadline; a
yes that a final guardrail refuses ends the wait as ``blocked``, not ``granted``.

Observing: a decision whose action an ``observe`` tier holds back moves to ``watching``
(``Observed``: nothing is sent, nobody is asked), after a read-only step of another tier if
one runs first. The watch ends (``on_watch_ended``) when the finding is gone (cleared on
its own, or after another hand acted, as the caller could observe it) or, at the verify
time, still firing; the incident is then ``skipped`` with what was seen.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from agent.config import AgentConfig, Severity
from agent.diagnosis.models import Diagnosis
from agent.gateway.response import GatewayResult
from agent.guardrails.asks import refused_alone, refused_ask
from agent.guardrails.policy import Block
from agent.incidents.model import TERMINAL, Event, Incident, group_of
from agent.sweep.findings import Finding, fingerprint

#: Blocks that hand the incident to humans rather than just ending it.
ESCALATING_BLOCKS = frozenset({"circuit_open", "stale_incident", "unknown_action"})
NOT_ACTED = frozenset({"open", "diagnosing", "decided", "held"})
STORM_NAME = "FleetStorm"


@dataclass(frozen=True)
class Claim:
    """The right to send one action for one incident: unique per (incident, action)."""

    incident_id: str
    target: str
    action: str
    at: datetime
    mutating: bool


@dataclass(frozen=True)
class ActionOutcome:
    """How a claimed action ended: succeeded, failed, rejected, gave_up or unknown."""

    incident_id: str
    action: str
    outcome: str


@dataclass(frozen=True)
class BreakerChange:
    """A remediation of ``target`` failed (the breaker counts it) or worked (it resets)."""

    target: str
    failed: bool
    open_at: int


@dataclass(frozen=True)
class Opened:
    """A new incident: log it."""


@dataclass(frozen=True)
class Escalate:
    """Hand the incident to humans: log it and tell Alertmanager."""

    reason: str


@dataclass(frozen=True)
class Dispatch:
    """The claim is committed: send the action to the gateway now."""

    action: str
    target: str


@dataclass(frozen=True)
class Blocked:
    """A guardrail held the action back: log and count it."""

    block: Block


@dataclass(frozen=True)
class Resolved:
    """The problem went away after the action."""

    seconds: float


@dataclass(frozen=True)
class Skipped:
    """The incident ended without an action."""

    reason: str


@dataclass(frozen=True)
class Cleared:
    """The incident's findings are gone; a recurrence will open a new one."""


@dataclass(frozen=True)
class Observed:
    """An ``observe`` tier held the action back: log what would have happened."""

    action: str
    target: str
    would: str


@dataclass(frozen=True)
class StormEnded:
    """The storm is over: tell Alertmanager its escalation is resolved."""


@dataclass(frozen=True)
class TakenOver:
    """The replica working the incident stopped; this one took it over."""

    reason: str


@dataclass(frozen=True)
class AskApproval:
    """The incident waits for a human: ask for approval (an alert), until ``until``."""

    action: str
    target: str
    until: datetime


@dataclass(frozen=True)
class ApprovalEnded:
    """The wait for a human ended: granted, denied, expired, cleared or blocked; withdraw
    the ask (of ``action`` on ``target``). ``final`` False: a yes is remembered but not yet
    carried out (``approved``): the ask is withdrawn, the result is counted later."""

    result: str
    action: str
    target: str
    final: bool = True


def ended_wait(incident: Incident, result: str, *, final: bool = True) -> ApprovalEnded:
    """The end of ``incident``'s wait for a human, with what it waited for."""
    return ApprovalEnded(result, incident.awaiting or "", incident.awaiting_target or "", final)


@dataclass(frozen=True)
class Answer:
    """A human's answer to an approval request: who, why, and whether it is a yes."""

    approve: bool
    by: str
    reason: str
    at: datetime

    def event(self) -> Event:
        """The answer as a timeline event."""
        result = "granted" if self.approve else "denied"
        return Event(self.at, "approval", {"result": result, "by": self.by, "reason": self.reason})


Effect = (
    Opened
    | Escalate
    | Dispatch
    | Blocked
    | Resolved
    | Skipped
    | Cleared
    | StormEnded
    | TakenOver
    | AskApproval
    | ApprovalEnded
    | Observed
)


@dataclass(frozen=True)
class Step:
    """What one change commits together, and what to do after the commit."""

    incident: Incident
    events: tuple[Event, ...] = ()
    effects: tuple[Effect, ...] = ()
    claim: Claim | None = None
    outcome: ActionOutcome | None = None
    breaker: BreakerChange | None = None
    #: False when nothing changed and there is nothing to commit.
    commit: bool = True

    @property
    def ends(self) -> bool:
        """The step moves the incident into a terminal state: its outcome is recorded."""
        state = self.incident.state
        return state in TERMINAL and any(
            e.kind == "transition" and e.data.get("to") == state for e in self.events
        )


def _moved(before: Incident, after: Incident, now: datetime, **data: Any) -> Event:
    return Event(now, "transition", {"from": before.state, "to": after.state, **data})


_RELEASED: Mapping[str, Any] = {"lease_owner": None, "lease_until": None}


def _escalate(
    incident: Incident,
    reason: str,
    now: datetime,
    events: Sequence[Event] = (),
    *,
    effects: Sequence[Any] = (),
    outcome: ActionOutcome | None = None,
    breaker: BreakerChange | None = None,
    **changes: Any,
) -> Step:
    moved = incident.move("escalated", now, resolution=reason, **{**_RELEASED, **changes})
    return Step(
        moved,
        (*events, _moved(incident, moved, now, reason=reason)),
        (*effects, Escalate(reason)),
        outcome=outcome,
        breaker=breaker,
    )


def on_finding(finding: Finding, incident_id: str, now: datetime) -> Step:
    """A finding whose group has no current incident opens one."""
    incident = Incident(
        id=incident_id,
        group_key=group_of(finding),
        state="open",
        opened_at=now,
        updated_at=now,
        finding=finding,
    )
    return Step(incident, (Event(now, "opened", {"state": "open"}),), (Opened(),))


def on_diagnosis_started(
    incident: Incident, owner: str, lease_until: datetime, now: datetime
) -> Step:
    """This replica takes the incident under lease to diagnose it."""
    moved = incident.move("diagnosing", now, lease_owner=owner, lease_until=lease_until)
    return Step(moved, (_moved(incident, moved, now, replica=owner),))


def _await_approval(
    before: Incident, after: Incident, now: datetime, events: Sequence[Event], ttl: float
) -> Step:
    """Move to ``awaiting_approval`` and ask a human, for ``ttl`` seconds."""
    decision = after.decision
    assert decision is not None and decision.approval_action
    until = now + timedelta(seconds=ttl)
    moved = after.move("awaiting_approval", now, approval_until=until, **_RELEASED)
    event = _moved(
        before,
        moved,
        now,
        action=decision.approval_action,
        target=after.awaiting_target,
        reason=decision.autonomy,
        until=until.isoformat(),
    )
    ask = AskApproval(decision.approval_action, after.awaiting_target or "", until)
    return Step(moved, (*events, event), (ask,))


def _watch(
    before: Incident, after: Incident, now: datetime, events: Sequence[Event], verify_after: float
) -> Step:
    """Move to ``watching``: an ``observe`` tier held the action back; the finding is
    watched until it ends, at the latest until the verify time."""
    decision = after.decision
    assert decision is not None and decision.observed_action
    verify_at = now + timedelta(seconds=verify_after)
    moved = after.move(
        "watching",
        now,
        verify_at=verify_at,
        resolution=f"observed: {decision.observed}; watching the finding",
        **_RELEASED,
    )
    event = _moved(
        before,
        moved,
        now,
        observed=decision.observed,
        action=decision.observed_action,
        target=decision.observed_target,
        would=decision.observed_would,
        reason=decision.autonomy,
        verify_at=verify_at.isoformat(),
    )
    observed = Observed(decision.observed_action, decision.observed_target, decision.observed_would)
    return Step(moved, (*events, event), (observed,))


def on_decision(
    incident: Incident,
    diagnosis: Diagnosis,
    now: datetime,
    *,
    approval_ttl: float = 900.0,
    verify_after: float = 120.0,
) -> Step:
    """The diagnosis decided: nothing to do, escalate, ask a human, watch what an
    ``observe`` tier held back, or an action for the guardrails (a read-only step may run
    before the human is asked, or the watch begins)."""
    decision = diagnosis.decision
    events = [Event(now, "decision", diagnosis.summary())]
    if diagnosis.transcript:
        events.append(Event(now, "llm_transcript", {"messages": list(diagnosis.transcript)}))
    if decision.approval_action and decision.action in ("none", "escalate"):
        decided = incident.update(now, decision=decision)
        return _await_approval(incident, decided, now, events, approval_ttl)
    if decision.observed_action and decision.action == "none":
        decided = incident.update(now, decision=decision)
        return _watch(incident, decided, now, events, verify_after)
    # an observed action beside an escalation (the runbook says humans must see it): the
    # escalation happens, and says what the observe tier held back
    if not decision.actionable or decision.action == "none":
        reason = decision.reason or "nothing to do"
        moved = incident.move("skipped", now, decision=decision, resolution=reason, **_RELEASED)
        return Step(
            moved, (*events, _moved(incident, moved, now, reason=reason)), (Skipped(reason),)
        )
    if decision.action == "escalate":
        reason = decision.reason or "the diagnosis chose escalate"
        if decision.observed_action:
            reason = f"{reason} (observe: {decision.observed})"
        return _escalate(incident, reason, now, events, decision=decision)
    moved = incident.move("decided", now, decision=decision, **_RELEASED)
    return Step(moved, (*events, _moved(incident, moved, now, action=decision.action)))


def on_block(incident: Incident, block: Block, now: datetime) -> Step:
    """A guardrail held the action back: escalate, end, or wait for the next sweep."""
    if block.reason in ESCALATING_BLOCKS:
        return _escalate(incident, block.detail, now, effects=(Blocked(block),))
    if block.final:
        reason = f"{block.reason}: {block.detail}"
        moved = incident.move("skipped", now, resolution=reason, **_RELEASED)
        event = _moved(incident, moved, now, reason=block.reason, detail=block.detail)
        return Step(moved, (event,), (Blocked(block), Skipped(block.reason)))
    if incident.blocked_reason == block.reason:
        return Step(incident, (), (Blocked(block),), commit=False)
    updated = incident.update(now, blocked_reason=block.reason)
    event = Event(now, "blocked", {"reason": block.reason, "detail": block.detail})
    return Step(updated, (event,), (Blocked(block),))


def on_claim(
    incident: Incident,
    *,
    target: str,
    mutating: bool,
    owner: str,
    lease_until: datetime,
    now: datetime,
) -> Step:
    """The guardrails let the action run: claim it; the caller sends it after the commit."""
    action = incident.action or "none"
    moved = incident.move(
        "acting",
        now,
        action_target=target,
        acted_at=now,
        blocked_reason=None,
        lease_owner=owner,
        lease_until=lease_until,
    )
    return Step(
        moved,
        (_moved(incident, moved, now, action=action, target=target),),
        (Dispatch(action, target),),
        claim=Claim(incident.id, target, action, now, mutating),
    )


def on_gateway_result(
    incident: Incident,
    result: GatewayResult,
    request: Mapping[str, Any],
    now: datetime,
    *,
    mutating: bool,
    verify_after: float,
    breaker_open_at: int,
    approval_ttl: float = 900.0,
) -> Step:
    """The gateway answered (or not): verify what may have run, escalate what did not; after
    a read-only step, ask the human who must approve the changing action."""
    action = incident.action or "none"
    target = incident.action_target or incident.target or ""
    event = Event(now, "gateway_request", {"request": dict(request), "result": result.to_dict()})
    outcome = ActionOutcome(incident.id, action, result.outcome)
    if result.outcome in ("rejected", "gave_up"):
        reason = f"gateway {result.outcome}: {result.error or 'no details'}"
        breaker = BreakerChange(target, failed=True, open_at=breaker_open_at)
        return _escalate(
            incident,
            reason,
            now,
            [event],
            outcome=outcome,
            breaker=breaker,
            dispatch_outcome=result.outcome,
        )
    if not mutating and incident.awaiting:
        done = incident.update(now, dispatch_outcome=result.outcome)
        return replace(_await_approval(incident, done, now, [event], approval_ttl), outcome=outcome)
    if not mutating and incident.observing:
        done = incident.update(now, dispatch_outcome=result.outcome)
        return replace(_watch(incident, done, now, [event], verify_after), outcome=outcome)
    if not mutating:
        reason = f"{action} {result.outcome}; the output needs a human"
        return _escalate(
            incident, reason, now, [event], outcome=outcome, dispatch_outcome=result.outcome
        )
    verify_at = now + timedelta(seconds=verify_after)
    moved = incident.move(
        "verifying", now, verify_at=verify_at, dispatch_outcome=result.outcome, **_RELEASED
    )
    transition = _moved(
        incident, moved, now, gateway_outcome=result.outcome, verify_at=verify_at.isoformat()
    )
    return Step(moved, (event, transition), outcome=outcome)


def on_verification(
    incident: Incident,
    recovered: bool,
    now: datetime,
    *,
    verify_after: float,
    breaker_open_at: int,
    evidence: Mapping[str, Any] | None = None,
) -> Step:
    """The time to verify came: resolved if the finding is gone, escalated if not.
    ``evidence`` (what the plan's verification expression says) is kept in the record."""
    target = incident.action_target or incident.target or ""
    seen = dict(evidence or {})
    if recovered:
        seconds = (now - incident.opened_at).total_seconds()
        moved = incident.move(
            "resolved",
            now,
            cleared_at=now,
            resolution=f"recovered after {incident.action}",
            **_RELEASED,
        )
        event = _moved(incident, moved, now, time_to_recovery_seconds=round(seconds, 3), **seen)
        breaker = BreakerChange(target, failed=False, open_at=breaker_open_at)
        return Step(moved, (event,), (Resolved(seconds),), breaker=breaker)
    unknown = " (the gateway's answer was lost)" if incident.dispatch_outcome == "unknown" else ""
    reason = f"not recovered {verify_after:g}s after {incident.action}{unknown}"
    return _escalate(
        incident,
        reason,
        now,
        (Event(now, "verification", seen),) if seen else (),
        breaker=BreakerChange(target, failed=True, open_at=breaker_open_at),
    )


def on_approval_granted(
    incident: Incident,
    answer: Answer,
    *,
    mutating: bool,
    owner: str,
    lease_until: datetime,
    now: datetime,
) -> Step:
    """A human approved the waiting action: it becomes the decided action, claimed now; the
    caller sends it after the commit, as for any claim. From ``approved`` (a yes held back
    earlier) the answer is already in the timeline."""
    decision = incident.decision
    assert decision is not None and decision.approval_action
    held = incident.state == "approved"
    approved = replace(
        decision,
        action=decision.approval_action,
        target=decision.approval_target or incident.target,
        approval_action="",
        approval_target="",
        approved_by=answer.by,
        keys=(*decision.keys, "human"),
    )
    target = approved.target or ""
    claim = on_claim(
        replace(incident, decision=approved),
        target=target,
        mutating=mutating,
        owner=owner,
        lease_until=lease_until,
        now=now,
    )
    return replace(
        claim,
        events=claim.events if held else (answer.event(), *claim.events),
        effects=(ended_wait(incident, "granted"), *claim.effects),
    )


def on_approval_held(incident: Incident, answer: Answer, block: Block, now: datetime) -> Step:
    """A human said yes, but a guardrail that passes (cooldown, an action in flight, an
    unhealthy Prometheus, a failed re-check) holds the action back: the yes is remembered
    and sent by the first cycle that can, until the approval's deadline. The ask is
    withdrawn (a human answered); the result is counted when the wait really ends."""
    decision = incident.decision
    assert decision is not None and decision.approval_action
    approved = replace(decision, approved_by=answer.by)
    moved = incident.move(
        "approved", now, decision=approved, blocked_reason=block.reason, **_RELEASED
    )
    event = _moved(incident, moved, now, reason=block.reason, detail=block.detail)
    effects = (ended_wait(incident, "approved", final=False), Blocked(block))
    return Step(moved, (answer.event(), event), effects)


def on_approval_denied(incident: Incident, answer: Answer, now: datetime) -> Step:
    """A human said no: the incident is theirs now."""
    reason = f"approval denied by {answer.by}: {answer.reason}"
    return _escalate(
        incident, reason, now, (answer.event(),), effects=(ended_wait(incident, "denied"),)
    )


APPROVAL_EXPIRED = "approval expired"


def on_approval_expired(incident: Incident, now: datetime) -> Step:
    """Nobody answered in time, or a yes could not be sent in time: escalate rather than
    act late, or wait, forever."""
    until = incident.approval_until or now
    if incident.state == "approved":
        by = incident.decision.approved_by if incident.decision else ""
        reason = (
            f"{APPROVAL_EXPIRED}: approved by {by} but not sent by {until:%H:%M:%SZ} "
            f"(held by {incident.blocked_reason or 'a guardrail'})"
        )
        return _escalate(incident, reason, now, effects=(ended_wait(incident, "blocked"),))
    reason = f"{APPROVAL_EXPIRED}: nobody answered by {until:%H:%M:%SZ}"
    return _escalate(incident, reason, now, effects=(ended_wait(incident, "expired"),))


CONFIG_CHANGED = "configuration changed"


def withdrawal(incident: Incident, config: AgentConfig) -> str | None:
    """Why the configuration in force refuses what ``incident`` waits to do: the action it
    asks a human for (``awaiting_approval``, ``approved``, or ``decided`` with a read-only
    step first), or the action it would send alone (``decided``); None when it may go on."""
    finding = incident.finding
    waits = incident.asks or incident.state == "decided"
    if waits and incident.awaiting:
        target = incident.awaiting_target or ""
        refused = refused_ask(finding, incident.awaiting, target, config)
        if refused is not None:
            return refused
    if incident.state != "decided" or incident.decision is None:
        return None
    target = incident.decision.target or incident.target or ""
    return refused_alone(finding, incident.decision.action, target, config)


def on_withdrawn(incident: Incident, reason: str, now: datetime) -> Step:
    """The configuration in force refuses what the incident waits to do (``reason``, from
    ``guardrails/asks.py``): an ask for approval is withdrawn (its alert ends, counted as
    ``withdrawn``), an action decided alone is not sent, and humans get the incident."""
    why = f"{CONFIG_CHANGED}: {reason}"
    ended = (ended_wait(incident, "withdrawn"),) if incident.asks else ()
    return _escalate(incident, why, now, effects=ended)


def on_failure(incident: Incident, reason: str, now: datetime) -> Step | None:
    """Working the incident raised: hand it to humans with the reason. None in ``acting``
    (the action may have gone out: the lease expires and verification decides, so nothing
    is sent twice) and once it has ended."""
    if incident.state in TERMINAL or incident.state == "acting":
        return None
    return _escalate(incident, f"internal error while working the incident: {reason}", now)


def storm_finding(services: Sequence[str], known: int, now: datetime) -> Finding:
    """The finding of a fleet storm: which services of the catalogue fire at once."""
    return Finding(
        kind="storm",
        name=STORM_NAME,
        target=None,
        severity=Severity.critical,
        labels={},
        annotations={
            "services": ", ".join(sorted(services)),
            "summary": f"{len(services)} of {known} services in scope are firing at once",
        },
        value=float(len(services)),
        first_seen=now,
        fingerprint=fingerprint("storm", STORM_NAME, {}, ()),
    )


def on_storm(finding: Finding, incident_id: str, now: datetime) -> Step:
    """A fleet storm begins: one incident, handed to humans at once and then watched."""
    opened = on_finding(finding, incident_id, now).incident
    reason = f"fleet storm: {finding.annotations['summary']}: {finding.annotations['services']}"
    watching = opened.move("watching", now, resolution=reason)
    events = (Event(now, "opened", {"state": "open"}), _moved(opened, watching, now, reason=reason))
    return Step(watching, events, (Opened(), Escalate(reason)))


def on_hold(incident: Incident, storm_id: str, now: datetime) -> Step:
    """An open incident waits out the storm instead of being diagnosed on its own."""
    held = incident.move("held", now)
    return Step(held, (_moved(incident, held, now, storm=storm_id),))


def on_storm_end(storm: Incident, now: datetime) -> Step:
    """The storm is over: its incident resolves, and so does its escalation."""
    seconds = (now - storm.opened_at).total_seconds()
    ended = storm.move("resolved", now, cleared_at=now, resolution="the storm ended")
    return Step(
        ended, (_moved(storm, ended, now, storm_seconds=round(seconds, 3)),), (StormEnded(),)
    )


def on_release(incident: Incident, now: datetime) -> Step:
    """The storm is over: a held incident is handled normally from now on."""
    released = incident.move("open", now)
    return Step(released, (_moved(incident, released, now, reason="the storm ended"),))


#: How a watch of what an ``observe`` tier held back ended.
WATCH_PERSISTED, WATCH_CLEARED, WATCH_OTHER_HAND = "persisted", "cleared_alone", "other_hand"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def on_watch_ended(
    incident: Incident, now: datetime, *, present: bool, other_hand: str | None = None
) -> Step:
    """The watch of what an ``observe`` tier held back ends: the finding still fires at the
    verify time (``present``), or it is gone: after another hand acted (``other_hand``
    says what the caller saw), or on its own. The incident ends ``skipped``; one still
    firing stays current until its finding goes, so no second incident opens."""
    decision = incident.decision
    observed = decision.observed if decision else ""
    seconds = (now - incident.opened_at).total_seconds()
    if present:
        watch, what = WATCH_PERSISTED, f"still firing {_duration(seconds)} after it opened"
        cleared: dict[str, Any] = {}
    elif other_hand:
        watch, what = WATCH_OTHER_HAND, f"cleared after {_duration(seconds)}, after {other_hand}"
        cleared = {"cleared_at": now}
    else:
        watch, what = WATCH_CLEARED, f"cleared on its own after {_duration(seconds)}"
        cleared = {"cleared_at": now}
    reason = f"observed ({observed}): {what}"
    moved = incident.move("skipped", now, resolution=reason, **cleared, **_RELEASED)
    event = _moved(
        incident,
        moved,
        now,
        reason=reason,
        watch=watch,
        seconds=round(seconds, 3),
        other_hand=other_hand,
    )
    events: tuple[Event, ...] = (event,)
    effects: tuple[Effect, ...] = (Skipped(reason),)
    if cleared:
        events, effects = (*events, Event(now, "cleared", {})), (*effects, Cleared())
    return Step(moved, events, effects)


def on_gone(incident: Incident, now: datetime, *, other_hand: str | None = None) -> Step | None:
    """The incident's findings are no longer seen; None when verification decides instead.
    A watch of an observed action ends (``other_hand``: what the caller saw another hand
    do meanwhile)."""
    if incident.state == "watching" and incident.observing:
        return on_watch_ended(incident, now, present=False, other_hand=other_hand)
    if incident.asks:
        reason = f"finding cleared while {incident.state.replace('_', ' ')}"
        moved = incident.move("skipped", now, cleared_at=now, resolution=reason, **_RELEASED)
        events = (_moved(incident, moved, now, reason=reason), Event(now, "cleared", {}))
        return Step(moved, events, (ended_wait(incident, "cleared"), Skipped(reason), Cleared()))
    if incident.state in NOT_ACTED:
        reason = "finding cleared before any action"
        moved = incident.move("skipped", now, cleared_at=now, resolution=reason, **_RELEASED)
        events = (_moved(incident, moved, now, reason=reason), Event(now, "cleared", {}))
        return Step(moved, events, (Skipped(reason), Cleared()))
    if incident.state in ("escalated", "skipped") and incident.cleared_at is None:
        return Step(
            incident.update(now, cleared_at=now), (Event(now, "cleared", {}),), (Cleared(),)
        )
    return None


def on_restart(
    incident: Incident, now: datetime, *, verify_after: float, approval_ttl: float = 900.0
) -> Step:
    """The replica that held the incident's lease stopped renewing it: take the work over.

    An action claimed in ``acting`` may have reached the gateway: it goes to verification
    with an unknown outcome and is never sent again; when it was the read-only step before
    a changing action that waits for a human, the wait (and its ask) is kept instead. A
    diagnosis is started over.
    """
    who = incident.lease_owner or "unknown"
    if incident.state == "acting" and incident.awaiting:
        reason = f"replica {who} stopped during the read-only step; the approval still waits"
        outcome = ActionOutcome(incident.id, incident.action or "none", "unknown")
        step = _await_approval(
            incident,
            incident.update(now, dispatch_outcome="unknown"),
            now,
            (),
            approval_ttl,
        )
        return replace(
            step,
            events=(Event(now, "taken_over", {"reason": reason}), *step.events),
            effects=(TakenOver(reason), *step.effects),
            outcome=outcome,
        )
    if incident.state == "acting" and incident.observing:
        reason = f"replica {who} stopped during the read-only step; the watch goes on"
        outcome = ActionOutcome(incident.id, incident.action or "none", "unknown")
        done = incident.update(now, dispatch_outcome="unknown")
        step = _watch(incident, done, now, (), verify_after)
        return replace(
            step,
            events=(Event(now, "taken_over", {"reason": reason}), *step.events),
            effects=(TakenOver(reason), *step.effects),
            outcome=outcome,
        )
    if incident.state == "acting":
        reason = (
            f"replica {who} stopped while acting; the action may have run and is not sent again"
        )
        moved = incident.move(
            "verifying",
            now,
            verify_at=now + timedelta(seconds=verify_after),
            dispatch_outcome="unknown",
            **_RELEASED,
        )
        outcome = ActionOutcome(incident.id, incident.action or "none", "unknown")
        return Step(
            moved,
            (_moved(incident, moved, now, reason=reason),),
            (TakenOver(reason),),
            outcome=outcome,
        )
    if incident.state == "diagnosing":
        reason = f"replica {who} stopped while diagnosing; diagnosing again"
        moved = incident.move("open", now, **_RELEASED)
        return Step(moved, (_moved(incident, moved, now, reason=reason),), (TakenOver(reason),))
    return Step(incident.update(now, **_RELEASED))


def work_queue(
    incidents: Iterable[Incident],
    current: Mapping[str, Finding],
    *,
    replica: str,
    busy: Container[str],
    now: datetime,
) -> list[Incident]:
    """The incidents this replica should carry further now, most severe then oldest first:
    open (to diagnose), decided or approved (to dispatch), still firing, not already being worked
    here, and not under another replica's live lease."""
    ready = [
        i
        for i in incidents
        if i.state in ("open", "decided", "approved")
        and i.group_key in current
        and i.id not in busy
        and not i.leased_by_other(replica, now)
    ]
    return sorted(ready, key=lambda i: current[i.group_key].queue_key)
