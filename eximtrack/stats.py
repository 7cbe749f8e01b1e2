"""`eximtrack stats` (and `/api/v1/stats`, eximtrack/web/query.py: one definition of the counters): cPanel's
EmailTrack::stats / emailtrack_user_stats counters, read from `mail_hourly_all`
(rolled-up totals of closed hours, hourly snapshots of the recent ones, set states of the hours changed since
their snapshot: eximtrack/stats_snapshots.py); `eximtrack rollup`;
`eximtrack retention`: the TTL of the raw tables and of the aggregates.

    eximtrack stats --by user --since 2026-11-20 --until 2026-11-27 --format json

Counters (per server, user or domain; docs/SQL.md has the full definitions). Mail is counted in the hour it
ARRIVED (the `<=` line); each counter is about that mail's recipients *as they are now*:

    SENDCOUNT        messages received (distinct Exim ids with an arrival line)
    SUCCESSCOUNT     recipient rows delivered: success + filtered + archive (cPanel's "Show Successes")
    FAILCOUNT        recipient rows failed + SMTP-time rejections (cPanel's "Show Failures": failure, rejected)
    DEFERCOUNT       recipient rows deferred and not resolved yet (latest state defer)
    DEFERFAILCOUNT   DEFERCOUNT + FAILCOUNT (cPanel's sum of the two)
    INPROGRESSCOUNT  recipient rows with no result yet (latest state inprogress)
    TOTALSIZE        bytes received: the sum of each message's size (S=), each message once

A "recipient row" is a Track Delivery row, (server, msgid, recipient, deliveredto). The counters come from
set-based aggregate states (schemas/clickhouse/003_aggregates.sql), so they are exact and do not move when
the same events are inserted again. `--since`/`--until` select arrival-hour buckets: [hour(since), until).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from eximtrack import hourly_read, stats_snapshots, window_snapshots
from eximtrack.window_snapshots import WINDOW_BY
from sinks.clickhouse import migrations
from sinks.clickhouse.store import store_run

COUNTERS = (
    "SENDCOUNT",
    "SUCCESSCOUNT",
    "FAILCOUNT",
    "DEFERCOUNT",
    "DEFERFAILCOUNT",
    "INPROGRESSCOUNT",
    "TOTALSIZE",
)
BY_COLUMNS = {"server": "server", "user": "user", "domain": "domain", "owner": "owner", "hour": "hour"}

# Every aggregate table of migration 003 and later (TTL on `hour`).
AGGREGATE_TABLES = (
    "mail_hourly",
    "reasons_hourly",
    "delays_hourly",
    "rejections_hourly",
    "activity_hourly",
    "unclassified_hourly",
    "spam_hourly",
)
# ... plus the rolled-up totals (005), the hourly (008, 014, 019), the daily (013) and the window (017) snapshots:
# every table whose TTL `retention --aggregates-days` sets, with the column it counts from
RETENTION_TABLES = (
    *AGGREGATE_TABLES,
    "mail_hourly_totals",
    "mail_hourly_snap",
    "mail_hourly_snap_hours",
    "mail_daily_snap",
    "mail_daily_snap_days",
    "activity_hourly_snap",
    "activity_hourly_snap_hours",
    "reasons_hourly_snap",
    "reasons_hourly_snap_hours",
    "delays_fleet_snap",
    "delays_fleet_snap_hours",
    "mail_window_snap",
    "mail_window_snap_windows",
)
RETENTION_BASE = {
    t: "day" if t.startswith("mail_daily") else "last" if t.startswith("mail_window") else "hour"
    for t in RETENTION_TABLES
}
DEFAULT_AGGREGATE_DAYS = 730

_COUNTER_SQL = """
    sum(messages) AS SENDCOUNT,
    sum(success + filtered + archive) AS SUCCESSCOUNT,
    sum(failure + rejected) AS FAILCOUNT,
    sum(deferred) AS DEFERCOUNT,
    DEFERCOUNT + FAILCOUNT AS DEFERFAILCOUNT,
    sum(inprogress) AS INPROGRESSCOUNT,
    sum(bytes) AS TOTALSIZE"""


def _hour_floor(epoch: float) -> datetime:
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.replace(minute=0, second=0, microsecond=0)


# The columns of mail_hourly's key that a stats request may group or filter by (the sending side).
AGGREGATE_GROUPS = ("server", "owner", "user", "domain")

# The same counters computed directly from latest-state rows (`latest FINAL`), for requests the aggregate
# cannot answer (a search filter, a tenant scope, a grouping by the receiving side). Exactly what mail_hourly
# counts: rows whose message arrival was seen, and SMTP-time rejections; each message's size once.
ARRIVED_ROWS = "(protocol != '' OR type = 'rejected')"
LATEST_COUNTER_SQL = """
    uniqExactIf((server, msgid), type != 'rejected') AS SENDCOUNT,
    countIf(type IN ('success', 'filtered', 'archive')) AS SUCCESSCOUNT,
    countIf(type IN ('failure', 'rejected')) AS FAILCOUNT,
    countIf(type = 'defer') AS DEFERCOUNT,
    DEFERCOUNT + FAILCOUNT AS DEFERFAILCOUNT,
    countIf(type = 'inprogress') AS INPROGRESSCOUNT,
    toUInt64(arraySum(arrayMap(m -> m.3, groupUniqArrayIf((server, msgid, size), type != 'rejected'))))
        AS TOTALSIZE"""
LATEST_HOUR = "toStartOfHour(toDateTime(sendunixtime, 'UTC'))"


def hour_range(since: float | None, until: float | None) -> dict:
    """Stats select arrival-hour buckets [hour(since), until): {"since": floored hour, "until": datetime}
    for the bounds given (epoch seconds)."""
    out = {}
    if since is not None:
        out["since"] = _hour_floor(since)
    if until is not None:
        out["until"] = datetime.fromtimestamp(until, UTC)
    return out


def hour_conditions(hour_expr: str, bounds: dict) -> list[str]:
    """`hour_expr` within the bounds of hour_range (bound as {since:…} / {until:…})."""
    conds = []
    if "since" in bounds:
        conds.append(f"{hour_expr} >= {{since:DateTime('UTC')}}")
    if "until" in bounds:
        conds.append(f"{hour_expr} < {{until:DateTime('UTC')}}")
    return conds


Run = Callable[[str, dict], tuple[list[str], list]]

DEFAULT_LIMIT = 1000  # groups returned unless asked otherwise (API and CLI; 0 on the CLI = all)
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class Top:
    """Which groups a grouped stats request returns: the first `limit` (None = all) by `sort` (a counter,
    descending), ties broken by the group keys, so that the answer is the same on every read. One more row
    is read than returned, so that `trim` can say whether more groups exist."""

    sort: str = "SENDCOUNT"
    limit: int | None = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if self.sort not in COUNTERS:
            raise ValueError(f"sort must be one of {', '.join(COUNTERS)}, not {self.sort!r}")
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")


def order_by(groups: Sequence[str], top: Top | None) -> str:
    """ORDER BY (and LIMIT) of a grouped stats statement: all groups by SENDCOUNT without a `top`."""
    top = top or Top(limit=None)
    sql = f"ORDER BY {top.sort} DESC, {', '.join(groups)}"
    return sql + (f"\nLIMIT {top.limit + 1}" if top.limit is not None else "")


def trim(rows: list, top: Top | None) -> tuple[list, bool]:
    """(the rows to return, whether more groups exist) of a statement ordered by `order_by`."""
    if top is None or top.limit is None or len(rows) <= top.limit:
        return rows, False
    return rows[: top.limit], True


@dataclass(frozen=True)
class HourlyStats:
    """A stats request on the hourly aggregates: the counters grouped by `groups` (any of AGGREGATE_GROUPS
    and `hour`; none = one total row) within `bounds` (hour_range), with exact `equals` filters.

    `run` is two statements (eximtrack/hourly_read.py): the hours of the range only are classified (the
    view mail_hourly_all classifies every stored hour on each read), then each hour is read from its one
    source, the snapshot branch pre-aggregated by the groups when the projections per hour and per server
    can answer it, and whole days with a current daily snapshot from that (same numbers as the view:
    `view_sql`). With `top`, the first groups by a counter (Top, trim)."""

    groups: tuple[str, ...]
    bounds: dict
    equals: dict = field(default_factory=dict)
    outbound_only: bool = False
    top: Top | None = None

    def __post_init__(self) -> None:
        bad = [g for g in (*self.groups, *self.equals) if g not in (*AGGREGATE_GROUPS, "hour")]
        if bad:
            raise ValueError(f"mail_hourly_all has no column {bad[0]!r}")

    def _filters(self, params: dict) -> dict[str, str]:
        """{column: condition} of the exact filters, their values bound into `params`."""
        where = {}
        for name, value in self.equals.items():
            where[name] = f"{name} = {{eq_{name}:String}}"
            params[f"eq_{name}"] = value
        if self.outbound_only:
            where["outbound"] = "outbound = 1"
        return where

    def _select(self, source: str, where: list[str]) -> str:
        cols = ", ".join(self.groups)
        return (
            f"SELECT {cols + ',' if cols else ''}{_COUNTER_SQL}\nFROM {source}"
            + (f"\nWHERE {' AND '.join(where)}" if where else "")
            + (f"\nGROUP BY {cols}\n{order_by(self.groups, self.top)}" if cols else "")
        )

    def view_sql(self) -> tuple[str, dict]:
        """The same numbers in one statement on the view mail_hourly_all (for analysts and the tests)."""
        params = dict(self.bounds)
        return self._select(
            "mail_hourly_all", hour_conditions("hour", self.bounds) + list(self._filters(params).values())
        ), params

    def _range(self) -> str:
        return " AND ".join(hour_conditions("hour", self.bounds)) or "1"

    def sql(self, read_plan: hourly_read.ReadPlan) -> tuple[str, dict]:
        """The read of the counters, given the `read_plan` of the range (`run` makes it)."""
        params = dict(self.bounds)
        where = self._filters(params)
        if read_plan.window is not None and self._window_by() is not None:
            return self._windowed(read_plan, params)
        source, source_params = hourly_read.source(self.groups, _COUNTED, self._range(), where, read_plan)
        return self._select(source, []), params | source_params

    def _window_by(self) -> str | None:
        """The grouping whose window snapshots can serve this request: one key of WINDOW_BY, no filter."""
        if (
            len(self.groups) == 1
            and self.groups[0] in WINDOW_BY
            and not self.equals
            and not self.outbound_only
        ):
            return self.groups[0]
        return None

    def _window_span(self) -> timedelta | None:
        """The longest span of the window snapshots (the 24 hours, 7 days or 30 days before an hour) the
        range is long enough to hold, or None: a shorter range never asks for windows (the lookup costs a
        few ms)."""
        if "since" not in self.bounds:
            return max(window_snapshots.SPANS)
        until = self.bounds.get("until") or datetime.now(UTC)
        held = [s for s in window_snapshots.SPANS if until - self.bounds["since"] >= s - timedelta(hours=1)]
        return max(held, default=None)

    def _windowed(self, read_plan: hourly_read.ReadPlan, params: dict) -> tuple[str, dict]:
        """The read when `read_plan.window` sums days and hours of the range per key: each key's window row
        plus its rows from the rest of the range (the edge: hourly_read.source without the window's days,
        hours and rolled hours). With a `top` by an unsigned counter only the window rows of the edge's keys
        and of the first limit + 1 keys of the window by that counter are read: an edge row only adds to its
        key, so the window order of the keys without one is their final order, and no key past those first
        ones can be returned. The edge's keys are found by their hash (a collision reads one more exact row
        of another key: harmless). A window of at most WHOLE_WINDOW_KEYS keys (the servers, the owners) is
        read whole: that costs less than finding the edge's keys (at 1e8, 30 days by server: 22 -> 15 ms)."""
        (key,) = self.groups
        win = read_plan.window
        edge, edge_params = hourly_read.source(
            self.groups, _COUNTED, self._range(), {}, read_plan, win.days, win.hours, win.rolled_from
        )
        cols = ", ".join(_COUNTED)
        mine = "writer = {hr_window:UInt64} AND by = {hr_by:String}"
        window = f"SELECT key AS {key}, {cols} FROM mail_window_snap WHERE {mine}"
        top = self.top
        if (
            top is not None
            and top.limit is not None
            and top.sort in _UNSIGNED_SORTS
            and win.keys > WHOLE_WINDOW_KEYS
        ):
            first = f"rank <= {top.limit + 1}"  # the window's order is SENDCOUNT's
            if top.sort != "SENDCOUNT":
                first = (
                    f"key IN (SELECT key FROM mail_window_snap WHERE {mine} "
                    f"ORDER BY {_UNSIGNED_SORTS[top.sort]} DESC, key LIMIT {top.limit + 1})"
                )
            window += f" AND (key_hash IN (SELECT cityHash64({key}) FROM {edge}) OR {first})"
        source = f"(SELECT {key}, {cols} FROM {edge}\nUNION ALL\n{window})"
        return self._select(source, []), params | edge_params | {"hr_window": win.writer, "hr_by": key}

    def read_plan(self, run: Run) -> hourly_read.ReadPlan:
        """Where the hours of the range are (and its whole days with a current daily snapshot, and the
        window snapshot summing some of them, when this request can read days), through `run`."""
        days, window_by, span = None, None, None
        if hourly_read.daily(self.groups, _COUNTED, self._filters({})):
            if hourly_read.may_hold_whole_day(self.bounds):
                days = hourly_read.whole_days(self.bounds)
            window_by = self._window_by()
            span = self._window_span() if window_by else None
        return hourly_read.plan(
            run,
            self._range(),
            dict(self.bounds),
            self.bounds.get("since"),
            days,
            window_by if span else None,
            span,
        )

    def run(self, run: Run) -> tuple[list[str], list]:
        """(column names, rows) through `run(sql, params) -> (columns, rows)`: plan, then read."""
        return run(*self.sql(self.read_plan(run)))


