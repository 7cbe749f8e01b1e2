"""`eximtrack schema [--cluster NAME]`: print the store's DDL, every migration's statements in order, as
the store applies them (single node), or in the replicated, sharded layout of a ClickHouse cluster
(sinks/clickhouse/cluster.py), for a DBA to review or to apply by hand with `clickhouse-client --multiquery`.
A statement with a `--@when` condition is printed after it as a comment: the store runs it only when the
condition holds (resuming a migration stopped half-way), on a new store every statement applies.
"""

from __future__ import annotations

import sys

from sinks.clickhouse import migrations


def schema_sql(cluster: str | None = None) -> str:
    """The DDL of every migration as one SQL script."""
    layout = migrations.cluster_of(cluster) if cluster else None
    out = ["-- schema_migrations: the versions applied"]
    out += [s + ";" for s in migrations.schema_migrations_steps(layout)]
    for migration, steps in migrations.migration_steps(layout):
        out.append(f"\n-- migration {migration.version:03d} {migration.name}")
        for when, statement in steps:
            if when is not None:
                out.append(f"-- when: {when}")
            out.append(statement + ";")
    return "\n".join(out) + "\n"


def cmd_schema(args) -> int:
    try:
        sys.stdout.write(schema_sql(args.cluster))
    except ValueError as exc:
        print(f"eximtrack schema: {exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "schema", help="print the store's DDL (single node, or --cluster NAME: replicated and sharded)"
    )
    p.add_argument(
        "--cluster", metavar="NAME", help="the ClickHouse cluster (remote_servers) to lay it out on"
    )
    p.set_defaults(func=cmd_schema)
