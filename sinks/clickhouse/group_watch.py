"""When the sink's Kafka consumer is made anew: it has had no partition for too long (pure; the sink acts).

kafka-python 3.0's group membership can stop short of an assignment for good when the group's coordinator
dies while the group rebalances: seen on a 3-node cluster, a SyncGroup never answered, then after the
coordinator's SIGKILL one failed FindCoordinator and no further join attempt for minutes, the sink polling
without partitions and storing nothing (docs/GUARANTEES.md). A new consumer with the same static instance id
(KIP-345) joins afresh; in a stable group the coordinator hands it its member's assignment without a
rebalance. A sink that rightly has no partition (more sinks than partitions) would be remade at every
timeout: after each remake that finds none the wait doubles, up to `max_timeout`, and it starts again from
`timeout` once partitions came.
"""

from __future__ import annotations

DEFAULT_TIMEOUT = 30.0  # seconds without a partition; a rebalance takes the session timeout (10 s) and a bit
MAX_TIMEOUT = 600.0


class GroupWatch:
    """`check(assigned, now)` after every round of the sink: True when the consumer should be made anew."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, max_timeout: float = MAX_TIMEOUT, now: float = 0.0):
        self.timeout = timeout
        self.max_timeout = max(timeout, max_timeout)
        self.wait = timeout
        self.since = now  # when the consumer last had partitions (or was made)

    def check(self, assigned: bool, now: float) -> bool:
        if self.timeout <= 0:  # turned off
            return False
        if assigned:
            self.since, self.wait = now, self.timeout
            return False
        if now - self.since < self.wait:
            return False
        self.since, self.wait = now, min(2 * self.wait, self.max_timeout)
        return True


__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "GroupWatch"]
