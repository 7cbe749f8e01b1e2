"""Repeated measurements and their summary (median, min, max, percentiles), the one way every suite reports.

A `Sample` is what the results file and the report hold for one number: the median of the runs plus the
spread, so a reader sees how noisy a figure was on this machine. `cpu_steal` says how much of the machine's
CPU time its hypervisor gave to other guests while a suite ran: on a shared VM the same code measured 2x
apart between hours, and the steal is what a reader needs to compare two runs. The box also drifts with no
steal at all (the same statements 1.1-1.5x slower between sessions on one CPU model): `box_speed` times two
fixed workloads, so that runs on different days can be compared (`python -m bench.timing`).
"""

from __future__ import annotations

import math
import subprocess
import sys
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


# A fixed ClickHouse workload on one thread: hashing and summing 100 M numbers (~0.15-0.2 s).
SPEED_SQL = "SELECT sum(cityHash64(number)) FROM numbers(100000000) SETTINGS max_threads = 1"
_SPEED_CHILD = f"""
import time, chdb
chdb.query("SELECT 1")
for _ in range({{runs}}):
    t0 = time.perf_counter()
    chdb.query({SPEED_SQL!r})
    print((time.perf_counter() - t0) * 1000)
"""


def python_work() -> int:
    """A fixed pure-Python workload (integer arithmetic in a loop, ~0.1-0.2 s)."""
    t = 0
    for i in range(2_000_000):
        t = (t * 31 + i) & 0xFFFFFFFF
    return t


def box_speed(runs: int = 7) -> dict:
    """How fast this box is now: the median milliseconds (lower is faster) of two fixed single-threaded
    workloads, `python_work` and SPEED_SQL in chDB (in a child process: chDB admits one store per process).
    {"python_ms", "clickhouse_ms", "runs"}; clickhouse_ms is None when chDB cannot run."""
    python_ms = [timed(python_work)[0] * 1000 for _ in range(runs)]
    try:
        out = subprocess.run(
            [sys.executable, "-c", _SPEED_CHILD.format(runs=runs)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        clickhouse_ms = [float(x) for x in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        clickhouse_ms = []
    return {
        "python_ms": round(percentile(python_ms, 50), 1),
        "clickhouse_ms": round(percentile(clickhouse_ms, 50), 1) if clickhouse_ms else None,
        "runs": runs,
    }


if __name__ == "__main__":
    print(box_speed())
