"""Contract: the ClickHouse migrations have exactly the record fields as columns (same names, same order).

Checked twice: by parsing the migration SQL (no engine needed) and against a real chDB engine
(system.columns), so a drift between schemas/records.py and schemas/clickhouse/*.sql fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from schemas.records import EVENT_FIELDS, LOGLINE_FIELDS, REJECT_FIELDS, DeliveryEvent
from sinks.clickhouse import encode
from sinks.clickhouse.migrations import load_migrations

TABLE_FIELDS = {
    "events": EVENT_FIELDS,
    "latest": EVENT_FIELDS,
    "rejects": REJECT_FIELDS,
    "log_lines": LOGLINE_FIELDS,
}
NULLABLE = {"spamscore", "queue_time", "delivery_time"}  # the `| None` fields of DeliveryEvent


def _parsed_tables() -> dict[str, list[tuple[str, str]]]:
    """table -> [(column, type)] from the CREATE TABLE statements of all migrations."""
    tables: dict[str, list[tuple[str, str]]] = {}
    for migration in load_migrations():
        for statement in migration.statements():
            m = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*ENGINE", statement, re.S)
            if not m:
                continue
            cols = []
            for line in m.group(2).splitlines():
                line = line.strip().rstrip(",")
                if not line or line.startswith(("INDEX ", "PROJECTION ", "CONSTRAINT ")):
                    continue
                name, _, ch_type = line.partition(" ")
                ch_type = re.sub(r"\s+CODEC\(.*\)$", "", ch_type.strip())  # the codec is not the type
                cols.append((name, ch_type))
            tables[m.group(1)] = cols
    return tables


def test_migrations_are_numbered_and_nonempty():
    migrations = load_migrations()
    assert migrations, "no migrations found"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert migrations[0].version == 1
    assert all(m.statements() for m in migrations)


@pytest.mark.parametrize("table", sorted(TABLE_FIELDS))
def test_migration_columns_match_record_fields(table):
    tables = _parsed_tables()
    assert table in tables, f"no CREATE TABLE for {table}"
    assert tuple(name for name, _ in tables[table]) == TABLE_FIELDS[table]


def test_nullable_only_where_the_record_says_none():
    for table, cols in _parsed_tables().items():
        if table not in TABLE_FIELDS:
            continue
        nullable = {name for name, ch_type in cols if ch_type.startswith("Nullable(")}
        expected = NULLABLE if TABLE_FIELDS[table] is EVENT_FIELDS else set()
        assert nullable == expected, table


def test_time_columns_are_datetime64_utc():
    for table, cols in _parsed_tables().items():
        for name, ch_type in cols:
            if name in encode.TIME_FIELDS:
                assert ch_type == "DateTime64(3, 'UTC')", (table, name, ch_type)


def test_materialized_view_selects_every_event_field():
    for migration in load_migrations():
        for statement in migration.statements():
            m = re.match(
                r"CREATE MATERIALIZED VIEW IF NOT EXISTS \w+ TO latest AS\s+SELECT(.*)FROM events",
                statement,
                re.S,
            )
            if m:
                cols = tuple(c.strip() for c in m.group(1).replace("\n", " ").split(",") if c.strip())
                assert cols == EVENT_FIELDS
                return
    pytest.fail("no materialized view feeding latest")


def test_encoder_rows_have_one_value_per_field():
    e = DeliveryEvent(event_id="e", type="success", server="s", msgid="m")
    assert len(encode.encode_event(e)) == len(EVENT_FIELDS)


@pytest.mark.store
def test_engine_columns_match_record_fields(tmp_path):
    """Apply the migrations in a real chDB (own process: one chDB path per process) and compare."""
    code = textwrap.dedent(
        f"""
        import json
        from sinks.clickhouse.store import Store
        s = Store.open("chdb://{tmp_path}/store?database=contract")
        out = {{"derived": s.query("SELECT table, name FROM system.columns WHERE database = currentDatabase() "
                                   "AND default_kind = 'MATERIALIZED' ORDER BY table, name").result_rows}}
        for t in ("events", "latest", "latest_by_recipient", "rejects", "log_lines"):
            r = s.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                        "AND table = {{t:String}} AND default_kind != 'MATERIALIZED' ORDER BY position", {{"t": t}})
            out[t] = r.result_rows
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # the derived columns (migrations 007, 011, 018, 025): computed by the engine, never sent by the sink
    assert got.pop("derived") == [
        ["latest", "msgtime"],
        ["latest_by_recipient", "msgtime"],
        ["latest_by_recipient", "recipient_lower"],
        ["latest_outcomes", "msgtime"],
        ["search_time", "text_pairs"],
    ]
    # the recipient-ordered copy has exactly the columns of `latest` (its view inserts them by name)
    assert got.pop("latest_by_recipient") == got["latest"]
    for table, fields in TABLE_FIELDS.items():
        assert tuple(name for name, _ in got[table]) == fields, table
        nullable = {name for name, t in got[table] if t.startswith("Nullable(")}
        assert nullable == (NULLABLE if fields is EVENT_FIELDS else set()), table
