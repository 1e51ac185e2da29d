"""The evidence the agent gathers itself, as the model is shown it: pure functions.

Every phase's prompt starts with the series behind the finding: for an alert, its rule's
expression without the final comparison (``agent.promql``), so the model sees the rise
before the alert and not only the points above the line; for a health check its query
the same way; for an anomaly check its selector. Only the series of the finding's own
labels are kept (all of them when none matches), and each is summarised: first, last,
min, max, slope per minute, minutes on the alerting side of the threshold, and at most
``POINTS_MAX`` evenly spaced values, so that a small model can see a leak and a large one
need not guess.

The summary is small on purpose: it is part of the prefix every phase of the diagnosis
repeats, so each character costs several times. Numbers are written with a few
significant digits (``2.1e8``: the shipped model spends a token on every digit), labels
the finding already shows are left out, and series that do not fit in the size limit
are counted, not cut in half. Prometheus' answer is read without trusting its shape.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.promql import Comparison

#: At most this many values of a series are shown, evenly spaced, first and last included.
POINTS_MAX = 20
#: At most this many series are summarised.
SERIES_MAX = 5
LABEL_MAX = 60
QUERY_MAX = 300


@dataclass(frozen=True)
class Series:
    """One series of a range answer: its labels and its (unix seconds, value) samples."""

    labels: Mapping[str, str]
    samples: tuple[tuple[float, float], ...]


def _sample(pair: object) -> tuple[float, float] | None:
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return None
    try:
        at, value = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        return None
    return (at, value) if math.isfinite(at) and math.isfinite(value) else None


def parse_matrix(result: object) -> list[Series]:
    """Prometheus' range answer (``data.result``) as series with finite samples, in time
    order; malformed entries and series without samples are left out."""
    out: list[Series] = []
    for entry in result if isinstance(result, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("values"), list):
            continue
        samples = sorted(s for s in map(_sample, entry["values"]) if s is not None)
        metric = entry.get("metric")
        labels = {str(k): str(v) for k, v in metric.items()} if isinstance(metric, dict) else {}
        if samples:
            out.append(Series(labels, tuple(samples)))
    return out


def earliest(series: Sequence[Series]) -> float | None:
    """When the first sample of any series was taken (unix seconds), None without any."""
    return min((s.samples[0][0] for s in series), default=None)


def of_finding(series: Sequence[Series], labels: Mapping[str, str]) -> list[Series]:
    """The series whose labels agree with the finding's on every label both have; every
    series when none does (the finding's labels may name none of them)."""
    own = [
        s
        for s in series
        if all(labels.get(k, v) == v for k, v in s.labels.items() if k != "__name__")
    ]
    return own or list(series)


def compact(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits."""
    return float(f"{value:.{digits}g}")


def spaced(values: Sequence[float], most: int = POINTS_MAX) -> list[float]:
    """At most ``most`` values, evenly spaced, the first and the last included."""
    if len(values) <= most:
        return list(values)
    last = len(values) - 1
    return [values[round(i * last / (most - 1))] for i in range(most)]


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of the samples, per minute (0 for fewer than two times)."""
    if len({at for at, _ in samples}) < 2:
        return 0.0
    minutes = [at / 60 for at, _ in samples]
    return statistics.linear_regression(minutes, [v for _, v in samples]).slope


def summarize(
    series: Series,
    *,
    comparison: Comparison | None,
    step_seconds: float,
    end: float,
    shown: Mapping[str, str],
) -> dict[str, Any]:
    """One series as the model sees it; ``shown`` are the labels the finding already shows
    (left out), ``step_seconds`` the query's step, ``end`` the window's end (unix s)."""
    samples = series.samples
    values = [v for _, v in samples]
    out: dict[str, Any] = {}
    labels = {
        k[:LABEL_MAX]: v[:LABEL_MAX]
        for k, v in sorted(series.labels.items())
        if k != "__name__" and shown.get(k) != v
    }
    if labels:
        out["labels"] = labels
    out["span_min"] = round((samples[-1][0] - samples[0][0]) / 60, 1)
    if end - samples[-1][0] > 2 * step_seconds:
        # The series stopped (the target is gone, the problem cleared): say since when.
        out["ended_min_ago"] = round((end - samples[-1][0]) / 60, 1)
    out.update(
        first=compact(values[0]),
        last=compact(values[-1]),
        min=compact(min(values)),
        max=compact(max(values)),
        slope_per_min=compact(slope_per_minute(samples), 3),
    )
    if comparison is not None:
        held = sum(comparison.holds(v) for v in values)
        out["min_past_threshold"] = round(held * step_seconds / 60, 1)
    out.update(points(spaced(values)))
    return out


def points(values: Sequence[float]) -> dict[str, list[float]]:
    """The values to show, three significant digits each: ``{"points": [...]}``, or, for
    very large or very small numbers, ``{"points_x1e8": [2.8, 2.94, ...]}`` (the values
    divided by the power of ten named in the key: the same digits in fewer tokens)."""
    largest = max((abs(v) for v in values), default=0.0)
    exponent = math.floor(math.log10(largest)) if largest else 0
    if -3 <= exponent < 4:
        return {"points": [compact(v, 3) for v in values]}
    return {f"points_x1e{exponent}": [compact(v / 10**exponent, 3) for v in values]}


def evidence_json(
    query: str,
    series: Sequence[Series],
    *,
    comparison: Comparison | None,
    minutes: int,
    step_seconds: float,
    end: float,
    shown: Mapping[str, str],
    max_chars: int,
) -> str:
    """The evidence as compact JSON: the query, the threshold, the window and the series
    summarised, as many as fit in ``max_chars`` (the first always; the rest counted)."""
    head: dict[str, Any] = {"query": query[:QUERY_MAX]}
    if comparison is not None:
        head["threshold"] = f"{comparison.op} {_number(comparison.threshold)}"
    head["window_min"] = minutes
    kept: list[dict[str, Any]] = []
    chosen = list(series)[:SERIES_MAX]
    for item in chosen:
        summary = summarize(
            item, comparison=comparison, step_seconds=step_seconds, end=end, shown=shown
        )
        if kept and len(dump({**head, "series": [*kept, summary]})) > max_chars:
            break
        kept.append(summary)
    more = len(series) - len(kept)
    return dump({**head, "series": kept, **({"more_series": more} if more else {})})


def dump(value: object) -> str:
    """Compact JSON with numbers as short as they are exact (``2.1e8``, not 210000000.0)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}:{dump(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _number(value: float) -> str:
    """The shorter of the plain and the scientific form that reads back exactly."""
    if not math.isfinite(value):
        return "null"
    text = next(t for d in range(1, 18) if float(t := f"{value:.{d}g}") == value)
    mantissa, _, exponent = text.partition("e")
    scientific = f"{mantissa}e{int(exponent)}" if exponent else text
    plain = repr(value).removesuffix(".0")
    return plain if "e" not in plain and len(plain) <= len(scientific) else scientific
