"""Findings and their fingerprints.

A finding is one thing that is wrong with one service right now: a firing alert, a
failing health check series or an anomalous series. Its fingerprint is what makes the
agent idempotent: the same problem gets the same fingerprint on every sweep and across
agent restarts, so it maps to one incident, never two. It is a hash of the kind, the
name and the identifying labels only; volatile labels (``alertstate``, ...) and the
value are left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from xxhash import xxh3_128_hexdigest

from agent.config import FindingKind, FindingSource, Severity
from agent.text import encodable

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


@dataclass(frozen=True, slots=True)
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
    #: Who reported it, and so who is asked whether it is still there (not in the
    #: fingerprint: one problem seen through both sources is one finding).
    source: FindingSource = "prometheus"

    @property
    def queue_key(self) -> tuple[int, datetime]:
        """Most severe first, then oldest first: the order findings are worked in."""
        return self.severity.rank, self.first_seen

    @classmethod
    def from_dict(cls, data: object) -> Finding:
        """The finding a ``to_dict`` wrote; ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("a finding must be a JSON object")
        kind, name, target = data.get("kind"), data.get("name"), data.get("target")
        labels, annotations = string_map(data.get("labels")), string_map(data.get("annotations"))
        fp, severity = data.get("fingerprint"), data.get("severity")
        if kind not in ("alert", "health", "anomaly", "storm"):
            raise ValueError(f"finding.kind {kind!r} is not alert, health, anomaly or storm")
        if not isinstance(name, str) or not isinstance(fp, str):
            raise ValueError("finding.name and finding.fingerprint must be strings")
        if target is not None and not isinstance(target, str):
            raise ValueError("finding.target must be a string or null")
        if labels is None or annotations is None or severity not in _SEVERITIES:
            raise ValueError("finding.labels, annotations and severity are malformed")
        first_seen = datetime.fromisoformat(str(data.get("first_seen")))
        source = data.get("source", "prometheus")
        if source not in ("prometheus", "alertmanager"):
            raise ValueError(f"finding.source {source!r} is not prometheus or alertmanager")
        return cls(
            kind=kind,
            name=name,
            target=target,
            severity=_SEVERITIES[severity],
            labels=labels,
            annotations=annotations,
            value=parse_value(data.get("value")),
            first_seen=first_seen,
            fingerprint=fp,
            source=source,
        )

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
            "source": self.source,
        }


def fingerprint(kind: str, name: str, labels: Mapping[str, str], volatile: Iterable[str]) -> str:
    """A stable hex digest of kind, name and the identifying labels.

    The text hashed is the compact JSON ``[kind,name,{labels}]`` with sorted keys and no
    ASCII escaping, exactly as ``canonical_json`` writes it; JSON is unambiguous whatever
    the labels hold, so two label sets never share a text. orjson writes the same bytes
    faster (a test holds the two encoders to that). It refuses lone surrogates, which a
    decoded payload can carry; those take the standard encoder with ``surrogatepass``.

    The hash is XXH3-128, whose output is frozen by its specification. Like the hashes
    Prometheus and Alertmanager use for series and alert identity, it is not
    cryptographic: it tells label sets apart, it does not stand up to someone who crafts
    label values to collide.
    """
    skip = frozenset(volatile)
    kept = {k: v for k, v in labels.items() if k not in skip}
    try:
        text = orjson.dumps((kind, name, kept), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        text = canonical_json(kind, name, kept).encode("utf-8", "surrogatepass")
    return xxh3_128_hexdigest(text)


def canonical_json(kind: str, name: str, labels: Mapping[str, str]) -> str:
    """The text a fingerprint hashes, from the standard library encoder (the reference)."""
    return json.dumps(
        [kind, name, dict(labels)], sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


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
    """A label or annotation map of encodable strings, or None if it is not a map at all.

    The usual map (ASCII strings) is returned as it is. Otherwise every key and value is
    made a string UTF-8 can encode: lone surrogates become U+FFFD, numbers and booleans
    their text, nested lists and objects a placeholder (never their repr, which a deeply
    nested value would turn into a RecursionError).
    """
    if not isinstance(raw, dict):
        return None
    try:  # every key and value a string (join refuses anything else), all of them ASCII
        usual = "".join(raw).isascii() and "".join(raw.values()).isascii()
    except TypeError:
        usual = False
    if usual:
        return raw
    return {encodable(str(k)): _as_text(v) for k, v in raw.items()}


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return encodable(value)
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    return f"<{type(value).__name__}>"


def dedupe(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per fingerprint, keeping the earliest first-seen time, order preserved."""
    seen: dict[str, Finding] = {}
    for finding in findings:
        kept = seen.get(finding.fingerprint)
        if kept is None or finding.first_seen < kept.first_seen:
            seen[finding.fingerprint] = finding
    return list(seen.values())