# a window of at most this many keys is read whole rather than narrowed to the edge's keys and its first ones
WHOLE_WINDOW_KEYS = 10_000
# the sort counters made of unsigned columns only (an edge row never lowers them), as window columns
_UNSIGNED_SORTS = {
    "SENDCOUNT": "messages",
    "SUCCESSCOUNT": "success + filtered + archive",
    "FAILCOUNT": "failure + rejected",
    "TOTALSIZE": "bytes",
}
_COUNTED = (
    "messages",
    "success",
    "filtered",
    "archive",
    "failure",
    "rejected",
    "deferred",
    "inprogress",
    "bytes",
)


def build_grouped_stats(
    groups: Sequence[str],
    bounds: dict,
    equals: Mapping[str, str] | None = None,
    outbound_only: bool = False,
    top: Top | None = None,
) -> HourlyStats:
    """The counters from the hourly aggregates grouped by `groups`, within `bounds` (hour_range), with
    `equals` {column of AGGREGATE_GROUPS: value} as exact filters; the `top` groups only (None: all)."""
    return HourlyStats(tuple(groups), dict(bounds), dict(equals or {}), outbound_only, top)


@dataclass(frozen=True)
class LatestStats:
    """A stats request answered by one statement (from `latest FINAL`, eximtrack/web/query.py)."""

    sql: str
    params: dict
    top: Top | None = None

    def run(self, run: Run) -> tuple[list[str], list]:
        return run(self.sql, self.params)


