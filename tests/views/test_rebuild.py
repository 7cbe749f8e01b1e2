"""Migration 004 (backfill of the aggregates from stored events) and `eximtrack rebuild-aggregates`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from eximtrack import cli
from eximtrack.stats import AGGREGATE_TABLES, backfill_statements, rollup, rollup_horizon
from sinks.clickhouse import migrations
from sinks.clickhouse.migrations import MIGRATIONS_DIR
from sinks.clickhouse.store import Store
from tests.views import checks
from tests.views.conftest import GOLDEN, SAMPLES, ingest

MV = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\n(SELECT.*?);\n", re.S)


def test_backfill_is_exactly_the_views_selects():
    views = MV.findall((MIGRATIONS_DIR / "003_aggregates.sql").read_text(encoding="utf-8"))
    later = MV.findall((MIGRATIONS_DIR / "016_spam_hourly.sql").read_text(encoding="utf-8"))
    assert {dest for _, dest, _ in views + later} == set(AGGREGATE_TABLES)
    text = (MIGRATIONS_DIR / "004_backfill_aggregates.sql").read_text(encoding="utf-8")
    body = text[text.index("INSERT INTO") :]
    assert body == "\n".join(f"INSERT INTO {dest}\n{sel};\n" for _, dest, sel in views)
    text = (MIGRATIONS_DIR / "016_spam_hourly.sql").read_text(encoding="utf-8")
    assert text[text.index("INSERT INTO") :] == "".join(
        f"INSERT INTO {dest}\n{sel};\n" for _, dest, sel in later
    )
    assert [t for t, _ in backfill_statements()][-1] == "spam_hourly"


@pytest.mark.store
def test_backfill_after_an_upgrade_and_rebuild(capsys, url):
    for mode in ("all", "default"):
        ingest(url, f"s-{mode}", SAMPLES / f"mainlog-{mode}.log")
    # real Exim naming the delivery domain in a deferral ("retry time not reached for any host for 'dead.test'")
    ingest(url, "s-mid", GOLDEN / "mid_log_start" / "input.log")
    store = Store.open(url)
    by_domain = "SELECT count() FROM reasons_hourly WHERE template LIKE '%<domain>%'"
    assert store.query(by_domain).result_rows[0][0] > 0
    before = checks.totals(store)
    # a store whose events predate migration 003: the aggregates are empty …
    for table in AGGREGATE_TABLES:
        store.command(f"TRUNCATE TABLE {table}")
    assert checks.totals(store)["messages"] == 0
    # … until 004's statements run (twice: harmless)
    for _ in range(2):
        for _, statement in backfill_statements():
            store.command(statement)
    assert not checks.mismatches(store)
    assert checks.totals(store) == before
    rc = cli.main(["rebuild-aggregates", "--store", url])
    out, _ = capsys.readouterr()
    assert rc == 0 and "rebuilt mail_hourly" in out
    assert store.query(by_domain).result_rows[0][0] > 0  # the view's template of migration 028
    assert not checks.mismatches(store)
    assert checks.totals(store) == before


@pytest.mark.store
def test_rollup_keeps_the_numbers_and_ignores_later_reinserts(capsys, url, generated_logs):
    server, path = generated_logs[0]  # 2026-11-01 00:00 .. 01:30
    ingest(url, server, path)
    ingest(url, "s-all", SAMPLES / "mainlog-all.log")  # the day the samples were made (2026-11 or later)
    store = Store.open(url)
    before = checks.totals(store)
    assert not checks.mismatches(store)
    # roll up the first hour only: totals for it, states for the rest
    rc = cli.main(["rollup", "--store", url, "--until", "2026-11-01T01:20"])
    out, _ = capsys.readouterr()
    assert rc == 0 and "horizon 2026-11-01 01:00" in out
    assert rollup_horizon(store) == datetime(2026, 11, 1, 1, tzinfo=UTC)
    assert store.query("SELECT count() FROM mail_hourly_totals").result_rows[0][0] > 0
    assert not checks.mismatches(store)
    assert checks.totals(store) == before
    # the same again, and a horizon never moves back
    rollup(store, datetime(2026, 11, 1, 1, tzinfo=UTC))
    rollup(store, datetime(2026, 10, 1, tzinfo=UTC))
    assert rollup_horizon(store) == datetime(2026, 11, 1, 1, tzinfo=UTC)
    assert not checks.mismatches(store) and checks.totals(store) == before
    # everything rolled and the November states dropped: the union still gives the same numbers …
    newest = store.query("SELECT max(hour) FROM mail_hourly").result_rows[0][0]
    end = datetime(newest.year + newest.month // 12, newest.month % 12 + 1, 1, tzinfo=UTC)
    done = rollup(store, end, drop_states=True)
    assert done["dropped_partitions"] == sorted({"202611", newest.strftime("%Y%m")})
    assert store.query("SELECT count() FROM mail_hourly").result_rows[0][0] == 0
    assert not checks.mismatches(store, only=checks.ROLLUP_PAIRS)
    assert checks.totals(store) == before
    # … and re-ingesting old logs (states come back for rolled hours) changes nothing that is read
    ingest(url, server, path)
    ingest(url, "s-all", SAMPLES / "mainlog-all.log")
    assert not checks.mismatches(store, only=checks.ROLLUP_PAIRS)
    assert checks.totals(store) == before


SETS_034 = {
    "mail_hourly": ("messages", "recipients", "rcpt_addresses", "rows_seen", "defer_attempts", "rejected"),
    "activity_hourly": ("events", "rows"),
    "reasons_hourly": ("attempts", "recipients", "messages"),
    "delays_hourly": ("rows",),
}


QUANTILES_035 = {"delays_hourly": ("delay_ms", "queue_time_ms", "delivery_time_ms")}


def column_types(store, columns: dict[str, tuple[str, ...]]) -> set[str]:
    """The distinct types of `columns` ({table: its columns})."""
    pairs = [(table, column) for table, names in columns.items() for column in names]
    rows = store.query(
        "SELECT type FROM system.columns WHERE database = currentDatabase() "
        "AND (table, name) IN {p:Array(Tuple(String, String))}",
        {"p": pairs},
    ).result_rows
    assert len(rows) == len(pairs)
    return {r[0] for r in rows}


def store_with_half_a_log(url: str, version: int, tmp_path, generated_logs):
    """(a store laid out by the migrations up to `version` only, the server and path of the generated log it
    holds the first half of): that half and a real-Exim sample ingested, so that many of its rows have later
    versions to come."""
    from eximtrack.ingest import ingest_files
    from tests.integration.test_store import store_before

    old = store_before(url, version, tmp_path)
    server, path = generated_logs[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    first = tmp_path / "first-half.log"
    first.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    ingest_files(old, [str(first)], server=server, background=False)
    ingest_files(old, [str(SAMPLES / "mainlog-all.log")], server="s-all", background=False)
    return old, server, path


@pytest.mark.store
def test_an_upgraded_store_keeps_every_count_in_sets_of_64_bit_elements_that_later_versions_fold_into(
    url, tmp_path, generated_logs
):
    """Migrations 034 and 035 on a store filled before them (half of a generated server's log, so many of
    its rows have later versions to come, and a real Exim sample): every count stays what it was and every
    delay quantile is the oracle's, then the whole log ingested again (the first half replayed, the rest the
    rows' later versions) gives exactly what the oracle over the stored events gives: the new views' elements
    are the converted ones of the same rows. The store's aggregate retention is kept, and running the steps
    again changes nothing."""
    from tests.integration.test_store import run_steps_again

    old, server, path = store_with_half_a_log(url, 33, tmp_path, generated_logs)
    # `retention --aggregates-days 400` set before the upgrade
    old.command("ALTER TABLE rejections_hourly MODIFY TTL hour + toIntervalDay(400)")
    assert column_types(old, SETS_034) != {"AggregateFunction(uniqExact, UInt64)"}
    # the oracle decodes delays as 035 stores them: the rest agrees before the upgrade
    assert not checks.mismatches(old, only=[n for n in checks.PAIRS if not n.startswith("delays")])
    before = checks.totals(old)
    sizes = (
        "SELECT sum(bytes_on_disk) FROM system.parts "
        "WHERE database = currentDatabase() AND active AND table = 'mail_hourly'"
    )
    old.command("OPTIMIZE TABLE mail_hourly FINAL")
    bytes_before = old.query(sizes).result_rows[0][0]

    upgraded = Store.open(url)
    assert column_types(upgraded, SETS_034) == {"AggregateFunction(uniqExact, UInt64)"}
    assert column_types(upgraded, QUANTILES_035) == {
        "AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64)"
    }
    assert checks.totals(upgraded) == before
    assert not checks.mismatches(upgraded)
    upgraded.command("OPTIMIZE TABLE mail_hourly FINAL")
    assert upgraded.query(sizes).result_rows[0][0] < 0.7 * bytes_before
    for table in SETS_034:
        assert migrations.current_retention(upgraded.client, table) == 400, table
    assert not upgraded.query("SHOW TABLES LIKE '%_next%'").result_rows

    ingest(url, server, path)
    assert not checks.mismatches(upgraded)
    after = checks.totals(upgraded)
    assert after["rows"] > before["rows"] and after["success"] > before["success"]
    run_steps_again(upgraded, 34)
    run_steps_again(upgraded, 35)
    assert not checks.mismatches(upgraded) and checks.totals(upgraded) == after


# migration 036: the tables the snapshot refresher writes, each compressed with ZSTD(3)
SNAPSHOT_TABLES_036 = (
    "mail_hourly_snap", "mail_daily_snap", "mail_window_snap", "activity_hourly_snap", "reasons_hourly_snap",
    "delays_fleet_snap",
)  # fmt: skip


def part_codecs(store, tables: tuple[str, ...]) -> dict[str, set[str]]:
    """{table: the codecs of its active parts and of their projections' parts}."""
    found: dict[str, set[str]] = {t: set() for t in tables}
    for system in ("parts", "projection_parts"):
        rows = store.query(
            f"SELECT DISTINCT table, default_compression_codec FROM system.{system} "
            "WHERE database = currentDatabase() AND active AND table IN {t:Array(String)}",
            {"t": list(tables)},
        ).result_rows
        for table, codec in rows:
            found[table].add(codec)
    return found


def rewrites(store) -> int:
    from tests.integration.test_store import count

    return count(
        store,
        "SELECT count() FROM system.mutations WHERE database = currentDatabase() "
        "AND command LIKE '%REWRITE PARTS%'",
    )


def rows_of(store, tables: tuple[str, ...]) -> dict[str, list[tuple]]:
    """{table: every row of it, in order}."""
    return {t: store.query(f"SELECT * FROM {t} ORDER BY ALL").result_rows for t in tables}


@pytest.mark.store
def test_an_upgraded_store_keeps_its_snapshots_row_for_row_in_zstd_parts_and_writes_new_ones_so(
    url, tmp_path, generated_logs
):
    """Migration 036 on a store whose snapshot tables were written before it (LZ4 parts, projections
    included): each stored part is rewritten as ZSTD(3) in the background, row for row, the bookkeeping
    tables stay as they were, the snapshots written and merged later are ZSTD(3) as well, and the steps run
    again start no second rewrite."""
    from eximtrack import stats_snapshots
    from tests.integration.test_store import mutations_done, run_steps_again

    old, server, path = store_with_half_a_log(url, 35, tmp_path, generated_logs)
    stats_snapshots.refresh(old)
    rows = rows_of(old, SNAPSHOT_TABLES_036)
    assert all(rows.values()), {t: len(r) for t, r in rows.items()}
    assert set().union(*part_codecs(old, SNAPSHOT_TABLES_036).values()) == {"LZ4"}
    books = ("mail_hourly_snap_hours", "mail_daily_snap_days", "reasons_hourly_snap_hours")
    recorded = rows_of(old, books)

    upgraded = Store.open(url)
    assert 36 in migrations.applied_versions(upgraded.client)
    mutations_done(upgraded, SNAPSHOT_TABLES_036)  # REWRITE PARTS, not waited for by the open
    assert rewrites(upgraded) == len(SNAPSHOT_TABLES_036)
    assert part_codecs(upgraded, SNAPSHOT_TABLES_036) == {t: {"ZSTD(3)"} for t in SNAPSHOT_TABLES_036}
    assert rows_of(upgraded, SNAPSHOT_TABLES_036) == rows
    assert rows_of(upgraded, books) == recorded
    assert set().union(*part_codecs(upgraded, books).values()) == {"LZ4"}
    assert not checks.mismatches(upgraded)

    run_steps_again(upgraded, 36)
    assert rewrites(upgraded) == len(SNAPSHOT_TABLES_036)

    ingest(url, server, path)  # the rest of the log: `ingest` refreshes the snapshots it changed
    for table in SNAPSHOT_TABLES_036:
        upgraded.command(f"OPTIMIZE TABLE {table} FINAL")
    assert part_codecs(upgraded, SNAPSHOT_TABLES_036) == {t: {"ZSTD(3)"} for t in SNAPSHOT_TABLES_036}
    hourly = upgraded.query("SELECT count() FROM mail_hourly_snap").result_rows[0][0]
    assert hourly > len(rows["mail_hourly_snap"])
    assert not checks.mismatches(upgraded)
