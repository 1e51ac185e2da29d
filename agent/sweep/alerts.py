"""Firing alerts from Prometheus' ``/api/v1/alerts``, and Alertmanager suppression.

Pure functions over decoded JSON. The payload is untrusted: any field can be missing,
of the wrong type or absurdly long; a bad entry is counted and skipped, never raised.
``pending`` alerts are not findings yet: Prometheus has not decided they are real.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any, cast

from agent.sweep.findings import (
    Finding,
    fingerprint,
    fingerprints,
    identifying_many,
    parse_severity,
    parse_value,
    resolve_target,
    string_map,
)


@dataclass
class AlertParse:
    """Findings from one alerts payload, and how many entries were unusable."""

    findings: list[Finding] = field(default_factory=list)
    pending: int = 0
    malformed: int = 0


def parse_time(raw: object, default: datetime) -> datetime:
    """An RFC 3339 timestamp as Prometheus writes it; the default when unreadable."""
    if not isinstance(raw, str):
        return default
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return default
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=default.tzinfo)


def alerts_from_payload(payload: object) -> list[object]:
    """The list of alerts inside a ``/api/v1/alerts`` envelope; ValueError when absent."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise ValueError(f"not a success envelope: {str(error or payload)[:200]}")
    data = payload.get("data")
    alerts = data.get("alerts") if isinstance(data, dict) else None
    if not isinstance(alerts, list):
        raise ValueError("envelope has no data.alerts list")
    return alerts


def parse_alerts(
    alerts: Sequence[object],
    *,
    now: datetime,
    target_labels: Sequence[str],
    volatile_labels: Sequence[str],
) -> AlertParse:
    """Turn the alert entries into findings, firing ones only.

    A storm brings ten thousand alerts into one sweep. Prometheus writes every entry the
    same way, so a whole-payload pass (``_parse_uniform``) handles the usual payload with a
    few C-level loops; the first odd entry sends the payload through the per-entry path
    (``_parse_each``), which gives the same findings and also copes with odd entries. The
    cyclic garbage collector is paused meanwhile: the findings hold no cycles, and in a
    process with many live objects (the daemon, a test run) its collections more than
    doubled the time of a storm parse.
    """
    order, volatile = tuple(target_labels), frozenset(volatile_labels)
    with _gc_paused():
        parsed = _parse_uniform(alerts, now, order, volatile)
        return parsed if parsed is not None else _parse_each(alerts, now, order, volatile)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# The fields every entry of /api/v1/alerts carries, read in one pass over the entries.
_ENTRY_FIELDS = itemgetter("state", "labels", "annotations", "activeAt", "value")
_ALERTNAME = itemgetter("alertname")


def _parse_uniform(
    alerts: Sequence[object], now: datetime, order: tuple[str, ...], volatile: frozenset[str]
) -> AlertParse | None:
    """The whole-payload pass, column by column; None as soon as one entry is odd."""
    out = AlertParse()
    if not alerts:
        return out
    try:  # a field missing (KeyError) or an entry that is no JSON object (TypeError)
        columns = list(zip(*map(_ENTRY_FIELDS, alerts), strict=True))  # type: ignore[arg-type]
    except (KeyError, TypeError):
        return None
    firing_count = columns[0].count("firing")
    if firing_count < len(alerts):
        out.pending = columns[0].count("pending")
        if firing_count + out.pending + columns[0].count("inactive") < len(alerts):
            return None  # an unknown state: counted as malformed by the per-entry path
        keep = list(map("firing".__eq__, columns[0]))
        columns = [tuple(compress(column, keep)) for column in columns]
        if not firing_count:
            return out
    _, labels, annotations, active, raw_values = columns
    if not (_all_string_maps(labels, annotations) and _all_of_type(active + raw_values, str)):
        return None
    try:
        names = list(map(_ALERTNAME, labels))
        values = list(map(float, raw_values))
    except (KeyError, ValueError):
        return None
    if not all(names):
        return None
    times = {a: parse_time(a, now) for a in set(active)}
    raw_severities = _column(labels, "severity")
    severities = {s: parse_severity(s) for s in set(raw_severities)}
    out.findings = Finding.from_rows(
        zip(
            repeat("alert"),
            names,
            _targets(labels, order),
            map(severities.__getitem__, raw_severities),
            labels,
            annotations,
            values,
            map(times.__getitem__, active),
            fingerprints("alert", names, identifying_many(labels, volatile)),
        )
    )
    return out