def build_stats(
    by: str = "user",
    since: float | str | None = None,
    until: float | str | None = None,
    *,
    server: str | None = None,
    user: str | None = None,
    domain: str | None = None,
    outbound_only: bool = False,
    top: Top | None = None,
) -> HourlyStats:
    """The stats grouped by `by` (`eximtrack stats`), the `top` groups only (None: all)."""
    from eximtrack.search import parse_time

    if by not in BY_COLUMNS:
        raise ValueError(f"--by must be one of {', '.join(BY_COLUMNS)}")
    bounds = hour_range(parse_time(since, "--since"), parse_time(until, "--until"))
    equals = {k: v for k, v in (("server", server), ("user", user), ("domain", domain)) if v is not None}
    return build_grouped_stats([BY_COLUMNS[by]], bounds, equals, outbound_only, top)


def stats(store, by: str = "user", since=None, until=None, top: Top | None = None, **filters) -> list[dict]:
    """Every group (or the `top` ones) as dicts."""
    columns, rows = build_stats(by, since, until, top=top, **filters).run(store_run(store))
    rows, _ = trim(rows, top)
    return [dict(zip(columns, row, strict=True)) for row in rows]


# -- retention -----------------------------------------------------------------------------------------


def aggregate_retention(store) -> dict[str, int]:
    """{table: TTL days (0 = none)} for the aggregate tables."""
    return {t: migrations.current_retention(store.client, t, store.cluster) for t in RETENTION_TABLES}


