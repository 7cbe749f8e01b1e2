"""Numbered ClickHouse migrations (schemas/clickhouse/NNN_name.sql), applied on open, idempotent.

Applied versions are recorded in ``schema_migrations``; every statement also uses IF NOT EXISTS, so applying
a migration twice (e.g. two openers racing on a server) is harmless. A statement that cannot say IF NOT EXISTS
(an EXCHANGE, a backfill) is preceded by a ``--@when <SELECT>`` line and runs only when that query returns a
true first value, so a migration interrupted half-way resumes where it stopped. Each statement's duration is
logged (a backfill of a large store takes minutes: that is the progress shown). Retention is managed here as well:
``ensure_retention`` rewrites the TTL of the data tables with ``ALTER TABLE … MODIFY TTL`` when it differs;
``ensure_ttl_bases`` (run after the migrations) when a table's TTL counts from an older expression.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import schemas
from sinks.clickhouse import cluster as cluster_layout
from sinks.clickhouse import schema_baseline

MIGRATIONS_DIR = Path(schemas.__file__).resolve().parent / "clickhouse"
_NAME = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""

# The time expression each data table's TTL is based on (must match the migrations).
TTL_BASE = {
    "events": "toDateTime(actionunixtime)",
    "latest": "toDateTime(actionunixtime)",
    "latest_by_recipient": "toDateTime(actionunixtime)",  # the same rows ordered by recipient (migration 011)
    "latest_outcomes": "toDateTime(actionunixtime)",  # the same rows, narrowed to outcome and times (018)
    "rejects": "toDateTime(if(logunixtime = 0, toDateTime64('2100-01-01 00:00:00', 3, 'UTC'), logunixtime))",
    "log_lines": "toDateTime(logunixtime)",
    # access paths (migration 007): kept a month longer than the rows they point to; a row whose arrival is
    # unknown (ts = 0) counts from its message's time (msgtime), not from 1970
    "search_keys": "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31)",
    "search_time": "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31)",
    "search_outcome_keys": "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31)",  # search_keys' by outcome (026)
    "search_inflight_keys": "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31)",  # ... of rows in progress (027)
    "search_deferred_keys": "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31)",  # ... of rows deferred (029)
}
# TTL rules a table keeps whatever its retention (after the retention's rule; none of them in days, so that the
# retention's days stay the TTL's first `toIntervalDay`): search_inflight_keys deletes its tombstones a day
# after they were written (migration 027), search_deferred_keys the ends of its deferrals (029).
TTL_KEPT = {
    "search_inflight_keys": "written + toIntervalHour(24) DELETE WHERE is_deleted = 1",
    "search_deferred_keys": "written + toIntervalHour(24) DELETE WHERE is_deleted = 1",
}

# the aggregates migrations 034 and 035 lay out anew (their sets and delay quantiles of 64-bit elements), and
# one they do not, whose TTL days are the retention `retention --aggregates-days` gave every aggregate
RELAID_AGGREGATES = ("mail_hourly", "activity_hourly", "reasons_hourly", "delays_hourly")
RETAINED_AGGREGATE = "rejections_hourly"

log = logging.getLogger("eximtrack.migrations")

_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.S)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        return [statement for _, statement in self.steps()]

    def steps(self) -> list[tuple[str | None, str]]:
        """(condition or None, statement) pairs: a condition is the SELECT of the ``--@when`` line before it."""
        return split_steps(self.sql)


WHEN = "--@when "


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements: drop whole-line ``--`` comments, split on ``;`` at line end."""
    return [statement for _, statement in split_steps(sql)]


def split_steps(sql: str) -> list[tuple[str | None, str]]:
    """Statements with their ``--@when`` condition (other whole-line ``--`` comments are dropped)."""
    steps: list[tuple[str | None, str]] = []
    when: str | None = None
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(WHEN) and not any(part.strip() for part in current):
            when = stripped[len(WHEN) :].strip()
            continue
        if stripped.startswith("--"):
            continue
        current.append(line)
        if re.search(r";[ \t]*$", line):
            text = "\n".join(current).strip()
            text = re.sub(r";[ \t]*$", "", text).strip()
            if text:
                steps.append((when, text))
            when, current = None, []
    text = "\n".join(current).strip()
    if text:
        steps.append((when, text))
    return steps


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers in {directory}")
    return found


def cluster_of(name: str, directory: Path = MIGRATIONS_DIR) -> cluster_layout.Cluster:
    """The cluster layout (sinks/clickhouse/cluster.py) of the migrations of `directory` on cluster `name`."""
    statements = [SCHEMA_MIGRATIONS_DDL.strip()]
    statements += [s for m in load_migrations(directory) for s in m.statements()]
    return cluster_layout.Cluster(name, frozenset(cluster_layout.tables_of(statements)))