def _column(maps: Sequence[dict[str, Any]], key: str) -> list[Any]:
    """One field of every map, None where it is absent."""
    get: Callable[[dict[str, Any], str], Any] = dict.get
    return list(map(get, maps, repeat(key)))


def _all_of_type(items: Sequence[object], kind: type) -> bool:
    return set(map(type, items)) == {kind}


def _all_string_maps(*columns: Sequence[object]) -> bool:
    """Whether every item is a dict whose values are all strings (JSON keys always are).

    One C-level pass: ``dict.values`` refuses anything but a dict and ``str.join``
    anything but a str, both with a TypeError.
    """
    maps = cast(Iterable[dict[str, object]], chain.from_iterable(columns))
    try:
        "".join(chain.from_iterable(map(dict.values, maps)))  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def _targets(labels: Sequence[dict[str, str]], order: tuple[str, ...]) -> list[str | None]:
    """``resolve_target`` over many label maps: one pass per target label, not per map."""
    targets: list[str | None] = [None] * len(labels)
    for key in order:
        if all(targets):
            break
        targets = [t or m.get(key) or None for t, m in zip(targets, labels, strict=True)]
    return targets


def _parse_each(
    alerts: Sequence[object], now: datetime, order: tuple[str, ...], volatile: frozenset[str]
) -> AlertParse:
    """The per-entry path: skips and counts odd entries, repairs odd label values."""
    out = AlertParse()
    for entry in alerts:
        state = entry.get("state") if isinstance(entry, dict) else None
        if state == "pending":
            out.pending += 1
        elif state != "firing":
            out.malformed += state != "inactive"
        elif (finding := _alert_finding(entry, now, order, volatile)) is not None:  # type: ignore[arg-type]
            out.findings.append(finding)
        else:
            out.malformed += 1
    return out


def _alert_finding(
    entry: dict[str, object], now: datetime, order: tuple[str, ...], volatile: frozenset[str]
) -> Finding | None:
    labels = string_map(entry.get("labels"))
    name = labels.get("alertname") if labels else None
    if labels is None or not name:
        return None
    return Finding(
        kind="alert",
        name=name,
        target=resolve_target(labels, order),
        severity=parse_severity(labels.get("severity")),
        labels=labels,
        annotations=string_map(entry.get("annotations")) or {},
        value=parse_value(entry.get("value")),
        first_seen=parse_time(entry.get("activeAt"), now),
        fingerprint=fingerprint("alert", name, labels, volatile),
    )


@dataclass(frozen=True)
class Suppression:
    """An alert Alertmanager holds back, and why."""

    labels: Mapping[str, str]
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]


def parse_suppressions(payload: object) -> list[Suppression]:
    """Suppressed alerts from Alertmanager's ``/api/v2/alerts``; ValueError if not a list."""
    if not isinstance(payload, list):
        raise ValueError("Alertmanager /api/v2/alerts did not answer a list")
    out = []
    for entry in payload:
        if not isinstance(entry, dict):
            continue
        status = entry.get("status")
        labels = string_map(entry.get("labels"))
        if not isinstance(status, dict) or labels is None:
            continue
        silenced = tuple(str(s) for s in status.get("silencedBy") or ())
        inhibited = tuple(str(s) for s in status.get("inhibitedBy") or ())
        if silenced or inhibited:
            out.append(Suppression(labels, silenced, inhibited))
    return out


def match_suppression(
    finding: Finding, suppressions: Sequence[Suppression], volatile: frozenset[str]
) -> Suppression | None:
    """The suppression whose labels carry all of the finding's identifying labels, if any.

    Alertmanager may hold extra (external) labels, so the finding's labels need only be a
    subset of the Alertmanager alert's labels.
    """
    wanted = {k: v for k, v in finding.labels.items() if k not in volatile}
    for suppression in suppressions:
        have = suppression.labels
        if all(have.get(k) == v for k, v in wanted.items()):
            return suppression
    return None
