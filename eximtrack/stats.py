"""`eximtrack stats`: cPanel's EmailTrack::stats / emailtrack_user_stats counters, read from `mail_hourly`;
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
from datetime import UTC, datetime

from sinks.clickhouse import migrations

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
)
DEFAULT_AGGREGATE_DAYS = 730

_COUNTER_SQL = """
    uniqExactMerge(messages) AS SENDCOUNT,
    uniqExactMerge(rows_success) + uniqExactMerge(rows_filtered) + uniqExactMerge(rows_archive) AS SUCCESSCOUNT,
    uniqExactMerge(rows_failure) + uniqExactMerge(rejected) AS FAILCOUNT,
    uniqExactMerge(rows_deferred_or_final) - uniqExactMerge(rows_final) AS DEFERCOUNT,
    DEFERCOUNT + FAILCOUNT AS DEFERFAILCOUNT,
    uniqExactMerge(rows_seen) - uniqExactMerge(rows_deferred_or_final) - uniqExactMerge(rows_removed)
        AS INPROGRESSCOUNT,
    toUInt64(bitShiftRight(sumDistinctMerge(bytes), 192)) AS TOTALSIZE"""


def _hour_floor(epoch: float) -> datetime:
    dt = datetime.fromtimestamp(epoch, UTC)
    return dt.replace(minute=0, second=0, microsecond=0)


def build_stats(
    by: str = "user",
    since: float | str | None = None,
    until: float | str | None = None,
    *,
    server: str | None = None,
    user: str | None = None,
    domain: str | None = None,
    outbound_only: bool = False,
) -> tuple[str, dict]:
    """SQL (bound parameters only) for the stats grouped by `by`."""
    from eximtrack.search import parse_time

    if by not in BY_COLUMNS:
        raise ValueError(f"--by must be one of {', '.join(BY_COLUMNS)}")
    where, params = [], {}
    s, u = parse_time(since, "--since"), parse_time(until, "--until")
    if s is not None:
        where.append("hour >= {since:DateTime('UTC')}")
        params["since"] = _hour_floor(s)
    if u is not None:
        where.append("hour < {until:DateTime('UTC')}")
        params["until"] = datetime.fromtimestamp(u, UTC)
    for name, value in (("server", server), ("user", user), ("domain", domain)):
        if value is not None:
            where.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if outbound_only:
        where.append("outbound = 1")
    key = BY_COLUMNS[by]
    sql = (
        f"SELECT {key} AS {by},{_COUNTER_SQL}\nFROM mail_hourly"
        + (f"\nWHERE {' AND '.join(where)}" if where else "")
        + f"\nGROUP BY {key}\nORDER BY SENDCOUNT DESC, {by}"
    )
    return sql, params


def stats(store, by: str = "user", since=None, until=None, **filters) -> list[dict]:
    sql, params = build_stats(by, since, until, **filters)
    return store.query_dicts(sql, params, readonly=True)


# -- retention -----------------------------------------------------------------------------------------


def aggregate_retention(store) -> dict[str, int]:
    """{table: TTL days (0 = none)} for the aggregate tables."""
    return {t: migrations.current_retention(store.client, t) for t in AGGREGATE_TABLES}


def set_aggregate_retention(store, days: int) -> list[str]:
    """Set the TTL of every aggregate table to `days` (0 removes it); returns the tables changed."""
    days = int(days)
    if days < 0:
        raise ValueError("retention days must be >= 0")
    changed = []
    for table in AGGREGATE_TABLES:
        if migrations.current_retention(store.client, table) == days:
            continue
        if days == 0:
            store.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            store.command(f"ALTER TABLE {table} MODIFY TTL hour + toIntervalDay({days})")
        changed.append(table)
    return changed


# -- rebuild ---------------------------------------------------------------------------------------------


def backfill_statements(final: bool = False) -> list[tuple[str, str]]:
    """[(aggregate table, INSERT … SELECT statement)] of migration 004 (the views' SELECTs over the stored
    rows); `final=True` reads `events FINAL` / `rejects FINAL` (one version per event id)."""
    migration = next(m for m in migrations.load_migrations() if m.name == "backfill_aggregates")
    out = []
    for statement in migration.statements():
        table = statement.split()[2]
        if final:
            statement = re.sub(r"\nFROM (events|rejects)\n", r"\nFROM \1 FINAL\n", statement)
        out.append((table, statement))
    return out


def rebuild_aggregates(store) -> list[str]:
    """Empty every aggregate table and fill it again from `events FINAL` / `rejects FINAL`.

    Needed only when the same event ids were stored with different dimensions (old logs re-ingested with
    another account map): the set-based aggregates then hold both. Dashboards read partial numbers while it
    runs; inserts arriving meanwhile are counted (sets), never twice."""
    done = []
    for table, statement in backfill_statements(final=True):
        store.command(f"TRUNCATE TABLE {table}")
        store.command(statement)
        done.append(table)
    return done


# -- CLI -------------------------------------------------------------------------------------------------


def cmd_stats(args) -> int:
    from eximtrack import cli

    try:
        sql, params = build_stats(
            args.by,
            args.since,
            args.until,
            server=args.server,
            user=args.user,
            domain=args.domain,
            outbound_only=args.outbound,
        )
    except ValueError as exc:  # SearchError is a ValueError
        raise cli.UsageError(str(exc)) from exc
    store = cli._open_store(args)
    try:
        result = store.query(sql, params, readonly=True)
    except Exception as exc:
        raise cli.CommandError(cli._first_line(exc)) from exc
    columns, rows = list(result.column_names), result.result_rows
    if args.format == "json":
        cli._write_json_lines(sys.stdout, columns, rows, cli._plain_dict)
    elif args.format == "csv":
        cli._write_csv(sys.stdout, columns, rows, cli._plain_dict)
    else:
        cli._write_generic_table(sys.stdout, columns, rows)
    return 0


def cmd_retention(args) -> int:
    from eximtrack import cli

    store = cli._open_store(args)
    if args.events_days is not None:
        store.set_retention(args.events_days)
    if args.aggregates_days is not None:
        set_aggregate_retention(store, args.aggregates_days)
    current = {t: migrations.current_retention(store.client, t) for t in migrations.TTL_BASE}
    current.update(aggregate_retention(store))
    for table, days in current.items():
        print(f"{table:22s} {'forever' if days == 0 else f'{days} days'}")
    return 0


def cmd_rebuild(args) -> int:
    from eximtrack import cli

    store = cli._open_store(args)
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
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    cli._add_store(p)
    p.set_defaults(func=cmd_stats)

    r = subparsers.add_parser("retention", help="show or set the TTL of the raw tables and of the aggregates")
    r.add_argument(
        "--events-days", type=cli._nonneg_int, help="events, latest, rejects, log_lines (0 = forever)"
    )
    r.add_argument(
        "--aggregates-days",
        type=cli._nonneg_int,
        help=f"the *_hourly aggregate tables (default {DEFAULT_AGGREGATE_DAYS}; 0 = forever)",
    )
    cli._add_store(r)
    r.set_defaults(func=cmd_retention)

    b = subparsers.add_parser(
        "rebuild-aggregates", help="empty the aggregate tables and fill them again from the stored events"
    )
    cli._add_store(b)
    b.set_defaults(func=cmd_rebuild)


__all__ = [
    "AGGREGATE_TABLES",
    "COUNTERS",
    "aggregate_retention",
    "backfill_statements",
    "build_stats",
    "rebuild_aggregates",
    "register",
    "set_aggregate_retention",
    "stats",
]
