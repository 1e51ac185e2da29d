"""One sweep: firing alerts (from Prometheus, and from Alertmanager's API when
``sweep.sources`` says so), health checks and anomaly checks, as findings.

``sweep(deps, now)`` is a plain coroutine; the scheduler only calls it and tests call it
directly. Each source (the alerts endpoint, Alertmanager, every check) runs on its own:
one that fails is logged and counted, the others still run, and nothing raises out of
the sweep. A failed source is also visible in the report, so the guardrails can refuse
to act on a partial picture.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.clients.alertmanager import AlertmanagerClient
from agent.clients.prometheus import PrometheusClient
from agent.config import AgentConfig, AnomalyCheck, HealthCheck, PrometheusOptions
from agent.errors import AgentError, StoreError
from agent.logs import bind_context, get_logger
from agent.metrics import AgentMetrics
from agent.sweep.alerts import (
    AlertParse,
    Suppression,
    alerts_from_payload,
    match_suppression,
    new_from_alertmanager,
    parse_alertmanager_alerts,
    parse_alerts,
    parse_suppressions,
)
from agent.sweep.checks import (
    FailingSeries,
    MemoryFailing,
    VectorParse,
    admit,
    anomaly_query,
    check_key,
    findings_from_vector,
)
from agent.sweep.findings import Finding, dedupe
from agent.text import clip

log = get_logger("agent.sweep")
#: The sweep source of Alertmanager's active alerts ("alertmanager" is its silences).
AM_ALERTS = "alertmanager_alerts"


@dataclass
class SweepDeps:
    """What a sweep needs; built once at start-up and reused by every sweep."""

    config: AgentConfig
    prometheus: PrometheusClient
    metrics: AgentMetrics
    alertmanager: AlertmanagerClient | None = None
    #: When each failing check series started failing: the store in the daemon.
    pending: FailingSeries = field(default_factory=MemoryFailing)


@dataclass(frozen=True)
class SourceResult:
    """How one source of the sweep went."""

    name: str
    ok: bool
    findings: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Skip:
    """A finding the sweep dropped, and why."""

    fingerprint: str
    name: str
    target: str | None
    reason: str
    detail: str = ""


@dataclass
class SweepReport:
    """Everything one sweep saw."""

    sweep_id: str
    started_at: datetime
    findings: list[Finding] = field(default_factory=list)
    sources: list[SourceResult] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    #: Check findings failing for less than their check's ``for_seconds``: not findings
    #: yet, but not gone either.
    pending: list[Finding] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def failed_sources(self) -> list[str]:
        """Names of the sources that could not be read."""
        return [s.name for s in self.sources if not s.ok]

    @property
    def blind(self) -> bool:
        """Every source failed: the sweep saw nothing at all."""
        return bool(self.sources) and all(not s.ok for s in self.sources)

    def failures(self) -> list[str]:
        """The distinct errors of the failed sources, in order."""
        return list(dict.fromkeys(s.error or s.name for s in self.sources if not s.ok))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "sweep_id": self.sweep_id,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "findings": [f.to_dict() for f in self.findings],
            "sources": [s.__dict__ for s in self.sources],
            "skipped": [s.__dict__ for s in self.skipped],
            "pending": [
                {
                    "fingerprint": f.fingerprint,
                    "name": f.name,
                    "target": f.target,
                    "failing_since": f.first_seen.isoformat(),
                }
                for f in self.pending
            ],
        }


Collected = tuple[list[Finding], str]  # findings, and a note for the log
Source = Callable[[], Awaitable[Collected]]


async def _run_source(
    name: str, source: Source, deps: SweepDeps
) -> tuple[SourceResult, list[Finding]]:
    try:
        findings, note = await source()
    except (AgentError, ValueError) as exc:
        deps.metrics.source_failures.labels(source=name).inc()
        log.warning("sweep_source_failed", source=name, error=str(exc))
        return SourceResult(name=name, ok=False, error=str(exc)), []
    if note:
        log.info("sweep_source_notes", source=name, note=note)
    return SourceResult(name=name, ok=True, findings=len(findings)), findings


async def fetch_alerts(
    prometheus: PrometheusClient, opts: PrometheusOptions, now: datetime
) -> AlertParse:
    """Firing alerts from Prometheus as findings; raises PrometheusError or ValueError."""
    return parse_alerts(
        alerts_from_payload(await prometheus.alerts_payload()),
        now=now,
        target_labels=opts.target_labels,
        volatile_labels=opts.volatile_labels,
    )


async def fetch_check(
    prometheus: PrometheusClient,
    opts: PrometheusOptions,
    check: HealthCheck | AnomalyCheck,
    now: datetime,
    *,
    at: datetime | None,
) -> VectorParse:
    """One check's failing series as findings; raises PrometheusError."""
    expr = check.expr if isinstance(check, HealthCheck) else anomaly_query(check)
    return findings_from_vector(
        await prometheus.query(expr, at=at),
        check,
        now=now,
        target_labels=opts.target_labels,
        volatile_labels=opts.volatile_labels,
    )


async def _alerts(deps: SweepDeps, now: datetime) -> Collected:
    parsed = await fetch_alerts(deps.prometheus, deps.config.prometheus, now)
    note = f"{parsed.malformed} malformed alert entries skipped" if parsed.malformed else ""
    return parsed.findings, note


async def _alertmanager_alerts(deps: SweepDeps, now: datetime) -> Collected:
    assert deps.alertmanager is not None
    opts = deps.config.prometheus
    parsed = parse_alertmanager_alerts(
        await deps.alertmanager.active_alerts(),
        now=now,
        target_labels=opts.target_labels,
        volatile_labels=opts.volatile_labels,
    )
    note = f"{parsed.malformed} malformed alert entries skipped" if parsed.malformed else ""
    return parsed.findings, note


