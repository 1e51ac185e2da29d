"""Committing a lifecycle step, and keeping one incident's failure that incident's own.

``commit`` writes a step over the version it was made from and then runs its effects;
``isolated`` runs one incident's work so that an exception escalates that incident, and
only that one. The cycle, the background diagnoses, verification and the approval path all
commit through here.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from agent.daemon.effects import run_effects
from agent.errors import StoreError
from agent.incidents.lifecycle import Step, on_failure
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Applied, Conflict
from agent.text import clip

log = get_logger("agent.cycle")
T = TypeVar("T")


async def isolated(rt: Runtime, incident: Incident, work: Awaitable[T]) -> T | None:
    """Run one incident's work. If it raises, the failure stays that incident's: logged
    once with its traceback, and the incident escalated with the reason (in ``acting`` it
    is left to lease expiry and verification, so nothing is sent twice). The rest of the
    sweep goes on. A store that fails is not one incident's fault: that stops the cycle."""
    try:
        return await work
    except StoreError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {clip(str(exc), 300)}"
        log.exception("incident_failed", incident_id=incident.id, reason=reason)
        fresh = rt.store.get(incident.id)
        step = on_failure(fresh, reason, rt.clock()) if isinstance(fresh, Incident) else None
        if step is not None and isinstance(fresh, Incident):
            if await commit(rt, step, fresh.version) is None:
                rt.poisoned.add(incident.id)
        return None


async def commit(rt: Runtime, step: Step, expected: int) -> Applied | None:
    """Commit one step and run its effects; None when another replica got there first."""
    try:
        applied = rt.store.apply(step, expected_version=expected, owner=rt.replica, now=rt.clock())
    except Conflict as exc:
        log.info("step_dropped", incident_id=step.incident.id, reason=str(exc))
        return None
    await run_effects(rt, step, applied)
    return applied
