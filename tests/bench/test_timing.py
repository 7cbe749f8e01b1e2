"""bench/timing.py: percentiles, the hypervisor's share of the CPU time (/proc/stat's steal), the box's speed."""

import pytest

from bench.timing import box_speed, cpu_steal, cpu_times, percentile, python_work, summarize

STAT = "cpu  {} 0 {} {} {} 0 {} {} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"


def stat(user, system, idle, iowait, softirq, steal):
    return STAT.format(user, system, idle, iowait, softirq, steal)


def test_cpu_steal_is_the_stolen_share_of_the_ticks_between_two_readings():
    before = cpu_times(stat(1000, 200, 5000, 10, 5, 100))
    after = cpu_times(stat(1600, 300, 5200, 10, 5, 400))  # 600 + 100 + 200 + 300 = 1200 ticks, 300 stolen
    assert before == (1000, 0, 200, 5000, 10, 0, 5, 100)
    assert cpu_steal(before, after) == pytest.approx(0.25)
    assert cpu_steal(before, before) is None  # no time passed
    assert cpu_steal((), after) is None  # no /proc/stat


def test_cpu_times_refuses_what_is_not_the_cpu_line():
    assert cpu_times("cpu0 1 2 3 4 5 6 7 8\n") == ()
    assert cpu_times("") == ()
    assert len(cpu_times()) in (0, 8)  # this machine's own, where it has /proc/stat


def test_percentile_interpolates_and_summarize_keeps_the_spread():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    s = summarize([3.0, 1.0, 2.0], "s")
    assert (s.median, s.min, s.max, s.runs, s.unit) == (2.0, 1.0, 3.0, 3, "s")


def test_box_speed_times_both_workloads_here():
    """The probe runs its Python loop here and its ClickHouse aggregation in a real chDB child, and reports
    their medians (no speed is asserted: the numbers are what they are on this box)."""
    speed = box_speed(runs=2)
    assert speed["runs"] == 2 and speed["python_ms"] > 0
    assert speed["clickhouse_ms"] is not None and speed["clickhouse_ms"] > 0
    assert python_work() == python_work()  # a fixed workload: the same result every time
