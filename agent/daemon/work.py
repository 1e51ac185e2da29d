"""Carrying incidents further: diagnose the open ones, dispatch the decided and approved ones.

A diagnosis talks to a model and may take a minute; the schedule must not wait for it.
So in the daemon, diagnoses run as bounded background work (``Diagnoses``: at most
``diagnosis.max_concurrency`` at once), each holding its incident under lease, committing
its decision when it finishes and dispatching it right away with the fleet as it is then
(``fleet_now``). The cycle that started them goes on: collecting, clearing, verification,
approvals and the dispatch of incidents decided earlier never wait behind a model call.
The one-shot ``sweep`` command, ``eval`` and tests carry each incident inline instead, so
that their report holds what was decided and done.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.daemon.effects import run_effects
from agent.daemon.steps import commit, isolated
from agent.diagnosis.engine import diagnose
from agent.diagnosis.models import Diagnosis, priced
from agent.diagnosis.runbook import runbook_decide
from agent.dispatch.dispatcher import FleetView, dispatch, fleet_now
from agent.dispatch.logs import log_reader
from agent.errors import AgentError
from agent.guardrails.autonomy import judge
from agent.guardrails.repeat import repeat_failures
from agent.incidents.lifecycle import Answer, on_decision, on_diagnosis_started, work_queue
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.collector import SweepReport
from agent.sweep.findings import Finding

log = get_logger("agent.cycle")


class Record(Protocol):
    """Where carrying incidents writes what it decided, sent and held back (a cycle's
    report, or ``Outcomes`` for work no report waits for)."""

    decisions: list[dict[str, Any]]
    dispatches: list[dict[str, Any]]
    skips: list[dict[str, Any]]


@dataclass
class Outcomes:
    """A ``Record`` of background work: kept only while the work runs (its log events and
    the store keep what matters)."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    skips: list[dict[str, Any]] = field(default_factory=list)


class FleetSource(Protocol):
    """Where the guardrails get their view of the fleet from."""

    async def view(self) -> FleetView:
        """The view, as of now."""
        ...


class SweptFleet:
    """The fleet as this sweep saw it, built on first use: Prometheus' own health is asked
    only when something may be acted on."""

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


