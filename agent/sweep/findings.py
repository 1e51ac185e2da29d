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

import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import repeat
from typing import NamedTuple

import orjson
from xxhash import xxh3_128_hexdigest

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


class Finding(NamedTuple):
    """One problem with one service, as seen in one sweep (immutable; use ``_replace``).

    A named tuple rather than a dataclass: a storm sweep builds ten thousand of these, and
    a tuple is built in C (see ``from_rows``) at a fraction of a dataclass ``__init__``.
    """

    kind: FindingKind
    name: str
    target: str | None
    severity: Severity
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float | None
    first_seen: datetime
    fingerprint: str

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[object, ...]]) -> list[Finding]:
        """Findings from tuples holding the fields in order, built without a Python call each.

        The caller vouches for the types; this is the bulk path of the alert parser.
        """
        return list(map(tuple.__new__, repeat(cls), rows))

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
    """A stable hex digest of kind, name and the identifying labels.

    The text hashed is the compact JSON ``[kind,name,{labels}]`` with sorted keys and no
    ASCII escaping, exactly as ``canonical_json`` writes it. JSON is unambiguous whatever
    the labels hold, so two label sets never share a text. orjson writes the same bytes
    several times faster (a test holds the two encoders to that); it refuses lone
    surrogates, which a decoded payload can carry, and those take the standard encoder with
    ``surrogatepass``, whose bytes are never valid UTF-8 and so never equal an orjson text.

    The hash is XXH3-128, whose output is frozen by its specification. Like the hashes
    Prometheus and Alertmanager use for series and alert identity (xxHash-64, FNV-64a), it
    is not cryptographic: it tells label sets apart, it does not stand up to someone who
    crafts label values to collide. A cryptographic hash costs more than the rest of a
    storm sweep together (``make bench``).
    """
    return xxh3_128_hexdigest(_canonical_bytes(kind, name, identifying(labels, volatile)))


def fingerprints(
    kind: str, names: Sequence[str], label_maps: Sequence[dict[str, str]]
) -> list[str]:
    """``fingerprint`` of many findings of one kind, from their identifying labels.

    One chain of C-level maps; each text is hashed and dropped before the next is written,
    so no pile of short-lived buffers builds up.
    """
    try:
        rows = zip(repeat(kind), names, label_maps)
        texts = map(orjson.dumps, rows, repeat(None), repeat(orjson.OPT_SORT_KEYS))
        return list(map(xxh3_128_hexdigest, texts))
    except orjson.JSONEncodeError:
        texts = map(_canonical_bytes, repeat(kind), names, label_maps)
        return list(map(xxh3_128_hexdigest, texts))


def _canonical_bytes(kind: str, name: str, labels: dict[str, str]) -> bytes:
    try:
        return orjson.dumps((kind, name, labels), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return canonical_json(kind, name, labels).encode("utf-8", "surrogatepass")


def identifying(labels: Mapping[str, str], volatile: Iterable[str]) -> dict[str, str]:
    """The labels without the volatile ones (the same dict when none is present)."""
    skip = volatile if type(volatile) is frozenset else frozenset(volatile)
    if type(labels) is dict and labels.keys().isdisjoint(skip):
        return labels
    return {k: v for k, v in labels.items() if k not in skip}


def identifying_many(
    label_maps: Sequence[dict[str, str]], volatile: frozenset[str]
) -> list[dict[str, str]]:
    """``identifying`` over many label maps, in C-level passes over the whole list."""
    if all(map(volatile.isdisjoint, label_maps)):
        return list(label_maps)
    copies = list(map(dict.copy, label_maps))
    drop: Callable[[dict[str, str], str, None], object] = dict.pop
    for key in volatile:
        deque(map(drop, copies, repeat(key), repeat(None)), maxlen=0)
    return copies


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
    """A label or annotation map with string keys and values, or None if it is not a map."""
    if not isinstance(raw, dict):
        return None
    try:
        "".join(raw.values())  # C-speed check that every value is a str (keys from JSON are)
    except TypeError:
        return {str(k): v if isinstance(v, str) else str(v) for k, v in raw.items()}
    return raw


def dedupe(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per fingerprint, keeping the earliest first-seen time, order preserved."""
    if len({f.fingerprint for f in findings}) == len(findings):
        return list(findings)  # the usual case: Prometheus sends each alert once
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
