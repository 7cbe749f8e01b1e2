"""Pure parts of eximtrack/hourly_read.py: whether an hour range can hold a whole day (the plan skips the
daily snapshots' lookup when it cannot)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from eximtrack.hourly_read import may_hold_whole_day


def _holds_whole_day(since: datetime, until: datetime) -> bool:
    """By enumeration: a day starting at or after `since` whose last hour starts before `until`
    (the condition hourly_read.whole_days puts in SQL)."""
    day = since.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    while day < until:
        if day >= since and day + timedelta(hours=23) < until:
            return True
        day += timedelta(days=1)
    return False


def test_whole_day_check_agrees_with_enumeration():
    rng = random.Random(7)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    cases = [
        (base, base + timedelta(hours=24)),  # midnight to midnight: one whole day
        (base, base + timedelta(hours=23, minutes=59)),  # the day's last hour starts before until
        (base, base + timedelta(hours=23)),  # ... and here it does not
        (base + timedelta(hours=10), base + timedelta(hours=34, minutes=49)),  # "last 24 h": none
        (base + timedelta(hours=10), base + timedelta(days=30, hours=10)),  # "last 30 days": 29
    ]
    for _ in range(2000):
        since = base + timedelta(hours=rng.randrange(0, 24 * 40))
        cases.append((since, since + timedelta(minutes=rng.randrange(1, 60 * 24 * 4))))
    for since, until in cases:
        got = may_hold_whole_day({"since": since, "until": until})
        assert got == _holds_whole_day(since, until), (since, until)
    assert (
        may_hold_whole_day({}) and may_hold_whole_day({"since": base}) and may_hold_whole_day({"until": base})
    )


def test_the_plan_joins_each_hours_counter_with_the_snapshot_recorded_at_it():
    """ReadPlan.of over the rows of the one-statement plan (ReadPlan.sql: a UNION ALL whose branches come in
    any order): an hour from the horizon on is clean with the smallest writer of a snapshot recorded at its
    current counter, dirty when none was (a snapshot at an older counter does not count); hours and days
    before the horizon are left to the rolled-up totals; a day is used while its recorded `seen` equals
    the sum of its hours' counters and none of them is dirty; of the windows the newest usable one."""
    from datetime import date

    from eximtrack.hourly_read import ReadPlan

    def at(day: int, hour: int) -> datetime:
        return datetime(2026, 11, day, hour, tzinfo=UTC)

    nothing = ([], [], datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC), 0)
    rows = [
        ("c", at(2, 0), 5, 0, *nothing),  # before the horizon: rolled up
        ("c", at(3, 0), 7, 0, *nothing),
        ("s", at(3, 0), 7, 42, *nothing),
        ("s", at(3, 0), 7, 41, *nothing),  # two writers at the current counter: the smaller
        ("c", at(3, 1), 9, 0, *nothing),
        ("s", at(3, 1), 8, 43, *nothing),  # recorded at an older counter: dirty
        ("c", at(4, 0), 3, 0, *nothing),
        ("s", at(4, 0), 3, 44, *nothing),
        ("d", at(4, 0), 3, 50, *nothing),  # the day's counters sum to 3: current
        ("d", at(3, 0), 16, 51, *nothing),  # a dirty hour that day: not used
        ("d", at(2, 0), 5, 52, *nothing),  # before the horizon
        ("z", at(3, 0), 0, 0, *nothing),
    ]
    window = [(date(2026, 11, 4), 3, 50)], [(at(3, 0), 7, 41)]
    older = [(date(2026, 11, 4), 3, 50)], []
    rows += [
        ("w", at(1, 0), 1_000, 60, *older, at(3, 0), at(3, 0), 11),
        ("w", at(1, 0), 2_000, 61, *window, at(3, 0), at(3, 0), 12),
    ]
    for order in (rows, rows[::-1]):
        plan = ReadPlan.of(order, at(1, 0), at(5, 0))
        assert plan.horizon == at(3, 0) and plan.rolled
        assert plan.dirty == (at(3, 1),)
        assert set(plan.clean) == {(at(3, 0), 7, 41), (at(4, 0), 3, 44)}
        assert plan.days == ((date(2026, 11, 4), 3, 50),)
        assert plan.window is not None and (plan.window.writer, plan.window.keys) == (61, 12)
        assert plan.window.hours == {at(3, 0)} and plan.window.days == {date(2026, 11, 4)}
    # the newest window pins an hour that is dirty now: the older one serves
    stale = [r for r in rows if r[0] != "s" or r[3] != 41]
    plan = ReadPlan.of(stale, at(1, 0), at(5, 0))
    assert (at(3, 0), 7, 42) in plan.clean and plan.window is not None and plan.window.writer == 60
    assert not ReadPlan.of(rows, at(3, 0), at(5, 0)).rolled
