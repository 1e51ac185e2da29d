"""Findings and their fingerprints.

A finding is one thing that is wrong with one service right now: a firing alert, a
failing health check series or an anomalous series. Its fingerprint is what makes the
agent idempotent: the same problem gets the same fingerprint on every sweep and across
agent restarts, so it maps to one incident, never two. It is a hash of the kind, the
name and the identifying labels only; volatile labels (``alertstate``, ...) and the
value are left out. Everything here is pure and cheap, because a storm can bring ten
thousand alerts into one sweep.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

from agent.config import FindingKind, Severity

_SEVERITIES = {s.value: s for s in Severity}
# Common spellings of severity labels in the wild, folded onto ours.
_SEVERITY_ALIASES = {
    "page": Severity.critical,
    "error": Severity.critical,
    "high": Severity.critical,
    "warn": Severity.warning,
    "medium": Severity.warning,
    "low": Severity.info,
    "none": Severity.info,
}


# Not frozen: a frozen dataclass costs twice as much to build, and a storm sweep builds ten
# thousand of these. Treat instances as immutable all the same (use dataclasses.replace).
@dataclass(slots=True)
class Finding:
    """One problem with one service, as seen in one sweep."""

    kind: FindingKind
    name: str
    target: str | None
    severity: Severity
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float | None
    first_seen: datetime
    fingerprint: str
    #: For checks, the check that produced it; for alerts, empty.
    source: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view (NaN and infinities become null)."""
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {
            "kind": self.kind,
            "name": self.name,
            "target": self.target,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "value": value,
            "first_seen": self.first_seen.isoformat(),
            "fingerprint": self.fingerprint,
        }


def fingerprint(kind: str, name: str, labels: Mapping[str, str], volatile: Iterable[str]) -> str:
    """A stable hex digest of kind, name and the sorted identifying labels."""
    skip = volatile if isinstance(volatile, frozenset) else frozenset(volatile)
    items = (
        labels.items()
        if skip.isdisjoint(labels)
        else [i for i in labels.items() if i[0] not in skip]
    )
    parts = (kind, name, *chain.from_iterable(sorted(items)))
    text = "\x00".join(parts)
    if text.count("\x00") != len(parts) - 1:
        # A part holds NUL itself, so NUL-joining would be ambiguous: length-prefix instead.
        text = "L" + "".join(f"{len(p)}:{p}" for p in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def resolve_target(labels: Mapping[str, str], order: Sequence[str]) -> str | None:
    """The service a finding is about: the first of ``order`` present and non-empty."""
    for label in order:
        value = labels.get(label)
        if value:
            return value
    return None


def parse_severity(raw: object, default: Severity = Severity.warning) -> Severity:
    """Map a severity label onto critical / warning / info; unknown values get the default."""
    if not isinstance(raw, str):
        return default
    key = raw.strip().lower()
    return _SEVERITIES.get(key) or _SEVERITY_ALIASES.get(key, default)


def parse_value(raw: object) -> float | None:
    """Prometheus sends sample values as strings ("1e+00", "NaN", "+Inf"); None if unreadable."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def string_map(raw: object) -> dict[str, str] | None:
    """A label or annotation map with string keys and values, or None if it is not a map."""
    if not isinstance(raw, dict):
        return None
    try:
        "".join(raw.values())  # C-speed check that every value is a str (keys from JSON are)
    except TypeError:
        return {str(k): v if isinstance(v, str) else str(v) for k, v in raw.items()}
    return raw


def dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per fingerprint, keeping the earliest first-seen time, order preserved."""
    seen: dict[str, Finding] = {}
    for finding in findings:
        kept = seen.get(finding.fingerprint)
        if kept is None or finding.first_seen < kept.first_seen:
            seen[finding.fingerprint] = finding
    return list(seen.values())


def clip(text: str, limit: int = 200) -> str:
    """Cut untrusted text for a log line, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[+{len(text) - limit} chars]"
