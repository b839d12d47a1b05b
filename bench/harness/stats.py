"""Statistics the reports use: medians that skip NaN, geometric means, spreads, verdicts."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    """The median of the numbers that are not NaN; NaN when there are none."""
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else math.nan


def geomean(values: Iterable[float]) -> float:
    """The geometric mean of the positive values; NaN when there are none."""
    positive = [v for v in values if v > 0]
    if not positive:
        return math.nan
    return math.exp(sum(math.log(v) for v in positive) / len(positive))


def spread(values: list[float]) -> tuple[float, float]:
    """min and max of values as fractions of their median."""
    mid = median(values)
    return min(values) / mid, max(values) / mid


def verdict(ok: bool) -> str:
    """How a target is reported: met, or NOT MET."""
    return "met" if ok else "NOT MET"
