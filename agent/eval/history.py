"""Metric history as OpenMetrics text: checked, moved in time, and merged for promtool.

Pure functions. A case's history has absolute timestamps around the case's incident time;
an evaluation moves each case to its own window in the past of one throwaway Prometheus
(``shift``), and ``merge`` writes every case's samples as one OpenMetrics file, each
metric family once with its samples in time order, as ``promtool tsdb
create-blocks-from openmetrics`` wants it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Metadata lines kept per family, in this order.
_META = ("TYPE", "HELP", "UNIT")
#: Sample name suffixes that belong to the family declared without them.
_SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum", "_info", "_gcount", "_gsum")


@dataclass(frozen=True)
class Sample:
    """One sample line: the series (name and label set, as written) and its point."""

    series: str
    name: str
    value: str
    timestamp: float

    def line(self) -> str:
        """The sample as an OpenMetrics line."""
        return f"{self.series} {self.value} {stamp(self.timestamp)}"


@dataclass
class Family:
    """A metric family: its metadata lines and its samples."""

    name: str
    meta: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


def stamp(timestamp: float) -> str:
    """A timestamp as OpenMetrics writes it: seconds, at most millisecond precision."""
    return f"{timestamp:.3f}".rstrip("0").rstrip(".")


def _series_end(line: str) -> int:
    """Where the series (name plus label set) of a sample line ends."""
    brace = line.find("{")
    space = line.find(" ")
    if brace == -1 or (space != -1 and space < brace):
        return space
    quoted = escaped = False
    for i in range(brace + 1, len(line)):
        char = line[i]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return i + 1
    return -1


def parse_sample(line: str) -> Sample:
    """One sample line; ValueError saying what is wrong with it."""
    end = _series_end(line)
    if end <= 0:
        raise ValueError("not a sample line (metric{labels} value timestamp)")
    series = line[:end]
    name = series.split("{", 1)[0]
    if not name or not (name[0].isalpha() or name[0] in "_:"):
        raise ValueError(f"bad metric name {name[:60]!r}")
    rest = line[end:].split()
    if len(rest) != 2:
        raise ValueError("a sample needs a value and a timestamp (seconds)")
    value, raw_time = rest
    try:
        float(value)
        timestamp = float(raw_time)
    except ValueError:
        raise ValueError("value and timestamp must be numbers") from None
    if not math.isfinite(timestamp) or timestamp <= 0:
        raise ValueError("the timestamp must be a positive number of seconds")
    return Sample(series=series, name=name, value=value, timestamp=timestamp)


def parse(text: str) -> list[Family]:
    """The families of an OpenMetrics text; ValueError naming the first bad line."""
    families: dict[str, Family] = {}
    current: Family | None = None
    ended = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise ValueError(f"line {number}: nothing may follow '# EOF'")
        try:
            if line == "# EOF":
                ended = True
            elif line.startswith("#"):
                current = _meta(line, families)
            else:
                sample = parse_sample(line)
                if current is None or sample.name not in {current.name + x for x in _SUFFIXES}:
                    current = families.setdefault(sample.name, Family(sample.name))
                current.samples.append(sample)
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    if not any(f.samples for f in families.values()):
        raise ValueError("no samples")
    return list(families.values())


def _meta(line: str, families: dict[str, Family]) -> Family:
    parts = line.split(None, 3)
    if len(parts) < 3 or parts[1] not in _META:
        raise ValueError("a comment must be '# TYPE', '# HELP', '# UNIT' or '# EOF'")
    family = families.setdefault(parts[2], Family(parts[2]))
    family.meta[parts[1]] = line
    return family


def shift(families: list[Family], by: float, *, keep_from: float, keep_until: float) -> None:
    """Move every sample by ``by`` seconds, keeping those in [keep_from, keep_until]
    (times before the move)."""
    for family in families:
        family.samples = [
            Sample(s.series, s.name, s.value, s.timestamp + by)
            for s in family.samples
            if keep_from <= s.timestamp <= keep_until
        ]


def merge(histories: list[list[Family]]) -> str:
    """One OpenMetrics text holding every family once, each series' samples together
    and in time order."""
    merged: dict[str, Family] = {}
    for families in histories:
        for family in families:
            into = merged.setdefault(family.name, Family(family.name))
            for key, line in family.meta.items():
                into.meta.setdefault(key, line)
            into.samples.extend(family.samples)
    lines: list[str] = []
    for family in merged.values():
        if not family.samples:
            continue
        lines += [family.meta[k] for k in _META if k in family.meta]
        lines += [s.line() for s in sorted(family.samples, key=lambda s: (s.series, s.timestamp))]
    return "\n".join([*lines, "# EOF"]) + "\n"