def schema_migrations_steps(cluster: cluster_layout.Cluster | None = None) -> list[str]:
    """The statements that create ``schema_migrations`` (on every node of `cluster` when given)."""
    ddl = SCHEMA_MIGRATIONS_DDL.strip()
    return [ddl] if cluster is None else cluster.statement(ddl, cluster_layout.tables_of([ddl]))


def migration_steps(
    cluster: cluster_layout.Cluster | None = None, directory: Path = MIGRATIONS_DIR
) -> list[tuple[Migration, list[tuple[str | None, str]]]]:
    """[(migration, its (condition, statement) steps)] in order: as written, or in `cluster`'s layout."""
    out = []
    creates = cluster_layout.tables_of([SCHEMA_MIGRATIONS_DDL.strip()])
    for migration in load_migrations(directory):
        steps = migration.steps()
        if cluster is not None:
            creates.update(cluster_layout.tables_of([s for _, s in steps]))
            steps = cluster.steps(steps, creates)
        out.append((migration, steps))
    return out


def applied_versions(client, cluster: cluster_layout.Cluster | None = None) -> set[int]:
    for statement in schema_migrations_steps(cluster):
        client.command(statement)
    return {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}


def apply_migrations(
    client,
    directory: Path = MIGRATIONS_DIR,
    cluster: cluster_layout.Cluster | None = None,
    baseline: bool = True,
) -> list[int]:
    """Apply every migration not yet recorded (in `cluster`'s layout when given: the client is connected to
    one node of it); returns the versions applied now. A new store (nothing recorded) is laid out from the
    schema baseline when there is one (`baseline`, the project's own migrations, no cluster), then the
    migrations after it are applied."""
    done = applied_versions(client, cluster)
    applied = []
    if baseline and not done and cluster is None and directory == MIGRATIONS_DIR:
        applied = apply_baseline(client, load_migrations(directory))
        done = set(applied)
    for migration, steps in migration_steps(cluster, directory):
        if migration.version in done:
            continue
        for when, statement in steps:
            if when is not None and not condition_holds(client, when):
                continue
            t0 = time.perf_counter()
            client.command(statement)
            took = time.perf_counter() - t0
            if took > 1.0:
                log.warning("migration %03d: %.1f s for %s", migration.version, took, statement[:80])
        client.command(
            "INSERT INTO schema_migrations (version, name, checksum) "
            "VALUES ({v:UInt32}, {n:String}, {c:String})",
            parameters={"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        applied.append(migration.version)
    return applied


def migrate(client, cluster: cluster_layout.Cluster | None = None, baseline: bool = True) -> list[int]:
    """What opening a store does to its layout: the pending migrations (`apply_migrations`), then the TTL
    bases (`ensure_ttl_bases`) and, after a migration, the aggregates' retention on the aggregates it laid out
    anew (`keep_aggregate_retention`); returns the versions applied now."""
    applied = apply_migrations(client, cluster=cluster, baseline=baseline)
    ensure_ttl_bases(client, cluster=cluster)
    if applied:
        keep_aggregate_retention(client, cluster=cluster)
    return applied


def keep_aggregate_retention(client, cluster: cluster_layout.Cluster | None = None) -> list[str]:
    """Give the aggregates a migration laid out anew (RELAID_AGGREGATES, created with the default TTL) the
    retention of the others (`retention --aggregates-days` sets them all alike: RETAINED_AGGREGATE's is
    theirs); returns the tables changed."""
    days = current_retention(client, RETAINED_AGGREGATE, cluster)
    return ensure_retention(client, days, {t: "hour" for t in RELAID_AGGREGATES}, cluster=cluster)


def apply_baseline(client, known: list[Migration]) -> list[int]:
    """Lay out a new store from the schema baseline (sinks/clickhouse/schema_baseline.py) and record the
    migrations it covers; returns their versions, or [] (nothing done) when there is no baseline, when it
    covers a migration that is not among `known`, or when the database holds a table the
    baseline would not create. Every statement is a CREATE … IF NOT EXISTS: a layout interrupted half-way is
    finished by the next open, which finds nothing recorded and only the baseline's tables."""
    layout = schema_baseline.load()
    if layout is None:
        return []
    covered = [m for m in known if m.version <= layout.covers]
    if [m.version for m in covered] != list(range(1, layout.covers + 1)):
        return []
    existing = {r[0] for r in client.query("SHOW TABLES").result_rows} - {"schema_migrations"}
    if not existing <= layout.names():
        return []
    for statement in layout.statements:
        seeded = layout.seeded(statement)
        if seeded and client.query(f"SELECT count() FROM `{seeded}`").result_rows[0][0]:
            continue  # seeded before an interruption: not twice
        client.command(statement)
    values = ", ".join(f"({{v{i}:UInt32}}, {{n{i}:String}}, {{c{i}:String}})" for i in range(len(covered)))
    params = {}
    for i, m in enumerate(covered):
        params.update({f"v{i}": m.version, f"n{i}": m.name, f"c{i}": m.checksum})
    client.command(
        f"INSERT INTO schema_migrations (version, name, checksum) VALUES {values}", parameters=params
    )
    return [m.version for m in covered]


def condition_holds(client, condition: str) -> bool:
    rows = client.query(condition).result_rows
    return bool(rows and rows[0] and rows[0][0])


def current_retention(client, table: str, cluster: cluster_layout.Cluster | None = None) -> int:
    """TTL days of a table (0 = no TTL); on a cluster, of its local table on the node the client is on."""
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": cluster_layout.stored(table, cluster)},
    ).result_rows
    if not rows:
        raise RuntimeError(f"table {table} does not exist")
    return _ttl_days(rows[0][0])


def _ttl_days(engine_full: str) -> int:
    """The TTL days of a table's `engine_full` (0 = no TTL)."""
    m = _TTL_DAYS.search(engine_full)
    return int(m.group(1)) if m else 0


def ensure_ttl_bases(
    client, tables: dict[str, str] | None = None, cluster: cluster_layout.Cluster | None = None
) -> list[str]:
    """Rewrite, keeping its days, the TTL of every table whose TTL counts from another expression than
    `tables` says (default TTL_BASE: an older migration's TTL); returns the tables changed. Existing parts
    are not rewritten: their merges apply the new TTL."""
    engines = _engines(client)
    changed = []
    for table, base in (TTL_BASE if tables is None else tables).items():
        engine = engines.get(cluster_layout.stored(table, cluster))
        if engine is None:
            raise RuntimeError(f"table {table} does not exist")
        days = _ttl_days(engine)
        if not days or _ttl_clause(engine).startswith(base.replace(" ", "")):
            continue
        client.command(
            f"ALTER TABLE {cluster_layout.target(table, cluster)} MODIFY TTL {ttl_rules(table, base, days)} "
            "SETTINGS materialize_ttl_after_modify = 0"
        )
        changed.append(table)
    return changed


def ttl_rules(table: str, base: str, days: int) -> str:
    """The TTL of `table` with `days` of retention counted from `base` (none: 0), and the rules it always keeps
    (TTL_KEPT); '' for no TTL at all."""
    rules = [f"{base} + toIntervalDay({days})"] if days else []
    if table in TTL_KEPT:
        rules.append(TTL_KEPT[table])
    return ", ".join(rules)


def _ttl_clause(engine_full: str) -> str:
    """The TTL expression of a table's `engine_full` as ClickHouse shows it, without spaces ('' when none)."""
    _, _, ttl = engine_full.partition(" TTL ")
    return ttl.replace(" ", "")


def _engines(client) -> dict[str, str]:
    """{table: engine_full} of the current database (on a cluster, the local tables of the node the client is
    on): one read for every table's TTL."""
    return dict(
        client.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
        ).result_rows
    )


def ensure_retention(
    client, days: int, tables: dict[str, str] | None = None, cluster: cluster_layout.Cluster | None = None
) -> list[str]:
    """Set the TTL of `tables` ({table: time expression the TTL counts from}; default: the data tables) to
    `days` (0 removes the retention's rule; the rules of TTL_KEPT stay); returns the tables changed. A table
    the store does not have yet (a store laid out by a release before the migration that creates it) is left
    to that migration: Store.open gives the tables of the migrations it applied the store's retention."""
    days = int(days)
    if days < 0:
        raise ValueError("retention days must be >= 0")
    engines = _engines(client)
    changed = []
    for table, base in (TTL_BASE if tables is None else tables).items():
        engine = engines.get(cluster_layout.stored(table, cluster))
        if engine is None or _ttl_days(engine) == days:
            continue
        rules = ttl_rules(table, base, days)
        if not rules:
            client.command(f"ALTER TABLE {cluster_layout.target(table, cluster)} REMOVE TTL")
        else:
            client.command(f"ALTER TABLE {cluster_layout.target(table, cluster)} MODIFY TTL {rules}")
        changed.append(table)
    return changed
