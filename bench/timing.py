"""Repeated measurements and their summary (median, min, max, percentiles), the one way every suite reports.

A `Sample` is what the results file and the report hold for one number: the median of the runs plus the
spread, so a reader sees how noisy a figure was on this machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sample:
    median: float
    min: float
    max: float
    runs: int
    unit: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(values: Sequence[float], unit: str = "") -> Sample:
    if not values:
        raise ValueError("no runs to summarize")
    return Sample(percentile(values, 50), min(values), max(values), len(values), unit)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call of `fn`."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def latencies(fn: Callable[[], object], runs: int, warmup: int = 1) -> dict:
    """Wall times of `fn` in milliseconds after `warmup` untimed calls: p50, p95, p99, min, max, runs."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1000.0)
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "min": min(ms),
        "max": max(ms),
        "runs": runs,
        "unit": "ms",
    }
