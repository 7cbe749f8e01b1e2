"""Repeated measurements and their summary (median, min, max, percentiles), the one way every suite reports.

A `Sample` is what the results file and the report hold for one number: the median of the runs plus the
spread, so a reader sees how noisy a figure was on this machine. `cpu_steal` says how much of the machine's
CPU time its hypervisor gave to other guests while a suite ran: on a shared VM the same code measured 2x
apart between hours, and the steal is what a reader needs to compare two runs.
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


def cpu_times(stat_text: str | None = None) -> tuple[int, ...]:
    """The machine's CPU time counters (the `cpu` line of /proc/stat: user, nice, system, idle, iowait, irq,
    softirq, steal), in clock ticks; () where there is no /proc/stat."""
    if stat_text is None:
        try:
            with open("/proc/stat") as fh:
                stat_text = fh.readline()
        except OSError:
            return ()
    fields = stat_text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return ()
    return tuple(int(x) for x in fields[1:9])


def cpu_steal(before: tuple[int, ...], after: tuple[int, ...]) -> float | None:
    """The share (0..1) of the machine's CPU time between two `cpu_times()` readings that was stolen by the
    hypervisor; None when it cannot be told (no /proc/stat, no time passed)."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    return delta[7] / total if total > 0 else None
