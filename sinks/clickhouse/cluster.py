"""The ClickHouse cluster layout: the statements of the numbered migrations (schemas/clickhouse/*.sql) turned
into a replicated, sharded schema, and the names the runtime's DDL-like statements use on a cluster. Pure
text, no I/O: migrations.py applies what this returns, one source of truth for both layouts.

Every table `t` of the migrations becomes two:

  * `t_local`, on every node (`ON CLUSTER`), with the Replicated form of its engine
    (`ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', version, is_deleted)`):
    the data, one copy per replica of a shard;
  * `t`, a Distributed table over `t_local` with the same columns, so that every reader and writer of the
    single-node schema (the sink, the searches, the stats, analysts' SQL) keeps its table names.

The sharding key keeps every row of a message on one shard: `cityHash64(server, msgid)` for each table that
has both columns (events, latest, latest_by_recipient, latest_outcomes, log_lines, search_keys, search_time,
search_outcome_keys, search_inflight_keys, search_deferred_keys). So the latest-state logic (ReplacingMergeTree FINAL: every
version of a row is on the row's shard) and the per-message access paths stay shard-local. The other tables get
`cityHash64(<their ORDER BY>)`, so that the versions of one key of a Replacing table (the rollup totals, the
thresholds, schema_migrations) also meet on one shard and FINAL stays exact. Materialized views are per node
and read and write the local tables (`latest_mv TO latest_local … FROM events_local`): an event inserted
through `events` lands on its message's shard and feeds that shard's latest row, access paths and hourly set
states there. `events_rollup` (a Null table that only feeds the hourly views, migration 020) is Null on every
node too, and sharded by message like `events`. The set states (uniqExact) of the aggregates merge across
shards when read through the Distributed tables, so the counters stay exact.

Views are created on every node over the Distributed tables, with `GLOBAL IN` for their subqueries (an hour's
insert counter or a snapshot's pins are sums over all shards, not per shard). Backfills (`INSERT … SELECT`)
run with `parallel_distributed_insert_select = 2`: each shard inserts its own rows into its local tables.
`--@when` conditions look at the local tables (`system.parts` of every replica).

What a cluster's client sessions need (CLIENT_SETTINGS, applied by the store for `?cluster=NAME`):
foreground (synchronous) Distributed inserts, so that the sink commits offsets only after the rows are on
their shards; `distributed_product_mode = 'global'`, so that an IN subquery over another Distributed table
(the search access paths) is evaluated once over the whole cluster; `load_balancing = 'in_order'`, so that
the two statements of a stats read (plan, then read) see the same replica of each shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REPLICA_PATH = "/clickhouse/tables/{uuid}/{shard}"
REPLICA_NAME = "{replica}"
LOCAL_SUFFIX = "_local"

CLIENT_SETTINGS = {
    "distributed_foreground_insert": 1,
    "distributed_product_mode": "global",
    "load_balancing": "in_order",
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s*\(", re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(?:\(([^()]*)\))?")
_NULL_ENGINE = re.compile(r"\bENGINE\s*=\s*Null\s*$")
_ORDER_BY = re.compile(r"^ORDER BY (.+)$", re.M)
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\b")
_CREATE_VIEW = re.compile(r"^CREATE (OR REPLACE VIEW|VIEW IF NOT EXISTS) (\w+) AS\b")
_ALTER = re.compile(r"^ALTER TABLE (\w+) ")
_INSERT = re.compile(r"^INSERT INTO (\w+)(\s*\([^)]*\))?")
_DROP = re.compile(r"^DROP (VIEW|TABLE) IF EXISTS (\w+)$")
_EXCHANGE = re.compile(r"^EXCHANGE TABLES (\w+) AND (\w+)$")
_TRUNCATE = re.compile(r"^TRUNCATE TABLE IF EXISTS (\w+)$")
_COLUMN_CHANGE = re.compile(r"^(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b")
_SOURCE = re.compile(r"\b(FROM|JOIN)\s+(\w+)\b")


class ClusterSchemaError(ValueError):
    """A migration statement has a form the cluster layout does not know how to translate."""


def check_name(name: str) -> str:
    """A cluster name as ClickHouse's `remote_servers` names it (an identifier)."""
    if not _IDENT.match(name or ""):
        raise ValueError(f"cluster name {name!r} is not an identifier (letters, digits, _)")
    return name


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def stored(table: str, cluster: Cluster | None) -> str:
    """The table that holds `table`'s rows (and its TTL) on a node: itself, or its local table on a cluster."""
    return table if cluster is None else local_name(table)


