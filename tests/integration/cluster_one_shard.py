"""Runs the cluster schema (sinks/clickhouse/cluster.py) in chDB as ONE shard of the cluster runs it, next
to the single-node schema, and prints what test_cluster_schema.py compares (JSON on stdout):

    python tests/integration/cluster_one_shard.py STORE_DIR CONFIG_XML

chDB parses every statement (`formatQuery`) but cannot execute `ON CLUSTER` (no distributed DDL queue),
replicate (clickhouse-local keeps Replicated tables read-only) nor reach a Distributed table's shards (it
listens on no port). So each generated statement is executed the way one shard executes it: without
`ON CLUSTER`; with the engine the Replicated engine replicates (the same arguments after the Keeper path and
replica name); the Distributed table as a Buffer that writes straight through to the local table and reads
it (one shard: the Distributed table reads and writes exactly that); an `INSERT … SELECT` with
`parallel_distributed_insert_select = 2` as the shard runs it, from and into its local tables.

Then the real samples are ingested into the single-node database, the same rows inserted into the local
tables of the cluster database (the materialized views feed the rest), the stats snapshots refreshed on both
(through the Distributed names), and the same searches and stats run through the real builders on both.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CLUSTER = "eximtrack"
CONFIG = f"""<clickhouse>
  <remote_servers><{CLUSTER}><shard><replica><host>localhost</host><port>9000</port></replica></shard></{CLUSTER}>
  </remote_servers>
</clickhouse>
"""


def one_shard(statement: str, tables: frozenset[str]) -> str:
    """`statement` (the cluster form) as one shard of the cluster executes it."""
    from sinks.clickhouse import cluster

    s = statement.replace(f" ON CLUSTER {CLUSTER}", "")
    path = re.escape(f"'{cluster.REPLICA_PATH}', '{cluster.REPLICA_NAME}'")
    s = re.sub(rf"Replicated(\w*MergeTree)\({path}(?:, )?", r"\1(", s)
    s = re.sub(
        rf"ENGINE = Distributed\({CLUSTER}, currentDatabase\(\), (\w+), .*\)$",
        r"ENGINE = Buffer(currentDatabase(), \1, 1, 0, 0, 0, 0, 0, 0)",
        s,
        flags=re.M,
    )
    s = s.replace(f"clusterAllReplicas({CLUSTER}, system.parts)", "system.parts")
    m = re.match(r"^INSERT INTO (\w+)(.*?) SETTINGS parallel_distributed_insert_select = 2", s, re.S)
    if m:
        rest = re.sub(
            r"\b(FROM|JOIN)\s+(\w+)\b",
            lambda x: (
                f"{x.group(1)} {cluster.local_name(x.group(2))}" if x.group(2) in tables else x.group(0)
            ),
            s[m.end() :],
        )
        s = f"INSERT INTO {cluster.local_name(m.group(1))}{m.group(2)}{rest}"
    return s


def quote(sql: str) -> str:
    return "'" + sql.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(directory: str, config: str) -> int:
    import clickhouse_connect
    from chdb import session

    from eximtrack import stats, stats_snapshots
    from eximtrack.config import parse_store_url
    from eximtrack.ingest import ingest_files
    from eximtrack.search import build_search
    from eximtrack.web.query import build_search_query
    from sinks.clickhouse import migrations
    from sinks.clickhouse.store import Store, store_run

    Path(config).write_text(CONFIG)
    engine = session.Session(f"{directory}?config-file={config}")  # the one engine of this process
    out: dict = {"parse_errors": [], "exec_errors": []}
    layout = migrations.cluster_of(CLUSTER)
    steps = [(None, s) for s in migrations.schema_migrations_steps(layout)]
    steps += [step for _, found in migrations.migration_steps(layout) for step in found]
    out["statements"] = len(steps)
    for when, statement in steps:
        for sql in filter(None, (when, statement)):
            try:
                engine.query(f"SELECT formatQuery({quote(sql)})")
            except Exception as exc:  # noqa: BLE001 - collected for the test to show
                out["parse_errors"].append([sql[:200], str(exc)[:300]])

    stores = {}
    for database in ("single", "cl"):
        engine.query(f"CREATE DATABASE IF NOT EXISTS {database}")
        client = clickhouse_connect.get_client(dsn=f"chdb://{directory}", database=database)
        stores[database] = Store(client, parse_store_url(f"chdb://{directory}?database={database}"))
    single, cl = stores["single"], stores["cl"]
    migrations.apply_migrations(single.client)
    for when, statement in steps:
        if when is not None and not migrations.condition_holds(cl.client, one_shard(when, layout.tables)):
            continue
        try:
            cl.client.command(one_shard(statement, layout.tables))
        except Exception as exc:  # noqa: BLE001
            out["exec_errors"].append([statement[:200], str(exc)[:300]])
            break

    def tables(database: str) -> dict:
        rows = single.query(
            "SELECT table, name, type, default_kind, default_expression FROM system.columns "
            "WHERE database = {d:String} ORDER BY table, position",
            {"d": database},
        ).result_rows
        found: dict = {}
        for table, *column in rows:
            found.setdefault(table, []).append(column)
        return found

    def engines(database: str) -> dict:
        rows = single.query(
            "SELECT name, engine FROM system.tables WHERE database = {d:String}", {"d": database}
        ).result_rows
        return dict(rows)

    out["columns"] = {"single": tables("single"), "cl": tables("cl")}
    out["engines"] = {"single": engines("single"), "cl": engines("cl")}
    if out["exec_errors"]:
        print(json.dumps(out, default=str))
        return 0

    samples = ROOT / "samples"
    ingest_files(single, [str(samples / "mainlog-cpanel.log")], server="web1", background=False)
    ingest_files(single, [str(samples / "mainlog-all.log")], server="web2", background=False)
    for table in ("events", "rejects", "log_lines"):  # what the sink inserts, as it lands on the shard
        cl.command(f"INSERT INTO cl.{table} SELECT * FROM single.{table}")
    cl.command("INSERT INTO cl.events_rollup SELECT * FROM single.events")  # and the aggregates' feed
    for store in (single, cl):
        stats_snapshots.refresh(store)

    def answers(store: Store) -> dict:
        run = store_run(store)
        got = {}
        for name, filters in {
            "all": {},
            "failures": {"type": "failure"},
            "recipient": {"recipient": "@", "match": "contains"},
        }.items():
            sql, params = build_search(filters)
            got[f"search_{name}"] = [list(map(str, r)) for r in run(sql, params)[1]]
        for name, raw in {"page": {"limit": "5"}, "deferred": {"type": "defer", "limit": "50"}}.items():
            query = build_search_query(raw, None)
            got[f"api_{name}"] = [list(map(str, r)) for r in run(*query.page(None, query.limit + 1))[1]]
        for by in ("server", "user", "domain"):
            got[f"stats_{by}"] = [list(map(str, r)) for r in stats.build_stats(by).run(run)[1]]
        got["mail_hourly_all"] = [
            list(map(str, r)) for r in run("SELECT * FROM mail_hourly_all ORDER BY ALL", {})[1]
        ]
        got["snapshot_hours"] = run("SELECT count() FROM mail_hourly_snap_hours", {})[1][0][0]
        return got

    out["answers"] = {"single": answers(single), "cl": answers(cl)}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
