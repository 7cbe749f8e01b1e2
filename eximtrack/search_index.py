"""`eximtrack rebuild-search-index`: empty the access-path tables of migrations 007/009/011/018 (search_keys,
search_time, latest_by_recipient, latest_outcomes) and fill them again from the stored rows of `latest`.

The materialized views keep them current on every insert, and migration 007 backfills them once, so this is
only needed when they were emptied or damaged by hand (a dropped partition, a restored backup of `latest`
alone). The statements are the migrations' own backfills (one source of truth). Searches that read an access
path miss rows while it runs; inserts arriving meanwhile are indexed by the views (duplicates collapse).
"""

from __future__ import annotations

import argparse
import time

from sinks.clickhouse import migrations

TABLES = ("search_keys", "search_time", "latest_by_recipient", "latest_outcomes")


def backfill_statements() -> list[tuple[str, str]]:
    """[(table, INSERT … SELECT … FROM latest)] of the migrations that fill the access paths (007, 009's
    server keys, 011's recipient-ordered copy, 018's narrow copy), in order."""
    out = []
    for migration in migrations.load_migrations():
        for _, statement in migration.steps():
            words = statement.split()
            if words[:2] == ["INSERT", "INTO"] and words[2] in TABLES:
                out.append((words[2], statement))
    return out


def rebuild(store, progress=print) -> list[tuple[str, int, float]]:
    """Truncate each access-path table, then refill it: [(table, rows, seconds)] per table."""
    done = []
    statements = backfill_statements()
    for table in TABLES:
        t0 = time.perf_counter()
        store.command(f"TRUNCATE TABLE {store.target(table)}")
        for name, statement in statements:
            if name == table:
                store.command(statement)
        rows = int(store.query(f"SELECT count() FROM {table}").result_rows[0][0])
        done.append((table, rows, time.perf_counter() - t0))
        progress(f"rebuilt {table}: {rows} rows in {done[-1][2]:.1f} s")
    return done


def cmd_rebuild(args) -> int:
    from eximtrack import cli

    rebuild(cli.open_store(args))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from eximtrack import cli

    p = subparsers.add_parser(
        "rebuild-search-index",
        help="refill the search access paths (search_keys, search_time, latest_by_recipient, latest_outcomes) from the stored latest rows",
    )
    cli.add_store_arg(p)
    p.set_defaults(func=cmd_rebuild)
