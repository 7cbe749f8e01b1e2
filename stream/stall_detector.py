"""Which assigned raw-lines partitions are stalled: records wait in Kafka and the worker does not process them.

faust-streaming can stop fetching a partition after a rebalance (faust-streaming#629: partitions that send
no fetch requests): its records wait, uncommitted, and nothing later arrives to show a gap (the case
`RecordGaps` in stream/app.py handles). This module owns the decision only, from numbers the worker samples
every few seconds: per partition its end offset (from Kafka, not from faust's fetch responses, which a
partition that is not fetched no longer gets) and the offset of the last record processed (-1 before the
first). It imports neither faust nor Kafka, so every rule is tested in milliseconds
(tests/unit/test_stall_detector.py); stream/app.py (`watch_stalls`) feeds it and applies the remedies.

The rules:

- A partition *waits* when records exist past the last one processed (end offset > processed + 1).
- It is *stalled* when it waited through `timeout` seconds without its processed offset moving. The clock
  starts at the later of its last progress and the first sample that saw it waiting: a partition idle for
  an hour that just received a record is not stalled.
- Nothing is judged while the worker is not ready (rebalancing, restoring its tables), and every clock
  starts again when it is ready again or its assignment changed (a rebalance re-seeks every partition).
- A stall is reported once per `timeout` while it lasts (at `timeout`, 2 x `timeout`, …): its `strikes`
  count the reports since the partition last moved, so the caller can try a cheap remedy first (strike 1)
  and a harder one if that did not help.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Stall:
    """One report: `partition` waited `stalled_for` seconds at `processed` (-1: nothing processed yet)
    while Kafka holds records up to `end` - 1; `strikes` = 1 the first time, 2 one timeout later, …"""

    partition: int
    end: int
    processed: int
    stalled_for: float
    strikes: int

    @property
    def waiting(self) -> int:
        """Records after the last one processed."""
        return self.end - self.processed - 1


@dataclass
class _Watch:
    processed: int
    since: float | None  # when the current wait at `processed` started; None while nothing waits
    strikes: int = 0  # reports of this wait


class StallDetector:
    """Feed :meth:`check` a sample of every assigned partition; it answers the partitions stalled now."""

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"stall timeout must be > 0 seconds, not {timeout}")
        self.timeout = timeout
        self._watches: dict[int, _Watch] = {}
        self._assignment: Hashable = None

    def reset(self) -> None:
        """Forget every partition (the worker is not ready, or its partitions changed)."""
        self._watches.clear()
        self._assignment = None

    def check(
        self,
        now: float,
        positions: Mapping[int, tuple[int, int]],
        *,
        ready: bool = True,
        generation: Hashable = None,
    ) -> list[Stall]:
        """`positions`: {partition: (end offset, last processed offset or -1)} of every assigned partition,
        sampled at monotonic time `now`. `ready`: the worker is in its group, not rebalancing, its tables
        restored. `generation`: anything that changes when the group's assignment was redone (faust's
        generation id), so a rebalance between two samples that kept the same partitions restarts the clocks
        too. Returns the partitions stalled now, by partition."""
        assignment = (frozenset(positions), generation)
        if not ready:
            self.reset()
            return []
        if assignment != self._assignment:
            self.reset()
            self._assignment = assignment
        stalls = []
        for partition in sorted(positions):
            end, processed = positions[partition]
            waits = end > processed + 1
            watch = self._watches.get(partition)
            if watch is None or watch.processed != processed:  # first sample, or it moved
                self._watches[partition] = _Watch(processed, now if waits else None)
            elif not waits:
                watch.since, watch.strikes = None, 0
            elif watch.since is None:  # it had caught up; records arrived since the last sample
                watch.since = now
            elif now - watch.since >= self.timeout * (watch.strikes + 1):
                watch.strikes += 1
                stalls.append(Stall(partition, end, processed, now - watch.since, watch.strikes))
        return stalls


__all__ = ["Stall", "StallDetector"]