def set_aggregate_retention(store, days: int) -> list[str]:
    """Set the TTL of every aggregate table to `days` (0 removes it); returns the tables changed."""
    return migrations.ensure_retention(store.client, days, RETENTION_BASE, cluster=store.cluster)


# -- rollup ----------------------------------------------------------------------------------------------

DEFAULT_CLOSED_AFTER_DAYS = 16  # joiner expiry (8 days) + Kafka retention of raw lines (7 days) + 1


def rollup_horizon(store) -> datetime:
    value = store.query(f"SELECT {stats_snapshots.HORIZON_SQL}", readonly=True).result_rows[0][0]
    return stats_snapshots.as_utc(value)


def rollup(store, until: datetime, drop_states: bool = False) -> dict:
    """Copy the finalised numbers of every hour before `until` (floored to the hour) from the set states
    into mail_hourly_totals and move the horizon there (never backwards); delete the stats snapshots of the
    hours before the previous horizon. With drop_states, drop the monthly partitions of mail_hourly that lie
    wholly before the horizon. Idempotent."""
    until = _hour_floor(until.timestamp())
    old = rollup_horizon(store)
    horizon = max(old, until)
    rolled = 0
    stats_snapshots.delete_before(store, old)  # read from the totals since the previous rollup
    if until > old:
        params = {"a": old, "b": until}
        rolled = store.query(
            "SELECT count() FROM mail_hourly_v WHERE hour >= {a:DateTime('UTC')} AND hour < {b:DateTime('UTC')}",
            params,
        ).result_rows[0][0]
        cols = ", ".join(("hour", *stats_snapshots.SNAPSHOT_COLUMNS))
        store.command(
            f"INSERT INTO mail_hourly_totals ({cols}, rolled_at) SELECT {cols}, now64(3) FROM mail_hourly_v "
            "WHERE hour >= {a:DateTime('UTC')} AND hour < {b:DateTime('UTC')}",
            params,
        )
        store.command(
            "INSERT INTO rollup_state (name, horizon) VALUES ('mail_hourly', {h:DateTime('UTC')})",
            {"h": horizon},
        )
    dropped = []
    if drop_states:
        limit = int(horizon.strftime("%Y%m"))  # months strictly before the horizon's month
        parts = store.query(  # on a cluster: this node's local table (every node has the same months)
            "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() "
            "AND table = {t:String} AND active ORDER BY partition",
            {"t": store.stored("mail_hourly")},
        ).result_rows
        for (partition,) in parts:
            if partition.isdigit() and int(partition) < limit:
                store.command(f"ALTER TABLE {store.target('mail_hourly')} DROP PARTITION {int(partition)}")
                dropped.append(partition)
    return {"horizon": horizon, "rolled_keys": rolled, "dropped_partitions": dropped}


