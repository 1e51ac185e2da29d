"""One cycle of the daemon: sweep, then carry every incident one step further.

``run_cycle(rt, now)`` is a plain coroutine: the scheduler calls it on the interval, the
``sweep`` command calls it once, tests call it directly. It gathers one snapshot (the
sweep's findings and the store's current incidents), calls the lifecycle's steps, commits
each in its own transaction and runs its effects:

1. take over incidents whose replica stopped renewing its lease (``on_restart``);
2. clear incidents whose findings are gone, when the sweep saw every source (``on_gone``);
3. open an incident for each new problem (``on_finding``; a unique index, not a check,
   keeps it to one across replicas);
4. in a fleet storm, open one storm incident and hold the open incidents; once it is
   over, resolve it and release them (``on_storm``, ``on_hold``, ``on_release``);
5. work the incidents that wait for this replica: diagnose the open ones, dispatch the
   decided ones, up to ``diagnosis.max_concurrency`` at a time. Each is taken under a
   lease, so replicas sharing a store divide the work instead of doubling it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from agent.config import AgentConfig
from agent.daemon.effects import run_effects
from agent.diagnosis.engine import diagnose
from agent.diagnosis.models import Diagnosis
from agent.diagnosis.runbook import runbook_decide
from agent.dispatch.dispatcher import FleetView, dispatch
from agent.dispatch.logs import log_reader
from agent.errors import StoreError
from agent.guardrails.autonomy import judge
from agent.guardrails.policy import is_storm
from agent.guardrails.repeat import repeat_failures
from agent.incidents.lifecycle import (
    Step,
    on_approval_expired,
    on_decision,
    on_diagnosis_started,
    on_failure,
    on_finding,
    on_gone,
    on_hold,
    on_release,
    on_restart,
    on_storm,
    on_storm_end,
    storm_finding,
    work_queue,
)
from agent.incidents.model import STATES, Incident, group_of
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.store.base import Applied, Conflict
from agent.sweep.collector import SweepReport, sweep
from agent.sweep.findings import Finding
from agent.text import clip

log = get_logger("agent.cycle")
T = TypeVar("T")

#: States in which an expired lease means abandoned work to take over.
_LEASED_WORK = frozenset({"diagnosing", "acting"})


@dataclass
class CycleReport:
    """What one cycle saw, decided and did."""

    sweep: SweepReport
    decisions: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    skips: list[dict[str, Any]] = field(default_factory=list)
    #: In a dry run: the gateway requests and the alerts it did not send (``dry_run.py``).
    would_send: list[dict[str, Any]] = field(default_factory=list)
    would_escalate: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document `devops-agent sweep --json` prints."""
        data = self.sweep.to_dict()
        skipped = data.pop("skipped")
        return {
            **data,
            "decisions": self.decisions,
            "dispatches": self.dispatches,
            "skips": [*skipped, *self.skips],
            "would_send": self.would_send,
            "would_escalate": self.would_escalate,
        }


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


def _abandoned(rt: Runtime, incident: Incident, now: datetime) -> bool:
    if incident.state not in _LEASED_WORK or incident.id in rt.working:
        return False
    return (
        incident.lease_until is None
        or incident.lease_until <= now
        or (incident.lease_owner == rt.replica)
    )


def _expired(incident: Incident, now: datetime) -> bool:
    """A wait for a human that nobody answered in time."""
    until = incident.approval_until
    return incident.state == "awaiting_approval" and until is not None and until <= now


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
    verify_after = rt.config.schedule.verify_after_seconds
    out: list[Incident] = []
    for incident in incidents:
        if incident.id in rt.poisoned:
            continue
        step: Step | None = None
        if _abandoned(rt, incident, now):
            step = on_restart(incident, now, verify_after=verify_after)
        elif complete and incident.group_key not in current and _free(rt, incident, now):
            step = on_gone(incident, now)
        elif _expired(incident, now) and _free(rt, incident, now):
            step = on_approval_expired(incident, now)
        if step is None:
            out.append(incident)
            continue
        applied = await isolated(rt, incident, commit(rt, step, incident.version))
        out.append(applied.incident if applied else incident)
    return out


async def _open_new(
    rt: Runtime, known: set[str], current: dict[str, Finding], now: datetime
) -> None:
    for key, finding in current.items():
        if key in known:
            continue
        step = on_finding(finding, uuid.uuid4().hex[:12], now)
        if rt.store.insert(step):  # False: another replica opened it a moment ago
            await run_effects(rt, step, Applied(step.incident))