async def _check(deps: SweepDeps, check: HealthCheck | AnomalyCheck, now: datetime) -> Collected:
    parsed = await fetch_check(deps.prometheus, deps.config.prometheus, check, now, at=now)
    note = f"{parsed.malformed} malformed series skipped" if parsed.malformed else ""
    return parsed.findings, note


Results = list[tuple[SourceResult, list[Finding]]]


def _admit(deps: SweepDeps, results: Results, now: datetime) -> tuple[Results, list[Finding]]:
    """The checks' failing series that have failed for their ``for_seconds``, and those
    that still wait. When the kept state cannot be read every check counts as failed: a
    partial picture opens nothing and clears nothing."""
    checks = {f"check:{c.name}": c for c in deps.config.checks.all()}
    ran = [(r, found) for r, found in results if r.ok and r.name in checks]
    if checks and not ran:
        return results, []  # no check could run: nothing to record, nothing to forget
    failing = {check_key(checks[r.name]): [f.fingerprint for f in found] for r, found in ran}
    known = [check_key(c) for c in checks.values()]
    try:
        since = deps.pending.track_failing(failing, known, now)
    except StoreError as exc:
        deps.metrics.source_failures.labels(source="pending_checks").inc()
        log.warning("sweep_source_failed", source="pending_checks", error=str(exc))
        error = f"when the checks' series started failing is unknown: {exc}"
        return [
            (SourceResult(r.name, ok=False, error=error), []) if r.name in checks else (r, found)
            for r, found in results
        ], []
    out: Results = []
    waiting_all: list[Finding] = []
    for result, found in results:
        check = checks.get(result.name)
        if check is None or not result.ok:
            out.append((result, found))
            continue
        ready, waiting = admit(found, since.get(check_key(check), {}), check.for_seconds, now)
        if waiting:
            note = f"{len(waiting)} series failing for less than {check.for_seconds:g}s"
            log.info("sweep_source_notes", source=result.name, note=note)
        out.append((SourceResult(result.name, ok=True, findings=len(ready)), ready))
        waiting_all += waiting
    return out, waiting_all


async def _suppressions(deps: SweepDeps) -> list[Suppression] | str:
    """The silenced and inhibited alerts, or why Alertmanager could not tell."""
    if deps.alertmanager is None:
        return []
    try:
        return parse_suppressions(await deps.alertmanager.suppressed_alerts())
    except (AgentError, ValueError) as exc:
        deps.metrics.source_failures.labels(source="alertmanager").inc()
        log.warning("alertmanager_unreachable", error=str(exc), effect="silences not applied")
        return str(exc)


def _drop_suppressed(
    findings: list[Finding], suppressions: list[Suppression], volatile: frozenset[str]
) -> tuple[list[Finding], list[Skip]]:
    kept: list[Finding] = []
    skipped: list[Skip] = []
    for finding in findings:
        hit = (
            match_suppression(finding, suppressions, volatile) if finding.kind == "alert" else None
        )
        if hit is None:
            kept.append(finding)
            continue
        reason = "silenced" if hit.silenced_by else "inhibited"
        ids = ",".join(hit.silenced_by or hit.inhibited_by)
        skipped.append(Skip(finding.fingerprint, finding.name, finding.target, reason, ids))
        log.info(
            "finding_skipped",
            reason=reason,
            silence_id=ids,
            fingerprint=finding.fingerprint,
            name=clip(finding.name, 200),
            target=finding.target,
        )
    return kept, skipped


async def sweep(deps: SweepDeps, now: datetime) -> SweepReport:
    """Collect every finding that is true at ``now``; never raises for upstream trouble."""
    started = time.monotonic()
    report = SweepReport(sweep_id=uuid.uuid4().hex[:12], started_at=now)
    bind_context(sweep_id=report.sweep_id)
    checks = deps.config.checks.all()
    sources = deps.config.sweep.sources
    jobs = []
    if "prometheus" in sources:
        jobs.append(_run_source("alerts", lambda: _alerts(deps, now), deps))
    jobs += [_run_source(f"check:{c.name}", _bind_check(deps, c, now), deps) for c in checks]
    if "alertmanager" in sources and deps.alertmanager is not None:
        jobs.append(_run_source(AM_ALERTS, lambda: _alertmanager_alerts(deps, now), deps))
    gathered, suppressions = await asyncio.gather(asyncio.gather(*jobs), _suppressions(deps))
    results, report.pending = _admit(deps, list(gathered), now)
    collected: list[Finding] = []
    from_alertmanager: list[Finding] = []
    for result, findings in results:
        report.sources.append(result)
        (from_alertmanager if result.name == AM_ALERTS else collected).extend(findings)
    volatile = frozenset(deps.config.prometheus.volatile_labels)
    collected += new_from_alertmanager(collected, from_alertmanager, volatile)
    if isinstance(suppressions, str):
        report.sources.append(SourceResult("alertmanager", ok=False, error=suppressions))
        suppressions = []
    elif deps.alertmanager is not None:
        report.sources.append(SourceResult("alertmanager", ok=True))
    report.findings, report.skipped = _drop_suppressed(dedupe(collected), suppressions, volatile)
    for finding in report.findings:
        deps.metrics.findings.labels(kind=finding.kind).inc()
    deps.metrics.suppressed.inc(len(report.skipped))
    report.duration_seconds = time.monotonic() - started
    return report


def _bind_check(deps: SweepDeps, check: HealthCheck | AnomalyCheck, now: datetime) -> Source:
    return lambda: _check(deps, check, now)
