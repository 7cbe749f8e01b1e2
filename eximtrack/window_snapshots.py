"""Window snapshots (migration 017): per grouping (`by`: server, owner, user, domain) and span (`SPANS`: the
24 hours, 7 days and 30 days before the current hour), the mail counters of the span summed into one row
per key, so that stats over the last day, week or month merge one row per key instead of one per (day, key)
and (hour, key) (eximtrack/hourly_read.py finds them; eximtrack/stats.py's `HourlyStats` picks the longest
span its range holds and adds the rest of the range).

A window pins the snapshot it summed of each unit of its span: the current daily snapshot (day, seen,
writer) of each whole day, the clean hourly snapshot (hour, seen, writer) of each other hour (stats_snapshots:
a snapshot is current while the insert counters it was taken at are unchanged). A read uses it only while
every pin is still current and lies in the range, so its numbers are exactly those units' numbers now.

Under live mail the recent days and hours keep changing (deferred mail delivered days later): a unit whose
snapshot changed after a window pinned it is left out of the next window (`excluded`: read by the request
as before) until its snapshot has been quiet for `QUIET_SECONDS`, so that a window is not rebuilt on every
refresh. A grouping's window of a span is rebuilt when the hour turns (its span moves), and at most every
`REBUILD_SECONDS` when a pinned unit changed, an excluded one became quiet, or a unit was taken that it does
not sum.

Written by `refresh` (called by stats_snapshots.refresh after the daily snapshots: the sink every 30 s,
`eximtrack ingest`, `eximtrack rollup`); the rows first, then the record in `mail_window_snap_windows`.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

log = logging.getLogger("eximtrack.window_snapshots")

WINDOW_BY = ("server", "owner", "user", "domain")
# a window covers the hours [current hour - span, current hour): a request for the last 30 days made in
# that hour starts there ([hour(now - 30 days), now)), and only its current hour is read besides; the
# shorter spans serve the last day and week the same way
SPANS = (timedelta(days=1), timedelta(days=7), timedelta(days=30))
# the counters a window keeps (stats.py's counted columns), with the snapshot tables' types
WINDOW_COUNTERS = (
    "messages", "bytes", "success", "filtered", "archive", "failure", "rejected", "deferred", "inprogress",
)  # fmt: skip
QUIET_SECONDS = 3600  # a unit left out because it changed comes back once its snapshot is this old
REBUILD_SECONDS = 300  # a window of one grouping is rebuilt within its hour at most this often

Current = dict  # {day or hour: (seen, smallest writer, seconds since that snapshot was first recorded)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the rollup horizon of a store never rolled up
Pin = tuple  # (day or hour, seen, writer)


@dataclass(frozen=True)
class Window:
    """A recorded window of one grouping: its id (`writer`), its span [start, end) (its length: one of
    SPANS), the daily and hourly snapshots it summed, the days and hours it left out as changing, and its
    age in seconds."""

    by: str
    writer: int
    start: datetime
    end: datetime
    days: tuple[Pin, ...]
    hours: tuple[Pin, ...]
    excluded_days: tuple[date, ...] = ()
    excluded_hours: tuple[datetime, ...] = ()
    age: float = 0.0
    horizon: datetime = EPOCH


@dataclass(frozen=True)
class Planned:
    """The window to build: its span, pins and left-out units, and the rollup horizon: the hours of the span
    before it are summed from the rolled-up totals."""

    start: datetime
    end: datetime
    days: list[Pin]
    hours: list[Pin]
    excluded_days: list[date]
    excluded_hours: list[datetime]
    horizon: datetime = EPOCH

    @property
    def rolled(self) -> bool:
        return self.start < self.horizon


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def span_of(now: datetime, span: timedelta | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the window of `span` (default: the longest of SPANS) for the hour of `now`."""
    end = utc(now).replace(minute=0, second=0, microsecond=0)
    return end - (span or SPANS[-1]), end


def whole_days(start: datetime, end: datetime) -> list[date]:
    """The days all of whose hours lie in [start, end)."""
    first = start.date() if start.hour == 0 else start.date() + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((end.date() - first).days)]