def target(table: str, cluster: Cluster | None) -> str:
    """What a DELETE, TRUNCATE or ALTER of `table` names: the table, or its local tables on every node."""
    return table if cluster is None else cluster.target(table)


def tables_of(statements: list[str]) -> dict[str, str]:
    """{table: its CREATE statement} of every table created by `statements` (in order)."""
    return {m.group(1): s for s in statements if (m := _CREATE_TABLE.match(s))}


def sharding_key(create: str) -> str:
    """The sharding key of the table of one CREATE TABLE statement: by message when it has both `server`
    and `msgid` columns, else by its sorting key."""
    body = create[create.index("(") + 1 :]
    columns = set(re.findall(r"^\s*(\w+)\s+\w", body, re.M))
    if {"server", "msgid"} <= columns:
        return "cityHash64(server, msgid)"
    order = _ORDER_BY.search(create)
    if order is None:
        raise ClusterSchemaError(f"no ORDER BY in {create[:60]!r}")
    key = order.group(1).strip()
    return f"cityHash64({key[1:-1] if key.startswith('(') and key.endswith(')') else key})"


@dataclass(frozen=True)
class Cluster:
    """The schema on the ClickHouse cluster `name` (a `remote_servers` entry whose nodes define the
    `{shard}` and `{replica}` macros). `tables` are every table the migrations create (tables_of over all
    of them): their names are what a statement's references are translated by."""

    name: str
    tables: frozenset[str]

    def __post_init__(self) -> None:
        check_name(self.name)

    @property
    def on(self) -> str:
        return f"ON CLUSTER {self.name}"

    def target(self, table: str) -> str:
        """What a runtime statement that changes data in place or the table itself (DELETE, TRUNCATE,
        ALTER … DROP PARTITION / MODIFY TTL) names: the local tables of every node."""
        return f"{local_name(table)} {self.on}" if table in self.tables else f"{table} {self.on}"

    def distributed(self, table: str, create: str, replace: bool = False) -> str:
        """The Distributed table `table` over its local tables, with the columns they have now."""
        head = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
        return (
            f"{head} {table} {self.on} AS {local_name(table)}\n"
            f"ENGINE = Distributed({self.name}, currentDatabase(), {local_name(table)}, {sharding_key(create)})"
        )

    def _locals(self, sql: str) -> str:
        """`sql` (a materialized view's SELECT) reading the local tables."""

        def sub(m: re.Match) -> str:
            name = m.group(2)
            return f"{m.group(1)} {local_name(name)}" if name in self.tables else m.group(0)

        return _SOURCE.sub(sub, sql)

    def _local_literals(self, sql: str) -> str:
        """A `--@when` condition on this node's local tables: quoted table names -> local names; the parts
        of every replica."""
        for table in self.tables:
            sql = sql.replace(f"'{table}'", f"'{local_name(table)}'")
        return sql.replace("FROM system.parts", f"FROM clusterAllReplicas({self.name}, system.parts)")

    def steps(
        self, steps: list[tuple[str | None, str]], creates: dict[str, str]
    ) -> list[tuple[str | None, str]]:
        """The cluster form of one migration's (condition, statement) steps (migrations.split_steps).
        `creates` is {table: CREATE statement} of every table created so far or in this migration (what a
        Distributed table is created like)."""
        out: list[tuple[str | None, str]] = []
        for when, statement in steps:
            cond = None if when is None else self._local_literals(when)
            for s in self.statement(statement, creates):
                # a Distributed table given its local table's columns again is harmless to repeat, and must
                # follow the statement it completes even when that statement's condition no longer holds
                # (after an EXCHANGE the condition that chose it is false)
                out.append((None if s.startswith("CREATE OR REPLACE TABLE") else cond, s))
        return out

    def statement(self, sql: str, creates: dict[str, str]) -> list[str]:
        """The cluster statements for one statement of a migration."""
        if m := _CREATE_TABLE.match(sql):
            table = m.group(1)
            return [self._local_table(table, sql), self.distributed(table, sql)]
        if m := _CREATE_MV.match(sql):
            name, to = m.groups()
            rest = sql[m.end() :]
            return [
                f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {self.on} TO {local_name(to)} AS{self._locals(rest)}"
            ]
        if m := _CREATE_VIEW.match(sql):
            kind, name = m.groups()
            body = re.sub(
                r"\b(NOT )?IN \(SELECT\b", lambda x: f"GLOBAL {x.group(1) or ''}IN (SELECT", sql[m.end() :]
            )
            return [f"CREATE {kind} {name} {self.on} AS{body}"]
        if m := _ALTER.match(sql):
            table, rest = m.group(1), sql[m.end() :]
            if table not in self.tables:  # a materialized view: MODIFY QUERY over the local tables
                return [f"ALTER TABLE {table} {self.on} {self._locals(rest)}"]
            out = [f"ALTER TABLE {local_name(table)} {self.on} {rest}"]
            if _COLUMN_CHANGE.match(rest):
                out.append(self.distributed(table, creates[table], replace=True))
            return out
        if m := _INSERT.match(sql):  # a backfill: each shard from and into its local tables
            table, columns = m.group(1), m.group(2) or ""
            rest = sql[m.end() :]
            return [f"INSERT INTO {table}{columns} SETTINGS parallel_distributed_insert_select = 2{rest}"]
        if m := _DROP.match(sql):
            kind, name = m.groups()
            if kind == "TABLE" and name in self.tables:
                return [
                    f"DROP TABLE IF EXISTS {name} {self.on} SYNC",
                    f"DROP TABLE IF EXISTS {local_name(name)} {self.on} SYNC",
                ]
            return [f"DROP {kind} IF EXISTS {name} {self.on} SYNC"]
        if m := _EXCHANGE.match(sql):
            a, b = m.groups()
            return [
                f"EXCHANGE TABLES {local_name(a)} AND {local_name(b)} {self.on}",
                # the Distributed tables keep pointing at the names: give each the columns its data has now
                self.distributed(a, creates[b], replace=True),
                self.distributed(b, creates[a], replace=True),
            ]
        if m := _TRUNCATE.match(sql):  # the rows are in the local tables of every node
            return [f"TRUNCATE TABLE IF EXISTS {self.target(m.group(1))}"]
        raise ClusterSchemaError(f"no cluster form for the statement {sql[:80]!r}")

    def _local_table(self, table: str, create: str) -> str:
        head = f"CREATE TABLE IF NOT EXISTS {local_name(table)} {self.on}\n"
        if _NULL_ENGINE.search(create):  # stores nothing, only feeds views: the same on every node
            return head + create[_CREATE_TABLE.match(create).end() - 1 :]
        m = _ENGINE.search(create)
        if m is None:
            raise ClusterSchemaError(f"table {table}: no MergeTree-family engine")
        args = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"] + ([m.group(2)] if m.group(2) else [])
        engine = f"ENGINE = Replicated{m.group(1)}({', '.join(args)})"
        return head + create[_CREATE_TABLE.match(create).end() - 1 : m.start()] + engine + create[m.end() :]


__all__ = [
    "CLIENT_SETTINGS",
    "Cluster",
    "ClusterSchemaError",
    "LOCAL_SUFFIX",
    "REPLICA_NAME",
    "REPLICA_PATH",
    "check_name",
    "local_name",
    "sharding_key",
    "stored",
    "tables_of",
    "target",
]
