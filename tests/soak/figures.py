"""The soak's figures, computed from what it recorded: pure functions over plain records,
unit-tested in tests/unit/test_soak_figures.py.

- memory growth: the least-squares slope of a process's resident memory over time, in MB
  per hour, after its warm-up;
- p95: nearest rank; the median;
- duplicate incidents: more than one incident for one fault episode (one service, one
  kind of fault, from its start until it was fixed or went away); phantoms: an incident
  opened when no fault of its kind was going on on its service;
- duplicate actions: the gateway asked more than once for one incident's action;
- stuck: an incident in a non-final state for longer than that state's bound.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MB = 1024 * 1024
TERMINAL = frozenset({"resolved", "escalated", "skipped"})


def growth_mb_per_hour(samples: Sequence[tuple[float, float]], warmup: float) -> float | None:
    """The slope of (seconds, bytes) samples taken after ``warmup`` seconds from the first,
    in MB per hour; None with fewer than three samples or no time between them."""
    if not samples:
        return None
    start = samples[0][0] + warmup
    kept = [(t, v) for t, v in samples if t >= start]
    if len(kept) < 3:
        return None
    mean_t = sum(t for t, _ in kept) / len(kept)
    mean_v = sum(v for _, v in kept) / len(kept)
    spread = sum((t - mean_t) ** 2 for t, _ in kept)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in kept) / spread  # bytes per second
    return slope * 3600 / MB


def p95(values: Iterable[float]) -> float | None:
    """The 95th percentile by nearest rank; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def median(values: Iterable[float]) -> float | None:
    """The median (the mean of the two middle values of an even count); None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass
class Episode:
    """One fault of one service: from when it began until it was fixed or went away
    (``end`` None while it lasts)."""

    service: str
    alert: str
    start: float
    end: float | None = None
    #: "gateway" (a restart fixed it), "itself" (it went away), "human" (fixed by hand after
    #: an escalation), "harness" (healed at the end).
    ended_by: str = ""


@dataclass(frozen=True)
class Opened:
    """An incident as the duplicate count needs it: its id, service, alert and opening."""

    id: str
    service: str
    alert: str
    opened_at: float


@dataclass(frozen=True)
class Attribution:
    """Incidents by the fault they were opened for: groups of more than one for one fault
    (duplicates), and those opened when no fault of theirs was going on (phantoms: a
    source still reporting a problem that had ended)."""

    duplicates: list[list[str]]
    phantoms: list[str]


def attribute(
    episodes: Sequence[Episode], incidents: Sequence[Opened], lag: float = 15.0
) -> Attribution:
    """Give each incident to the latest episode of its service and alert that began
    before it opened and had not ended more than ``lag`` seconds before (the alert's
    ``for``, a scrape and a sweep lag the fault)."""
    by_episode: dict[int, list[str]] = {}
    phantoms = []
    for incident in incidents:
        owner = None
        for n, episode in enumerate(episodes):
            if (episode.service, episode.alert) != (incident.service, incident.alert):
                continue
            if episode.start > incident.opened_at:
                continue
            if episode.end is not None and episode.end + lag < incident.opened_at:
                continue
            if owner is None or episodes[owner].start < episode.start:
                owner = n
        if owner is None:
            phantoms.append(incident.id)
        else:
            by_episode.setdefault(owner, []).append(incident.id)
    return Attribution([ids for ids in by_episode.values() if len(ids) > 1], phantoms)


def duplicate_actions(requests: Iterable[tuple[str, str]]) -> int:
    """How many requests repeated an (incident, action) the gateway had already received."""
    counts = Counter(requests)
    return sum(n - 1 for n in counts.values() if n > 1)


def stuck(state: str, since: float, now: float, bounds: Mapping[str, float]) -> bool:
    """Whether an incident in ``state`` since ``since`` is past its state's bound; a final
    state is never stuck, a state without a bound always is."""
    if state in TERMINAL:
        return False
    return now - since > bounds.get(state, 0.0)