def current(store, start: datetime, end: datetime) -> tuple[Current, Current]:
    """(the days of [start, end) whose daily snapshot is current, its clean hours): a day is current when
    every hour of it with mail has a recorded hourly snapshot at its counter now and their sum is the
    `seen` of a recorded daily snapshot; an hour is clean when a snapshot was recorded at its counter now."""
    rng = {"s": start, "e": end}
    hours = "hour >= {s:DateTime('UTC')} AND hour < {e:DateTime('UTC')}"
    counters = f"(SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE {hours} GROUP BY hour)"
    recorded = (
        "(SELECT hour, seen, min(writer) AS w, "
        "toFloat64(dateDiff('millisecond', min(taken_at), now64(3))) / 1000 AS age "
        f"FROM mail_hourly_snap_hours WHERE {hours} GROUP BY hour, seen)"
    )
    by_hour = store.query(
        f"SELECT c.hour, c.n, r.w, r.age FROM {counters} AS c LEFT JOIN {recorded} AS r "
        "ON c.hour = r.hour AND c.n = r.seen",
        rng,
    ).result_rows
    clean = {utc(h): (int(n), int(w), float(age)) for h, n, w, age in by_hour if w}
    sums: dict[date, int] = {}
    for h, n, _, _ in by_hour:
        sums[utc(h).date()] = sums.get(utc(h).date(), 0) + int(n)
    broken = {utc(h).date() for h, _, w, _ in by_hour if not w}
    days = store.query(
        "SELECT day, seen, min(writer), toFloat64(dateDiff('millisecond', min(taken_at), now64(3))) / 1000 "
        "FROM mail_daily_snap_days WHERE day >= toDate({s:DateTime('UTC')}) AND day < toDate({e:DateTime('UTC')}) "
        "GROUP BY day, seen",
        rng,
    ).result_rows
    whole = set(whole_days(start, end))
    current_days = {
        d: (int(seen), int(w), float(age))
        for d, seen, w, age in days
        if d in whole and d not in broken and sums.get(d) == int(seen)
    }
    return current_days, clean


def newest_windows(store) -> dict[tuple[str, timedelta], Window]:
    """{(by, span): the newest recorded window of that grouping and span}."""
    rows = store.query(
        "SELECT by, writer, start, end, days, hours, excluded_days, excluded_hours, "
        "toFloat64(dateDiff('millisecond', taken_at, now64(3))) / 1000, horizon FROM mail_window_snap_windows "
        "ORDER BY taken_at DESC, writer LIMIT 1 BY by, end - start"
    ).result_rows
    return {
        (by, utc(end) - utc(start)): Window(
            by,
            int(w),
            utc(start),
            utc(end),
            tuple((d, int(s), int(x)) for d, s, x in days),
            tuple((utc(h), int(s), int(x)) for h, s, x in hours),
            tuple(xd),
            tuple(utc(h) for h in xh),
            float(age),
            utc(horizon),
        )
        for by, w, start, end, days, hours, xd, xh, age, horizon in rows
    }


def _changed(pins: tuple[Pin, ...], now: Current) -> set:
    return {u for u, s, w in pins if now.get(u, (None, None))[:2] != (s, w)}


