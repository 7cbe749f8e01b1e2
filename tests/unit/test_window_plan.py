"""Which days and hours the next window snapshot sums, and when one is due (eximtrack/window_snapshots.py
plan_window): pure logic over the current daily and hourly snapshots and the newest window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from eximtrack.window_snapshots import (
    QUIET_SECONDS,
    REBUILD_SECONDS,
    Window,
    plan_window,
    span_of,
    whole_days,
)

NOW = datetime(2026, 12, 2, 9, 40, tzinfo=UTC)  # the window spans [Nov 2 09:00, Dec 2 09:00)
START, END = span_of(NOW)
D = [NOW.date() - timedelta(days=n) for n in range(32)]  # D[1] yesterday, D[29] the first whole day


def hour(day: date, h: int) -> datetime:
    return datetime(day.year, day.month, day.day, h, tzinfo=UTC)


def snap(*units, seen: int = 5, age: float = 10 * QUIET_SECONDS) -> dict:
    return {u: (seen, 1, age) for u in units}


def window(days: dict, hours: dict, age: float = 10 * REBUILD_SECONDS, end: datetime = END, **excluded):
    def pins(units: dict) -> tuple:
        return tuple((u, s, w) for u, (s, w, _) in sorted(units.items()))

    return Window("domain", 42, end - timedelta(days=30), end, pins(days), pins(hours), age=age, **excluded)


def units(planned) -> tuple[list, list, list, list]:
    return (
        [d for d, _, _ in planned.days],
        [h for h, _, _ in planned.hours],
        planned.excluded_days,
        planned.excluded_hours,
    )


def test_the_span_is_the_30_days_before_the_current_hour():
    assert (hour(D[30], 9), hour(D[0], 9)) == (START, END)
    assert whole_days(START, END) == [D[n] for n in range(29, 0, -1)]
    assert whole_days(hour(D[3], 0), hour(D[1], 0)) == [D[3], D[2]]


def test_the_first_window_sums_whole_days_and_the_clean_hours_of_the_others():
    days = snap(D[1], D[2], D[29], D[30], D[0])  # D[30] and today are not whole days of the span
    hours = snap(hour(D[30], 8), hour(D[30], 9), hour(D[30], 23), hour(D[2], 5), hour(D[5], 3), hour(D[0], 8))
    hours |= snap(hour(D[0], 9))  # the current hour: after the span
    planned = plan_window(NOW, days, hours, None)
    assert (planned.start, planned.end) == (START, END)
    # D[5] has no current daily snapshot (one of its hours changed): its clean hours are summed instead
    assert units(planned) == (
        [D[29], D[2], D[1]],
        [hour(D[30], 9), hour(D[30], 23), hour(D[5], 3), hour(D[0], 8)],
        [],
        [],
    )
    assert plan_window(NOW, {}, {}, None) is None  # nothing to sum


def test_a_window_whose_units_are_current_serves_until_the_hour_turns():
    days, hours = snap(D[1], D[2]), snap(hour(D[0], 3))
    newest = window(days, hours)
    assert plan_window(NOW, days, hours, newest) is None
    later = plan_window(NOW + timedelta(minutes=30), days, hours, newest)
    assert units(later) == ([D[2], D[1]], [hour(D[0], 3)], [], [])
    assert (later.start, later.end) == (START + timedelta(hours=1), END + timedelta(hours=1))


def test_a_changed_unit_is_left_out_but_not_more_often_than_every_rebuild_interval():
    days, hours = snap(D[1], D[2], D[3]), snap(hour(D[0], 3), hour(D[0], 4))
    changed_days = days | {D[2]: (9, 1, 5.0)}  # taken again 5 s ago
    changed_hours = hours | {hour(D[0], 3): (9, 1, 5.0)}
    assert plan_window(NOW, changed_days, hours, window(days, hours, age=REBUILD_SECONDS - 1)) is None
    planned = plan_window(NOW, changed_days, changed_hours, window(days, hours))
    assert units(planned) == ([D[3], D[1]], [hour(D[0], 4)], [D[2]], [hour(D[0], 3)])
    # a unit no longer current at all (changed, not taken again yet) is left out too
    planned = plan_window(NOW, snap(D[1], D[3]), snap(hour(D[0], 4)), window(days, hours))
    assert units(planned) == ([D[3], D[1]], [hour(D[0], 4)], [D[2]], [hour(D[0], 3)])


def test_a_unit_left_out_comes_back_once_quiet_and_a_new_unit_is_added():
    days, hours = snap(D[1], D[3]), snap(hour(D[0], 4))
    newest = window(days, hours, excluded_days=(D[2],), excluded_hours=(hour(D[0], 3),))
    noisy = days | {D[2]: (9, 1, QUIET_SECONDS - 1)}
    assert plan_window(NOW, noisy, hours | {hour(D[0], 3): (9, 1, QUIET_SECONDS - 1)}, newest) is None
    quiet = plan_window(NOW, days | {D[2]: (9, 1, QUIET_SECONDS)}, hours, newest)
    assert units(quiet) == ([D[3], D[2], D[1]], [hour(D[0], 4)], [], [hour(D[0], 3)])
    # an hour taken after the window was built (the last one settles after the hour turned): added at the
    # next rebuild, not before REBUILD_SECONDS
    later = hours | snap(hour(D[0], 8))
    assert units(plan_window(NOW, days, later, window(days, hours))) == (
        [D[3], D[1]],
        [hour(D[0], 4), hour(D[0], 8)],
        [],
        [],
    )
    assert plan_window(NOW, days, later, window(days, hours, age=1.0)) is None


def test_a_shorter_span_sums_only_its_own_days_and_hours():
    days = snap(D[1], D[2], D[6], D[7])
    hours = snap(hour(D[1], 9), hour(D[1], 8), hour(D[0], 3), hour(D[7], 9), hour(D[7], 10))
    day = plan_window(NOW, days, hours, None, span=timedelta(days=1))
    assert (day.start, day.end) == (hour(D[1], 9), END)  # yesterday 09:00 is not a whole day of it
    assert units(day) == ([], [hour(D[1], 9), hour(D[0], 3)], [], [])
    week = plan_window(NOW, days, hours, None, span=timedelta(days=7))
    assert (week.start, week.end) == (hour(D[7], 9), END)
    assert units(week) == ([D[6], D[2], D[1]], [hour(D[7], 9), hour(D[7], 10), hour(D[0], 3)], [], [])
