"""Health checks and anomaly checks: the PromQL they run and the findings they yield.

Anomaly statistics are computed by Prometheus itself (``avg_over_time`` and
``stddev_over_time`` over the baseline window), so a sweep moves one number per series,
never raw samples. A series must both exceed the z-score threshold *and* have moved by
at least ``min_abs_change``: a flat series with tiny noise has a tiny standard deviation
and would otherwise fire on every wobble.

A check with ``for_seconds`` yields a finding only once a series has failed on every sweep
for that long. When each series started failing is kept where every replica and the next
start of the daemon see it (the store, ``FailingSeries``), so that one long outage stays
one finding whoever sweeps; what is ready and what still waits is decided here, purely.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from agent.config import AnomalyCheck, FindingKind, HealthCheck
from agent.sweep.findings import Finding, fingerprint, parse_value, resolve_target, string_map


def anomaly_query(check: AnomalyCheck) -> str:
    """The PromQL that returns the z-score of every anomalous series of the check."""
    sel, win = check.selector, check.baseline_window
    delta = f"({sel} - avg_over_time({sel}[{win}]))"
    zscore = f"({delta} / stddev_over_time({sel}[{win}]))"
    if check.direction == "up":
        return f"{zscore} > {check.z_threshold:g} and {delta} >= {check.min_abs_change:g}"
    if check.direction == "down":
        return f"{zscore} < -{check.z_threshold:g} and {delta} <= -{check.min_abs_change:g}"
    return f"abs({zscore}) > {check.z_threshold:g} and abs({delta}) >= {check.min_abs_change:g}"


@dataclass
class VectorParse:
    """Findings from one instant-vector answer, and how many series were unusable."""

    findings: list[Finding] = field(default_factory=list)
    malformed: int = 0


def findings_from_vector(
    result: Sequence[object],
    check: HealthCheck | AnomalyCheck,
    *,
    now: datetime,
    target_labels: Sequence[str],
    volatile_labels: Sequence[str],
) -> VectorParse:
    """One finding per returned series, named after the check."""
    kind: FindingKind = "health" if isinstance(check, HealthCheck) else "anomaly"
    order = [check.target_label, *target_labels]
    out = VectorParse()
    for series in result:
        labels = string_map(series.get("metric")) if isinstance(series, dict) else None
        if labels is None:
            out.malformed += 1
            continue
        sample = series.get("value") if isinstance(series, dict) else None
        value = parse_value(sample[1]) if isinstance(sample, list) and len(sample) == 2 else None
        annotations = {"description": check.description} if check.description else {}
        if kind == "anomaly" and value is not None:
            annotations["z_score"] = f"{value:.2f}"
        out.findings.append(
            Finding(
                kind=kind,
                name=check.name,
                target=resolve_target(labels, order),
                severity=check.severity,
                labels=labels,
                annotations=annotations,
                value=value,
                first_seen=now,
                fingerprint=fingerprint(kind, check.name, labels, volatile_labels),
            )
        )
    return out


def check_key(check: HealthCheck | AnomalyCheck) -> str:
    """The name a check's failing series are kept under: its kind and its name."""
    return f"{'health' if isinstance(check, HealthCheck) else 'anomaly'}:{check.name}"


#: When each failing series of each check started failing: check key -> fingerprint -> time.
Since = Mapping[str, Mapping[str, datetime]]


class FailingSeries(Protocol):
    """Where the sweep keeps when each failing check series started failing: the store,
    shared by replicas and kept across restarts, or ``MemoryFailing``."""

    def track_failing(
        self, failing: Mapping[str, Collection[str]], known: Collection[str], now: datetime
    ) -> dict[str, dict[str, datetime]]:
        """Record the failing series of the checks that ran (``failing``: check key ->
        fingerprints); forget their other series and every check not in ``known``; return
        when each failing series started failing."""
        ...


@dataclass(frozen=True)
class FailingPlan:
    """What to change in the kept failing series, and when each failing one started."""

    add: list[tuple[str, str]]
    drop: list[tuple[str, str]]
    since: dict[str, dict[str, datetime]]

    @property
    def changes(self) -> bool:
        """Whether anything has to be written."""
        return bool(self.add or self.drop)


def plan_failing(
    kept: Since, failing: Mapping[str, Collection[str]], known: Collection[str], now: datetime
) -> FailingPlan:
    """The new failing series start now, an earlier start is kept; a check that ran forgets
    its series that no longer fail, a check that did not run (its query failed) forgets
    nothing, and a check no longer configured is forgotten whole."""
    add: list[tuple[str, str]] = []
    drop = [(c, f) for c, series in kept.items() if c not in known for f in series]
    since: dict[str, dict[str, datetime]] = {}
    for check, fingerprints in failing.items():
        before = kept.get(check, {})
        since[check] = {f: before.get(f, now) for f in fingerprints}
        add += [(check, f) for f in fingerprints if f not in before]
        if check in known:
            drop += [(check, f) for f in before if f not in since[check]]
    return FailingPlan(add, drop, since)


def admit(
    findings: Sequence[Finding], since: Mapping[str, datetime], for_seconds: float, now: datetime
) -> tuple[list[Finding], list[Finding]]:
    """A check's findings split into those that have failed for ``for_seconds`` (ready) and
    those that still wait, each with ``first_seen`` set to when it started failing."""
    ready: list[Finding] = []
    waiting: list[Finding] = []
    for finding in findings:
        first = since.get(finding.fingerprint, now)
        started = replace(finding, first_seen=first)
        (ready if (now - first).total_seconds() >= for_seconds else waiting).append(started)
    return ready, waiting


@dataclass
class MemoryFailing:
    """Failing series kept in this process only: for a sweep without a store (tests, eval).

    The daemon keeps them in the store instead, so that a replica joining and a restarted
    daemon see how long a series has been failing rather than starting to count again.
    """

    kept: dict[str, dict[str, datetime]] = field(default_factory=dict)

    def track_failing(
        self, failing: Mapping[str, Collection[str]], known: Collection[str], now: datetime
    ) -> dict[str, dict[str, datetime]]:
        """As the store does it, in memory."""
        plan = plan_failing(self.kept, failing, known, now)
        for check, series in plan.drop:
            self.kept.get(check, {}).pop(series, None)
        for check, series in plan.add:
            self.kept.setdefault(check, {})[series] = plan.since[check][series]
        self.kept = {c: series for c, series in self.kept.items() if series}
        return plan.since
