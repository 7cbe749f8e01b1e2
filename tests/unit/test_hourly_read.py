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
