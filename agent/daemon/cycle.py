"""One cycle of the daemon: sweep, then carry every incident one step further.

``run_cycle(rt, now)`` is a plain coroutine: the scheduler calls it on the interval, the
``sweep`` command calls it once, tests call it directly. It gathers one snapshot (the
sweep's findings and the store's current incidents), calls the lifecycle's steps, commits
each in its own transaction and runs its effects:

1. take over incidents whose replica stopped renewing its lease (``on_restart``);
2. clear incidents whose findings are gone, when the sweep saw every source (``on_gone``);
   end waits for a human that ran out (``on_approval_expired``); withdraw what the
   configuration in force no longer allows (``on_withdrawn``: an ask for an action now
   ``never`` or removed, an action decided alone that now needs a human);
3. open an incident for each new problem (``on_finding``; a unique index, not a check,
   keeps it to one across replicas);
4. in a fleet storm, open one storm incident and hold the open incidents; once it is
   over, resolve it and release them (``on_storm``, ``on_hold``, ``on_release``);
5. work the incidents that wait for this replica: diagnose the open ones, dispatch the
   decided and approved ones, up to ``diagnosis.max_concurrency`` at a time. Each is taken
   under a lease, so replicas sharing a store divide the work instead of doubling it. In
   the daemon diagnoses run in the background (``daemon/work.py``): the cycle does not
   wait for a model.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.daemon.effects import run_effects
from agent.daemon.steps import commit, isolated
from agent.daemon.watch import other_hand
from agent.daemon.work import Diagnoses, carry, with_verdict, work
from agent.guardrails.policy import is_storm
from agent.incidents.lifecycle import (
    Step,
    on_approval_expired,
    on_finding,
    on_gone,
    on_hold,
    on_release,
    on_restart,
    on_storm,
    on_storm_end,
    on_withdrawn,
    storm_finding,
    withdrawal,
)
from agent.incidents.model import STATES, Incident, group_of
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Applied
from agent.sweep.collector import SweepReport, sweep
from agent.sweep.findings import Finding

__all__ = ["CycleReport", "carry", "commit", "isolated", "run_cycle", "with_verdict"]

log = get_logger("agent.cycle")

#: States in which an expired lease means abandoned work to take over.
_LEASED_WORK = frozenset({"diagnosing", "acting"})


@dataclass
class CycleReport:
    """What one cycle saw, decided and did."""

    sweep: SweepReport
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    skips: list[dict[str, Any]] = field(default_factory=list)
    #: The whole cycle: collection, clearing, dispatch, and the diagnoses it waited for.
    cycle_seconds: float = 0.0
    #: Diagnoses this cycle started in the background (the daemon's), not waited for.
    diagnosing: int = 0
    #: In a dry run: the gateway requests and the alerts it did not send (``dry_run.py``).
    would_send: list[dict[str, Any]] = field(default_factory=list)
    would_escalate: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `devops-agent sweep --json` prints."""
        data = self.sweep.to_dict()
        skipped = data.pop("skipped")
        return {
            **data,
            "cycle_duration_seconds": round(self.cycle_seconds, 3),
            "diagnosing_in_background": self.diagnosing,
            "decisions": self.decisions,
            "dispatches": self.dispatches,
            "skips": [*skipped, *self.skips],
            "would_send": self.would_send,
            "would_escalate": self.would_escalate,
        }


def _abandoned(rt: Runtime, incident: Incident, now: datetime) -> bool:
    if incident.state not in _LEASED_WORK or incident.id in rt.working:
        return False
    return (
        incident.lease_until is None
        or incident.lease_until <= now
        or (incident.lease_owner == rt.replica)
    )


def _expired(incident: Incident, now: datetime) -> bool:
    """A wait for a human that nobody answered in time, or a yes not sent in time."""
    until = incident.approval_until
    return incident.asks and until is not None and until <= now


def _free(rt: Runtime, incident: Incident, now: datetime) -> bool:
    """Nobody works on the incident: not this process, not another replica's live lease."""
    return incident.id not in rt.working and not incident.leased_by_other(rt.replica, now)


async def _settle(
    rt: Runtime,
    incidents: list[Incident],
    current: dict[str, Finding],
    complete: bool,
    now: datetime,
) -> list[Incident]:
    """Take over abandoned work and clear what is gone; the incidents as they now stand."""
    out: list[Incident] = []
    for incident in incidents:
        if incident.id in rt.poisoned:
            continue
        step = await _settle_step(rt, incident, current, complete, now)
        if step is None:
            out.append(incident)
            continue
        applied = await isolated(rt, incident, commit(rt, step, incident.version))
        out.append(applied.incident if applied else incident)
    return out


async def _settle_step(
    rt: Runtime, incident: Incident, current: dict[str, Finding], complete: bool, now: datetime
) -> Step | None:
    """The step that settles one incident now, if any: take over abandoned work, clear
    what is gone (an observed action's watch ends, with what another hand was seen
    doing), end a wait nobody answered in time, withdraw an ask the configuration in
    force refuses (after a reload)."""
    if _abandoned(rt, incident, now):
        return on_restart(
            incident,
            now,
            verify_after=rt.config.schedule.verify_after_seconds,
            approval_ttl=rt.config.policy.approval_ttl_seconds,
        )
    if complete and incident.group_key not in current and _free(rt, incident, now):
        watched = incident.state == "watching" and incident.observing
        hand = await other_hand(rt, incident, now) if watched else None
        return on_gone(incident, now, other_hand=hand)
    if _expired(incident, now) and _free(rt, incident, now):
        return on_approval_expired(incident, now)
    if _free(rt, incident, now) and (reason := withdrawal(incident, rt.config)):
        return on_withdrawn(incident, reason, now)
    return None


