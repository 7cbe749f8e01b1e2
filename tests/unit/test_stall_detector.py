"""stream/stall_detector.py: which assigned raw-lines partitions are stalled (pure logic, no faust, no Kafka)."""

from __future__ import annotations

import pytest

from stream.stall_detector import Stall, StallDetector

T = 60.0  # the timeout of most cases


def run(det: StallDetector, samples: list[tuple[float, dict[int, tuple[int, int]]]], **kw) -> list[Stall]:
    """Feed (time, positions) samples in order; every stall reported."""
    out = []
    for now, positions in samples:
        out.extend(det.check(now, positions, **kw))
    return out


def test_a_partition_with_nothing_waiting_never_stalls():
    det = StallDetector(T)
    # caught up (end = processed + 1), and empty (end 0, nothing processed), for hours
    assert run(det, [(t, {0: (11, 10), 1: (0, -1)}) for t in range(0, 7200, 5)]) == []


def test_records_waiting_at_an_unmoving_offset_stall_after_the_timeout_and_not_before():
    det = StallDetector(T)
    assert det.check(0.0, {3: (500, 100)}) == []
    assert det.check(59.9, {3: (500, 100)}) == []
    (stall,) = det.check(60.0, {3: (520, 100)})
    assert stall == Stall(partition=3, end=520, processed=100, stalled_for=60.0, strikes=1)
    assert stall.waiting == 419


def test_a_stall_is_reported_once_per_timeout_with_its_strikes():
    det = StallDetector(T)
    got = run(det, [(float(t), {3: (500, 100)}) for t in range(0, 200, 5)])
    assert [(s.strikes, s.stalled_for) for s in got] == [(1, 60.0), (2, 120.0), (3, 180.0)]


def test_progress_restarts_the_clock_and_the_strikes():
    det = StallDetector(T)
    assert [s.strikes for s in run(det, [(0.0, {0: (50, 9)}), (60.0, {0: (50, 9)})])] == [1]
    assert det.check(65.0, {0: (50, 10)}) == []  # one record more processed
    assert det.check(124.0, {0: (50, 10)}) == []
    (stall,) = det.check(125.0, {0: (50, 10)})
    assert (stall.strikes, stall.stalled_for) == (1, 60.0)


def test_a_slow_but_moving_partition_is_not_stalled():
    det = StallDetector(T)
    # one record every 50 s, always behind
    assert run(det, [(t * 5.0, {0: (1000, t // 10)}) for t in range(200)]) == []


def test_a_partition_never_processed_stalls_when_records_wait():
    det = StallDetector(T)
    got = run(det, [(float(t), {5: (3, -1), 6: (0, -1)}) for t in range(0, 65, 5)])
    assert [(s.partition, s.processed, s.waiting) for s in got] == [(5, -1, 3)]


def test_the_clock_starts_when_records_arrive_at_an_idle_partition():
    det = StallDetector(T)
    assert run(det, [(float(t), {0: (101, 100)}) for t in range(0, 3600, 5)]) == []
    # a record arrives after an hour of idleness: the offset last moved an hour ago, the wait starts now
    assert det.check(3600.0, {0: (102, 100)}) == []
    assert det.check(3659.0, {0: (102, 100)}) == []
    (stall,) = det.check(3660.0, {0: (102, 100)})
    assert stall.stalled_for == 60.0


def test_catching_up_ends_a_stall():
    det = StallDetector(T)
    assert len(run(det, [(0.0, {0: (50, 9)}), (60.0, {0: (50, 9)})])) == 1
    # the end offset seen lower (a sample from a lagging broker): nothing waits, the stall is over
    assert det.check(61.0, {0: (10, 9)}) == []
    assert det.check(62.0, {0: (50, 9)}) == []
    (stall,) = det.check(122.0, {0: (50, 9)})
    assert (stall.strikes, stall.stalled_for) == (1, 60.0)


def test_only_the_stalled_partition_is_reported_while_others_flow():
    det = StallDetector(T)
    samples = [(float(t), {0: (10_000, t), 1: (10_000, 40), 2: (500, 499)}) for t in range(0, 70, 5)]
    assert [s.partition for s in run(det, samples)] == [1]


def test_nothing_is_judged_while_the_worker_is_not_ready_and_the_clocks_restart_after():
    det = StallDetector(T)
    assert det.check(0.0, {0: (50, 9)}) == []
    # rebalancing for ten minutes: no report, whatever the offsets
    assert run(det, [(float(t), {0: (50, 9)}) for t in range(5, 600, 5)], ready=False) == []
    # ready again: the partition must wait a whole timeout from now
    assert run(det, [(float(t), {0: (50, 9)}) for t in range(600, 660, 5)]) == []
    (stall,) = det.check(660.0, {0: (50, 9)})
    assert (stall.strikes, stall.stalled_for) == (1, 60.0)


def test_an_assignment_change_restarts_every_clock():
    det = StallDetector(T)
    assert det.check(0.0, {0: (50, 9), 1: (50, 9)}) == []
    assert det.check(59.0, {0: (50, 9), 1: (50, 9)}) == []
    # partition 2 was added (a rebalance between two samples): 0 and 1 start again too
    assert det.check(60.0, {0: (50, 9), 1: (50, 9), 2: (50, 9)}) == []
    assert det.check(119.0, {0: (50, 9), 1: (50, 9), 2: (50, 9)}) == []
    assert [s.partition for s in det.check(120.0, {0: (50, 9), 1: (50, 9), 2: (50, 9)})] == [0, 1, 2]
    # one taken away
    assert det.check(150.0, {0: (50, 9), 1: (50, 9)}) == []
    assert [s.strikes for s in det.check(210.0, {0: (50, 9), 1: (50, 9)})] == [1, 1]


def test_a_new_generation_with_the_same_partitions_restarts_every_clock():
    det = StallDetector(T)
    assert det.check(0.0, {0: (50, 9)}, generation=1) == []
    assert det.check(59.0, {0: (50, 9)}, generation=1) == []
    assert det.check(60.0, {0: (50, 9)}, generation=2) == []
    assert det.check(119.0, {0: (50, 9)}, generation=2) == []
    assert len(det.check(120.0, {0: (50, 9)}, generation=2)) == 1


def test_an_offset_that_went_back_counts_as_a_move():
    det = StallDetector(T)
    assert det.check(0.0, {0: (50, 30)}) == []
    assert det.check(55.0, {0: (50, 20)}) == []  # e.g. the partition's table restored from an older copy
    assert det.check(114.0, {0: (50, 20)}) == []
    assert len(det.check(115.0, {0: (50, 20)})) == 1


def test_reset_forgets_everything():
    det = StallDetector(T)
    assert det.check(0.0, {0: (50, 9)}) == []
    det.reset()
    assert det.check(60.0, {0: (50, 9)}) == []
    assert len(det.check(120.0, {0: (50, 9)})) == 1


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_the_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match="stall timeout"):
        StallDetector(timeout)
