"""The soak's figures (tests/soak/figures.py) from tables of recorded samples: a figure
that is wrong would pass or fail the soak for nothing."""

from __future__ import annotations

import pytest

from tests.soak.figures import (
    MB,
    Episode,
    Opened,
    attribute,
    duplicate_actions,
    growth_mb_per_hour,
    median,
    p95,
    stuck,
)


def test_memory_growth_is_the_slope_after_warm_up_in_mb_per_hour() -> None:
    """A jump during warm-up does not count; 1 MB every 15 minutes after it is 4 MB/h;
    a flat line is 0; too few samples say nothing."""
    warm = [(0.0, 100 * MB), (60.0, 150 * MB)]
    steady = [(120.0 + 900.0 * n, 150 * MB + n * MB) for n in range(5)]
    assert growth_mb_per_hour(warm + steady, warmup=100) == pytest.approx(4.0)
    flat = [(float(t), 80 * MB) for t in range(0, 600, 30)]
    assert growth_mb_per_hour(flat, warmup=0) == 0
    assert growth_mb_per_hour(flat[:2], warmup=0) is None
    assert growth_mb_per_hour([], warmup=0) is None


def test_p95_by_nearest_rank_and_the_median() -> None:
    """Twenty values: the 19th, median 10.5; one value: itself; none: nothing."""
    assert p95(float(n) for n in range(1, 21)) == 19
    assert median(float(n) for n in range(1, 21)) == 10.5
    assert p95([7.0]) == 7 and median([3.0, 1.0, 2.0]) == 2
    assert p95([]) is None and median([]) is None


def test_incidents_are_given_to_their_fault() -> None:
    """Two incidents in one episode are a duplicate; one per episode, or the next episode's
    own (even one opened in the lag after the first ended), is not; one opened when no
    fault of its kind went on is a phantom."""
    episodes = [
        Episode("a", "Leak", start=0, end=100),
        Episode("a", "Leak", start=110, end=200),
        Episode("b", "Leak", start=0, end=None),
        Episode("a", "Down", start=0, end=50),
    ]
    incidents = [
        Opened("i1", "a", "Leak", 10),
        Opened("i2", "a", "Leak", 112),  # the second episode's, though within the lag
        Opened("i3", "b", "Leak", 10),
        Opened("i4", "b", "Leak", 500),  # the same, never-ending fault opened twice
        Opened("i5", "a", "Down", 60),  # lag after its episode ended: still that one
        Opened("i6", "c", "Leak", 10),  # no fault on c at all
        Opened("i7", "a", "Down", 80),  # its fault ended 30 s before
    ]
    found = attribute(episodes, incidents)
    assert found.duplicates == [["i3", "i4"]]
    assert found.phantoms == ["i6", "i7"]


def test_duplicate_actions_count_every_repeat() -> None:
    """The same incident's restart three times is two duplicates; other pairs are not."""
    sent = [("i1", "restart"), ("i1", "restart"), ("i1", "restart"), ("i2", "restart")]
    assert duplicate_actions([*sent, ("i1", "collect_logs")]) == 2


@pytest.mark.parametrize(
    ("state", "since", "is_stuck"),
    [
        ("awaiting_approval", 0, False),
        ("awaiting_approval", -200, True),
        ("resolved", -10_000, False),
        ("held", 0, True),  # no bound: never expected in the soak
    ],
)
def test_stuck_is_past_the_bound_of_a_state_that_is_not_final(
    state: str, since: float, is_stuck: bool
) -> None:
    """Past its state's bound a non-final incident is stuck; a final one never is."""
    bounds = {"awaiting_approval": 120.0}
    assert stuck(state, since, now=1.0, bounds=bounds) is is_stuck
