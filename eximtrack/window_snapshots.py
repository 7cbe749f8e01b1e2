"""Window snapshots (migration 017): per grouping (`by`: server, owner, user, domain), the daily mail counters
of the last `WINDOW_DAYS` whole days summed into one row per key, so that stats over 30 days merge one row
per key instead of one per (day, key) (eximtrack/hourly_read.py reads them; eximtrack/stats.py's
`HourlyStats` puts the window and the rest of the range together).

A window pins the current daily snapshot (day, seen, writer) of each day it sums (stats_snapshots: a day's
snapshot is current while the sum of its hour counters equals its `seen`). A read uses it only while every
pin is still current, so its numbers are exactly those days' numbers now. Under live mail the recent days
keep changing (deferred mail delivered days later): a day whose snapshot changed after a window pinned it is
left out of the next window (`excluded`, read day by day instead) until it has been quiet for
`QUIET_SECONDS`, so that a window is not rebuilt on every refresh. A grouping's window is rebuilt when the
day turns (its days move) and when a pinned day changed, at most every `REBUILD_SECONDS`.

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
# the whole days before today a window sums: every range of 30 days (stats_api 30d, `--since` 30 days ago)
# holds the 29 whole days before today, whatever the hour
WINDOW_DAYS = 29
# the counters a window keeps (stats.py's counted columns), with mail_daily_snap's types
WINDOW_COUNTERS = (
    "messages", "bytes", "success", "filtered", "archive", "failure", "rejected", "deferred", "inprogress",
)  # fmt: skip
QUIET_SECONDS = 3600  # a day left out because it changed comes back once its snapshot is this old
REBUILD_SECONDS = 300  # a stale window of one grouping is rebuilt at most this often

Pin = tuple[date, int, int]  # a daily snapshot: (day, seen, writer)


@dataclass(frozen=True)
class Window:
    """A recorded window of one grouping: its id (`writer`), the last day it may sum, the daily snapshots it
    summed, the days it left out as changing, and its age in seconds."""

    by: str
    writer: int
    last: date
    days: tuple[Pin, ...]
    excluded: tuple[date, ...]
    age: float


def current_days(store, first: date, last: date) -> dict[date, tuple[int, int, float]]:
    """{day: (seen, smallest writer, seconds since that snapshot was first recorded)} of the days in
    [first, last] whose daily snapshot is current: every hour with mail has a recorded hourly snapshot at its
    counter now, and the sum of those counters is the `seen` of a recorded daily snapshot."""
    rng = {"f": first, "l": last}
    hours = "hour >= toDateTime({f:Date}, 'UTC') AND hour < toDateTime({l:Date}, 'UTC') + INTERVAL 1 DAY"
    rows = store.query(
        "SELECT c.day, c.n, d.w, d.age FROM "
        "(SELECT toDate(h.hour) AS day, sum(h.n) AS n, countIf(r.w = 0) AS unclean FROM "
        f"(SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE {hours} GROUP BY hour) AS h "
        f"LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours WHERE {hours} "
        "GROUP BY hour, seen) AS r ON h.hour = r.hour AND h.n = r.seen GROUP BY day HAVING unclean = 0) AS c "
        "INNER JOIN (SELECT day, seen, min(writer) AS w, "
        "toFloat64(dateDiff('millisecond', min(taken_at), now64(3))) / 1000 AS age "
        "FROM mail_daily_snap_days WHERE day >= {f:Date} AND day <= {l:Date} GROUP BY day, seen) AS d "
        "ON c.day = d.day AND c.n = d.seen",
        rng,
    ).result_rows
    return {d: (int(n), int(w), float(age)) for d, n, w, age in rows}


def newest_windows(store) -> dict[str, Window]:
    """{by: the newest recorded window of that grouping}."""
    rows = store.query(
        "SELECT by, writer, last, days, excluded, "
        "toFloat64(dateDiff('millisecond', taken_at, now64(3))) / 1000 FROM mail_window_snap_windows "
        "ORDER BY taken_at DESC, writer LIMIT 1 BY by"
    ).result_rows
    return {
        by: Window(
            by, int(w), last, tuple((d, int(s), int(x)) for d, s, x in days), tuple(excluded), float(age)
        )
        for by, w, last, days, excluded, age in rows
    }


def plan_window(
    by: str, today: date, days: dict[date, tuple[int, int, float]], newest: Window | None
) -> tuple[list[Pin], list[date]] | None:
    """(the pins, the excluded days) of the window to build now for `by`, or None when the newest one
    serves (its days are still current and its last day is yesterday) or was built too recently to
    replace: a new one is due when the day turned, and at most every REBUILD_SECONDS when a pinned day
    changed, when a day left out has been quiet for QUIET_SECONDS, or when a day was taken that it does not
    sum (the days before today are taken once their last hours settled, after the day turned). `days` is
    current_days of the window's range."""
    last = today - timedelta(days=1)
    pinned = {d: (s, w) for d, s, w in newest.days} if newest else {}
    if newest and newest.last == last:
        stale = any(days.get(d, (None, None))[:2] != sw for d, sw in pinned.items())
        quiet = any(d in days and days[d][2] >= QUIET_SECONDS for d in newest.excluded)
        missing = set(days) - set(pinned) - set(newest.excluded)  # taken since (the last ones, above all)
        if not (stale or quiet or missing) or newest.age < REBUILD_SECONDS:
            return None
    first = today - timedelta(days=WINDOW_DAYS)
    changed = {d for d, sw in pinned.items() if days.get(d, (None, None))[:2] != sw}
    still = {d for d in (newest.excluded if newest else ()) if d in days and days[d][2] < QUIET_SECONDS}
    still |= {d for d in (newest.excluded if newest else ()) if d not in days}
    excluded = sorted(d for d in changed | still if first <= d <= last)
    pins = [(d, s, w) for d, (s, w, _) in sorted(days.items()) if first <= d <= last and d not in excluded]
    return (pins, excluded) if pins else None


