"""Watching what an ``observe`` tier held back, until the finding ends.

An observed incident is in ``watching``: nothing was sent and nobody asked. Its watch ends
at the verify time when the finding still fires (it persisted: the action would have been
needed), or earlier when the finding goes away. Then the question is whether it cleared on
its own or after another hand acted, and the agent can only tell from what it can see:

- its own records: an action claimed on the same service for another incident since this
  one opened (a human's approval elsewhere, another replica, a related service's plan);
- Prometheus: the service's ``process_start_time_seconds`` changed since the incident
  opened (every Prometheus client library exports it), which a ``docker restart`` by hand
  shows. A service without that series, or a Prometheus that cannot answer, tells nothing:
  the finding is then taken to have cleared on its own.

The verdict (``on_watch_ended``) is a pure step; this module gathers the evidence.
"""

from __future__ import annotations

import math
from datetime import datetime

from agent.daemon.steps import commit, isolated
from agent.errors import PrometheusError
from agent.incidents.lifecycle import on_watch_ended
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.runtime import Runtime
from agent.sweep.presence import still_present

log = get_logger("agent.watch")

RESTART_METRIC = "process_start_time_seconds"


def _label_of(rt: Runtime, incident: Incident) -> str | None:
    """The label that names the finding's service in its series."""
    finding = incident.finding
    names = [*rt.config.prometheus.target_labels]
    names += [c.target_label for c in rt.config.checks.all() if c.name == finding.name]
    return next((n for n in names if finding.labels.get(n) == finding.target), None)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


async def _restarted(rt: Runtime, incident: Incident, service: str, now: datetime) -> bool:
    """Whether Prometheus saw the service's process start again since the incident opened."""
    label = _label_of(rt, incident)
    if label is None:
        return False
    # Its value now against its value when the incident opened (the last sample at or
    # before then): unlike changes() over the time since, this does not need two scrapes
    # inside that time, so a restart soon after the incident opened is seen too.
    since = max(1, math.ceil((now - incident.opened_at).total_seconds()))
    series = f"{RESTART_METRIC}{{{label}={_quoted(service)}}}"
    expr = f"{series} != {series} offset {since}s"
    try:
        return bool(await rt.prometheus.query(expr))
    except PrometheusError as exc:
        log.warning("watch_evidence_unknown", incident_id=incident.id, error=str(exc))
        return False


async def other_hand(rt: Runtime, incident: Incident, now: datetime) -> str | None:
    """What another hand was seen doing to the observed service while the agent watched,
    in words; None when nothing was seen."""
    decision = incident.decision
    service = (decision.observed_target if decision else "") or incident.target or ""
    if not service:
        return None
    acted = rt.store.acted_on(service, incident.opened_at, incident.id)
    if acted is not None:
        return (
            f"{acted.action} on {service} sent by the agent for incident {acted.incident_id} "
            f"at {acted.at:%H:%M:%S}Z"
        )
    if await _restarted(rt, incident, service, now):
        return f"a restart of {service} ({RESTART_METRIC} changed in Prometheus)"
    return None


async def run_watches(rt: Runtime, now: datetime) -> int:
    """End the watches whose verify time has come; how many ended."""
    due = [
        i
        for i in rt.store.current()
        if i.state == "watching"
        and i.observing
        and i.verify_at is not None
        and i.verify_at <= now
        and i.id not in rt.working
        and i.id not in rt.poisoned
    ]
    ended = 0
    for incident in due:
        rt.working.add(incident.id)
        try:
            ended += bool(await isolated(rt, incident, _end(rt, incident, now)))
        finally:
            rt.working.discard(incident.id)
    return ended


async def _end(rt: Runtime, incident: Incident, now: datetime) -> bool:
    """End one watch at its verify time: still firing, or gone (and how); whether it ended."""
    present = await still_present(rt.sweep_deps, incident.finding, now)
    if present is None:
        log.info("watch_postponed", incident_id=incident.id, source=incident.finding.source)
        return False
    hand = None if present else await other_hand(rt, incident, now)
    step = on_watch_ended(incident, rt.clock(), present=present, other_hand=hand)
    return await commit(rt, step, incident.version) is not None
