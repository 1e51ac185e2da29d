"""What an alerting expression compares, read from its text: pure functions, no I/O.

An alerting rule's expression usually ends in a comparison (``... > 1.5e+08``). Prometheus
returns the series of such an expression only while the comparison holds, so its history
is a few points above the line: no rise, no drop. The series *behind* the alert is the
expression without that final comparison, and the number it compares with is the
threshold. Only a comparison with a number at the very end counts; one nested inside
(``sum(x > 5)``, ``(a > 1) and b``) is left alone. The console draws the series behind
the alert, and the diagnosis shows it to the model, both from these functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_COMPARISON = re.compile(r"(>=|<=|!=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Comparison:
    """The final comparison of an expression: ``op`` and the threshold it compares with."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        """Whether ``value`` is on the alerting side of the threshold."""
        match self.op:
            case ">":
                return value > self.threshold
            case ">=":
                return value >= self.threshold
            case "<":
                return value < self.threshold
            case "<=":
                return value <= self.threshold
            case "==":
                return value == self.threshold
            case _:
                return value != self.threshold

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


def comparison_of(expr: str) -> Comparison | None:
    """The comparison with a number at the end of ``expr``, if there is one."""
    found = _COMPARISON.search(expr.strip())
    if found is None:
        return None
    value = float(found.group(2))
    return Comparison(found.group(1), value) if math.isfinite(value) else None


def threshold_of(expr: str) -> float | None:
    """The number an alerting expression compares with at its end (``... > 1e8``)."""
    found = comparison_of(expr)
    return found.threshold if found else None


def without_comparison(expr: str) -> str:
    """The series behind an expression: without its final comparison with a number, so
    it shows below the threshold too (the rise before an alert, the drop after a fix).
    An expression that is nothing but a comparison is returned as it is."""
    found = _COMPARISON.search(expr.strip())
    head = expr.strip()[: found.start()].strip() if found else ""
    return head or expr
