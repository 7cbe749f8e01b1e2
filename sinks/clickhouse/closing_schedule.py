"""When the sink closes hours: `eximtrack sink --close-hours-after-days N` rolls the hours of mail_hourly older
than N days into mail_hourly_totals and drops their set states, as `eximtrack rollup --drop-states` does
(eximtrack/stats.py `rollup`; docs/SQL.md).

Why the sink: an embedded store admits one process, and while the sink runs that is the sink, so a timer
running `eximtrack rollup` cannot open it; the states would then grow for the aggregates' whole TTL.

Each step rolls at most `step` (an hour) of hours past the horizon, and the sink's inserts wait for it: an
hour's states at 1e8 events (~20k keys) take 0.21-0.34 s to roll, a day's 4-5 s (docs/BENCHMARKS.md, session
44), so a store with weeks to close catches up a step every `catch_up_seconds` instead of stalling once.
Caught up, it looks again every `check_seconds`. The horizon starts at the first stored hour, not in the empty
past before it. A failed step is logged and tried again at the next check: closing hours saves space and
reading time, exact numbers never depend on it.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

from eximtrack.stats import rollup, rollup_horizon
from eximtrack.stats_snapshots import as_utc

log = logging.getLogger("eximtrack.sink")

STEP = timedelta(hours=1)
CHECK_SECONDS = 600.0
CATCH_UP_SECONDS = 10.0
FIRST_AFTER_SECONDS = 60.0  # not while the sink starts


def first_stored_hour(store) -> datetime | None:
    """The oldest hour of mail_hourly's states, None when it holds none."""
    rows = store.query("SELECT min(hour), count() FROM mail_hourly", readonly=True).result_rows
    if not rows or not rows[0][1]:
        return None
    return as_utc(rows[0][0])


def next_step(
    horizon: datetime, first: datetime | None, target: datetime, step: timedelta
) -> datetime | None:
    """Where one step moves the horizon (rolling the hours before it), given the current horizon, the oldest
    stored hour and the hour before which every hour is closed; None when there is nothing to close. Pure."""
    if first is None:
        return None
    start = max(horizon, first.replace(minute=0, second=0, microsecond=0))
    if start >= target:
        return None
    return min(target, start + step)


class ClosingSchedule:
    """`maybe()` between the sink's batches: one step when one is due (see the module's docstring)."""

    def __init__(self, store, after_days: int, *, lock=None, clock=time.time, step: timedelta = STEP,
                 check_seconds: float = CHECK_SECONDS, catch_up_seconds: float = CATCH_UP_SECONDS,
                 first_after: float = FIRST_AFTER_SECONDS) -> None:  # fmt: skip
        if after_days <= 0:
            raise ValueError("hours are closed at least a day after they end")
        self.store, self.lock, self.clock = store, lock or nullcontext(), clock
        self.after, self.step = timedelta(days=after_days), step
        self.check_seconds, self.catch_up_seconds = check_seconds, catch_up_seconds
        self.due = clock() + first_after
        self.steps = 0
        self.failures = 0

    def maybe(self) -> dict | None:
        """One step's `rollup` result when a step ran, else None."""
        now = self.clock()
        if now < self.due:
            return None
        target = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0) - self.after
        try:
            with self.lock:
                until = next_step(
                    rollup_horizon(self.store), first_stored_hour(self.store), target, self.step
                )
                done = None if until is None else rollup(self.store, until, drop_states=True)
        except Exception as exc:  # noqa: BLE001 - a saving in size must never stop the sink
            self.failures += 1
            self.due = now + self.check_seconds
            log.warning("closing hours failed (%s); trying again in %.0f s", exc, self.check_seconds)
            return None
        if done is None:
            self.due = now + self.check_seconds
            return None
        self.steps += 1
        caught_up = done["horizon"] >= target
        self.due = now + (self.check_seconds if caught_up else self.catch_up_seconds)
        log.info(
            "closed the hours before %s UTC (%d keys rolled up%s)%s",
            f"{done['horizon']:%Y-%m-%d %H:%M}",
            done["rolled_keys"],
            f"; states of {', '.join(done['dropped_partitions'])} dropped"
            if done["dropped_partitions"]
            else "",
            "" if caught_up else f"; more in {self.catch_up_seconds:.0f} s",
        )
        return done


__all__ = ["CATCH_UP_SECONDS", "CHECK_SECONDS", "STEP", "ClosingSchedule", "first_stored_hour", "next_step"]
