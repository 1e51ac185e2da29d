"""What an alerting expression compares, from a table of expressions."""

from __future__ import annotations

import pytest

from agent.promql import Comparison, comparison_of, threshold_of, without_comparison


@pytest.mark.parametrize(
    ("expr", "comparison", "behind"),
    [
        (
            'process_resident_memory_bytes{job="x"} > 100e6',
            Comparison(">", 100e6),
            'process_resident_memory_bytes{job="x"}',
        ),
        ("rate(errors[5m]) >= 0.05", Comparison(">=", 0.05), "rate(errors[5m])"),
        ("node_filesystem_avail_ratio < .05", Comparison("<", 0.05), "node_filesystem_avail_ratio"),
        ("up == 0", Comparison("==", 0.0), "up"),
        ("up != 1", Comparison("!=", 1.0), "up"),
        ("temperature <= -5 ", Comparison("<=", -5.0), "temperature"),
        ("mem > 1.5e+08", Comparison(">", 1.5e8), "mem"),
        (
            'sum by (service) (rate(x{le="0.5"}[5m])) > 2',
            Comparison(">", 2.0),
            'sum by (service) (rate(x{le="0.5"}[5m]))',
        ),
        # A comparison nested inside is left alone.
        ("sum(x > 5)", None, "sum(x > 5)"),
        ("(a > 1) and b", None, "(a > 1) and b"),
        ("absent(up)", None, "absent(up)"),
        ("x > bool 5", None, "x > bool 5"),
        ("rate(x[5m]) * 100", None, "rate(x[5m]) * 100"),
        # Nothing but a comparison: kept as it is.
        ("> 5", Comparison(">", 5.0), "> 5"),
    ],
)
def test_the_final_comparison_and_the_series_behind_it(
    expr: str, comparison: Comparison | None, behind: str
) -> None:
    """Only a comparison with a number at the very end is taken off, and is the threshold."""
    assert comparison_of(expr) == comparison
    assert threshold_of(expr) == (comparison.threshold if comparison else None)
    assert without_comparison(expr) == behind


@pytest.mark.parametrize(
    ("op", "holds", "fails"),
    [(">", 6, 5), (">=", 5, 4), ("<", 4, 5), ("<=", 5, 6), ("==", 5, 4), ("!=", 4, 5)],
)
def test_a_comparison_holds_on_its_alerting_side(op: str, holds: float, fails: float) -> None:
    """Each operator holds on the side of the threshold where the alert fires."""
    comparison = Comparison(op, 5.0)
    assert comparison.holds(holds) and not comparison.holds(fails)
    assert str(comparison) == f"{op} 5"