# -- rebuild ---------------------------------------------------------------------------------------------


# later migrations that add an aggregate with its own backfill (INSERT … SELECT of its view's SELECT)
BACKFILLED_LATER = ("spam_hourly",)
# the migrations whose views' SELECTs the aggregates they laid out anew have now (sets of 64-bit elements:
# 034; delays_hourly's quantiles of 64-bit elements: 035), the later first
RELAID_BY = ("delay_quantiles_of_64_bit_elements", "aggregate_sets_of_64_bit_elements")
_RELAID_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)_next_mv TO \w+ AS\n(SELECT\n.*)$", re.S
)


def backfill_statements(final: bool = False) -> list[tuple[str, str]]:
    """[(aggregate table, INSERT … SELECT statement)]: each aggregate's view's SELECT over the stored rows, as
    migration 004 (and BACKFILLED_LATER) backfilled them, those that migrations 034 and 035 laid out anew with
    their views' SELECT (the insert counters, reasons' templates and 64-bit elements they have now);
    `final=True` reads `events FINAL` / `rejects FINAL` (one version per event id)."""
    found = migrations.load_migrations()
    relaid = {}
    for name in RELAID_BY:
        for statement in next(m for m in found if m.name == name).statements():
            if (m := _RELAID_VIEW.match(statement)) and m.group(1) not in relaid:
                relaid[m.group(1)] = m.group(2).replace("\nFROM events_rollup\n", "\nFROM events\n")
    migration = next(m for m in found if m.name == "backfill_aggregates")
    later = [
        s for m in found if m.name in BACKFILLED_LATER for s in m.statements() if s.startswith("INSERT INTO ")
    ]
    out = []
    for statement in [*migration.statements(), *later]:
        table = statement.split()[2]
        if table in relaid:
            statement = f"INSERT INTO {table}\n{relaid.pop(table)}"
        if final:
            statement = re.sub(r"\nFROM (events|rejects)\n", r"\nFROM \1 FINAL\n", statement)
        out.append((table, statement))
    if relaid:
        raise RuntimeError(f"no backfill of migration 004 for {sorted(relaid)}: update backfill_statements")
    return out