async def run_cycle(rt: Runtime, now: datetime, *, trigger: str = "schedule") -> CycleReport:
    """Sweep once and carry every incident as far as it can go now; ``trigger`` says what
    asked for the sweep (schedule, webhook, command)."""
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
    await _work(rt, incidents, current, report, now, cycle)
    _publish(rt, rt.store.current(), report, now, trigger)
    log.info(
        "sweep_finished",
        trigger=trigger,
        findings=len(report.findings),
        failed_sources=report.failed_sources,
        decisions=len(cycle.decisions),
        dispatches=len(cycle.dispatches),
        skips=len(cycle.skips) + len(report.skipped),
        duration_seconds=round(report.duration_seconds, 3),
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


class FleetSource(Protocol):
    """Where the guardrails get their view of the fleet from."""

    async def view(self) -> FleetView:
        """The view, as of this sweep."""
        ...


class _Fleet:
    """The fleet view, built on first use: Prometheus' own health is asked only when
    something may be acted on."""

    def __init__(self, rt: Runtime, report: SweepReport) -> None:
        self._rt, self._report = rt, report
        self._view: FleetView | None = None
        self._lock = asyncio.Lock()

    async def view(self) -> FleetView:
        async with self._lock:
            if self._view is None:
                failed = self._report.failed_sources
                healthy = not [s for s in failed if s != "alertmanager"]
                services = self._rt.config.services
                self._view = FleetView(
                    prometheus_healthy=healthy and await self._rt.prometheus.healthy(),
                    silences_known="alertmanager" not in failed,
                    firing=len({f.target for f in self._report.findings if f.target in services}),
                )
            return self._view


async def _work(
    rt: Runtime,
    incidents: list[Incident],
    current: dict[str, Finding],
    report: SweepReport,
    now: datetime,
    cycle: CycleReport,
) -> None:
    busy = rt.working | rt.poisoned
    waiting = deque(work_queue(incidents, current, replica=rt.replica, busy=busy, now=now))
    fleet = _Fleet(rt, report)

    async def worker() -> None:
        while waiting:
            incident = waiting.popleft()
            rt.working.add(incident.id)
            try:
                work = carry(rt, incident, current[incident.group_key], fleet, now, cycle)
                await isolated(rt, incident, work)
            finally:
                rt.working.discard(incident.id)

    await asyncio.gather(*(worker() for _ in range(rt.config.diagnosis.max_concurrency)))


async def carry(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    fleet: FleetSource,
    now: datetime,
    cycle: CycleReport,
) -> None:
    """Diagnose an open incident, then dispatch it if it was decided; what happened is
    added to ``cycle``. The daemon's cycle and ``devops-agent eval`` both call this."""
    if incident.state == "open":
        decided = await _diagnose(rt, incident, finding, now, cycle)
        if decided is None or decided.state != "decided":
            return
        incident = decided
    done = await dispatch(rt, incident, finding, await fleet.view(), now)
    for step, applied in done.steps:
        await run_effects(rt, step, applied)
    if done.block is not None:
        cycle.skips.append(
            {
                "incident_id": incident.id,
                "fingerprint": incident.fingerprint,
                "name": incident.name,
                "target": incident.target,
                "reason": done.block.reason,
                "detail": done.block.detail,
            }
        )
    if done.request is not None and done.result is not None:
        cycle.dispatches.append(
            {
                "incident_id": incident.id,
                "target": done.request.target,
                "action": done.request.action,
                **done.result.to_dict(),
            }
        )


async def _diagnose(
    rt: Runtime, incident: Incident, finding: Finding, now: datetime, cycle: CycleReport
) -> Incident | None:
    started = await commit(
        rt, on_diagnosis_started(incident, rt.replica, rt.lease_until(), now), incident.version
    )
    if started is None:
        return None  # another replica took it first
    history = rt.store.history(
        incident.group_key,
        since=now - timedelta(hours=rt.config.diagnosis.history_hours),
        before=incident,
    )
    failures = repeat_failures(history, rt.config.policy.recurrence_seconds)
    logs = log_reader(rt, incident, finding)
    diagnosis = await diagnose(finding, rt.diagnosis, now, history=history, logs=logs)
    diagnosis = with_verdict(diagnosis, finding, rt.config, failures)
    ttl = rt.config.policy.approval_ttl_seconds
    step = on_decision(started.incident, diagnosis, rt.clock(), approval_ttl=ttl)
    applied = await commit(rt, step, started.incident.version)
    if applied is None:
        return None
    cycle.decisions.append(
        {"incident_id": incident.id, "fingerprint": incident.fingerprint, **diagnosis.summary()}
    )
    return applied.incident


def with_verdict(
    diagnosis: Diagnosis, finding: Finding, config: AgentConfig, failures: Mapping[str, str]
) -> Diagnosis:
    """The diagnosis with its autonomy verdict: the runbook's rule for the same finding is
    the second key, the same problem's failed actions hold (``guardrails/autonomy.py``)."""
    runbook = runbook_decide(finding, config, failures=failures)
    decision = judge(diagnosis.decision, runbook, config, failures)
    if decision.decided_by != "prefilter":
        log.info(
            "autonomy_verdict",
            incident_action=decision.action,
            awaiting_approval=decision.approval_action or None,
            keys=list(decision.keys),
            reason=decision.autonomy,
        )
    return replace(diagnosis, decision=decision)


def _publish(
    rt: Runtime, incidents: list[Incident], report: SweepReport, now: datetime, trigger: str
) -> None:
    counts = {state: 0 for state in STATES}
    for incident in incidents:
        counts[incident.state] += 1
    for state, count in counts.items():
        rt.metrics.incidents.labels(state=state).set(count)
    result = "partial" if report.failed_sources else "ok"
    rt.metrics.sweeps.labels(result=result, trigger=trigger).inc()
    rt.metrics.sweep_duration.observe(report.duration_seconds)
    rt.metrics.last_sweep.set(now.timestamp())