async def _open_new(
    rt: Runtime, known: set[str], current: dict[str, Finding], now: datetime
) -> None:
    for key, finding in current.items():
        if key in known:
            continue
        step = on_finding(finding, uuid.uuid4().hex[:12], now)
        if rt.store.insert(step):  # False: another replica opened it a moment ago
            await run_effects(rt, step, Applied(step.incident))


async def run_cycle(
    rt: Runtime, now: datetime, *, trigger: str = "schedule", diagnoses: Diagnoses | None = None
) -> CycleReport:
    """Sweep once and carry every incident as far as it can go now; ``trigger`` says what
    asked for the sweep (schedule, webhook, command). With ``diagnoses`` (the daemon's)
    open incidents are diagnosed in the background instead of before this returns."""
    clock = time.monotonic()
    report = await sweep(rt.sweep_deps, now)
    cycle = CycleReport(sweep=report)
    current: dict[str, Finding] = {}
    for finding in sorted(report.findings, key=lambda f: f.queue_key):
        current.setdefault(group_of(finding), finding)
    # A check series still waiting out its for_seconds (in this process) is not gone.
    present = {**{group_of(f): f for f in report.pending}, **current}
    settled = await _settle(rt, rt.store.current(), present, not report.failed_sources, now)
    await _open_new(rt, {i.group_key for i in settled}, current, now)
    incidents = await _storm(rt, rt.store.current(), report, now)
    cycle.diagnosing = await work(rt, incidents, current, report, now, cycle, diagnoses)
    cycle.cycle_seconds = time.monotonic() - clock
    _publish(rt, rt.store.current(), cycle, now, trigger)
    log.info(
        "sweep_finished",
        trigger=trigger,
        findings=len(report.findings),
        failed_sources=report.failed_sources,
        decisions=len(cycle.decisions),
        diagnosing=cycle.diagnosing,
        dispatches=len(cycle.dispatches),
        skips=len(cycle.skips) + len(report.skipped),
        duration_seconds=round(report.duration_seconds, 3),
        cycle_duration_seconds=round(cycle.cycle_seconds, 3),
    )
    return cycle


async def _storm(
    rt: Runtime, incidents: list[Incident], report: SweepReport, now: datetime
) -> list[Incident]:
    """A fleet storm is one page, not one diagnosis per service: open its incident once
    (escalated at once), hold the open incidents while it lasts, and when a complete sweep
    shows it over, resolve it and release them. Returns the incidents as they now stand."""
    services = rt.config.services
    firing = sorted({f.target for f in report.findings if f.target in services and f.target})
    storm = _watching_storm(incidents)
    if is_storm(len(firing), len(services), rt.config.policy):
        await _hold(rt, incidents, storm, firing, now)
        return rt.store.current()
    if report.failed_sources:
        return incidents  # a partial picture cannot tell that the storm is over
    if await _release(rt, incidents, storm, now):
        return rt.store.current()
    return incidents


def _watching_storm(incidents: list[Incident]) -> Incident | None:
    """The fleet storm going on now, if any."""
    return next((i for i in incidents if i.kind == "storm" and i.state == "watching"), None)


async def _hold(
    rt: Runtime,
    incidents: list[Incident],
    storm: Incident | None,
    firing: list[str],
    now: datetime,
) -> None:
    if storm is None:
        finding = storm_finding(firing, len(rt.config.services), now)
        step = on_storm(finding, uuid.uuid4().hex[:12], now)
        if rt.store.insert(step):
            await run_effects(rt, step, Applied(step.incident))
        # False: another replica opened it a moment ago; hold under that one.
        storm = _watching_storm(rt.store.current()) or step.incident
    for incident in incidents:
        if incident.state == "open" and incident.kind != "storm" and _free(rt, incident, now):
            hold = on_hold(incident, storm.id, now)
            await isolated(rt, incident, commit(rt, hold, incident.version))


async def _release(
    rt: Runtime, incidents: list[Incident], storm: Incident | None, now: datetime
) -> bool:
    steps = [(storm, on_storm_end(storm, now))] if storm else []
    steps += [(i, on_release(i, now)) for i in incidents if i.state == "held" and _free(rt, i, now)]
    for incident, step in steps:
        await isolated(rt, incident, commit(rt, step, incident.version))
    return bool(steps)


def _publish(
    rt: Runtime, incidents: list[Incident], cycle: CycleReport, now: datetime, trigger: str
) -> None:
    report = cycle.sweep
    counts = {state: 0 for state in STATES}
    for incident in incidents:
        counts[incident.state] += 1
    for state, count in counts.items():
        rt.metrics.incidents.labels(state=state).set(count)
    deadlines = [i.approval_until for i in incidents if i.asks and i.approval_until]
    rt.metrics.approval_deadline.at = min(deadlines).timestamp() if deadlines else None
    rt.metrics.approval_ttl.set(rt.config.policy.approval_ttl_seconds)
    result = "failed" if report.blind else "partial" if report.failed_sources else "ok"
    rt.metrics.sweeps.labels(result=result, trigger=trigger).inc()
    rt.metrics.sweep_duration.observe(report.duration_seconds)
    rt.metrics.cycle_duration.observe(cycle.cycle_seconds)
    rt.metrics.last_sweep.set(now.timestamp())
