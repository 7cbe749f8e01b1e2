"""When the sink's Kafka consumer is made anew: it has stopped getting records it should get (pure; the sink
acts).

kafka-python 3.0's group membership can stop short of an assignment for good when the group's coordinator
fails while the group rebalances. Seen on the 3-node cluster (docs/GUARANTEES.md): after a coordinator's
SIGKILL, one failed FindCoordinator and then no join attempt for minutes, the consumer without partitions;
with the coordinator paused (SIGSTOP: a frozen VM, a blackholed host), a JoinGroup retried against it every
10 s for as long as it stays paused, never asking who coordinates the group now, the consumer keeping its
old partitions and getting nothing from them. A new consumer with the same static instance id (KIP-345)
looks the coordinator up afresh and joins; in a stable group it is handed its member's assignment without
a rebalance.

The rule, checked after every round of the sink: a round that consumed records resets the clock. After
`timeout` seconds without one, a consumer with partitions is asked whether records wait past its position
(the partitions' end offsets, from their leaders); none waiting means an idle pipeline, healthy, and the
clock starts again. Records waiting, no partition at all, or no answer: the consumer is made anew, and the
next wait is twice as long (up to `max_timeout`) until a round consumes again, so that a sink that rightly
has no partition (more sinks than partitions) is not remade every `timeout`.
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT_TIMEOUT = 30.0  # seconds without a record; a rebalance takes the session timeout (10 s) and a bit
MAX_TIMEOUT = 600.0


class GroupWatch:
    """`check(...)` after every round of the sink: True when the consumer should be made anew."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, max_timeout: float = MAX_TIMEOUT, now: float = 0.0):
        self.timeout = timeout
        self.max_timeout = max(timeout, max_timeout)
        self.wait = timeout
        self.since = now  # when a round last consumed records, or the consumer was made or found idle

    def check(
        self, consumed: bool, assigned: bool, now: float, records_waiting: Callable[[], bool | None]
    ) -> bool:
        """`consumed`: the round got records; `assigned`: the consumer has partitions; `records_waiting()`
        (asked only when the time has come, for a consumer with partitions): whether records wait past its
        position on any of them, None when that cannot be told."""
        if self.timeout <= 0:  # turned off
            return False
        if consumed:
            self.since, self.wait = now, self.timeout
            return False
        if now - self.since < self.wait:
            return False
        if assigned and records_waiting() is False:  # caught up: an idle pipeline
            self.since, self.wait = now, self.timeout
            return False
        self.since, self.wait = now, min(2 * self.wait, self.max_timeout)
        return True


__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "GroupWatch"]
