"""Numbered ClickHouse migrations (schemas/clickhouse/NNN_name.sql), applied on open, idempotent.

Applied versions are recorded in ``schema_migrations``; every statement also uses IF NOT EXISTS, so applying
a migration twice (e.g. two openers racing on a server) is harmless. Retention is managed here as well:
``ensure_retention`` rewrites the TTL of the data tables with ``ALTER TABLE … MODIFY TTL`` when it differs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import schemas

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
    "rejects": "toDateTime(if(logunixtime = 0, toDateTime64('2100-01-01 00:00:00', 3, 'UTC'), logunixtime))",
    "log_lines": "toDateTime(logunixtime)",
}

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
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements: drop whole-line ``--`` comments, split on ``;`` at line end."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(lines)
    parts = re.split(r";[ \t]*(?:\n|$)", text)
    return [p.strip() for p in parts if p.strip()]


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


def applied_versions(client) -> set[int]:
    client.command(SCHEMA_MIGRATIONS_DDL)
    return {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}


def apply_migrations(client, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    done = applied_versions(client)
    applied = []
    for migration in load_migrations(directory):
        if migration.version in done:
            continue
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration.version)
    return applied


def current_retention(client, table: str) -> int:
    """TTL days of a table (0 = no TTL)."""
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    if not rows:
        raise RuntimeError(f"table {table} does not exist")
    m = _TTL_DAYS.search(rows[0][0])
    return int(m.group(1)) if m else 0


def ensure_retention(client, days: int, tables: dict[str, str] | None = None) -> list[str]:
    """Set the TTL of `tables` ({table: time expression the TTL counts from}; default: the data tables) to
    `days` (0 removes the TTL); returns the tables changed."""
    days = int(days)
    if days < 0:
        raise ValueError("retention days must be >= 0")
    changed = []
    for table, base in (TTL_BASE if tables is None else tables).items():
        if current_retention(client, table) == days:
            continue
        if days == 0:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            client.command(f"ALTER TABLE {table} MODIFY TTL {base} + toIntervalDay({days})")
        changed.append(table)
    return changed
