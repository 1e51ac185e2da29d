"""A human's answer to an approval request: the one path of every surface that answers.

The CLI, the HTTP API, the console and the MCP server parse and authorise an answer; this
module alone turns it into a lifecycle step (none of them writes the store itself).
``answer_approval`` turns "yes" or "no" for one incident into a step, whoever asks. A yes
is for this incident, this action and this target only (an answer may pin both: a pinned
action or target that differs from what waits is refused, naming what waits), and goes
through the dispatcher like any decided action: the guardrails are checked again now,
and again under the fleet-wide claim lock, where the claim of (incident, action) is
committed before anything is sent, so two approvals, or one seen by two replicas, send one
request. A yes that a passing guardrail holds back (cooldown, an action in flight, an
unhealthy Prometheus, a failed re-check) is remembered and sent by the first cycle that
can, until the approval's deadline. Every answer that cannot be carried out is a clear
refusal with nothing sent and nothing lost:

- 404 no such incident; 409 not waiting (any more), another action or target, another
  replica working on it, already approved, a guardrail refusing the action for good, or
  a configuration that no longer allows it (the ask is withdrawn then, see
  ``guardrails/asks.py``);
  410 the wait expired;
- 202 approved, not sent yet (held back, remembered); 200 with the incident's new state.

What approvers write (``by``, ``reason``) is kept in the timeline and shown escaped; it is
never sent to the gateway or to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.daemon.effects import run_effects
from agent.daemon.steps import commit
from agent.dispatch.dispatcher import dispatch, fleet_now
from agent.errors import AgentError
from agent.incidents.lifecycle import (
    APPROVAL_EXPIRED,
    CONFIG_CHANGED,
    Answer,
    on_approval_denied,
    on_approval_expired,
    on_withdrawn,
    withdrawal,
)
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Unreadable
from agent.text import one_line

log = get_logger("agent.approval")

BY_MAX = 200
REASON_MAX = 2000
#: A pinned action or target longer than this is not a name the agent could have asked for.
PIN_MAX = 200


class BadAnswer(AgentError):
    """The answer itself is malformed (no name, a name or reason too long)."""


def make_answer(*, approve: bool, by: object, reason: object, at: datetime) -> Answer:
    """A checked answer; BadAnswer naming what is wrong."""
    if not isinstance(by, str) or not by.strip():
        raise BadAnswer("'by' must name who answers")
    if len(by) > BY_MAX:
        raise BadAnswer(f"'by' is over {BY_MAX} characters")
    if reason is None:
        reason = ""
    if not isinstance(reason, str):
        raise BadAnswer("'reason' must be a string")
    if len(reason) > REASON_MAX:
        raise BadAnswer(f"'reason' is over {REASON_MAX} characters")
    if not approve and not reason.strip():
        raise BadAnswer("a denial needs a reason")
    return Answer(approve=approve, by=by.strip(), reason=reason.strip(), at=at)


@dataclass(frozen=True)
class Pin:
    """What the human means to approve: the action and the service it runs on (None:
    whatever waits). A pin that differs from what waits refuses the answer."""

    action: str | None = None
    target: str | None = None

    @classmethod
    def checked(cls, action: object, target: object) -> Pin:
        """A pin from untrusted input; BadAnswer naming what is wrong."""
        for name, value in (("action", action), ("target", target)):
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                raise BadAnswer(f"'{name}' must be a non-empty string")
            if len(value) > PIN_MAX:
                raise BadAnswer(f"'{name}' is over {PIN_MAX} characters")
        return cls(
            action.strip() if isinstance(action, str) else None,
            target.strip() if isinstance(target, str) else None,
        )


@dataclass(frozen=True)
class Reply:
    """How an answer went: an HTTP-like status, a reason, and the incident as it now stands."""

    status: int
    reason: str
    incident: Incident | None = None

    @property
    def ok(self) -> bool:
        """The answer was carried out."""
        return self.status == 200

    @property
    def accepted(self) -> bool:
        """A yes was taken: sent (200) or remembered to send (202)."""
        return self.status in (200, 202)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the API's answer: the incident's state, what runs or waits and
        on which service."""
        body: dict[str, Any] = {"reason": self.reason} if not self.ok else {}
        if self.incident is not None:
            i = self.incident
            body.update(
                id=i.id,
                state=i.state,
                action=i.action,
                target=i.action_target or (i.decision.target if i.decision else None) or i.target,
                approval_action=i.awaiting if i.asks else None,
                approval_target=i.awaiting_target if i.asks else None,
                finding_service=i.target,
                resolution=i.resolution,
            )
        return body if self.ok else {"error": self.reason, **body}


def _what_waits(incident: Incident) -> str:
    return f"{incident.awaiting} on {incident.awaiting_target}"


