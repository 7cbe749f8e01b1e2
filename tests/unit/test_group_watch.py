"""GroupWatch: when the sink makes its Kafka consumer anew (sinks/clickhouse/group_watch.py)."""

from __future__ import annotations

from sinks.clickhouse.group_watch import GroupWatch


def never():
    raise AssertionError("records_waiting asked")


def test_a_consumer_without_partitions_for_the_timeout_is_made_anew_and_the_wait_doubles():
    w = GroupWatch(30.0, max_timeout=100.0, now=0.0)
    assert not w.check(False, False, 29.9, never)
    assert w.check(False, False, 30.0, never)  # 30 s without a partition since it was made
    assert not w.check(False, False, 89.9, never)  # then 60 s from the remake
    assert w.check(False, False, 90.0, never)
    assert w.check(False, False, 190.0, never)  # 120 s would exceed the cap: 100
    assert not w.check(False, False, 289.9, never) and w.check(False, False, 290.0, never)


def test_records_waiting_that_do_not_come_make_it_anew_an_idle_pipeline_does_not():
    asked = []

    def waiting(answer):
        def f():
            asked.append(answer)
            return answer

        return f

    w = GroupWatch(30.0, now=0.0)
    assert not w.check(False, True, 29.9, never)  # not asked before the time has come
    assert not w.check(False, True, 30.0, waiting(False))  # caught up: idle, healthy, the clock starts again
    assert w.wait == 30.0 and not w.check(False, True, 59.9, never)
    assert w.check(False, True, 60.0, waiting(True))  # records wait past the position, none came
    assert w.wait == 60.0
    assert w.check(False, True, 120.0, waiting(None))  # cannot tell (a leader or the position unavailable)
    assert asked == [False, True, None]


def test_a_round_that_consumed_resets_the_clock_and_the_wait():
    w = GroupWatch(30.0, now=0.0)
    assert w.check(False, False, 30.0, never) and w.wait == 60.0
    assert not w.check(True, True, 40.0, never)
    assert w.wait == 30.0
    assert not w.check(False, True, 69.9, never) and w.check(False, True, 70.0, lambda: True)
    assert not any(w.check(True, True, t, never) for t in range(100, 10_000, 7))  # consuming: never


def test_zero_turns_it_off():
    off = GroupWatch(0.0, now=0.0)
    assert not any(off.check(False, False, t, never) for t in range(0, 10_000, 7))