def rebuild_aggregates(store) -> list[str]:
    """Empty every aggregate table and fill it again from `events FINAL` / `rejects FINAL`.

    Needed only when the same event ids were stored with different dimensions (old logs re-ingested with
    another account map): the set-based aggregates then hold both. Dashboards read partial numbers while it
    runs; inserts arriving meanwhile are counted (sets), never twice."""
    done = []
    for table, statement in backfill_statements(final=True):
        store.command(f"TRUNCATE TABLE {store.target(table)}")
        store.command(statement)
        done.append(table)
    stats_snapshots.clear(store)  # their counters restart with the states: forget every snapshot
    stats_snapshots.refresh(store)
    return done


# -- CLI -------------------------------------------------------------------------------------------------


def cmd_stats(args) -> int:
    from eximtrack import cli

    try:
        top = Top(args.sort, args.limit or None)
        request = build_stats(
            args.by,
            args.since,
            args.until,
            server=args.server,
            user=args.user,
            domain=args.domain,
            outbound_only=args.outbound,
            top=top,
        )
    except ValueError as exc:  # SearchError is a ValueError
        raise cli.UsageError(str(exc)) from exc
    store = cli.open_store(args)
    try:
        columns, rows = request.run(store_run(store))
    except Exception as exc:
        raise cli.CommandError(cli.first_line(exc)) from exc
    rows, more = trim(rows, top)
    if more:
        print(
            f"eximtrack stats: the first {top.limit} groups by {top.sort}; more exist (--limit 0 shows all)",
            file=sys.stderr,
        )
    if args.format == "json":
        cli.write_json_lines(sys.stdout, columns, rows, cli.plain_dict)
    elif args.format == "csv":
        cli.write_csv(sys.stdout, columns, rows, cli.plain_dict)
    else:
        cli.write_generic_table(sys.stdout, columns, rows)
    return 0


def cmd_retention(args) -> int:
    from eximtrack import cli

    store = cli.open_store(args)
    if args.events_days is not None:
        store.set_retention(args.events_days)
    if args.aggregates_days is not None:
        set_aggregate_retention(store, args.aggregates_days)
    current = {t: migrations.current_retention(store.client, t) for t in migrations.TTL_BASE}
    current.update(aggregate_retention(store))
    for table, days in current.items():
        print(f"{table:22s} {'forever' if days == 0 else f'{days} days'}")
    return 0


