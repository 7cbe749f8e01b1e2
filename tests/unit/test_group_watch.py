"""GroupWatch: when the sink makes its Kafka consumer anew (sinks/clickhouse/group_watch.py)."""

from __future__ import annotations

from sinks.clickhouse.group_watch import GroupWatch


def test_a_consumer_without_partitions_for_the_timeout_is_made_anew_and_the_wait_doubles():
    w = GroupWatch(30.0, max_timeout=100.0, now=0.0)
    assert not w.check(False, 29.9)
    assert w.check(False, 30.0)  # 30 s without a partition since it was made
    assert not w.check(False, 89.9)  # then 60 s from the remake
    assert w.check(False, 90.0)
    assert w.check(False, 190.0)  # 120 s would exceed the cap: 100
    assert not w.check(False, 289.9) and w.check(False, 290.0)  # and stays there


def test_partitions_reset_the_clock_and_the_wait():
    w = GroupWatch(30.0, now=0.0)
    assert w.check(False, 30.0) and w.wait == 60.0
    assert not w.check(True, 40.0)  # partitions came
    assert w.wait == 30.0
    assert not w.check(False, 69.9) and w.check(False, 70.0)  # 30 s after they were last seen


def test_a_sink_with_partitions_is_never_made_anew_and_zero_turns_it_off():
    w = GroupWatch(30.0, now=0.0)
    assert not any(w.check(True, t) for t in range(0, 10_000, 7))
    off = GroupWatch(0.0, now=0.0)
    assert not any(off.check(False, t) for t in range(0, 10_000, 7))
