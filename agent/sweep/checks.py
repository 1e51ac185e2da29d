"""Health checks and anomaly checks: the PromQL they run and the findings they yield.

Anomaly statistics are computed by Prometheus itself (``avg_over_time`` and
``stddev_over_time`` over the baseline window), so a sweep moves one number per series,
never raw samples. A series must both exceed the z-score threshold *and* have moved by
at least ``min_abs_change``: a flat series with tiny noise has a tiny standard deviation
and would otherwise fire on every wobble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

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


@dataclass
class PendingChecks:
    """When each failing check series was first seen failing, across consecutive sweeps.

    A check with ``for_seconds`` only becomes a finding once it has failed on every sweep
    for that long; a sweep in which the series is clean forgets it, and a sweep in which
    the check could not run forgets nothing. Kept in memory: after an agent restart the
    wait starts again, the safe direction.
    """

    since: dict[str, dict[str, datetime]] = field(default_factory=dict)

    def admit(
        self, check: str, findings: Sequence[Finding], for_seconds: float, now: datetime
    ) -> tuple[list[Finding], int]:
        """The check's findings that have failed long enough, and how many still wait."""
        before = self.since.get(check, {})
        current = {f.fingerprint: before.get(f.fingerprint, now) for f in findings}
        self.since[check] = current
        ready: list[Finding] = []
        for finding in findings:
            first = current[finding.fingerprint]
            if (now - first).total_seconds() >= for_seconds:
                ready.append(replace(finding, first_seen=first))
        return ready, len(findings) - len(ready)
