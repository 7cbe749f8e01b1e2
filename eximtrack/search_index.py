"""`eximtrack rebuild-search-index`: empty the access-path tables of migrations 007/009/011/018/021/022/026/027/029
(search_keys, search_time, latest_by_recipient, latest_outcomes, search_outcome_keys, search_inflight_keys,
search_deferred_keys) and fill them again from the stored rows of `latest`.

The materialized views keep them current on every insert, and the migrations backfill them once, so this is
needed when they were emptied or damaged by hand (a dropped partition, a restored backup of `latest` alone).
Each table is filled by its view's newest query as the migrations define it (one source of truth: what the
view writes for a new row is what a rebuild writes), except search_inflight_keys and search_deferred_keys: their views fold
each insert (a placeholder and its tombstone, a deferral and its end, in one insert write nothing), which over
all of `latest` would write every end; they are refilled by their migrations' backfills, the rows in progress
and the rows deferred now.
Searches that read an access path miss rows while it runs; inserts arriving meanwhile are indexed by the
views (duplicates collapse).
"""

from __future__ import annotations

import argparse
import re
import time

from sinks.clickhouse import migrations

TABLES = (
    "search_keys",
    "search_time",
    "latest_by_recipient",
    "latest_outcomes",
    "search_outcome_keys",
    "search_inflight_keys",
    "search_deferred_keys",
)
# tables refilled by their migration's own backfill (`INSERT INTO <table> …`), not by their view's query
BACKFILLED_BY_MIGRATION = frozenset({"search_inflight_keys", "search_deferred_keys"})


_VIEW = re.compile(
    r"^(?:CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS|ALTER TABLE (\w+) MODIFY QUERY)\s+(SELECT\b.*)",
    re.S,
)


def backfill_statements() -> list[tuple[str, str]]:
    """[(table, INSERT … SELECT … FROM latest)] for each access-path table: its view's newest query (the
    CREATE of migrations 007/011/018/026, or a later MODIFY QUERY: 009's server keys, 022's row identities) over
    all of `latest`, without the views' DISTINCT (over a whole table it would hold every row in memory, while
    the tables, ReplacingMergeTree, fold the duplicates themselves); for BACKFILLED_BY_MIGRATION its
    migration's own backfill."""
    target: dict[str, str] = {}  # view -> table
    newest: dict[str, str] = {}  # view -> its newest SELECT
    inserts: dict[str, str] = {}  # table -> its migration's newest backfill (BACKFILLED_BY_MIGRATION)
    for migration in migrations.load_migrations():
        for _, statement in migration.steps():
            m = _VIEW.match(statement.strip())
            if m is None:
                table = statement.split()[2] if statement.startswith("INSERT INTO ") else ""
                if table in BACKFILLED_BY_MIGRATION:
                    inserts[table] = statement.strip()
                continue
            view = m.group(1) or m.group(3)
            if m.group(2):
                target[view] = m.group(2)
            newest[view] = m.group(4).replace("SELECT DISTINCT ", "SELECT ", 1)
    by_table = {table: f"INSERT INTO {table} {newest[view]}" for view, table in target.items()}
    return [(table, inserts.get(table) or by_table[table]) for table in TABLES]


def rebuild(store, tables: tuple[str, ...] = TABLES, progress=print) -> list[tuple[str, int, float]]:
    """Truncate each access-path table of `tables`, then refill it: [(table, rows, seconds)] per table."""
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(
            f"not an access-path table: {', '.join(sorted(unknown))} (choose from {', '.join(TABLES)})"
        )
    done = []
    statements = dict(backfill_statements())
    for table in tables:
        t0 = time.perf_counter()
        store.command(f"TRUNCATE TABLE {store.target(table)}")
        store.command(statements[table])
        rows = int(store.query(f"SELECT count() FROM {table}").result_rows[0][0])
        done.append((table, rows, time.perf_counter() - t0))
        progress(f"rebuilt {table}: {rows} rows in {done[-1][2]:.1f} s")
    return done


def cmd_rebuild(args) -> int:
    from eximtrack import cli

    rebuild(cli.open_store(args), tuple(args.table or TABLES))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from eximtrack import cli

    p = subparsers.add_parser(
        "rebuild-search-index",
        help="refill the search access paths (search_keys, search_time, latest_by_recipient, latest_outcomes, "
        "search_outcome_keys, search_inflight_keys, search_deferred_keys) from the stored latest rows",
    )
    p.add_argument(
        "--table",
        action="append",
        choices=TABLES,
        help="rebuild only this table (repeatable; default: all of them)",
    )
    cli.add_store_arg(p)
    p.set_defaults(func=cmd_rebuild)