def plan_window(
    now: datetime,
    days: Current,
    hours: Current,
    newest: Window | None,
    horizon: datetime = EPOCH,
    span: timedelta | None = None,
) -> Planned | None:
    """The window of `span` (default: the longest of SPANS) to build for the hour of `now` from the current
    `days` and clean `hours` of (at least) its span (as `current` returns them) and the rollup `horizon`
    (the hours before it are summed from the totals; the days and hours pinned start at it), or None when the newest one serves or was built too recently to
    replace: a new one is due when the hour turned or the horizon moved, and at most every REBUILD_SECONDS
    when a pinned unit changed, when a unit left out has been quiet for QUIET_SECONDS, or when a unit was
    taken that it does not sum."""
    start, end = span_of(now, span)
    horizon = utc(horizon)
    days = {d: v for d, v in days.items() if d in set(whole_days(max(start, horizon), end))}
    hours = {h: v for h, v in hours.items() if max(start, horizon) <= h < end}
    old_days = newest.excluded_days if newest else ()
    old_hours = newest.excluded_hours if newest else ()
    if newest and newest.end == end and newest.horizon == horizon:
        stale = _changed(newest.days, days) or _changed(newest.hours, hours)
        quiet = any(d in days and days[d][2] >= QUIET_SECONDS for d in old_days) or any(
            h in hours and hours[h][2] >= QUIET_SECONDS for h in old_hours
        )
        summed = {d for d, _, _ in newest.days}
        missing = (set(days) - summed - set(old_days)) or {
            h for h in hours if h.date() not in summed and h not in old_hours and h.date() not in old_days
        } - {h for h, _, _ in newest.hours}
        if not (stale or quiet or missing) or newest.age < REBUILD_SECONDS:
            return None

    def left_out(pinned: tuple[Pin, ...], excluded: tuple, now_: Current) -> list:
        still = {u for u in excluded if u not in now_ or now_[u][2] < QUIET_SECONDS}
        return sorted(u for u in _changed(pinned, now_) | still if start.date() <= _day(u) and _at(u) < end)

    excluded_days = left_out(newest.days if newest else (), old_days, days)
    excluded_hours = left_out(newest.hours if newest else (), old_hours, hours)
    day_pins = [(d, s, w) for d, (s, w, _) in sorted(days.items()) if d not in excluded_days]
    taken = {d for d, _, _ in day_pins} | set(excluded_days)
    hour_pins = [
        (h, s, w)
        for h, (s, w, _) in sorted(hours.items())
        if h.date() not in taken and h not in excluded_hours
    ]
    if not day_pins and not hour_pins and horizon <= start:
        return None
    return Planned(start, end, day_pins, hour_pins, excluded_days, excluded_hours, horizon)


def _day(unit) -> date:
    return unit.date() if isinstance(unit, datetime) else unit


def _at(unit) -> datetime:
    return unit if isinstance(unit, datetime) else datetime(unit.year, unit.month, unit.day, tzinfo=UTC)


def build(store, by: str, planned: Planned, writer: int) -> int:
    """Write, then record, the window of `by` summing the pinned daily and hourly snapshots; returns its
    keys."""
    if by not in WINDOW_BY:
        raise ValueError(f"no window by {by!r}")
    cols = ", ".join(WINDOW_COUNTERS)
    last = (planned.end - timedelta(hours=1)).date()
    params = {
        "w": writer,
        "by": by,
        "start": planned.start,
        "end": planned.end,
        "last": last,
        "days": planned.days,
        "hours": planned.hours,
        "xd": planned.excluded_days,
        "xh": planned.excluded_hours,
        "horizon": planned.horizon,
    }
    rolled = ""
    if planned.rolled:  # final numbers of the hours before the horizon, as hourly_read reads them
        rolled = (
            f" UNION ALL SELECT {by} AS key, {cols} FROM mail_hourly_totals FINAL "
            "WHERE hour >= {start:DateTime('UTC')} AND hour < {horizon:DateTime('UTC')}"
        )
    store.command(
        f"INSERT INTO mail_window_snap (writer, by, rank, key_hash, key, last, {cols}) "
        "SELECT {w:UInt64}, {by:String}, row_number() OVER (ORDER BY messages DESC, key), cityHash64(key), "
        f"key, {{last:Date}}, {cols} FROM (SELECT key, "
        + ", ".join(f"sum({c}) AS {c}" for c in WINDOW_COUNTERS)
        + f" FROM (SELECT {by} AS key, {cols} FROM mail_daily_snap "
        "WHERE (day, seen, writer) IN {days:Array(Tuple(Date, UInt64, UInt64))} "
        f"UNION ALL SELECT {by} AS key, {cols} FROM mail_hourly_snap "
        "WHERE (hour, seen, writer) IN {hours:Array(Tuple(DateTime('UTC'), UInt64, UInt64))}"
        f"{rolled}) GROUP BY key)",
        params,
    )
    keys = int(
        store.query(
            "SELECT count() FROM mail_window_snap WHERE writer = {w:UInt64} AND by = {by:String}", params
        ).result_rows[0][0]
    )
    store.command(
        "INSERT INTO mail_window_snap_windows (writer, by, start, end, horizon, last, days, hours, "
        "excluded_days, excluded_hours, keys) SELECT {w:UInt64}, {by:String}, {start:DateTime('UTC')}, "
        "{end:DateTime('UTC')}, {horizon:DateTime('UTC')}, {last:Date}, {days:Array(Tuple(Date, UInt64, UInt64))}, "
        "{hours:Array(Tuple(DateTime('UTC'), UInt64, UInt64))}, {xd:Array(Date)}, "
        "{xh:Array(DateTime('UTC'))}, {k:UInt64}",
        params | {"k": keys},
    )
    return keys


