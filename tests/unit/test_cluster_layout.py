"""The cluster layout (sinks/clickhouse/cluster.py) of the migrations, as text: what every statement becomes
on a cluster, the sharding keys, the store URL's `?cluster=`, and that the single-node statements are the
migration files' own. Executed (one shard) and parsed by ClickHouse: tests/integration/test_cluster_schema.py."""

from __future__ import annotations

import re

import pytest

from eximtrack.config import ConfigError, parse_store_url
from eximtrack.schema import schema_sql
from sinks.clickhouse import cluster, migrations

LAYOUT = migrations.cluster_of("fleet")
STEPS = [(m, w, s) for m, steps in migrations.migration_steps(LAYOUT) for w, s in steps]
BY_MESSAGE = {
    "events",
    "events_rollup",
    "latest",
    "latest_next",
    "latest_by_recipient",
    "latest_outcomes",
    "log_lines",
    "search_keys",
    "search_outcome_keys",
    "search_inflight_keys",
    "search_deferred_keys",
    "search_time",
    "search_time_next",
}
NULL_TABLES = {"events_rollup"}  # migration 020: the hourly aggregates' feed


def test_single_node_steps_are_the_migration_files_own():
    for migration, steps in migrations.migration_steps(None):
        assert steps == migration.steps()


def test_every_table_is_a_replicated_local_table_and_a_distributed_table_by_the_same_name():
    creates = {}
    for _, _, s in STEPS:
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+) ON CLUSTER fleet\b", s):
            creates[m.group(1)] = s
    tables = LAYOUT.tables - {"schema_migrations"}
    for table in tables:
        local = creates[f"{table}_local"]
        if table in NULL_TABLES:  # stores nothing: nothing to replicate, the same feed of views on every node
            assert local.endswith("ENGINE = Null") and "Replicated" not in local
        else:
            assert re.search(
                r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{uuid\}/\{shard\}', '\{replica\}'",
                local,
            )
        dist = creates[table]
        assert f"AS {table}_local\nENGINE = Distributed(fleet, currentDatabase(), {table}_local, " in dist
        key = "cityHash64(server, msgid)"
        assert (key in dist) == (table in BY_MESSAGE), table


def test_replacing_tables_without_a_message_are_sharded_by_their_sorting_key():
    # every version of one key meets on one shard, so FINAL stays exact (rollup totals, thresholds)
    create = next(s for _, _, s in STEPS if s.startswith("CREATE TABLE IF NOT EXISTS mail_hourly_totals "))
    assert "cityHash64(hour, server, owner, user, domain, sender, outbound)" in create


def test_materialized_views_read_and_write_local_tables():
    mvs = [s for _, _, s in STEPS if s.startswith("CREATE MATERIALIZED VIEW")]
    mvs += [s for _, _, s in STEPS if re.match(r"ALTER TABLE \w+_mv ", s)]
    assert len(mvs) >= 12
    for s in mvs:
        sources = re.findall(r"\b(?:FROM|(?<!ARRAY )JOIN)\s+(\w+)\b(?!\()", s)  # not an ARRAY JOIN's array
        assert sources and all(x.endswith("_local") for x in sources), s[:120]
        if s.startswith("CREATE"):
            assert re.search(r" ON CLUSTER fleet TO \w+_local AS", s)


def test_views_read_distributed_tables_with_global_subqueries():
    views = [
        s
        for _, _, s in STEPS
        if re.match(r"CREATE (OR REPLACE VIEW|VIEW IF NOT EXISTS) \w+ ON CLUSTER fleet AS", s)
    ]
    assert len(views) >= 8
    all_view = [s for s in views if " mail_hourly_all " in s][-1]
    assert " GLOBAL IN (SELECT" in all_view and not re.search(r"(?<!GLOBAL) IN \(SELECT", all_view)
    assert not any("_local" in s for s in views)


def test_every_ddl_runs_on_the_whole_cluster_and_backfills_run_per_shard():
    for _, _, s in STEPS:
        if s.startswith("INSERT INTO"):
            assert "SETTINGS parallel_distributed_insert_select = 2" in s
        else:
            assert " ON CLUSTER fleet" in s, s[:100]


def test_a_column_added_to_a_table_reaches_its_distributed_table():
    texts = [s for _, _, s in STEPS]
    i = texts.index(
        next(s for s in texts if s.startswith("ALTER TABLE mail_hourly_local ON CLUSTER fleet ADD COLUMN"))
    )
    assert texts[i + 1].startswith(
        "CREATE OR REPLACE TABLE mail_hourly ON CLUSTER fleet AS mail_hourly_local"
    )


def test_the_exchange_of_latest_gives_both_distributed_tables_their_new_columns_unconditionally():
    steps = [(w, s) for _, w, s in STEPS]
    i = next(i for i, (_, s) in enumerate(steps) if s.startswith("EXCHANGE TABLES"))
    assert steps[i][1] == "EXCHANGE TABLES latest_local AND latest_next_local ON CLUSTER fleet"
    assert "'latest_local'" in steps[i][0]  # the condition looks at the node's local table
    assert [w for w, _ in steps[i + 1 : i + 3]] == [None, None]
    assert steps[i + 1][1].startswith("CREATE OR REPLACE TABLE latest ON CLUSTER fleet AS latest_local")


def test_migration_028_rewrites_and_empties_the_local_tables_of_every_node():
    steps = [s for m, _, s in STEPS if m.version == 28]
    assert steps[0].startswith("ALTER TABLE reasons_hourly_mv ON CLUSTER fleet MODIFY QUERY")
    assert "FROM events_rollup_local" in steps[0]
    # the copy: each shard from and into its local table
    assert steps[1].startswith("INSERT INTO reasons_hourly (hour,")
    assert "SETTINGS parallel_distributed_insert_select = 2" in steps[1]
    assert steps[2].startswith("ALTER TABLE reasons_hourly_local ON CLUSTER fleet DELETE WHERE")
    assert steps[3:] == [
        "TRUNCATE TABLE IF EXISTS reasons_hourly_snap_hours_local ON CLUSTER fleet",
        "TRUNCATE TABLE IF EXISTS reasons_hourly_snap_local ON CLUSTER fleet",
    ]


def test_conditions_look_at_the_parts_of_every_replica():
    conds = [w for _, w, _ in STEPS if w and "system.parts" in w]
    assert conds and all("clusterAllReplicas(fleet, system.parts)" in w and "_local'" in w for w in conds)


def test_runtime_targets_name_the_local_tables_on_every_node():
    assert LAYOUT.target("mail_hourly_snap") == "mail_hourly_snap_local ON CLUSTER fleet"
    with pytest.raises(ValueError):
        cluster.check_name("a-b")


def test_store_url_names_the_cluster_on_servers_only():
    url = parse_store_url("http://ch1:8123/mail?cluster=fleet")
    assert (url.cluster, url.database) == ("fleet", "mail")
    assert url.display() == "http://ch1:8123/mail?cluster=fleet"
    assert parse_store_url("http://ch1:8123/mail").cluster is None
    with pytest.raises(ConfigError, match="identifier"):
        parse_store_url("http://ch1:8123/mail?cluster=a;b")
    with pytest.raises(ConfigError, match="servers"):
        parse_store_url("chdb:///tmp/x?cluster=fleet")


def test_schema_command_prints_every_statement():
    text = schema_sql("fleet")
    assert text.count(";\n") >= len(STEPS)
    assert "-- migration 014 event_hour_snapshots" in text
    assert "ON CLUSTER" not in schema_sql()
