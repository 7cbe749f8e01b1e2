"""Reading the hourly mail counters of one range, each hour from its one source: the SQL that
`eximtrack stats` and `/api/v1/stats` use instead of the view `mail_hourly_all`.

The rule is that of `mail_hourly_all` (migrations 005 and 008): the rolled-up totals before the rollup
horizon; from the horizon on, the hour's snapshot recorded at its current insert counter (clean), else its
merged set states (dirty). The view decides clean and dirty for EVERY stored hour on each read and reads all
three sources whatever the range. Here a read is two statements: `plan()` classifies the hours of the range
only (a `ReadPlan`: the horizon and the dirty hours), then `source()` reads only the sources holding hours of
the range, and pre-aggregates the snapshot branch by the caller's keys when they are the keys of an
aggregate projection of `mail_hourly_snap` (migration 010: per hour, per hour and server), so that
ClickHouse answers it from the projection instead of the per-sender rows. (One statement that classifies
the hours itself was measured slower: every UNION branch costs a few ms even when empty.)

Whole days of the range whose daily snapshot (migration 013) is current — its `seen` equals the sum of the
day's hour counters — are read from `mail_daily_snap` instead of hour by hour, when the request neither
groups nor filters by `hour` or `sender` and asks only for counters summable over hours (not
`rcpt_addresses`): one row per (day, key), and per (day, server), (day, user) or (day, domain) from its
projections.

The counters are plain numbers summable over keys and hours (each message and each recipient row belongs to
one key and one hour), except `rcpt_addresses` (distinct addresses of one key and hour). Callers aggregate
the source again with sum(), grouped by any subset of the keys they asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from eximtrack.stats_snapshots import DAILY_COUNTERS, DAILY_KEYS, HORIZON_SQL, MAIL, Snapshotted, as_utc
from eximtrack.window_snapshots import SPANS, WINDOW_BY

KEY_COLUMNS = ("hour", "server", "owner", "user", "domain", "sender", "outbound")
COUNTER_COLUMNS = (
    "messages", "bytes", "recipients", "rcpt_addresses", "rows", "inprogress", "deferred", "success",
    "filtered", "archive", "failure", "rejected", "deferred_ever", "defer_or_fail_ever", "defer_attempts",
)  # fmt: skip

# the keys of the aggregate projections of mail_hourly_snap (migration 010), besides (hour, seen, writer)
PROJECTED_KEYS = ("hour", "server", "outbound")
# ... and of mail_daily_snap's (migration 013), besides (day, seen, writer): any one of these sets
DAILY_PROJECTIONS = tuple(frozenset({k, "outbound"}) for k in ("outbound", "server", "user", "domain"))


@dataclass(frozen=True)
class WindowRead:
    """A window snapshot (migration 017) a read can use: its writer, the days and hours it sums from their
    snapshots, `rolled_from`: the first hour it sums from the rolled-up totals (up to the horizon), or
    None, and how many keys it holds."""

    writer: int
    days: frozenset[date]
    hours: frozenset[datetime]
    rolled_from: datetime | None = None
    keys: int = 0  # rows (keys) the window holds


@dataclass(frozen=True)
class ReadPlan:
    """Where the hours of one range are, decided by one statement (`plan`): the rollup horizon, the hours
    from it on that changed since their last recorded snapshot (dirty: no snapshot was recorded at their
    current insert counter), the snapshot of each other hour (clean), whether the range starts before the
    horizon (rolled), and the whole days with a current daily snapshot. `source()` then reads only the
    sources that hold hours of the range, each clean hour from the snapshot planned for it: that snapshot
    is complete (recorded after its rows) and stays until 10 minutes after a newer one was recorded
    (stats_snapshots.SUPERSEDED_GRACE_SECONDS), far longer than the two statements of a read."""

    horizon: datetime
    dirty: tuple[datetime, ...]
    # the hours of the range from the horizon on with a snapshot recorded at their current counter:
    # (hour, seen, smallest writer), the one snapshot each is read from
    clean: tuple[tuple[datetime, int, int], ...]
    rolled: bool  # the range has hours before the horizon (read from the rolled-up totals)
    # whole days of the range from the horizon on with a current daily snapshot: (day, seen, writer)
    days: tuple[tuple[date, int, int], ...] = ()
    # the newest window snapshot (migration 017) of the requested grouping all of whose pinned days are
    # among `days` and pinned hours among `clean`, built at this horizon, whose rolled hours are in the range
    window: WindowRead | None = None

    @classmethod
    def sql(
        cls, range_sql: str, days_sql: str | None = None, window_by: bool = False, bounded: bool = True
    ) -> str:
        """One statement of rows (kind, time, seen, writer, days, hours, start, horizon, keys), one branch
        of a UNION ALL per source, so that ClickHouse reads them side by side (as scalar subqueries of one
        SELECT they were read one after another: the plan of a 30-day stats request took 26-27 ms at 1e8
        events, 22-23 so; a day's 16-17 and 13; docs/BENCHMARKS.md, session 43):
        - 'z' the rollup horizon (`time`);
        - 'c' per hour of `range_sql` (a condition on `hour`) its insert counter (`seen`);
        - 's' per (hour, seen) of the range's recorded snapshots the smallest writer;
        - with `days_sql` (a condition on `day` selecting the whole days of the range), 'd' per (day, seen) of
          their recorded daily snapshots the smallest writer;
        - with `window_by`, 'w' the two newest window snapshots of the grouping bound as {hr_by:String} and
          the span bound as {hr_span:Int32} (seconds): writer, pinned days, pinned hours, start, horizon,
          keys, and in `seen` their `taken_at` in ms.
        `of` keeps what lies from the horizon on and joins the counters with the snapshots. A range not
        `bounded` below (every stored hour) reads the hours from the horizon on only."""
        if not bounded:
            range_sql = f"({range_sql}) AND hour >= {HORIZON_SQL}"
        no_window = (  # the columns of a window record, empty in the other branches
            "CAST([], 'Array(Tuple(Date, UInt64, UInt64))'), CAST([], 'Array(Tuple(DateTime(\\'UTC\\'), UInt64, "
            "UInt64))'), toDateTime(0, 'UTC'), toDateTime(0, 'UTC'), toUInt64(0)"
        )
        branches = [
            f"SELECT 'z' AS kind, max(r.horizon) AS time, toUInt64(0) AS seen, toUInt64(0) AS writer, {no_window} "
            "FROM rollup_state AS r WHERE r.name = 'mail_hourly'",
            f"SELECT 'c', hour, sum(inserts), 0, {no_window} FROM mail_hourly WHERE ({range_sql}) GROUP BY hour",
            f"SELECT 's', hour, seen, min(writer), {no_window} FROM mail_hourly_snap_hours WHERE ({range_sql}) "
            "GROUP BY hour, seen",
        ]
        if days_sql is not None:
            branches.append(
                f"SELECT 'd', toDateTime(day, 'UTC'), seen, min(writer), {no_window} FROM mail_daily_snap_days "
                f"WHERE ({days_sql}) GROUP BY day, seen"
            )
        if window_by:
            branches.append(
                "SELECT 'w', toDateTime(0, 'UTC'), toUInt64(toUnixTimestamp64Milli(taken_at)), writer, days, "
                "hours, start, horizon, keys FROM (SELECT * FROM mail_window_snap_windows "
                "WHERE by = {hr_by:String} AND end - start = {hr_span:Int32} ORDER BY taken_at DESC, writer LIMIT 2)"
            )
        return " UNION ALL ".join(branches)

    @classmethod
    def of(cls, rows: Sequence[Sequence], since: datetime | None, until: datetime | None = None) -> ReadPlan:
        """From the rows of `sql()`, for a range starting at `since` (None: unbounded). An hour from the
        horizon on is clean when a snapshot was recorded at its current insert counter (the smallest such
        writer is read), dirty otherwise. A day is used when
        the `seen` of one of its recorded snapshots equals the sum of its hours' counters now; a window
        when every daily snapshot it pinned is one of those and every hourly snapshot it pinned is that of a
        clean hour of the range (so it sums those days and hours as they are now)."""
        horizon = as_utc(next(r[1] for r in rows if r[0] == "z"))
        recorded: dict[tuple[datetime, int], int] = {}  # (hour, seen) -> the smallest writer recorded at it
        for r in rows:
            if r[0] == "s":
                key = (as_utc(r[1]), int(r[2]))
                recorded[key] = min(int(r[3]), recorded.get(key, int(r[3])))
        hours = sorted(
            (h, int(r[2]), recorded.get((h, int(r[2])), 0))
            for r in rows
            if r[0] == "c" and (h := as_utc(r[1])) >= horizon
        )
        recorded_days = sorted(
            (as_utc(r[1]).date(), int(r[2]), int(r[3]))
            for r in rows
            if r[0] == "d" and as_utc(r[1]) >= horizon
        )
        windows = [
            (r[3], r[4], r[5], r[6], r[7], r[8])
            for r in sorted((r for r in rows if r[0] == "w"), key=lambda r: (-int(r[2]), int(r[3])))
        ]
        dirty = tuple(as_utc(h) for h, _, w in hours if not w)
        rolled = since is None or as_utc(since) < horizon
        counters: dict[date, int] = {}
        for h, n, _ in hours:
            day = as_utc(h).date()
            counters[day] = counters.get(day, 0) + int(n)
        # an unchanged sum means every hour is clean; a day with a dirty hour is left out all the same (the
        # hourly records of a day taken are deleted only together with it: clear, delete_before)
        broken = {as_utc(h).date() for h in dirty}
        days = tuple(
            sorted(
                (d, int(seen), int(w))
                for d, seen, w in recorded_days
                if w and counters.get(d) == int(seen) and d not in broken
            )
        )
        clean = tuple((as_utc(h), int(n), int(w)) for h, n, w in hours if w)
        usable, clean_pins = set(days), set(clean)

        def rolled_in_range(start: datetime, built_at: datetime) -> bool:
            """The window's rolled hours [start, built_at) lie in the range, read from the same totals."""
            if start >= built_at:
                return True
            return (
                built_at == horizon
                and (since is None or as_utc(since) <= start)
                and (until is None or built_at - timedelta(hours=1) < as_utc(until))
            )

        window = next(
            (
                WindowRead(
                    int(w),
                    frozenset(d for d, _, _ in day_pins),
                    frozenset(as_utc(h) for h, _, _ in hour_pins),
                    as_utc(start) if as_utc(start) < as_utc(built_at) else None,
                    int(keys),
                )
                for w, day_pins, hour_pins, start, built_at, keys in windows
                if all((d, int(s), int(x)) in usable for d, s, x in day_pins)
                and all((as_utc(h), int(s), int(x)) in clean_pins for h, s, x in hour_pins)
                and rolled_in_range(as_utc(start), as_utc(built_at))
            ),
            None,
        )
        return cls(horizon, dirty, clean, rolled, days, window)


def classified_hours_sql(range_sql: str, table: Snapshotted = MAIL) -> str:
    """[(hour, insert counter, smallest writer of a snapshot recorded at that counter, or 0)] for the hours
    of `range_sql` (a condition on `hour`; from the rollup horizon on where `table` has one): the
    classification `<table>_all` makes of every stored hour, for one range (clean: writer != 0, dirty: 0)."""
    rng = f"({range_sql}) AND hour >= {HORIZON_SQL}" if table.rolled else f"({range_sql})"
    return (
        "(SELECT groupArray((c.hour, c.n, r.w)) FROM "
        f"(SELECT hour, sum(inserts) AS n FROM {table.states} WHERE {rng} GROUP BY hour) AS c "
        f"LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM {table.recorded} WHERE {rng} "
        "GROUP BY hour, seen) AS r ON c.hour = r.hour AND c.n = r.seen)"
    )


def plan(
    run,
    range_sql: str,
    params: dict,
    since: datetime | None,
    days_sql: str | None = None,
    window_by: str | None = None,
    window_span: timedelta | None = None,
) -> ReadPlan:
    """The ReadPlan of the hours of `range_sql` (bound by `params`; its first hour `since`, None when
    unbounded), with `days_sql` of its whole days, and with `window_by` (one of
    window_snapshots.WINDOW_BY) and `window_span` (one of window_snapshots.SPANS) the window snapshot of
    that grouping and span it can use, through `run(sql, params)`."""
    if window_by is not None:
        if window_by not in WINDOW_BY:
            raise ValueError(f"no window snapshot by {window_by!r}")
        if window_span not in SPANS:
            raise ValueError(f"no window snapshot of {window_span}")
        params = params | {"hr_by": window_by, "hr_span": int(window_span.total_seconds())}
    sql = ReadPlan.sql(range_sql, days_sql, window_by is not None, bounded=since is not None)
    return ReadPlan.of(run(sql, params)[1], since, params.get("until"))


def whole_days(bounds: Mapping[str, datetime]) -> str:
    """A condition on `day` selecting the days all of whose hours lie in the hour range of `bounds`
    (eximtrack/stats.py hour_range: {since} the first hour, {until} exclusive, either may be absent)."""
    conds = ["1"]
    if "since" in bounds:
        conds.append("toDateTime(day, 'UTC') >= {since:DateTime('UTC')}")
    if "until" in bounds:  # the day's last hour starts before `until`
        conds.append("toDateTime(day, 'UTC') + INTERVAL 23 HOUR < {until:DateTime('UTC')}")
    return " AND ".join(conds)


def may_hold_whole_day(bounds: Mapping[str, datetime]) -> bool:
    """Whether the hour range of `bounds` (as whole_days reads it) can hold a whole day: a range of 24 hours
    not starting at midnight holds none, and its plan then skips the daily snapshots' lookup."""
    if "since" not in bounds or "until" not in bounds:
        return True
    since = as_utc(bounds["since"])
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += timedelta(days=1)
    return first + timedelta(hours=23) < as_utc(bounds["until"])


def daily(keys: Sequence[str], counters: Sequence[str], where: Mapping[str, str] | None = None) -> bool:
    """Whether a read of `counters` by `keys` filtered on the columns of `where` can use daily snapshots."""
    return {*keys, *(where or {})} <= set(DAILY_KEYS) and set(counters) <= set(DAILY_COUNTERS)


def source(
    keys: Sequence[str],
    counters: Sequence[str],
    range_sql: str,
    where: Mapping[str, str] | None,
    read_plan: ReadPlan,
    skip_days: frozenset[date] = frozenset(),
    skip_hours: frozenset[datetime] = frozenset(),
    skip_rolled_from: datetime | None = None,
) -> tuple[str, dict]:
    """(a FROM-able subquery `(…)` with the columns `keys` + `counters`, its parameters): each counter
    summed per `keys` over the hours of `range_sql` (a condition on `hour` with bound
    parameters), restricted by `where` ({key column: a condition on it}), each hour from its one source as
    `read_plan` (the `plan()` of the same range) says. The branches pre-aggregate only when the keys and the
    filtered columns are keys of a projection (PROJECTED_KEYS, DAILY_PROJECTIONS): otherwise they pass the
    rows on as they are (a second aggregation of many groups costs more than it saves).

    Read: the totals if the range starts before the horizon; the daily snapshots of `read_plan.days` when
    the read can use them (`daily`); the planned snapshots of the other clean hours (pinned by
    (hour, seen, writer): no subquery, and the primary key of mail_hourly_snap finds them); the states of
    the dirty hours. Nothing of the whole days `skip_days` and the hours `skip_hours` (read from a window
    snapshot by the caller: days of `read_plan.days`, clean hours of `read_plan.clean`); a day with a
    skipped hour is read hour by hour; and of the rolled-up totals nothing from `skip_rolled_from` on."""
    bad = [k for k in keys if k not in KEY_COLUMNS] + [c for c in counters if c not in COUNTER_COLUMNS]
    if bad or not counters:
        raise ValueError(f"mail_hourly has no counter or key {bad[0]!r}" if bad else "no counter asked")
    where = dict(where or {})
    summed = ", ".join(f"sum({c}) AS {c}" for c in counters)
    if {*keys, *where} <= set(PROJECTED_KEYS):
        aggs, group = summed, f" GROUP BY {', '.join(keys)}" if keys else ""
    else:
        aggs, group = ", ".join(counters), ""
    select = ", ".join([*keys, aggs])
    filters = [f"({w})" for w in where.values()]
    cond = " AND ".join([f"({range_sql})", *filters])
    # the rolled hours a window holds are not read again
    before = " AND hour < {hr_rolled:DateTime('UTC')}" if skip_rolled_from is not None else ""
    totals = f"SELECT {select} FROM mail_hourly_totals FINAL WHERE {cond} AND hour < @H@{before}{group}"
    snap = f"SELECT {select} FROM mail_hourly_snap WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    states = f"SELECT {select} FROM mail_hourly_v WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    h = "{hr_horizon:DateTime('UTC')}"
    params: dict = {"hr_horizon": read_plan.horizon}
    branches = [_fill(totals, h)] if read_plan.rolled else []
    if branches and skip_rolled_from is not None:
        params["hr_rolled"] = skip_rolled_from
    if skip_days - {d for d, _, _ in read_plan.days} or skip_hours - {h for h, _, _ in read_plan.clean}:
        raise ValueError("only whole days with a current snapshot and clean hours can be skipped")
    split = skip_days | {h.date() for h in skip_hours}
    days = [p for p in read_plan.days if p[0] not in split] if daily(keys, counters, where) else []
    if days:
        projected = any({*keys, *where} <= p for p in DAILY_PROJECTIONS)
        day_select = ", ".join([*keys, summed if projected else ", ".join(counters)])
        day_group = f" GROUP BY {', '.join(keys)}" if projected and keys else ""
        params["hr_days"] = days
        branches.append(
            f"SELECT {day_select} FROM mail_daily_snap WHERE "
            + " AND ".join(["(day, seen, writer) IN {hr_days:Array(Tuple(Date, UInt64, UInt64))}", *filters])
            + day_group
        )
    used = {d for d, _, _ in days} | skip_days
    pins = [pin for pin in read_plan.clean if pin[0].date() not in used and pin[0] not in skip_hours]
    if pins:
        params["hr_pins"] = pins
        branches.append(
            _fill(snap, h, "(hour, seen, writer) IN {hr_pins:Array(Tuple(DateTime('UTC'), UInt64, UInt64))}")
        )
    if read_plan.dirty:
        params["hr_dirty"] = list(read_plan.dirty)
        branches.append(_fill(states, h, f"hour IN {_DIRTY}"))
    if not branches:  # nothing stored in the range: no row
        branches.append(_fill(snap, h, "0"))
    return "(" + "\nUNION ALL\n".join(branches) + ")", params


def _fill(branch: str, horizon: str, cond: str = "1") -> str:
    return branch.replace("@H@", horizon).replace("@COND@", cond)


_DIRTY = "{hr_dirty:Array(DateTime('UTC'))}"


__all__ = [
    "WindowRead",
    "classified_hours_sql",
    "COUNTER_COLUMNS",
    "KEY_COLUMNS",
    "DAILY_PROJECTIONS",
    "PROJECTED_KEYS",
    "ReadPlan",
    "daily",
    "whole_days",
    "may_hold_whole_day",
    "plan",
    "source",
]