def build(store, by: str, last: date, pins: list[Pin], excluded: list[date], writer: int) -> int:
    """Write, then record, the window of `by` summing the daily snapshots `pins`; returns its keys."""
    if by not in WINDOW_BY:
        raise ValueError(f"no window by {by!r}")
    params = {"pins": pins, "w": writer, "by": by, "last": last, "excluded": excluded}
    cols = ", ".join(WINDOW_COUNTERS)
    store.command(
        f"INSERT INTO mail_window_snap (writer, by, rank, key_hash, key, last, {cols}) "
        "SELECT {w:UInt64}, {by:String}, row_number() OVER (ORDER BY messages DESC, key), cityHash64(key), "
        f"key, {{last:Date}}, {cols} FROM (SELECT {by} AS key, "
        + ", ".join(f"sum({c}) AS {c}" for c in WINDOW_COUNTERS)
        + " FROM mail_daily_snap WHERE (day, seen, writer) IN {pins:Array(Tuple(Date, UInt64, UInt64))} "
        f"GROUP BY {by})",
        params,
    )
    keys = int(
        store.query(
            "SELECT count() FROM mail_window_snap WHERE writer = {w:UInt64} AND by = {by:String}", params
        ).result_rows[0][0]
    )
    store.command(
        "INSERT INTO mail_window_snap_windows (writer, by, last, days, excluded, keys) SELECT {w:UInt64}, "
        "{by:String}, {last:Date}, {pins:Array(Tuple(Date, UInt64, UInt64))}, {excluded:Array(Date)}, {k:UInt64}",
        params | {"k": keys},
    )
    return keys


def refresh(store, lock: AbstractContextManager | None = None, today: date | None = None) -> int:
    """Build the window of every grouping whose newest one no longer serves (plan_window); returns how many
    were built."""
    lock = lock or nullcontext()
    today = today or datetime.now(UTC).date()
    last = today - timedelta(days=1)
    started, built = time.monotonic(), 0
    with lock:
        days = current_days(store, today - timedelta(days=WINDOW_DAYS), last)
        newest = newest_windows(store)
    for by in WINDOW_BY:
        planned = plan_window(by, today, days, newest.get(by))
        if planned is None:
            continue
        with lock:
            build(store, by, last, *planned, writer=1 + secrets.randbelow(2**63 - 1))
        built += 1
    if built:
        log.info("stats windows: %d built in %.1fs", built, time.monotonic() - started)
    return built


def delete_unread(store, grace_seconds: float) -> int:
    """Delete, for every grouping whose newest window was recorded more than `grace_seconds` ago, its other
    windows recorded that long ago (a read in flight may use a newer one), and the rows of windows never recorded whose last day is before the newest's (a
    window of the same last day may still be being written). Returns the number of windows deleted."""
    newest = newest_windows(store)
    old: list[tuple[str, int]] = []
    for by, window in newest.items():
        if window.age < grace_seconds:
            continue
        rows = store.query(
            "SELECT DISTINCT writer FROM mail_window_snap_windows WHERE by = {by:String} AND writer != {w:UInt64} "
            "AND taken_at < now64(3) - toIntervalMillisecond({g:UInt64}) UNION DISTINCT SELECT DISTINCT writer FROM mail_window_snap WHERE by = {by:String} "
            "AND writer != {w:UInt64} AND last < {last:Date}",
            {"by": by, "w": window.writer, "last": window.last, "g": int(grace_seconds * 1000)},
        ).result_rows
        old += [(by, int(w)) for (w,) in rows]
    if old:
        cond = "(by, writer) IN {old:Array(Tuple(String, UInt64))}"
        store.command(f"DELETE FROM {store.target('mail_window_snap')} WHERE {cond}", {"old": old})
        store.command(f"DELETE FROM {store.target('mail_window_snap_windows')} WHERE {cond}", {"old": old})
    return len(old)


TABLES = ("mail_window_snap", "mail_window_snap_windows")


def clear(store) -> None:
    """Forget every window (after the set states were rebuilt, or the daily snapshots cleared)."""
    for table in TABLES:
        store.command(f"TRUNCATE TABLE {store.target(table)}")


__all__ = [
    "QUIET_SECONDS",
    "REBUILD_SECONDS",
    "TABLES",
    "WINDOW_BY",
    "WINDOW_COUNTERS",
    "WINDOW_DAYS",
    "Pin",
    "Window",
    "build",
    "clear",
    "current_days",
    "delete_unread",
    "newest_windows",
    "plan_window",
    "refresh",
]
