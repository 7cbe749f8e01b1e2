"""Which days the next window snapshot sums, and when one is due (eximtrack/window_snapshots.py
plan_window): pure logic over the current daily snapshots and the newest window."""

from __future__ import annotations

from datetime import date, timedelta

from eximtrack.window_snapshots import QUIET_SECONDS, REBUILD_SECONDS, WINDOW_DAYS, Window, plan_window

TODAY = date(2026, 12, 2)
D = [TODAY - timedelta(days=n) for n in range(WINDOW_DAYS + 3)]  # D[1] yesterday, D[29] the first day


def current(*days: date, seen: int = 5, age: float = 10 * QUIET_SECONDS) -> dict:
    return {d: (seen, 1, age) for d in days}


def window(days: dict, excluded=(), age: float = 10 * REBUILD_SECONDS, last: date = D[1]) -> Window:
    pins = tuple((d, s, w) for d, (s, w, _) in sorted(days.items()))
    return Window("domain", 42, last, pins, tuple(excluded), age)


def test_the_first_window_sums_every_current_day_of_the_29_before_today():
    days = current(D[1], D[2], D[29], D[30], TODAY)
    pins, excluded = plan_window("domain", TODAY, days, None)
    assert [d for d, _, _ in pins] == [D[29], D[2], D[1]] and excluded == []
    assert plan_window("domain", TODAY, {}, None) is None  # no day to sum


def test_a_window_whose_days_are_current_serves_until_the_day_turns():
    days = current(D[1], D[2])
    assert plan_window("domain", TODAY, days, window(days)) is None
    pins, _ = plan_window("domain", TODAY + timedelta(days=1), days | current(TODAY), window(days))
    assert [d for d, _, _ in pins] == [D[2], D[1], TODAY]


def test_a_changed_day_is_left_out_but_not_more_often_than_every_rebuild_interval():
    days = current(D[1], D[2], D[3])
    changed = days | {D[2]: (9, 1, 5.0)}  # taken again 5 s ago
    assert plan_window("domain", TODAY, changed, window(days, age=REBUILD_SECONDS - 1)) is None
    pins, excluded = plan_window("domain", TODAY, changed, window(days))
    assert [d for d, _, _ in pins] == [D[3], D[1]] and excluded == [D[2]]
    # a day no longer current at all (its hours changed, not taken again yet) is left out too
    pins, excluded = plan_window("domain", TODAY, current(D[1], D[3]), window(days))
    assert [d for d, _, _ in pins] == [D[3], D[1]] and excluded == [D[2]]


def test_a_day_left_out_comes_back_once_quiet_and_a_new_day_is_added():
    days = current(D[1], D[3])
    newest = window(days, excluded=[D[2]])
    assert plan_window("domain", TODAY, days | {D[2]: (9, 1, QUIET_SECONDS - 1)}, newest) is None
    pins, excluded = plan_window("domain", TODAY, days | {D[2]: (9, 1, QUIET_SECONDS)}, newest)
    assert [d for d, _, _ in pins] == [D[3], D[2], D[1]] and excluded == []
    # yesterday taken after the window of the day was built: added at the next rebuild
    early = window(current(D[3]))
    pins, _ = plan_window("domain", TODAY, days, early)
    assert [d for d, _, _ in pins] == [D[3], D[1]]
    assert plan_window("domain", TODAY, days, window(current(D[3]), age=1.0)) is None