def cmd_rollup(args) -> int:
    from eximtrack import cli
    from eximtrack.search import parse_time

    if args.until:
        try:
            until = datetime.fromtimestamp(parse_time(args.until, "--until"), UTC)
        except ValueError as exc:
            raise cli.UsageError(str(exc)) from exc
    else:
        until = datetime.now(UTC) - timedelta(days=args.closed_after_days)
    store = cli.open_store(args)
    done = rollup(store, until, drop_states=args.drop_states)
    snap = stats_snapshots.refresh(store)
    print(
        f"horizon {done['horizon']:%Y-%m-%d %H:%M} UTC: rolled {done['rolled_keys']} keys; "
        f"dropped partitions: {', '.join(done['dropped_partitions']) or 'none'}; "
        f"snapshots: {snap['hours']} hours written, {snap['deleted']} superseded deleted"
    )
    return 0


def cmd_rebuild(args) -> int:
    from eximtrack import cli

    store = cli.open_store(args)
    for table in rebuild_aggregates(store):
        print(f"rebuilt {table}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from eximtrack import cli

    p = subparsers.add_parser(
        "stats",
        help="cPanel-style mail statistics (SENDCOUNT … TOTALSIZE) from the aggregated views",
        description=__doc__.split("\n\n", 1)[1].split("\nThe counters")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--by", choices=tuple(BY_COLUMNS), default="user", help="group by (default: user)")
    p.add_argument("--since", help="arrival time from (ISO date/time, UTC if naive, or epoch seconds)")
    p.add_argument("--until", help="arrival time before (exclusive)")
    p.add_argument("--server", help="only this server")
    p.add_argument("--user", help="only this cPanel account")
    p.add_argument("--domain", help="only this sender domain")
    p.add_argument("--outbound", action="store_true", help="only mail sent by authenticated or local users")
    p.add_argument(
        "--sort",
        choices=COUNTERS,
        default="SENDCOUNT",
        help="the groups with most of this first (default SENDCOUNT)",
    )
    p.add_argument(
        "--limit",
        type=cli.nonneg_int,
        default=DEFAULT_LIMIT,
        help=f"at most this many groups (default {DEFAULT_LIMIT}; 0 = all)",
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    cli.add_store_arg(p)
    p.set_defaults(func=cmd_stats)

    r = subparsers.add_parser("retention", help="show or set the TTL of the raw tables and of the aggregates")
    r.add_argument(
        "--events-days", type=cli.nonneg_int, help="events, latest, rejects, log_lines (0 = forever)"
    )
    r.add_argument(
        "--aggregates-days",
        type=cli.nonneg_int,
        help=f"the *_hourly aggregate tables (default {DEFAULT_AGGREGATE_DAYS}; 0 = forever)",
    )
    cli.add_store_arg(r)
    r.set_defaults(func=cmd_retention)

    u = subparsers.add_parser(
        "rollup", help="turn the closed hours of mail_hourly into plain numbers (smaller, faster to read)"
    )
    u.add_argument(
        "--closed-after-days",
        type=cli.nonneg_int,
        default=DEFAULT_CLOSED_AFTER_DAYS,
        help=f"an hour is closed this many days later (default {DEFAULT_CLOSED_AFTER_DAYS})",
    )
    u.add_argument("--until", help="roll up the hours before this time instead (ISO, UTC)")
    u.add_argument(
        "--drop-states", action="store_true", help="drop the months of set states wholly before the horizon"
    )
    cli.add_store_arg(u)
    u.set_defaults(func=cmd_rollup)

    b = subparsers.add_parser(
        "rebuild-aggregates", help="empty the aggregate tables and fill them again from the stored events"
    )
    cli.add_store_arg(b)
    b.set_defaults(func=cmd_rebuild)


__all__ = [
    "AGGREGATE_TABLES",
    "COUNTERS",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Top",
    "order_by",
    "trim",
    "RETENTION_TABLES",
    "aggregate_retention",
    "backfill_statements",
    "build_stats",
    "build_grouped_stats",
    "HourlyStats",
    "LatestStats",
    "hour_range",
    "hour_conditions",
    "AGGREGATE_GROUPS",
    "ARRIVED_ROWS",
    "LATEST_COUNTER_SQL",
    "LATEST_HOUR",
    "rebuild_aggregates",
    "rollup",
    "rollup_horizon",
    "register",
    "set_aggregate_retention",
    "stats",
]
