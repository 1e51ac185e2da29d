"""A human's answer to an approval request: one path for the CLI, the HTTP API and the console.

``answer_approval`` turns "yes" or "no" for one incident into a step, whoever asks. A yes
is for this incident, this action and this target only, and goes through the dispatcher
like any decided action: the guardrails are checked again now, and again under the
fleet-wide claim lock, where the claim of (incident, action) is committed before anything
is sent, so two approvals, or one seen by two replicas, send one request. Every answer
that cannot be carried out is a clear refusal with nothing sent and nothing lost:

- 404 no such incident; 409 not waiting (any more), another action, another replica
  working on it, or a guardrail holding the action back; 410 the wait expired;
- 200 with the incident's new state.

What approvers write (``by``, ``reason``) is kept in the timeline and shown escaped; it is
never sent to the gateway or to the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.daemon.cycle import commit
from agent.daemon.effects import run_effects
from agent.dispatch.dispatcher import FleetView, dispatch
from agent.errors import AgentError
from agent.incidents.lifecycle import (
    APPROVAL_EXPIRED,
    Answer,
    on_approval_denied,
    on_approval_expired,
)
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Unreadable
from agent.text import one_line

log = get_logger("agent.approval")

BY_MAX = 200
REASON_MAX = 2000


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
class Reply:
    """How an answer went: an HTTP-like status, a reason, and the incident as it now stands."""

    status: int
    reason: str
    incident: Incident | None = None

    @property
    def ok(self) -> bool:
        """The answer was carried out."""
        return self.status == 200

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the API's answer."""
        body: dict[str, Any] = {"reason": self.reason} if not self.ok else {}
        if self.incident is not None:
            i = self.incident
            body.update(
                id=i.id,
                state=i.state,
                action=i.action,
                target=i.action_target or i.target,
                resolution=i.resolution,
            )
        return body if self.ok else {"error": self.reason, **body}


async def approval_view(rt: Runtime) -> FleetView:
    """The fleet as the guardrails need it at approval time: Prometheus' health, whether
    silences can be read, and how many services have a current incident."""
    silences_known = True
    if rt.alertmanager is not None:
        try:
            await rt.alertmanager.suppressed_alerts()
        except AgentError:
            silences_known = False
    services = rt.config.services
    firing = {i.target for i in rt.store.current() if i.kind != "storm" and i.target in services}
    return FleetView(
        prometheus_healthy=await rt.prometheus.healthy(),
        silences_known=silences_known,
        firing=len(firing),
    )


def _waiting(
    rt: Runtime, found: Incident | Unreadable | None, action: str | None, now: datetime
) -> Reply | Incident:
    """The incident when it waits for this answer; otherwise the refusal."""
    if found is None:
        return Reply(404, "no such incident (or the id prefix is not unique)")
    if isinstance(found, Unreadable):
        return Reply(409, f"incident {found.id} cannot be read: {one_line(found.error, 200)}")
    if found.state != "awaiting_approval":
        if (found.resolution or "").startswith(APPROVAL_EXPIRED):
            return Reply(410, f"the wait for approval expired: {found.resolution}", found)
        return Reply(409, f"not waiting for approval (state {found.state})", found)
    asked = found.awaiting or ""
    if action is not None and action != asked:
        return Reply(409, f"waiting for approval of {asked}, not {one_line(action, 64)}", found)
    if found.leased_by_other(rt.replica, now):
        return Reply(409, f"replica {found.lease_owner} is working on it", found)
    return found


async def answer_approval(
    rt: Runtime, incident_id: str, answer: Answer, *, action: str | None = None
) -> Reply:
    """Carry out one human's answer to one incident's approval request."""
    now = answer.at
    waiting = _waiting(rt, rt.store.get(incident_id), action, now)
    if isinstance(waiting, Reply):
        return waiting
    incident = waiting
    until = incident.approval_until
    if until is not None and until <= now:
        applied = await commit(rt, on_approval_expired(incident, now), incident.version)
        stands = applied.incident if applied else incident
        return Reply(410, f"the wait for approval expired at {until.isoformat()}", stands)
    if not answer.approve:
        applied = await commit(rt, on_approval_denied(incident, answer, now), incident.version)
        if applied is None:
            return Reply(409, "the incident moved on meanwhile (another answer or replica)")
        log.info("approval_denied", incident_id=incident.id, by=answer.by)
        return Reply(200, "denied", applied.incident)
    return await _grant(rt, incident, answer)


async def _grant(rt: Runtime, incident: Incident, answer: Answer) -> Reply:
    view = await approval_view(rt)
    rt.working.add(incident.id)
    try:
        done = await dispatch(rt, incident, incident.finding, view, answer.at, answer)
    finally:
        rt.working.discard(incident.id)
    for step, applied in done.steps:
        await run_effects(rt, step, applied)
    stands = done.steps[-1][1].incident if done.steps else incident
    if done.block is not None:
        held = stands.state == "awaiting_approval"
        tail = "; still waiting for approval" if held else f"; the incident is {stands.state}"
        return Reply(409, f"{done.block.reason}: {done.block.detail}{tail}", stands)
    if done.request is None:
        return Reply(409, "the incident moved on meanwhile (another answer or replica)", stands)
    log.info("approval_granted", incident_id=incident.id, by=answer.by, action=done.request.action)
    return Reply(200, "granted", stands)