def refresh(
    store,
    lock: AbstractContextManager | None = None,
    now: datetime | None = None,
    horizon: datetime = EPOCH,
) -> int:
    """Build the window of every grouping and span whose newest one no longer serves (plan_window), with the
    rollup `horizon` (stats_snapshots.refresh passes it); returns how many were built."""
    lock = lock or nullcontext()
    now = now or datetime.now(UTC)
    started, built = time.monotonic(), 0
    with lock:
        days, hours = current(store, *span_of(now, max(SPANS)))
        newest = newest_windows(store)
    for span in SPANS:
        for by in WINDOW_BY:
            planned = plan_window(now, days, hours, newest.get((by, span)), horizon, span)
            if planned is None:
                continue
            with lock:
                build(store, by, planned, writer=1 + secrets.randbelow(2**63 - 1))
            built += 1
    if built:
        log.info("stats windows: %d built in %.1fs", built, time.monotonic() - started)
    return built


def delete_unread(store, grace_seconds: float) -> int:
    """Delete, for every grouping and span whose newest window was recorded more than `grace_seconds` ago,
    its other windows recorded that long ago (a read in flight may use a newer one), and the rows of the
    grouping's windows never recorded whose last day is before the newest's (a window of the same last day
    may still be being written). Returns the number of windows deleted."""
    old: set[tuple[str, int]] = set()
    for (by, span), window in newest_windows(store).items():
        if window.age < grace_seconds:
            continue
        rows = store.query(
            "SELECT DISTINCT writer FROM mail_window_snap_windows WHERE by = {by:String} AND writer != {w:UInt64} "
            "AND end - start = {span:UInt32} AND taken_at < now64(3) - toIntervalMillisecond({g:UInt64}) "
            "UNION DISTINCT SELECT DISTINCT writer FROM mail_window_snap WHERE by = {by:String} "
            "AND writer != {w:UInt64} AND last < {last:Date} "
            "AND writer NOT IN (SELECT writer FROM mail_window_snap_windows WHERE by = {by:String})",
            {
                "by": by,
                "w": window.writer,
                "span": int(span.total_seconds()),
                "last": (window.end - timedelta(hours=1)).date(),
                "g": int(grace_seconds * 1000),
            },
        ).result_rows
        old |= {(by, int(w)) for (w,) in rows}
    if old:
        cond = "(by, writer) IN {old:Array(Tuple(String, UInt64))}"
        store.command(f"DELETE FROM {store.target('mail_window_snap')} WHERE {cond}", {"old": sorted(old)})
        store.command(
            f"DELETE FROM {store.target('mail_window_snap_windows')} WHERE {cond}", {"old": sorted(old)}
        )
    return len(old)


TABLES = ("mail_window_snap", "mail_window_snap_windows")


def clear(store) -> None:
    """Forget every window (after the set states were rebuilt: their counters start again)."""
    for table in TABLES:
        store.command(f"TRUNCATE TABLE {store.target(table)}")


__all__ = [
    "QUIET_SECONDS",
    "REBUILD_SECONDS",
    "SPANS",
    "TABLES",
    "WINDOW_BY",
    "WINDOW_COUNTERS",
    "Current",
    "EPOCH",
    "Pin",
    "Planned",
    "Window",
    "build",
    "clear",
    "current",
    "delete_unread",
    "newest_windows",
    "plan_window",
    "refresh",
    "span_of",
    "utc",
    "whole_days",
]