def _pinned_elsewhere(found: Incident, pin: Pin) -> Reply | None:
    """The refusal of an answer pinned to another action or service than what waits."""
    asked, where = found.awaiting or "", found.awaiting_target or ""
    wrong = (pin.action is not None and pin.action != asked) or (
        pin.target is not None and pin.target != where
    )
    if not wrong:
        return None
    meant = f"{one_line(pin.action or asked, 64)} on {one_line(pin.target or where, 64)}"
    return Reply(409, f"waiting for approval of {_what_waits(found)}, not {meant}", found)


def _waiting(
    rt: Runtime, found: Incident | Unreadable | None, pin: Pin, answer: Answer
) -> Reply | Incident:
    """The incident when it waits for this answer; otherwise the refusal."""
    if found is None:
        return Reply(404, "no such incident (or the id prefix is not unique)")
    if isinstance(found, Unreadable):
        return Reply(409, f"incident {found.id} cannot be read: {one_line(found.error, 200)}")
    if not found.asks:
        if (found.resolution or "").startswith(APPROVAL_EXPIRED):
            return Reply(410, f"the wait for approval expired: {found.resolution}", found)
        return Reply(409, f"not waiting for approval (state {found.state})", found)
    refused = _pinned_elsewhere(found, pin)
    if refused is not None:
        return refused
    if found.state == "approved" and answer.approve:
        by = found.decision.approved_by if found.decision else ""
        held = found.blocked_reason or "a guardrail"
        return Reply(
            409, f"already approved by {by}; {_what_waits(found)} waits to be sent ({held})", found
        )
    if found.leased_by_other(rt.replica, answer.at):
        return Reply(409, f"replica {found.lease_owner} is working on it", found)
    return found


async def answer_approval(
    rt: Runtime, incident_id: str, answer: Answer, *, pin: Pin | None = None
) -> Reply:
    """Carry out one human's answer to one incident's approval request; ``pin`` is what
    the human means to approve (refused when something else waits)."""
    now = answer.at
    waiting = _waiting(rt, rt.store.get(incident_id), pin or Pin(), answer)
    if isinstance(waiting, Reply):
        return waiting
    incident = waiting
    until = incident.approval_until
    if until is not None and until <= now:
        applied = await commit(rt, on_approval_expired(incident, now), incident.version)
        stands = applied.incident if applied else incident
        return Reply(410, f"the wait for approval expired at {until.isoformat()}", stands)
    if answer.approve and (refused := withdrawal(incident, rt.config)):
        return await _withdraw(rt, incident, refused, now)
    if not answer.approve:
        applied = await commit(rt, on_approval_denied(incident, answer, now), incident.version)
        if applied is None:
            return Reply(409, "the incident moved on meanwhile (another answer or replica)")
        log.info("approval_denied", incident_id=incident.id, by=answer.by)
        return Reply(200, "denied", applied.incident)
    return await _grant(rt, incident, answer)


async def _withdraw(rt: Runtime, incident: Incident, reason: str, now: datetime) -> Reply:
    """A yes to an ask the configuration in force refuses: the ask is withdrawn (as the
    next cycle would), the incident escalated, nothing sent."""
    applied = await commit(rt, on_withdrawn(incident, reason, now), incident.version)
    stands = applied.incident if applied else incident
    return Reply(409, f"{CONFIG_CHANGED}: {reason}; the ask is withdrawn, nothing sent", stands)


async def _grant(rt: Runtime, incident: Incident, answer: Answer) -> Reply:
    view = await fleet_now(rt)
    rt.working.add(incident.id)
    try:
        done = await dispatch(rt, incident, incident.finding, view, answer.at, answer)
    finally:
        rt.working.discard(incident.id)
    for step, applied in done.steps:
        await run_effects(rt, step, applied)
    stands = done.steps[-1][1].incident if done.steps else incident
    if done.block is not None and stands.state == "approved":
        until = f"{stands.approval_until:%H:%M:%SZ}" if stands.approval_until else "its deadline"
        log.info("approval_held", incident_id=incident.id, by=answer.by, reason=done.block.reason)
        return Reply(
            202,
            f"approved; not sent yet: {done.block.reason}: {done.block.detail}; the first "
            f"cycle that can sends {_what_waits(stands)}, until {until}",
            stands,
        )
    if done.block is not None:
        held = stands.state == "awaiting_approval"
        tail = "; still waiting for approval" if held else f"; the incident is {stands.state}"
        return Reply(409, f"{done.block.reason}: {done.block.detail}{tail}", stands)
    if done.request is None:
        return Reply(409, "the incident moved on meanwhile (another answer or replica)", stands)
    log.info("approval_granted", incident_id=incident.id, by=answer.by, action=done.request.action)
    return Reply(200, "granted", stands)