class FleetNow:
    """The fleet as it is when asked: for work that ends long after its sweep."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def view(self) -> FleetView:
        return await fleet_now(self._rt)


Track = Callable[[Coroutine[Any, Any, None]], "asyncio.Future[None]"]


class Diagnoses:
    """The daemon's background diagnoses: at most ``limit`` at once, each tracked by the
    daemon (``track``) so that shutdown lets it finish within the grace period."""

    def __init__(self, rt: Runtime, limit: int, track: Track) -> None:
        self._rt = rt
        #: A reload may change it (``diagnosis.max_concurrency``); running ones finish.
        self.limit = limit
        self._track = track
        self.running: set[str] = set()

    @property
    def free(self) -> int:
        """How many more may start now."""
        return max(0, self.limit - len(self.running))

    def start(self, incident: Incident, finding: Finding, now: datetime) -> None:
        """Diagnose (and then dispatch) ``incident`` in the background."""
        self.running.add(incident.id)
        self._rt.working.add(incident.id)
        self._rt.metrics.diagnoses_running.set(len(self.running))
        self._track(self._run(incident, finding, now))

    async def _run(self, incident: Incident, finding: Finding, now: datetime) -> None:
        rt = self._rt
        try:
            await isolated(
                rt, incident, carry(rt, incident, finding, FleetNow(rt), now, Outcomes())
            )
        except AgentError as exc:  # the store failed: the lease expires, the work is taken over
            log.error("background_work_failed", incident_id=incident.id, error=str(exc))
        finally:
            rt.working.discard(incident.id)
            self.running.discard(incident.id)
            rt.metrics.diagnoses_running.set(len(self.running))


async def work(
    rt: Runtime,
    incidents: list[Incident],
    current: dict[str, Finding],
    report: SweepReport,
    now: datetime,
    out: Record,
    diagnoses: Diagnoses | None = None,
) -> int:
    """Carry the incidents that wait for this replica; returns how many diagnoses were
    started in the background (``diagnoses``; without it every incident is carried
    inline, diagnosis included)."""
    busy = rt.working | rt.poisoned
    queue = work_queue(incidents, current, replica=rt.replica, busy=busy, now=now)
    inline = queue
    started = 0
    if diagnoses is not None:
        inline = [i for i in queue if i.state != "open"]
        for incident in [i for i in queue if i.state == "open"][: diagnoses.free]:
            diagnoses.start(incident, current[incident.group_key], now)
            started += 1
    waiting = deque(inline)
    fleet = SweptFleet(rt, report)

    async def worker() -> None:
        while waiting:
            incident = waiting.popleft()
            rt.working.add(incident.id)
            try:
                job = carry(rt, incident, current[incident.group_key], fleet, now, out)
                await isolated(rt, incident, job)
            finally:
                rt.working.discard(incident.id)

    await asyncio.gather(*(worker() for _ in range(rt.config.diagnosis.max_concurrency)))
    return started


def _approval_of(incident: Incident, now: datetime) -> Answer | None:
    """The yes a human already gave to an ``approved`` incident (held back until now)."""
    if incident.state != "approved" or incident.decision is None:
        return None
    return Answer(approve=True, by=incident.decision.approved_by, reason="", at=now)


async def carry(
    rt: Runtime,
    incident: Incident,
    finding: Finding,
    fleet: FleetSource,
    now: datetime,
    out: Record,
) -> None:
    """Diagnose an open incident, then dispatch it if it was decided (or send the action a
    human approved earlier); what happened is added to ``out``. The daemon's cycle, its
    background diagnoses and ``devops-agent eval`` all call this."""
    if incident.state == "open":
        decided = await _diagnose(rt, incident, finding, now, out)
        if decided is None or decided.state != "decided":
            return
        incident = decided
    done = await dispatch(
        rt, incident, finding, await fleet.view(), now, _approval_of(incident, now)
    )
    for step, applied in done.steps:
        await run_effects(rt, step, applied)
    if done.block is not None:
        out.skips.append(
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
        out.dispatches.append(
            {
                "incident_id": incident.id,
                "target": done.request.target,
                "action": done.request.action,
                **done.result.to_dict(),
            }
        )


async def _diagnose(
    rt: Runtime, incident: Incident, finding: Finding, now: datetime, out: Record
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
    clock = time.monotonic()
    diagnosis = await diagnose(finding, rt.diagnosis, now, history=history, logs=logs)
    rt.metrics.diagnosis_duration.observe(time.monotonic() - clock)
    rt.metrics.diagnoses.labels(outcome=_outcome(diagnosis)).inc()
    diagnosis = with_verdict(diagnosis, finding, rt.config, failures)
    ttl = rt.config.policy.approval_ttl_seconds
    step = on_decision(
        started.incident,
        diagnosis,
        rt.clock(),
        approval_ttl=ttl,
        verify_after=rt.config.schedule.verify_after_seconds,
    )
    applied = await commit(rt, step, started.incident.version)
    if applied is None:
        return None
    out.decisions.append(
        {"incident_id": incident.id, "fingerprint": incident.fingerprint, **diagnosis.summary()}
    )
    return applied.incident


def _outcome(diagnosis: Diagnosis) -> str:
    """How a diagnosis was decided, for ``devops_agent_diagnoses_total``."""
    decision = diagnosis.decision
    if decision.decided_by == "prefilter":
        return "prefilter"
    if decision.decided_by == "llm":
        return "model"
    return "fallback" if decision.model_failure else "runbook"


def with_verdict(
    diagnosis: Diagnosis, finding: Finding, config: AgentConfig, failures: Mapping[str, str]
) -> Diagnosis:
    """The diagnosis with its autonomy verdict: the runbook's rule for the same finding is
    the second key, the same problem's failed actions hold, and a finding only Alertmanager
    reports cannot act alone (``guardrails/autonomy.py``)."""
    runbook = runbook_decide(finding, config, failures=failures)
    decision = judge(diagnosis.decision, runbook, config, failures, source=finding.source)
    if decision.decided_by != "prefilter":
        log.info(
            "autonomy_verdict",
            incident_action=decision.action,
            awaiting_approval=decision.approval_action or None,
            approval_target=decision.approval_target or None,
            observed=decision.observed or None,
            keys=list(decision.keys),
            reason=decision.autonomy,
            source=finding.source,
        )
    prices = config.diagnosis.prices
    cost = priced(
        diagnosis.usage, prices.prompt if prices else None, prices.completion if prices else None
    )
    return replace(diagnosis, decision=decision, cost=cost)
