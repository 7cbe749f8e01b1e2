"""The store against a real embedded ClickHouse (chDB).

chDB allows one engine path per process, so all tests of a process share one path (the one already open,
else a session tmp dir) and each test gets a fresh database (`chdb:///path?database=test_<uuid>`).
"""

from __future__ import annotations

import time
import uuid

import pytest

from eximtrack.search import ARRIVAL_FIELDS, build_search, build_show, run_show
from schemas.records import DeliveryEvent, LogLineRecord, RejectRecord
from sinks.clickhouse import migrations, schema_baseline
from sinks.clickhouse.store import Store, StoreError, current_chdb_path, store_run
from stream.clock import base62

pytestmark = pytest.mark.store

NOW = time.time()
RECENT_ID = base62(int(NOW) - 3600, 6) + "-000004-DD"  # an Exim id of an hour ago


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory):
    return current_chdb_path() or str(tmp_path_factory.mktemp("chdb-store"))


@pytest.fixture
def url(chdb_path):
    return f"chdb://{chdb_path}?database=test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(url):
    return Store.open(url)


def ev(event_id, type_="success", *, msgid="m1", server="web1", t=0.0, **kw) -> DeliveryEvent:
    """An event `t` seconds after NOW-3600 (recent, so the 90-day TTL keeps it)."""
    base = NOW - 3600
    kw.setdefault("sendunixtime", base)
    kw.setdefault("actionunixtime", base + t)
    kw.setdefault("version", int((base + t) * 1000) * 10)
    return DeliveryEvent(event_id=event_id, type=type_, server=server, msgid=msgid, **kw)


def count(store, sql, params=None) -> int:
    return store.query(sql, params).result_rows[0][0]


def search(store, **filters) -> list[dict]:
    sql, params = build_search(filters)
    return store.query_dicts(sql, params)


def joined_in_two_inserts(server: str, opened: list[str], closed: list[str]) -> tuple[list, list]:
    """The real joiner's events of `opened`, then those that `closed` adds (the events of a second insert)."""
    from stream.join import join_lines

    _, first = join_lines(server, opened)
    _, both = join_lines(server, opened + closed)
    sent = {e.event_id for e in first.events}
    return first.events, [e for e in both.events if e.event_id not in sent]


# ----------------------------------------------------------------------------------------------------


def test_migrations_apply_once_and_are_idempotent(url, store):
    assert count(store, "SELECT count() FROM schema_migrations FINAL") == len(migrations.load_migrations())
    again = Store.open(url)
    assert migrations.apply_migrations(again.client) == []
    assert count(again, "SELECT count() FROM schema_migrations") == len(migrations.load_migrations())
    tables = {r[0] for r in store.query("SHOW TABLES").result_rows}
    assert {"events", "latest", "latest_mv", "rejects", "log_lines", "schema_migrations"} <= tables
    assert store.retention_days() == 90


def test_inserted_records_read_back_field_for_field(store):
    """Every field of every record kind survives the insert (Arrow IPC, sinks/clickhouse/encode.py): text
    with non-ASCII and control characters, empty and NULL floats, large integers, millisecond times."""
    from sinks.clickhouse.encode import row_to_event

    base = round(NOW - 3600, 3)
    full = ev(
        "all-fields", "defer", msgid=RECENT_ID, email="Ünï@exämple.org", sender="s@x", user="u", domain="d",
        owner="o", senderhost="h [1.2.3.4]", senderip="1.2.3.4", senderauth="login", spamscore=-1.5,
        sendunixtime=base, size=2**40, subject="tab\there \u2603 \"q\"", message_id="<m@id>", protocol="esmtpsa",
        parent_msgid="p", recipient="r@x", deliveredto="r2@x", deliveryuser="du", deliverydomain="x",
        deliveryowner="do", router="dnslookup", transport="remote_smtp", host="mx", ip="5.6.7.8",
        message="451 4.7.1 try later", confirmation="250 ok", tls="TLS1.3", queue_time=0.25,
        delivery_time=None, actionunixtime=base + 1.001, attempts=3, frozen=1, transport_is_remote=1,
        version=2**62, is_deleted=0,
    )  # fmt: skip
    bare = ev("bare", "inprogress", msgid=RECENT_ID, recipient="", spamscore=None, queue_time=None)
    store.insert_events([full, bare])
    rows = store.query("SELECT * FROM events ORDER BY event_id")
    got = [row_to_event(rows.column_names, r) for r in rows.result_rows]
    for want, back in zip([full, bare], got, strict=True):
        for field in want.__dataclass_fields__:
            w, b = getattr(want, field), getattr(back, field)
            if field.endswith("unixtime"):
                b = b.timestamp() if hasattr(b, "timestamp") else b
                assert abs(b - w) < 5e-4, field
            else:
                assert b == w, field
    store.insert_rejects([RejectRecord("r1", "web1", "bad \u00e9 line", "unparsed", "f:1", 77, base)])
    store.insert_lines([LogLineRecord("l1", "web1", RECENT_ID, base + 0.5, "line \u00e9")])
    reject = store.query("SELECT reject_id, line, reason, file_id, offset, toUnixTimestamp64Milli(logunixtime) "
                         "FROM rejects").result_rows  # fmt: skip
    assert reject == [("r1", "bad \u00e9 line", "unparsed", "f:1", 77, round(base * 1000))]
    line = store.query("SELECT line_id, msgid, line, toUnixTimestamp64Milli(logunixtime) FROM log_lines")
    assert line.result_rows == [("l1", RECENT_ID, "line \u00e9", round((base + 0.5) * 1000))]


def test_an_upgraded_store_gets_the_recipient_ordered_copy(url, store):
    """Migration 011 on a store filled before it: every stored version of `latest` is copied into
    latest_by_recipient (tombstones and old versions included, so FINAL there shows what it shows on
    `latest`), searches by recipient read the copy and find the old rows, and later inserts reach it too."""
    store.insert_events(
        [
            ev("up1", "inprogress", msgid="1upg00-000001-AA", recipient="Old@Example.org", version=1),
            ev(
                "up1-del",
                "inprogress",
                msgid="1upg00-000001-AA",
                recipient="Old@Example.org",
                version=2,
                is_deleted=1,
            ),  # fmt: skip
            ev(
                "up2",
                msgid="1upg00-000001-AA",
                recipient="Old@Example.org",
                deliveredto="old@example.org",
                t=5,
            ),
            ev("up3", "defer", msgid="1upg00-000002-AA", recipient="old@example.org", deliveredto="x", t=9),
        ]
    )
    upgraded = upgraded_from_before(url, store, "latest_by_recipient", 11)
    assert count(upgraded, "SELECT count() FROM latest_by_recipient") == count(
        upgraded, "SELECT count() FROM latest"
    )
    sql, params = build_search({"recipient": "OLD@example.org"})
    assert "latest_by_recipient FINAL" in sql
    assert sorted(r["event_id"] for r in upgraded.query_dicts(sql, params)) == ["up2", "up3"]
    upgraded.insert_events([ev("up4", "failure", msgid="1upg00-000002-AA", recipient="old@example.org",
                               deliveredto="x", t=20)])  # fmt: skip
    assert sorted((r["event_id"], r["type"]) for r in upgraded.query_dicts(sql, params)) == [
        ("up2", "success"),
        ("up4", "failure"),
    ]


def test_an_upgraded_store_finds_phrases_in_rows_laid_out_before_the_pairs_index(url, capsys):
    """Migration 021 on rows written before it (as a store upgraded to 021 alone held them; 022 now writes them
    again): search_time's old rows (007's text layout, parts without tok_pairs) are still found by a phrase
    search, which reads them without the index (and without the direct read ClickHouse 26.9 fails on
    there); rows written after it get the new layout and the index; `rebuild-search-index --table
    search_time` lays the old ones out anew, and they are found still. 025 runs again after 021 (its
    expression is the one the planner names: with 021's, hasAllTokens would split it with its default
    tokenizer and find nothing); its mutation is not issued again (this store's first opening issued it), so
    the old parts stay without the index, as this test wants."""
    import re
    from pathlib import Path

    from eximtrack.web import query as q

    # laid out by the migrations, as a store of that age was (a new store's baseline issues no mutations)
    store = Store.open(url, migrate=False)
    migrations.apply_migrations(store.client, baseline=False)
    old = (Path(migrations.MIGRATIONS_DIR) / "007_read_paths.sql").read_text()
    view = re.search(
        r"CREATE MATERIALIZED VIEW IF NOT EXISTS search_time_mv TO search_time AS\n(.*?);", old, re.S
    )
    store.command("ALTER TABLE search_time DROP INDEX tok_pairs")
    store.command("ALTER TABLE search_time_mv MODIFY QUERY " + view.group(1))
    store.command("DELETE FROM schema_migrations WHERE version IN (21, 25)")
    phrase = "Player config product"
    store.insert_events(
        [ev("old1", msgid="1phr00-000001-AA", recipient="a@x.org", subject=f"Re: {phrase}s!")]
    )
    store.insert_events([ev("old2", msgid="1phr00-000002-AA", recipient="b@x.org", subject="Player product")])
    text = "SELECT countIf(position(text, '\\x1f') > 0), count() FROM search_time"
    assert store.query(text).result_rows == [(0, 2)]

    upgraded = Store.open(url)  # 021 and 025 again: 025's index, not built for the old parts (see above)
    upgraded.insert_events(
        [ev("new1", msgid="1phr00-000003-AA", recipient="c@x.org", subject=f"{phrase} ok")]
    )
    assert upgraded.query(text).result_rows == [(1, 3)]
    indexed = "SELECT uniqExact(part_name) FROM mergeTreeTextIndex(currentDatabase(), search_time, tok_pairs)"
    parts = "SELECT count() FROM system.parts WHERE active AND database = currentDatabase() AND table = 'search_time'"

    def found() -> tuple[list[str], list[str]]:
        cli = sorted(r["event_id"] for r in search(upgraded, subject=phrase.upper(), match="contains"))
        sq = q.build_search_query({"subject": phrase, "subject_searchmatch": "contains"}, None)
        names, rows = sq.fetch(store_run(upgraded), None, 10)
        return cli, sorted(r[names.index("event_id")] for r in rows)

    assert count(upgraded, indexed) == 1 < count(upgraded, parts)  # the old parts lack the index
    assert found() == (["new1", "old1"], ["new1", "old1"])
    from eximtrack import cli

    capsys.readouterr()
    assert cli.main(["rebuild-search-index", "--table", "search_time", "--store", url]) == 0
    [line] = capsys.readouterr().out.splitlines()  # no other table
    assert line.startswith("rebuilt search_time: 3 rows")
    assert upgraded.query(text).result_rows == [(3, 3)]
    assert found() == (["new1", "old1"], ["new1", "old1"])


def laid_out_by_the_migrations(chdb_path: str) -> Store:
    """A new store laid out by every migration's statements, without the baseline."""
    store = Store.open(f"chdb://{chdb_path}?database=test_{uuid.uuid4().hex[:12]}", migrate=False)
    migrations.migrate(store.client, baseline=False)
    return store


def layout(store: Store) -> str:
    """A store's tables, views and rows (but the migrations recorded) as its schema baseline would be."""
    return schema_baseline.render(
        *schema_baseline.laid_out(store.client), seeds=schema_baseline.seed_rows(store.client)
    )


def recorded(store: Store) -> list[tuple]:
    return store.query(
        "SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version"
    ).result_rows


def test_a_new_store_is_laid_out_from_the_baseline_exactly_as_the_migrations_lay_it_out(chdb_path, url):
    """schemas/clickhouse_baseline.sql is what the migrations make of a new store, current (else: `make
    schema-baseline`); a new store opened normally is laid out from it, and then holds the same tables, views
    and recorded migrations, statement for statement, as one the migrations laid out."""
    migrated = laid_out_by_the_migrations(chdb_path)
    assert layout(migrated) == schema_baseline.BASELINE.read_text(encoding="utf-8"), (
        "run `make schema-baseline`"
    )
    fresh = Store.open(url, migrate=False)
    assert migrations.applied_versions(fresh.client) == set()  # creates schema_migrations
    baseline = schema_baseline.load()
    assert migrations.apply_baseline(fresh.client, migrations.load_migrations()) == list(
        range(1, baseline.covers + 1)
    )
    assert migrations.apply_migrations(fresh.client) == [
        m.version for m in migrations.load_migrations() if m.version > baseline.covers
    ]
    assert layout(fresh) == layout(migrated)  # tables, views and seed rows (the default abuse thresholds)
    assert recorded(fresh) == recorded(migrated)
    # Store.open takes the same path: the store searches and counts like any other
    opened = Store.open(f"chdb://{chdb_path}?database=test_{uuid.uuid4().hex[:12]}")
    assert recorded(opened) == recorded(migrated) and opened.retention_days() == 90
    opened.insert_events([ev("b1", "success", recipient="base@x.org")])
    assert [r["recipient"] for r in search(opened, recipient="base@x.org")] == ["base@x.org"]


def test_a_baseline_layout_cut_short_is_finished_by_the_next_open(chdb_path, url):
    """A crash half-way through the baseline: nothing is recorded yet and only its tables exist, so the next
    open lays out the rest (every statement is CREATE … IF NOT EXISTS)."""
    migrated = laid_out_by_the_migrations(chdb_path)
    half = Store.open(url, migrate=False)
    migrations.applied_versions(half.client)  # creates schema_migrations
    statements = schema_baseline.load().statements
    for statement in statements[: len(statements) // 2]:
        half.client.command(statement)
    for statement in statements:  # and the seed rows, so that the next open must not insert them twice
        if schema_baseline.Baseline.seeded(statement):
            half.client.command(statement)
    opened = Store.open(url)
    assert layout(opened) == layout(migrated)
    assert recorded(opened) == recorded(migrated)


def test_a_database_with_other_tables_is_laid_out_by_the_migrations(url):
    """The baseline lays out only a new store: a database holding a table it would not create (a store of an
    unknown layout, a user's own table) gets the migrations, which never assume an empty database."""
    other = Store.open(url, migrate=False)
    other.client.command("CREATE TABLE notes (t String) ENGINE = MergeTree ORDER BY t")
    migrations.applied_versions(other.client)
    assert migrations.apply_baseline(other.client, migrations.load_migrations()) == []
    assert migrations.apply_migrations(other.client) == [m.version for m in migrations.load_migrations()]


def upgraded_from_before(url: str, store: Store, table: str, version: int) -> Store:
    """`store` as a release before migration `version` left it (that migration's table `table` and its view
    `table`_mv dropped, the migration not recorded), opened again: the migration runs and backfills."""
    store.command(f"DROP VIEW {table}_mv")
    store.command(f"DROP TABLE {table}")
    store.command(f"DELETE FROM schema_migrations WHERE version = {version}")
    return Store.open(url)


def run_steps_again(store: Store, version: int) -> None:
    """Run migration `version`'s steps once more, each under its condition, as a migration interrupted by a
    crash and started again does."""
    [migration] = [m for m in migrations.load_migrations() if m.version == version]
    for when, statement in migration.steps():
        if when is None or migrations.condition_holds(store.client, when):
            store.command(statement)


def store_before(url: str, version: int, tmp_path) -> Store:
    """A store laid out by the migrations up to `version` only (as a release before the next ones left it)."""
    import shutil
    from pathlib import Path

    for migration in Path(migrations.MIGRATIONS_DIR).glob("*.sql"):
        if int(migration.name[:3]) <= version:
            shutil.copy(migration, tmp_path / migration.name)
    old = Store.open(url, migrate=False)
    migrations.apply_migrations(old.client, directory=tmp_path)
    return old


def test_an_upgraded_store_keeps_the_newest_version_of_each_row_in_search_time(url, tmp_path):
    """Migration 022 on a store filled before it: search_time is laid out anew from `latest` (every version,
    tombstones as rows that match nothing); once merged it holds one row per row identity, the newest; every
    search finds exactly the live rows before and after the merge, and after new inserts; running the
    migration's steps again (a crash mid-way) changes nothing."""
    from eximtrack.web import query as q

    old = store_before(url, 21, tmp_path)
    assert count(old, "SELECT count() FROM system.columns WHERE database = currentDatabase() "
                 "AND table = 'search_time' AND name = 'row_key'") == 0  # fmt: skip
    old.set_retention(30)
    a, b = {"recipient": "a@x.org"}, {"recipient": "b@x.org", "deliveredto": "b@x.org"}
    old.insert_events(
        [
            ev("p", "inprogress", msgid="1upg22-000001-AA", version=1, subject="Quarterly invoice", **a),
            ev("d", "defer", msgid="1upg22-000002-AA", version=1, subject="Weekly report", **b),
        ]
    )
    old.insert_events(
        [
            ev("p-del", "inprogress", msgid="1upg22-000001-AA", version=2, is_deleted=1, **a),
            ev("s", "success", msgid="1upg22-000001-AA", version=3, subject="Quarterly invoice",
               deliveredto="a@x.org", **a),
            ev("f", "failure", msgid="1upg22-000002-AA", version=2, subject="Weekly report", **b),
        ]
    )  # fmt: skip
    old.insert_events([ev("d", "defer", msgid="1upg22-000002-AA", version=1, subject="Weekly report", **b)])

    upgraded = Store.open(url)
    layout = "SELECT sorting_key, engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"
    [(key, engine)] = upgraded.query(layout, {"t": "search_time"}).result_rows
    assert key.endswith("row_key") and "ReplacingMergeTree(version)" in engine
    assert "index_granularity = 256," in engine  # migration 023 after 022
    assert upgraded.query(layout, {"t": "search_time_next"}).result_rows == []
    assert migrations.current_retention(upgraded.client, "search_time") == 30  # the store's, not the CREATE's
    assert migrations.current_retention(upgraded.client, "search_outcome_keys") == 30  # created by 026

    def found() -> list:
        out = []
        for filters, api in (
            (
                {"subject": "invoice", "match": "contains"},
                {"subject": "invoice", "subject_searchmatch": "contains"},
            ),
            (
                {"subject": "report", "match": "contains"},
                {"subject": "report", "subject_searchmatch": "contains"},
            ),
            ({"type": ["defer"]}, {"defer": "1"}),
            ({"type": ["inprogress"]}, {"inprogress": "1"}),
            ({}, {}),
        ):
            names, rows = q.build_search_query(api, None).fetch(store_run(upgraded), None, 10)
            out.append((ids(search(upgraded, **filters)), sorted(r[names.index("event_id")] for r in rows)))
        return out

    want = [(["s"], ["s"]), (["f"], ["f"]), ([], []), ([], []), (["f", "s"], ["f", "s"])]
    assert found() == want
    upgraded.command("OPTIMIZE TABLE search_time FINAL")
    rows = "SELECT msgid, type, version FROM search_time ORDER BY msgid, row_key"
    assert sorted(upgraded.query(rows).result_rows) == [
        ("1upg22-000001-AA", "", 2),  # the placeholder, folded into its tombstone
        ("1upg22-000001-AA", "success", 3),
        ("1upg22-000002-AA", "failure", 2),  # the deferral (and its replay) folded into the failure
    ]
    assert found() == want
    # after the upgrade: a new message and a newer version of an old row, through the view
    upgraded.insert_events(
        [
            ev("n", "defer", msgid="1upg22-000003-AA", version=1, subject="New invoice", **b),
            ev("s2", "failure", msgid="1upg22-000001-AA", version=4, subject="Quarterly invoice",
               deliveredto="a@x.org", **a),
        ]
    )  # fmt: skip
    upgraded.command("OPTIMIZE TABLE search_time FINAL")
    assert count(upgraded, "SELECT count() FROM search_time") == 4
    assert found()[0] == (["n", "s2"], ["n", "s2"]) and found()[2] == (["n"], ["n"])
    # the migration's steps once more, as after a crash before it was recorded: its guards skip the re-layout
    run_steps_again(upgraded, 22)
    assert count(upgraded, "SELECT count() FROM search_time") == 4
    assert found()[0] == (["n", "s2"], ["n", "s2"])


def test_an_upgraded_store_has_search_time_in_small_granules_with_the_same_rows(url, tmp_path):
    """Migration 023 on a store laid out by 022: search_time is copied into granules of 256 rows compressed
    one by one and exchanged; it holds each row's newest version as FINAL read it before (the copy is folded
    as a merge folds), its view writes into it, searches find the same rows, the store's retention stays, and
    running the migration's steps again (a crash mid-way) changes nothing."""
    from eximtrack.web import query as q

    old = store_before(url, 22, tmp_path)
    old.set_retention(30)
    a = {"recipient": "a@x.org"}
    old.insert_events(
        [ev("p", "inprogress", msgid="1upg23-000001-AA", version=1, subject="Quarterly invoice", **a)]
    )
    old.insert_events(
        [
            ev("p-del", "inprogress", msgid="1upg23-000001-AA", version=2, is_deleted=1, **a),
            ev("s", "success", msgid="1upg23-000001-AA", version=3, subject="Quarterly invoice",
               deliveredto="a@x.org", **a),
            ev("f", "failure", msgid="1upg23-000002-AA", subject="Weekly report", recipient="b@y.org"),
        ]
    )  # fmt: skip
    columns = "SELECT ts, server, msgid, msgtime, row_key, version, type, text FROM search_time"
    rows = columns + " FINAL ORDER BY ALL"
    before = old.query(rows).result_rows
    assert count(old, "SELECT count() FROM search_time") == 4  # placeholder, tombstone, delivery, failure
    layout = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}"
    assert "index_granularity = 1024" in old.query(layout, {"t": "search_time"}).result_rows[0][0]

    upgraded = Store.open(url)
    [(engine,)] = upgraded.query(layout, {"t": "search_time"}).result_rows
    assert "index_granularity = 256, min_compress_block_size = 16384" in engine
    assert "ReplacingMergeTree(version)" in engine
    assert upgraded.query(layout, {"t": "search_time_next"}).result_rows == []
    assert upgraded.query(rows).result_rows == before
    # the copy was one insert, folded as a merge folds (optimize_on_insert): the tombstone replaced its placeholder
    assert upgraded.query(columns + " ORDER BY ALL").result_rows == before
    assert len(before) == 3
    assert migrations.current_retention(upgraded.client, "search_time") == 30

    def found() -> list:
        out = []
        for api in ({"all": "a@x.org"}, {"subject": "report", "subject_searchmatch": "contains"}, {}):
            names, got = q.build_search_query(api, None).fetch(store_run(upgraded), None, 10)
            out.append(sorted(r[names.index("event_id")] for r in got))
        return out

    assert found() == [["s"], ["f"], ["f", "s"]]
    upgraded.insert_events(
        [ev("n", "defer", msgid="1upg23-000003-AA", subject="New report", recipient="c@z.org")]
    )
    assert count(upgraded, "SELECT count() FROM search_time") == 4  # through the view, into the new layout
    assert found() == [["s"], ["f", "n"], ["f", "n", "s"]]
    run_steps_again(upgraded, 23)
    assert count(upgraded, "SELECT count() FROM search_time") == 4
    assert found() == [["s"], ["f", "n"], ["f", "n", "s"]]


def test_an_upgraded_store_finds_parts_of_words_through_a_trigram_index_built_for_old_parts(url, tmp_path):
    """Migration 024 on a store laid out by 023: tok_text gives way to a trigram index (grams_text), built for
    the parts written before by one mutation, so a part of a word (`contains`, no whole word in it) skips the
    granules without its trigrams in old parts and new ones; searches find the same rows as before; running
    the migration's steps again (a crash mid-way) issues no second mutation."""
    from eximtrack.search_plan import GRAMS_INDEX
    from eximtrack.web import query as q
    from tests.integration.conftest import grams_index_reads

    old = store_before(url, 23, tmp_path)
    old.insert_events(
        [
            ev("s", "success", msgid="1upg24-000001-AA", subject="Quote request", recipient="ann@quote-launch1.co.uk"),
            ev("f", "failure", msgid="1upg24-000002-AA", subject="Weekly report", recipient="bob@y.org"),
        ]
    )  # fmt: skip
    indexes = (
        "SELECT name, type_full FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table = 'search_time' ORDER BY name"
    )
    assert [n for n, _ in old.query(indexes).result_rows] == ["tok_pairs", "tok_text"]

    def found(store) -> list:
        out = []
        for value in ("te-launch", "ote-la", "eekly rep", "launch1", "zqxjvk"):
            names, got = q.build_search_query({"all": value}, None).fetch(store_run(store), None, 10)
            out.append(sorted(r[names.index("event_id")] for r in got))
        return out

    expected = [["s"], ["s"], ["f"], ["s"], []]
    assert found(old) == expected

    upgraded = Store.open(url)
    # the name the planner's SETTINGS give (ignore_data_skipping_indices takes an unknown name silently)
    assert upgraded.query(indexes).result_rows[0] == (GRAMS_INDEX, "text(tokenizer = ngrams(3))")
    assert [n for n, _ in upgraded.query(indexes).result_rows] == [GRAMS_INDEX, "tok_pairs"]
    # the part written before the upgrade has the index: a fragment found nowhere reads none of its granules
    assert grams_index_reads(upgraded, "zqxjvk")[1] == "Granules: 0/1"
    assert grams_index_reads(upgraded, "te-launch")[1] == "Granules: 1/1"
    assert found(upgraded) == expected
    upgraded.insert_events(
        [ev("n", "defer", msgid="1upg24-000003-AA", subject="Weekly report", recipient="cy@launch12.org")]
    )
    assert found(upgraded) == [["s"], ["s"], ["f", "n"], ["n", "s"], []]
    assert grams_index_reads(upgraded, "zqxjvk")[1] == "Granules: 0/2"
    mutations = (
        "SELECT count(), min(is_done) FROM system.mutations WHERE database = currentDatabase() "
        "AND table = 'search_time' AND command LIKE '%MATERIALIZE INDEX grams_text%'"
    )
    assert upgraded.query(mutations).result_rows == [(1, 1)]
    run_steps_again(upgraded, 24)
    assert upgraded.query(mutations).result_rows == [(1, 1)]
    assert found(upgraded) == [["s"], ["s"], ["f", "n"], ["n", "s"], []]


def test_an_upgraded_store_groups_each_reason_without_its_delivery_domain(url, tmp_path):
    """Migration 028 on a store filled before it: the stored reason rows get the template without their
    delivery domain (copied, the old rows deleted), so one reason of two destinations is one template; the
    snapshots of the old templates are dropped and taken again; the hourly reasons equal the direct
    aggregation before the snapshots, after them and after a new insert into the same hour; running the
    migration's steps again (a crash mid-way) changes no number."""
    from eximtrack import stats_snapshots
    from tests.views import checks

    def bounce(
        i: int, domain: str, type_: str = "failure", text: str = "user unknown in {d}"
    ) -> DeliveryEvent:
        rcpt = f"u{i}@{domain}"
        return ev(f"r{i}", type_, msgid=f"1rsn28-00000{i}-AA", recipient=rcpt, deliveredto=rcpt,
                  deliverydomain=domain, attempts=1, message=f"550 5.1.1 <{rcpt}>: " + text.format(d=domain))  # fmt: skip

    old = store_before(url, 27, tmp_path)
    retry = "retry time not reached for any host for '{d}'"
    old.insert_events([bounce(1, "x.org"), bounce(2, "y.net"), bounce(3, "x.org", "defer", retry)])
    stats_snapshots.refresh(old)
    templates = (
        "SELECT type, template FROM reasons_hourly_all GROUP BY type, template ORDER BY type, template"
    )
    assert old.query(templates).result_rows == [
        ("defer", "550 5.1.1 <addr>: retry time not reached for any host for 'x.org'"),
        ("failure", "550 5.1.1 <addr>: user unknown in x.org"),
        ("failure", "550 5.1.1 <addr>: user unknown in y.net"),
    ]
    assert count(old, "SELECT count() FROM reasons_hourly_snap_hours") > 0

    upgraded = Store.open(url)
    new_templates = [
        ("defer", "550 5.1.1 <addr>: retry time not reached for any host for '<domain>'"),
        ("failure", "550 5.1.1 <addr>: user unknown in <domain>"),
    ]
    assert upgraded.query(templates).result_rows == new_templates
    assert upgraded.query("SELECT DISTINCT template FROM reasons_hourly ORDER BY template").result_rows == [
        (t,) for _, t in new_templates
    ]
    assert count(upgraded, "SELECT count() FROM reasons_hourly_snap_hours") == 0
    reason_pairs = tuple(n for n in checks.PAIRS if n.startswith("reasons_hourly"))
    assert len(reason_pairs) >= 3
    assert not checks.mismatches(upgraded, only=reason_pairs)
    top = "SELECT template, sum(recipients) FROM reasons_hourly_all WHERE type = 'failure' GROUP BY template"
    assert upgraded.query(top).result_rows == [("550 5.1.1 <addr>: user unknown in <domain>", 2)]
    stats_snapshots.refresh(upgraded)
    assert count(upgraded, "SELECT count() FROM reasons_hourly_snap_hours") > 0
    assert not checks.mismatches(upgraded, only=reason_pairs)

    upgraded.insert_events([bounce(4, "z.com")])  # the same hour: one group with the migrated rows
    assert upgraded.query(top).result_rows == [("550 5.1.1 <addr>: user unknown in <domain>", 3)]
    assert not checks.mismatches(upgraded, only=reason_pairs)
    run_steps_again(upgraded, 28)
    assert upgraded.query(top).result_rows == [("550 5.1.1 <addr>: user unknown in <domain>", 3)]
    assert not checks.mismatches(upgraded, only=reason_pairs)


def test_an_upgraded_store_groups_the_reasons_of_destinations_with_digits_in_their_names(url, tmp_path):
    """Migration 032 on a store filled by 028's template: a deferral naming its own domain with a digit
    ("(shop1.de)") had the other rules' template ("(<id>.de)"), apart from the same deferral of a domain
    without one; after the upgrade all three destinations' deferrals are one template, the snapshots are
    taken again, the hourly reasons equal the direct aggregation, and running the migration's steps again (a
    crash mid-way) changes no number."""
    from eximtrack import stats_snapshots
    from tests.views import checks

    def deferral(i: int, domain: str) -> DeliveryEvent:
        rcpt = f"u{i}@{domain}"
        return ev(f"d{i}", "defer", msgid=f"1rsn32-00000{i}-AA", recipient=rcpt, deliveredto=rcpt,
                  deliverydomain=domain, attempts=1, message=f"451 4.7.1 try again later ({domain})")  # fmt: skip

    old = store_before(url, 31, tmp_path)
    old.insert_events([deferral(1, "shop1.de"), deferral(2, "shop2.de"), deferral(3, "x.org")])
    stats_snapshots.refresh(old)
    templates = "SELECT template, sum(attempts) FROM reasons_hourly_all GROUP BY template ORDER BY template"
    assert old.query(templates).result_rows == [
        ("451 4.7.1 try again later (<domain>)", 1),
        ("451 4.7.1 try again later (<id>.de)", 2),
    ]

    upgraded = Store.open(url)
    one = [("451 4.7.1 try again later (<domain>)", 3)]
    assert upgraded.query(templates).result_rows == one
    assert count(upgraded, "SELECT count() FROM reasons_hourly_snap_hours") == 0
    reason_pairs = tuple(n for n in checks.PAIRS if n.startswith("reasons_hourly"))
    assert not checks.mismatches(upgraded, only=reason_pairs)
    stats_snapshots.refresh(upgraded)
    assert count(upgraded, "SELECT count() FROM reasons_hourly_snap_hours") > 0
    assert upgraded.query(templates).result_rows == one
    assert not checks.mismatches(upgraded, only=reason_pairs)

    upgraded.insert_events([deferral(4, "shop4.de")])  # through the view: the same template
    assert upgraded.query(templates).result_rows == [("451 4.7.1 try again later (<domain>)", 4)]
    run_steps_again(upgraded, 32)
    assert upgraded.query(templates).result_rows == [("451 4.7.1 try again later (<domain>)", 4)]
    assert not checks.mismatches(upgraded, only=reason_pairs)


def test_an_upgraded_store_finds_phrases_through_the_pairs_index_of_a_column_written_for_old_parts(
    url, tmp_path
):
    """Migration 025 on a store laid out by 024: search_time gets the column text_pairs, tok_pairs is dropped
    and added again on it (the column the planner names), and both are written for the parts written before
    by a mutation each, so a phrase skips the old part's granules without its pairs; phrase searches find the
    same rows before, after, and after new inserts; running the migration's steps again (a crash mid-way)
    neither drops the new index nor issues a second mutation."""
    from eximtrack.search_plan import PAIRS_COLUMN, phrase_pairs
    from eximtrack.web import query as q
    from tests.integration.conftest import index_reads

    old = store_before(url, 24, tmp_path)
    old.insert_events(
        [
            ev("s", "success", msgid="1upg25-000001-AA", subject="Player config product", recipient="a@x.org"),
            ev("f", "failure", msgid="1upg25-000002-AA", subject="Weekly report attached", recipient="b@y.org"),
        ]
    )  # fmt: skip
    expr = (
        "SELECT expr FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table = 'search_time' AND name = 'tok_pairs'"
    )
    assert "replaceRegexpAll" in old.query(expr).result_rows[0][0]
    columns = "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'search_time'"
    assert PAIRS_COLUMN not in {n for (n,) in old.query(columns).result_rows}

    def found(store) -> list:
        out = []
        for value in ("player config", "ly report att", "config weekly"):
            api = {"subject": value, "subject_searchmatch": "contains"}
            names, got = q.build_search_query(api, None).fetch(store_run(store), None, 10)
            out.append(sorted(r[names.index("event_id")] for r in got))
        return out

    upgraded = Store.open(url)  # (today's planner names text_pairs: it cannot search the old layout)
    assert upgraded.query(expr).result_rows == [(PAIRS_COLUMN,)]
    # the old part holds the column (written by the mutation, not computed when read)
    stored = (
        "SELECT count() FROM system.parts_columns WHERE active AND database = currentDatabase() "
        "AND table = 'search_time' AND column = {c:String}"
    )
    assert count(upgraded, stored, {"c": PAIRS_COLUMN}) == count(upgraded, stored, {"c": "text"}) == 1

    def pairs_reads(value: str) -> tuple[str, str]:  # as the planner asks: its pairs on text_pairs
        where = f"hasAllTokens({PAIRS_COLUMN}, {{p:Array(String)}})"
        return index_reads(upgraded, "tok_pairs", where, {"p": phrase_pairs(value, "contains")})

    # the index is the one on the planner's column (else ClickHouse would not name it), and the part written
    # before the upgrade has it: a phrase found nowhere reads none of its granules, one found there reads it
    assert pairs_reads("zebra config weekly") == ("Parts: 0/1", "Granules: 0/1")
    assert pairs_reads("player config") == ("Parts: 1/1", "Granules: 1/1")
    assert found(upgraded) == [["s"], ["f"], []]
    upgraded.insert_events(
        [ev("n", "defer", msgid="1upg25-000003-AA", subject="Re: player config", recipient="c@z.org")]
    )
    assert found(upgraded) == [["n", "s"], ["f"], []]
    assert pairs_reads("zebra config weekly") == ("Parts: 0/2", "Granules: 0/2")
    mutations = (
        "SELECT count(), min(is_done) FROM system.mutations WHERE database = currentDatabase() "
        "AND table = 'search_time' AND command LIKE '%MATERIALIZE %' AND command LIKE '%pairs%'"
    )
    assert upgraded.query(mutations).result_rows == [(2, 1)]  # the column's, the index's
    run_steps_again(upgraded, 25)
    assert upgraded.query(expr).result_rows == [(PAIRS_COLUMN,)]
    assert upgraded.query(mutations).result_rows == [(2, 1)]
    assert found(upgraded) == [["n", "s"], ["f"], []]


def test_the_pairs_column_gives_the_pairs_that_migration_021s_index_expression_gave(store):
    """Migration 025's text_pairs expression against 021's tok_pairs expression, evaluated by ClickHouse on random
    texts of words, digits, punctuation, control characters, '\x1f' and non-ASCII, with and without the
    '\x1f' of search_time's layout: every term a search can ask for (two halves of ASCII letters) is in the
    one's tokens exactly when it is in the other's."""
    import random
    import re
    from pathlib import Path

    from eximtrack.search_plan import PAIRS_EXPR

    sql = (Path(migrations.MIGRATIONS_DIR) / "021_phrase_pairs.sql").read_text()
    [old] = re.findall(r"ADD INDEX IF NOT EXISTS tok_pairs (.*) TYPE text", sql)
    rnd = random.Random(25)
    pieces = ["a", "z", "q", "ab", "abcd", "abcde", "player", "é", "ü", "ß", "Ж", "😀", "1", "x9", "2024",
              " ", "  ", "-", ".", "_", "'", ":", "\t", "\x01", "\x7f", "\x1f", "A", "Mail"]  # fmt: skip
    texts = []
    for i in range(6000):
        body = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 30))).lower()
        texts.append(("dom.example 10.1.2.3 \x1f " if i % 3 else "") + body)

    def terms(expr: str) -> str:
        return (
            f"arraySort(arrayDistinct(arrayFilter(t -> match(t, '^[a-z]+ [a-z]+$'), "
            f"splitByString('_', {expr.replace('text', 't')}))))"
        )

    rows = store.query(
        f"SELECT {terms(old)}, {terms(PAIRS_EXPR)} FROM (SELECT arrayJoin({{texts:Array(String)}}) AS t)",
        {"texts": texts},
    ).result_rows
    assert len(rows) == len(texts)
    for text, (was, now) in zip(texts, rows, strict=True):
        assert was == now, text
    assert sum(bool(was) for was, _ in rows) > 2000  # most texts have pairs: the test says something


def test_phrase_pairs_are_a_subset_of_the_pairs_index_of_every_text_holding_the_phrase(store):
    """The superset guarantee of migration 021, against ClickHouse itself: for random texts (words, digits,
    punctuation, non-ASCII) and random pieces of them searched as phrases under each match mode, the pairs
    the planner asks for are among those tok_pairs' expression gives the text, laid out as search_time's
    view lays it out (the free-text columns after '\\x1f') and as rows before 021 were (no '\\x1f')."""
    import random

    from eximtrack.search import ascii_lower
    from eximtrack.search_plan import PAIRS_EXPR, phrase_pairs

    rnd = random.Random(21)
    words = ["player", "config", "product", "re", "my", "order", "a", "x1", "2024", "grüße", "Mail", "user"]
    seps = [" ", "  ", ", ", ": ", "-", ".", " - ", "!"]
    cases = []
    for _ in range(400):
        n = rnd.randint(1, 7)
        column = "".join(rnd.choice(words) + rnd.choice(seps) for _ in range(n)).strip()
        i = rnd.randint(0, len(column) - 1)
        j = rnd.randint(i + 1, len(column))
        match = rnd.choice(["eq", "begins", "contains"])
        value = {"eq": column, "begins": column[:j], "contains": column[i:j]}[match]
        pairs = phrase_pairs(ascii_lower(value), match)
        layout = rnd.choice(["new", "old"])
        text = (
            ("dom.example 10.1.2.3 \x1f " if layout == "new" else "dom.example 10.1.2.3 ")
            + column
            + " 250 ok"
        )
        cases.append((text.lower(), pairs))
    expr = PAIRS_EXPR.replace("text", "t")
    got = store.query(  # the index's terms: the expression split as its tokenizer splits it
        f"SELECT splitByString('_', {expr}) FROM (SELECT arrayJoin({{texts:Array(String)}}) AS t)",
        {"texts": [c[0] for c in cases]},
    ).result_rows
    assert len(got) == len(cases)
    asked = 0
    for (text, pairs), (indexed,) in zip(cases, got, strict=True):
        assert set(pairs) <= set(indexed), (text, pairs, indexed)
        asked += bool(pairs)
    assert asked > 100  # most phrases ask for pairs: the test says something


def test_reinsert_is_harmless(store):
    events = [
        ev("p", "inprogress", t=0),
        ev("d", "defer", t=10, recipient="a@x.org", deliveredto="a@x.org"),
        ev("s", "success", t=20, recipient="b@x.org", deliveredto="b@x.org"),
    ]
    for _ in range(3):
        store.insert_events(events)
    assert count(store, "SELECT count() FROM events") == 9  # raw parts until merged
    assert count(store, "SELECT count() FROM events FINAL") == 3
    assert count(store, "SELECT count() FROM latest FINAL") == 3
    store.command("OPTIMIZE TABLE events FINAL")
    assert count(store, "SELECT count() FROM events") == 3


def test_latest_keeps_highest_version_whatever_the_insert_order(store):
    rcpt = {"recipient": "a@x.org", "deliveredto": "a@x.org"}
    store.insert_events([ev("s", "success", t=20, **rcpt)])
    store.insert_events([ev("d", "defer", t=10, **rcpt)])  # older state arrives late
    rows = search(store)
    assert [(r["type"], r["event_id"]) for r in rows] == [("success", "s")]
    assert search(store, type=["defer"]) == []  # WHERE applies after FINAL, not to stale rows


def test_tombstone_hides_placeholder(store):
    store.insert_events([ev("p", "inprogress", t=0, version=1)])
    assert [r["type"] for r in search(store)] == ["inprogress"]
    store.insert_events(
        [
            ev("d", "defer", t=5, recipient="a@x.org", deliveredto="a@x.org", version=5),
            ev("p-del", "inprogress", t=5, version=2, is_deleted=1),
        ]
    )
    rows = search(store)
    assert [(r["type"], r["recipient"]) for r in rows] == [("defer", "a@x.org")]
    assert search(store, show=["inprogress"]) == []
    assert count(store, "SELECT count() FROM latest FINAL WHERE recipient = ''") == 0
    # the history keeps the placeholder (and the tombstone row, which show excludes)
    sql, params = build_show("m1")["attempts"]
    assert [r["type"] for r in store.query_dicts(sql, params)] == ["inprogress", "defer"]


def test_a_text_search_reads_no_tombstone_without_asking_for_its_type(store):
    """search_time's candidates for a text filter skip the `type != ''` condition (session 30: reading `type`
    for every candidate cost time): a tombstone's row has an empty text, which no LIKE of a value matches.
    Fails if the view ever wrote a tombstone's text."""
    from eximtrack.web.query import build_search_query

    store.insert_events([ev("p", "inprogress", t=0, version=1, email="bob@example.org")])
    store.insert_events(
        [
            ev(
                "d",
                "defer",
                t=5,
                recipient="a@x.org",
                deliveredto="a@x.org",
                version=5,
                email="bob@example.org",
            ),
            ev("p-del", "inprogress", t=5, version=2, is_deleted=1, email="bob@example.org"),
        ]
    )
    # unmerged: the placeholder, its tombstone (empty type and text) and the deferral
    assert count(store, "SELECT count() FROM search_time WHERE type = '' AND text = ''") == 1
    query = build_search_query({"all": "bob@example"}, None)
    sql, params = query.plan.candidates("DESC", None, 100)
    assert "type" not in sql.split(" WHERE ")[1].split(" ORDER BY ")[0]
    got = store.query(sql, params).result_rows
    assert len(got) == count(store, "SELECT count() FROM search_time WHERE type != ''") == 2
    names, rows = query.fetch(store_run(store), None, query.limit + 1)
    assert [dict(zip(names, r, strict=True))["type"] for r in rows] == ["defer"]
    newest_sql = build_search_query({}, None).plan.candidates("DESC", None, 100)[0]
    assert "FROM search_time WHERE type != ''" in newest_sql  # no text to skip the tombstone by


def test_bound_parameters_stop_injection(store):
    store.insert_events([ev("s", recipient="a@x.org", deliveredto="a@x.org", subject="hi")])
    for match in ("eq", "begins", "contains"):
        assert search(store, recipient="' OR 1=1 --", match=match) == []
        assert search(store, subject="') OR ('1'='1", match=match) == []
    assert search(store, msgid="m1' OR '1'='1") == []
    assert len(search(store, recipient="a@x.org")) == 1


@pytest.fixture
def fleet(store):
    """Four messages on two servers."""
    store.insert_events(
        [
            ev(
                "a1",
                "success",
                msgid="1aaaaa-000001-AA",
                server="web1",
                t=10,
                email="Alice@Example.com",
                user="alice",
                domain="example.com",
                senderip="192.0.2.10",
                subject="Quarterly Report",
                message_id="<abc123@example.com>",
                recipient="Bob@Remote.org",
                deliveredto="bob@remote.org",
                spamscore=1.5,
            ),
            ev(
                "b1",
                "defer",
                msgid="1bbbbb-000002-BB",
                server="web1",
                t=20,
                sendunixtime=NOW - 1800,
                email="carol@shop.net",
                user="carol",
                domain="shop.net",
                senderip="198.51.100.7",
                subject="Your order",
                recipient="dave@example.com",
                deliveredto="dave@example.com",
                message="451 try later",
            ),
            ev(
                "c1",
                "failure",
                msgid="1ccccc-000003-CC",
                server="web2",
                t=30,
                sendunixtime=NOW - 900,
                email="",
                subject="Mail delivery failed",
                parent_msgid="1bbbbb-000002-BB",
                recipient="carol@shop.net",
                deliveredto="carol@shop.net",
            ),
            # arrival unknown (ts 0 in the access paths); a real Exim id encodes its reception second
            ev("d1", "inprogress", msgid=RECENT_ID, server="web2", t=40, sendunixtime=0),
        ]
    )
    return store


def ids(rows) -> list[str]:
    return sorted(r["event_id"] for r in rows)


def test_every_search_filter(fleet):
    s = fleet
    assert ids(search(s)) == ["a1", "b1", "c1", "d1"]
    assert ids(search(s, recipient="bob@remote.org")) == ["a1"]  # case-insensitive
    assert ids(search(s, recipient="BOB@", match="begins")) == ["a1"]
    assert ids(search(s, recipient="example", match="contains")) == ["b1"]
    assert ids(search(s, sender="alice@example.com")) == ["a1"]
    assert ids(search(s, address="carol@shop.net")) == ["b1", "c1"]
    assert ids(search(s, domain="example.com")) == ["a1", "b1"]  # sender domain / recipient domain
    assert ids(search(s, domain="shop.net")) == ["b1", "c1"]
    assert ids(search(s, msgid="1aaaaa-000001-AA")) == ["a1"]
    assert ids(search(s, msgid="1aaaaa-000001-aa")) == []  # Exim ids are case-sensitive
    assert ids(search(s, msgid="1c", match="begins")) == ["c1"]
    assert ids(search(s, message_id="<ABC123@example.com>")) == ["a1"]
    assert ids(search(s, message_id="abc123", match="contains")) == ["a1"]
    assert ids(search(s, subject="report", match="contains")) == ["a1"]
    assert ids(search(s, subject="quarterly report")) == ["a1"]
    assert ids(search(s, senderip="198.51.100.7")) == ["b1"]
    assert ids(search(s, server="web2")) == ["c1", "d1"]
    assert ids(search(s, user="carol")) == ["b1"]
    assert ids(search(s, type=["failure", "inprogress"])) == ["c1", "d1"]
    assert ids(search(s, show=["successes"])) == ["a1"]
    assert ids(search(s, show=["deferred"])) == ["b1"]
    assert ids(search(s, show=["failures"])) == ["c1"]
    assert ids(search(s, show=["inprogress"])) == ["d1"]
    assert ids(search(s, show=["successes", "failures"], server="web2")) == ["c1"]
    # since/until use sendunixtime, or actionunixtime when the arrival is unknown (d1: NOW-3600+40)
    assert ids(search(s, since=NOW - 2000)) == ["b1", "c1"]
    assert ids(search(s, since=NOW - 3600 + 35)) == ["b1", "c1", "d1"]
    assert ids(search(s, until=NOW - 3000)) == ["a1", "d1"]
    assert ids(search(s, since=NOW - 2000, until=NOW - 1000)) == ["b1"]
    # combined filters are ANDed
    assert ids(search(s, domain="example.com", type=["defer"])) == ["b1"]


def test_rows_without_arrival_keep_their_access_paths(fleet):
    """A row whose arrival is unknown has ts 0 in the access paths: their TTL counts from its message's time
    (msgtime), so merges applying the TTL keep it findable through every key (server, migration 009)."""
    for table in ("search_keys", "search_time"):
        fleet.command(f"OPTIMIZE TABLE {table} FINAL")
        assert fleet.query(
            f"SELECT count() FROM {table} WHERE msgid = {{m:String}} AND ts = 0", {"m": RECENT_ID}
        ).result_rows[0][0], table
    assert ids(search(fleet, server="web2")) == ["c1", "d1"]


def test_sort_limit_and_result_shape(fleet):
    rows = search(fleet)
    assert [r["event_id"] for r in rows] == ["c1", "b1", "a1", "d1"]  # sendunixtime desc, unknown (0) last
    assert [r["event_id"] for r in search(fleet, sort="recipient:asc")] == ["d1", "a1", "c1", "b1"]
    assert [r["event_id"] for r in search(fleet, sort="-actionunixtime", limit=2)] == ["d1", "c1"]
    assert search(fleet, limit=0) == []
    a1 = search(fleet, msgid="1aaaaa-000001-AA")[0]
    assert abs(a1["sendunixtime"] - (NOW - 3600)) < 0.002
    assert a1["spamscore"] == 1.5 and a1["queue_time"] is None
    assert DeliveryEvent.from_dict(a1).recipient == "Bob@Remote.org"


def test_show_queries(fleet):
    s = fleet
    s.insert_events(
        [
            ev(
                "b2",
                "success",
                msgid="1bbbbb-000002-BB",
                t=60,
                email="carol@shop.net",
                subject="Your order",
                recipient="dave@example.com",
                deliveredto="dave@example.com",
                sendunixtime=NOW - 1800,
            )
        ]
    )
    s.insert_lines(
        [
            LogLineRecord(
                "l2", "web1", "1bbbbb-000002-BB", NOW - 1790, "… == dave@example.com R=dnslookup defer"
            ),
            LogLineRecord("l1", "web1", "1bbbbb-000002-BB", NOW - 1800, "… <= carol@shop.net H=…"),
        ]
    )
    q = build_show("1bbbbb-000002-BB")
    names, rows = run_show(q, store_run(s))["arrival"]
    arrival = [dict(zip(names, r, strict=True)) for r in rows]
    # the arrival derived from the attempts is what one read of the events gives
    naive = s.query_dicts(
        f"SELECT {', '.join(c if c != 'sendunixtime' else 'toUnixTimestamp64Milli(sendunixtime) / 1000 AS sendunixtime' for c in ARRIVAL_FIELDS)} "
        "FROM events FINAL WHERE msgid = '1bbbbb-000002-BB' AND is_deleted = 0 "
        "ORDER BY server, sendunixtime = 0, version DESC LIMIT 1 BY server"
    )
    assert arrival == naive
    assert (
        len(arrival) == 1
        and arrival[0]["email"] == "carol@shop.net"
        and arrival[0]["subject"] == "Your order"
    )
    assert [r["event_id"] for r in s.query_dicts(*q["attempts"])] == ["b1", "b2"]
    assert [r["msgid"] for r in s.query_dicts(*q["children"])] == ["1ccccc-000003-CC"]
    assert [r["line_id"] for r in s.query_dicts(*q["lines"])] == ["l1", "l2"]
    assert s.query_dicts(*build_show("1bbbbb-000002-BB", server="web2")["attempts"]) == []


def test_rejects_and_lines_replace(store):
    rejects = [
        RejectRecord("r1", "web1", "garbage line", "unparsed", "/var/log/exim_mainlog:1", 0, NOW - 60),
        RejectRecord("r2", "web1", "no time at all", "no-timestamp", "/var/log/exim_mainlog:1", 13, 0.0),
    ]
    lines = [LogLineRecord(f"l{i}", "web1", "m1", NOW - 100 + i, f"line {i}") for i in range(5)]
    for _ in range(2):
        store.insert_rejects(rejects)
        store.insert_lines(lines)
    assert count(store, "SELECT count() FROM rejects FINAL") == 2  # the time-less reject is not expired
    assert count(store, "SELECT count() FROM log_lines FINAL") == 5
    row = store.query_dicts(
        "SELECT reason, offset, toUnixTimestamp64Milli(logunixtime) AS ms FROM rejects FINAL WHERE reject_id = 'r1'"
    )[0]
    assert row["reason"] == "unparsed" and row["ms"] == round((NOW - 60) * 1000)


def test_an_upgraded_store_gets_the_narrow_copy_and_counts_there(url, store):
    """Migration 018 on a store filled before it: every stored version of `latest` (tombstones, old versions
    and versions inserted out of order included) is copied into latest_outcomes, a total by outcome and time
    is counted there and equals the latest state's count on `latest`, and later inserts reach it too."""
    from eximtrack.web.query import build_search_query

    store.insert_events(
        [
            ev("n1", "inprogress", msgid="1nar00-000001-AA", recipient="a@x.org", version=1),
            ev(
                "n1-del", "inprogress", msgid="1nar00-000001-AA", recipient="a@x.org", version=2, is_deleted=1
            ),
            ev("n2", "failure", msgid="1nar00-000001-AA", recipient="b@x.org", t=9),
            ev(
                "n2-old", "defer", msgid="1nar00-000001-AA", recipient="b@x.org", t=5
            ),  # older, inserted later
            ev("n3", "defer", msgid="1nar00-000002-AA", recipient="c@x.org", t=3),
            ev("n4", "failure", msgid="1nar00-000003-AA", recipient="d@x.org", server="web2", t=4),
        ]
    )
    store.insert_events([ev("n2", "failure", msgid="1nar00-000001-AA", recipient="b@x.org", t=9)])  # a replay
    upgraded = upgraded_from_before(url, store, "latest_outcomes", 18)
    state = "SELECT server, msgid, recipient, deliveredto, type, version, sendunixtime, actionunixtime FROM {} FINAL"
    got = sorted(upgraded.query(state.format("latest_outcomes")).result_rows)
    assert got == sorted(upgraded.query(state.format("latest")).result_rows) and len(got) == 3

    def total(params) -> int:
        sql, bound = build_search_query(params, None).count()
        assert "FROM latest_outcomes FINAL" in sql
        return count(upgraded, sql, bound)

    def naive(where: str) -> int:
        return count(upgraded, f"SELECT count() FROM latest FINAL WHERE {where}")

    assert total({"failure": "1"}) == naive("type IN ('failure', 'rejected')") == 2
    assert total({"defer": "1"}) == naive("type = 'defer'") == 1
    assert total({"server": "web", "server_searchmatch": "contains", "type": "failure"}) == 2
    assert total({}) == naive("1") == 3  # the tombstoned placeholder is gone
    upgraded.insert_events([ev("n5", "success", msgid="1nar00-000002-AA", recipient="c@x.org", t=20)])
    assert total({"defer": "1"}) == naive("type = 'defer'") == 0
    assert total({"type": "success"}) == 1


def test_an_upgraded_store_gets_the_outcome_keys_and_searches_by_value_and_outcome_there(url, store):
    """Migration 026 on a store filled before it: every stored version of `latest` whose outcome is not a
    success nor in progress writes search_keys' rows with its outcome (a stale deferral too; no tombstone, no
    success), a search by a value or a scope and such an outcome reads its candidates there and returns the
    latest state's rows, and later inserts reach the table through its view."""
    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    store.command("SYSTEM STOP MERGES latest")  # each insert's versions stay in a part of their own
    store.insert_events(
        [
            ev("k1", "inprogress", msgid="1key00-000001-AA", recipient="a@x.org", user="acct", version=1),
            ev("k2-old", "defer", msgid="1key00-000001-AA", recipient="b@x.org", user="acct", t=5),
            ev("k3", "defer", msgid="1key00-000002-AA", recipient="c@x.org", user="acct", t=3),
        ]
    )
    store.insert_events(
        [
            ev("k1-del", "inprogress", msgid="1key00-000001-AA", recipient="a@x.org", user="acct", version=2,
               is_deleted=1),
            ev("k2", "failure", msgid="1key00-000001-AA", recipient="b@x.org", user="acct", t=9),
            ev("k3-ok", "success", msgid="1key00-000002-AA", recipient="c@x.org", user="acct", t=4),
            ev("k4", "rejected", msgid="1key00-000003-AA", recipient="d@y.org", user="other", t=4),
        ]
    )  # fmt: skip
    upgraded = upgraded_from_before(url, store, "search_outcome_keys", 26)
    rows = upgraded.query(
        "SELECT DISTINCT msgid, type FROM search_outcome_keys WHERE field = 'user' AND value = 'acct' "
        "ORDER BY msgid, type"
    ).result_rows
    assert rows == [
        ("1key00-000001-AA", "defer"),
        ("1key00-000001-AA", "failure"),
        ("1key00-000002-AA", "defer"),
    ]
    assert (
        count(upgraded, "SELECT countIf(type IN ('success', 'inprogress', '')) FROM search_outcome_keys") == 0
    )
    upgraded.command("SYSTEM START MERGES latest")

    def page(params, scope=None) -> list[tuple]:
        sq = build_search_query(params, scope)
        assert "search_outcome_keys" in sq.plan.candidates("DESC", None, 10)[0]
        names, got = sq.fetch(store_run(upgraded), None, 101)
        return sorted((r[names.index("recipient")], r[names.index("type")]) for r in got)

    assert page({"failure": "1"}, Scope(user="acct")) == [("b@x.org", "failure")]
    assert page({"user": "other", "failure": "1"}) == [("d@y.org", "rejected")]
    # (deferrals are read from search_deferred_keys since migration 029, which had run on this store)
    upgraded.insert_events(
        [ev("k5", "failure", msgid="1key00-000004-AA", recipient="e@x.org", user="acct", t=30)]
    )
    assert page({"failure": "1"}, Scope(user="acct")) == [("b@x.org", "failure"), ("e@x.org", "failure")]


def test_rows_closed_without_an_attempt_end_their_in_progress_and_deferred_keys(url):
    """Migration 031. An administrator's `removed by` / `cancelled by` (a queue cleared by hand) closes a
    message's open rows with a `failure` of the same identity, its attempts kept and no tombstone, and so does
    a bounce's `error ignored` (the real
    joiner, on lines of Exim's log). Closed in a later insert than the open row, a placeholder ends its
    search_inflight_keys rows and a row deferred once (one attempt) its search_deferred_keys rows; before 031
    both stayed candidates of every "in progress" or "deferred" search of their values until the TTL. A first
    attempt's own failure (one attempt too) writes nothing to search_deferred_keys."""

    store = Store.open(url)

    def at(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW - 3600 + seconds))

    def arrival(msgid: str, rcpt: str) -> str:
        return (
            f"{at(0)} {msgid} <= alice@example.com H=(x) [192.0.2.1] P=esmtpa A=dovecot_login:alice@example.com "
            f'S=1234 id={msgid}@example.com T="hi" for {rcpt}'
        )

    def attempt(msgid: str, rcpt: str, mark: str, text: str) -> str:
        return (
            f"{at(60)} {msgid} {mark} {rcpt} R=dkim_lookuphost T=remote_smtp{' defer (-44)' if mark == '==' else ''} "
            f"H=mx.remote.test [198.51.100.7]: SMTP error from remote mail server after RCPT TO:<{rcpt}>: {text}"
        )

    ids = ["1tQ0a1-000001-AA", "1tQ0a2-000002-AA", "1tQ0a3-000003-AA", "1tQ0a4-000004-AA"]
    opened = [
        arrival(ids[0], "bob@remote.test"),  # in progress, then removed
        arrival(ids[1], "carol@remote.test"),  # deferred once, then cancelled
        attempt(ids[1], "carol@remote.test", "==", "451 greylisted"),
        arrival(ids[2], "dan@remote.test"),  # failed at its first attempt, in the later insert
        # a bounce deferred once, then its error ignored
        f'{at(0)} {ids[3]} <= <> R={ids[2]} U=mailnull P=local S=1234 T="Mail delivery failed" for eve@remote.test',
        attempt(ids[3], "eve@remote.test", "==", "451 greylisted"),
    ]
    closed = [
        f"{at(600)} {ids[0]} removed by root",
        f"{at(600)} {ids[1]} cancelled by root",
        attempt(ids[2], "dan@remote.test", "**", "550 no such user"),
        f"{at(600)} {ids[3]} eve@remote.test: error ignored",
    ]
    first, later = joined_in_two_inserts("web1", opened, closed)
    assert [(e.msgid, e.type, e.attempts) for e in later if not e.is_deleted] == [
        (ids[0], "failure", 0),
        (ids[1], "failure", 1),
        (ids[2], "failure", 1),
        (ids[3], "failure", 1),
    ]
    live = (
        "SELECT DISTINCT msgid FROM {table} FINAL WHERE is_deleted = 0 AND msgid IN {{ids:Array(String)}} "
        "ORDER BY msgid"
    )

    def open_in(table: str) -> list[str]:
        return [r[0] for r in store.query(live.format(table=table), {"ids": ids}).result_rows]

    store.insert_events(first)
    assert open_in("search_inflight_keys") == [ids[0], ids[2]]
    assert open_in("search_deferred_keys") == [ids[1], ids[3]]
    store.insert_events(later)
    assert open_in("search_inflight_keys") == []
    assert open_in("search_deferred_keys") == []
    # the first attempt's own failure is no end of a deferral: nothing of its message in the table
    assert (
        count(store, "SELECT count() FROM search_deferred_keys WHERE msgid = {m:String}", {"m": ids[2]}) == 0
    )
    # an end meets its open row's key rows one for one (the same values), so the merges fold every pair
    pairs = (
        "SELECT field, value, msgid, groupArray(is_deleted) AS d FROM {table} WHERE msgid IN {{ids:Array(String)}} "
        "GROUP BY field, value, msgid HAVING d != [0, 1] AND d != [1, 0]"
    )
    for table in ("search_inflight_keys", "search_deferred_keys"):
        assert store.query(pairs.format(table=table), {"ids": [ids[0], ids[1], ids[3]]}).result_rows == [], (
            table
        )


# migration 033: the free strings a tombstone of `latest` / `latest_by_recipient` no longer stores
TOMBSTONE_EMPTIED = (
    "event_id", "email", "sender", "user", "domain", "senderhost", "senderip", "subject", "message_id",
    "parent_msgid", "deliveryuser", "deliverydomain", "host", "ip", "message", "confirmation",
)  # fmt: skip


def tombstone_strings(store: Store, table: str) -> list[tuple]:
    """(msgid, recipient, deliveredto, type, each emptied column) of `table`'s tombstones, stored as they are."""
    cols = ", ".join(TOMBSTONE_EMPTIED)
    sql = (
        f"SELECT msgid, recipient, deliveredto, type, {cols} FROM {table} WHERE is_deleted = 1 ORDER BY msgid"
    )
    return store.query(sql).result_rows


def mutations_done(store: Store, tables: tuple[str, ...], timeout: float = 60) -> None:
    """Wait until the mutations of `tables` are done (those a migration queued without waiting)."""
    sql = (
        "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0 "
        "AND table IN {t:Array(String)}"
    )
    deadline = time.monotonic() + timeout
    while count(store, sql, {"t": list(tables)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(store, sql, {"t": list(tables)}) == 0, f"mutations of {tables} not done in {timeout} s"


def placeholders_delivered(msgids: list[str]) -> tuple[list, list]:
    """The real joiner's events of messages in progress (each with its placeholder), then of their deliveries
    (each a tombstone of its placeholder and a success)."""

    def at(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW - 3600 + seconds))

    opened, closed = [], []
    for i, msgid in enumerate(msgids):
        rcpt = f"rcpt{i}@remote.test"
        opened.append(
            f"{at(0)} {msgid} <= alice@example.com H=(x) [192.0.2.1] P=esmtpa A=dovecot_login:alice@example.com "
            f'S=1234 id={msgid}@example.com T="Quarterly invoice {i}" for {rcpt}'
        )
        closed.append(
            f"{at(60)} {msgid} => {rcpt} R=dkim_lookuphost T=remote_smtp H=mx.remote.test [198.51.100.7] "
            f'C="250 OK id=q{i}"'
        )
        closed.append(f"{at(61)} {msgid} Completed")
    return joined_in_two_inserts("web1", opened, closed)


def test_a_tombstone_stores_no_free_strings_and_its_keys_still_end(url):
    """Migration 033. A placeholder's tombstone keeps its identity, version, type and times in `latest` and
    `latest_by_recipient`, but not its free strings: a column TTL, expired for tombstones only, empties them
    where the rows are stored (the merges apply it). The views that read `latest` as it is inserted still get
    the tombstone whole: its ends in search_inflight_keys carry every value of the placeholder's keys, and fold
    them. `events` keeps every string. The searches find the deliveries, and nothing in progress."""
    store = Store.open(url)
    ids = ["1tQ1a1-000001-AA", "1tQ1a2-000002-AA"]
    first, later = placeholders_delivered(ids)
    assert [(e.type, e.is_deleted) for e in first] == [("inprogress", 0), ("inprogress", 0)]
    assert sorted((e.type, e.is_deleted) for e in later) == [("inprogress", 1)] * 2 + [("success", 0)] * 2
    store.insert_events(first)
    store.insert_events(later)
    for table in ("latest", "latest_by_recipient"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")
        stored = tombstone_strings(store, table)
        assert [r[:4] for r in stored] == [
            (m, f"rcpt{i}@remote.test", "", "inprogress") for i, m in enumerate(ids)
        ]
        assert all(value == "" for r in stored for value in r[4:]), (table, stored)
        live = store.query(f"SELECT email, subject, event_id FROM {table} FINAL ORDER BY msgid").result_rows
        assert [(e, s) for e, s, _ in live] == [
            ("alice@example.com", f"Quarterly invoice {i}") for i in range(2)
        ]
        assert all(event_id for _, _, event_id in live)
    # the events keep the tombstones whole
    assert (
        count(store, "SELECT count() FROM events WHERE is_deleted = 1 AND email = 'alice@example.com'") == 2
    )
    # every key row of the placeholders met its end (the same field and value), so nothing is in progress
    pairs = (
        "SELECT field, value, msgid, groupArray(is_deleted) AS d FROM search_inflight_keys "
        "GROUP BY field, value, msgid HAVING d != [0, 1] AND d != [1, 0]"
    )
    assert store.query(pairs).result_rows == []
    assert (
        count(store, "SELECT count() FROM search_inflight_keys WHERE field = 'email' AND is_deleted = 1") == 2
    )
    assert [r["type"] for r in search(store, sender="alice@example.com")] == ["success", "success"]
    assert search(store, sender="alice@example.com", type="inprogress") == []


def test_an_upgraded_store_empties_the_strings_of_its_stored_tombstones(url, tmp_path):
    """Migration 033 on a store filled before it: the stored tombstones' free strings are emptied (MATERIALIZE
    TTL, in the background), every live row and every search reads as before, and running the steps again (a crash
    mid-way) changes nothing."""
    old = store_before(url, 32, tmp_path)
    ids = ["1tQ1b1-000001-AA", "1tQ1b2-000002-AA", "1tQ1b3-000003-AA"]
    first, later = placeholders_delivered(ids)
    old.insert_events(first)
    old.insert_events(later)
    assert all(
        r[5] == "alice@example.com" for r in tombstone_strings(old, "latest")
    )  # email, as stored before
    rows = "SELECT * FROM {table} FINAL ORDER BY msgid, recipient, deliveredto"
    before = {t: old.query(rows.format(table=t)).result_rows for t in ("latest", "latest_by_recipient")}
    found_before = search(old, sender="alice@example.com")

    upgraded = Store.open(url)
    assert 33 in migrations.applied_versions(upgraded.client)
    mutations_done(upgraded, ("latest", "latest_by_recipient"))  # MATERIALIZE TTL, not waited for by the open
    for table in ("latest", "latest_by_recipient"):
        stored = tombstone_strings(upgraded, table)
        assert len(stored) == 3 and all(value == "" for r in stored for value in r[4:]), (table, stored)
        assert upgraded.query(rows.format(table=table)).result_rows == before[table]
    assert search(upgraded, sender="alice@example.com") == found_before
    run_steps_again(upgraded, 33)
    mutations_done(upgraded, ("latest", "latest_by_recipient"))
    for table in ("latest", "latest_by_recipient"):
        assert upgraded.query(rows.format(table=table)).result_rows == before[table]
        assert all(value == "" for r in tombstone_strings(upgraded, table) for value in r[4:])


def test_a_search_in_progress_or_deferred_folds_the_ends_its_first_round_finds_not_merged(url):
    """A server's queue, mostly ended in a later insert than its rows were queued (600 messages removed by
    an administrator, 300 deferred and then delivered; the real joiner on Exim's lines), the parts not
    merged: the ends sit in another part than the key rows they end, and the candidates' plain range read
    names every ended row. A page of 30 of the mail in progress (or deferred) holds the 15 rows still open,
    and when the first round's fetch finds rows that had ended, the next rounds read the candidates with
    FINAL, which folds each end with its key rows: the page is exact and takes a few statements, not a round
    per page of stale candidates through the whole queue (10 statements before, session (50))."""
    from eximtrack.web.query import build_search_query

    store = Store.open(url)

    def at(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(NOW - 7200 + seconds))

    def rcpt(i: int) -> str:
        return f"u{i}@remote.test"

    opened, closed = [], []
    for i in range(930):
        m = f"1tQ0{i % 100:02d}-{i:06d}-AB"
        opened.append(
            f"{at(i)} {m} <= spam@example.com H=(x) [192.0.2.1] P=esmtpa A=dovecot_login:spam@example.com "
            f'S=1234 id={m}@example.com T="buy" for {rcpt(i)}'
        )
        if 600 <= i < 900 or i >= 915:  # deferred (300 delivered later, the newest 15 still deferred)
            opened.append(
                f"{at(i + 1)} {m} == {rcpt(i)} R=dkim_lookuphost T=remote_smtp defer (-44) H=mx.remote.test "
                f"[198.51.100.7]: SMTP error from remote mail server after RCPT TO:<{rcpt(i)}>: 451 greylisted"
            )
        if i < 600:
            closed.append(f"{at(5000)} {m} removed by root")
        elif i < 900:
            closed.append(
                f'{at(5001)} {m} => {rcpt(i)} R=dkim_lookuphost T=remote_smtp H=mx.remote.test [198.51.100.7] C="250 ok"'
            )
            closed.append(f"{at(5002)} {m} Completed")
    first, later = joined_in_two_inserts("web9", opened, closed)
    store.insert_events(first)
    store.insert_events(later)
    parts = "SELECT count() FROM system.parts WHERE active AND database = currentDatabase() AND table = {t:String}"
    # not merged: the ends in a part of their own
    for table in ("search_inflight_keys", "search_deferred_keys"):
        assert count(store, parts, {"t": table}) == 2, table
    run = store_run(store)
    for flag, still_open in (("inprogress", range(900, 915)), ("defer", range(915, 930))):
        statements = []

        def counting(sql, params, statements=statements):
            statements.append(sql)
            return run(sql, params)

        sq = build_search_query({flag: "1", "server": "web9"}, None)
        names, rows = sq.fetch(counting, None, 31)
        got = sorted(dict(zip(names, r, strict=True))["recipient"] for r in rows)
        assert got == sorted(rcpt(i) for i in still_open), flag
        assert any(" FINAL" in s for s in statements if "_keys" in s), flag
        assert len(statements) <= 4, (flag, len(statements))


def test_an_upgraded_store_gets_the_deferred_keys_and_searches_rows_deferred_there(url, tmp_path):
    """Migration 029 on a store filled before it: the rows deferred now write search_keys' rows with their
    identity (a deferral ended since, none), and search_outcome_keys loses its deferrals (its view writes no
    more); a search by a scope or a value for deferrals reads its candidates there and returns the latest
    state's rows. Later inserts reach the table through its view, folded per insert: a deferral and its end
    in one insert write nothing, a result after a deferral inserted before writes the end (a stale candidate
    until merged, dropped by the fetch), and the table keeps the store's retention with its rule deleting
    ends a day after they were written. A row has a deferral per attempt, so an end is written even when a
    deferral of its row came in its insert: an earlier insert may have written another."""
    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    def mail(event_id, type_, message, recipient, attempts, t):  # a version of a row of account acct's mail
        return ev(event_id, type_, msgid=f"1dfr00-00000{message}-AA", recipient=recipient, user="acct",
                  attempts=attempts, t=t)  # fmt: skip

    old = store_before(url, 28, tmp_path)
    old.command("SYSTEM STOP MERGES latest")  # each insert's versions stay in a part of their own
    old.insert_events(
        [
            mail("d1", "defer", 1, "a@x.org", 1, 1),
            mail("d2", "defer", 1, "b@x.org", 1, 1),
            mail("d3", "defer", 2, "c@x.org", 1, 1),
            mail("f9", "failure", 9, "z@x.org", 1, 1),
        ]
    )
    old.insert_events([mail("s1", "success", 1, "a@x.org", 2, 2)])
    assert count(old, "SELECT countIf(type = 'defer') FROM search_outcome_keys") > 0
    upgraded = Store.open(url)
    keyed = (
        "SELECT DISTINCT recipient, is_deleted FROM search_deferred_keys WHERE field = 'user' AND value = 'acct' "
        "ORDER BY recipient, is_deleted"
    )
    assert upgraded.query(keyed).result_rows == [("b@x.org", 0), ("c@x.org", 0)]
    assert count(upgraded, "SELECT countIf(type = 'defer') FROM search_outcome_keys") == 0
    assert count(upgraded, "SELECT countIf(type = 'failure') FROM search_outcome_keys") > 0
    upgraded.command("SYSTEM START MERGES latest")
    upgraded.command("SYSTEM STOP MERGES search_deferred_keys")  # until the pair below is shown unmerged

    def page(params=None, scope=Scope(user="acct")) -> list[str]:
        sq = build_search_query(params or {"defer": "1"}, scope)
        assert "FROM search_deferred_keys WHERE" in sq.plan.candidates("DESC", None, 10)[0]
        names, got = sq.fetch(store_run(upgraded), None, 101)
        assert all(r[names.index("type")] == "defer" for r in got)
        return sorted(r[names.index("recipient")] for r in got)

    assert page() == ["b@x.org", "c@x.org"]
    assert page({"recipient": "c@x.org", "defer": "1"}, None) == ["c@x.org"]
    # b's result after its deferral, alone: its end is written (the deferral is in the table), a stale
    # candidate until merged; the view writes no deferral into search_outcome_keys any more
    upgraded.insert_events([mail("s2", "success", 1, "b@x.org", 2, 3)])
    assert upgraded.query(keyed).result_rows == [("b@x.org", 0), ("b@x.org", 1), ("c@x.org", 0)]
    assert page() == ["c@x.org"]
    # a deferral and its row's result in one insert write the end only; one still open when its insert ends
    # writes its keys, and its retry (a newer deferral of the same row) replaces them; a row deferred in an
    # earlier insert and deferred again and delivered in a later one gets its end
    upgraded.insert_events(
        [
            mail("d4", "defer", 3, "d@x.org", 1, 3),
            mail("f4", "failure", 3, "d@x.org", 2, 4),
            mail("d5", "defer", 4, "e@x.org", 1, 4),
            mail("d6", "defer", 5, "f@x.org", 1, 4),
        ]
    )
    upgraded.insert_events(
        [
            mail("d5-2", "defer", 4, "e@x.org", 2, 9),
            mail("d6-2", "defer", 5, "f@x.org", 2, 9),
            mail("s6", "success", 5, "f@x.org", 3, 10),
        ]
    )
    ended = "SELECT countIf(is_deleted = 0), countIf(is_deleted = 1) FROM search_deferred_keys WHERE msgid = {m:String}"
    assert upgraded.query(ended, {"m": "1dfr00-000003-AA"}).result_rows[0][0] == 0
    assert upgraded.query(ended, {"m": "1dfr00-000005-AA"}).result_rows[0][1] > 0
    assert count(upgraded, "SELECT countIf(type = 'defer') FROM search_outcome_keys") == 0
    assert page() == ["c@x.org", "e@x.org"]
    upgraded.command("SYSTEM START MERGES search_deferred_keys")
    upgraded.command("OPTIMIZE TABLE search_deferred_keys FINAL")  # each pair folds: its end is left
    assert upgraded.query(keyed).result_rows == [
        ("b@x.org", 1),
        ("c@x.org", 0),
        ("d@x.org", 1),
        ("e@x.org", 0),
        ("f@x.org", 1),
    ]
    assert page() == ["c@x.org", "e@x.org"]
    # the store's retention, and the ends' rule kept whatever the retention
    ttl = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'search_deferred_keys'"
    kept = "written + toIntervalHour(24) WHERE is_deleted = 1"
    for days in (0, 45):
        migrations.ensure_retention(upgraded.client, days)
        assert migrations.current_retention(upgraded.client, "search_deferred_keys") == days
        assert kept in count(upgraded, ttl)


def test_an_upgraded_store_gets_the_inflight_keys_and_searches_rows_in_progress_there(url, store):
    """Migration 027 on a store filled before it: the rows in progress now write search_keys' rows with their
    identity (an ended placeholder none); a search by a scope for rows in progress reads its candidates there
    and returns the latest state's rows. Later inserts reach the table through its view, folded per insert:
    a placeholder and its tombstone in one insert write nothing, a tombstone of a placeholder inserted before
    writes its rows (a stale candidate until merged, dropped by the fetch), and the table keeps the store's
    retention with its rule deleting tombstones a day after they were written."""
    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    store.command("SYSTEM STOP MERGES latest")  # each insert's versions stay in a part of their own
    store.insert_events(
        [
            ev("p1", "inprogress", msgid="1fly00-000001-AA", recipient="a@x.org", user="acct", version=1),
            ev("p2", "inprogress", msgid="1fly00-000001-AA", recipient="b@x.org", user="acct", version=1),
            ev("p3", "inprogress", msgid="1fly00-000002-AA", recipient="c@x.org", user="acct", version=1),
        ]
    )
    store.insert_events(
        [
            ev("p1-del", "inprogress", msgid="1fly00-000001-AA", recipient="a@x.org", user="acct", version=2,
               is_deleted=1),
            ev("s1", "success", msgid="1fly00-000001-AA", recipient="a@x.org", deliveredto="a@x.org", user="acct",
               t=2),
        ]
    )  # fmt: skip
    upgraded = upgraded_from_before(url, store, "search_inflight_keys", 27)
    keyed = (
        "SELECT DISTINCT recipient, is_deleted FROM search_inflight_keys WHERE field = 'user' AND value = 'acct' "
        "ORDER BY recipient, is_deleted"
    )
    assert upgraded.query(keyed).result_rows == [("b@x.org", 0), ("c@x.org", 0)]
    upgraded.command("SYSTEM START MERGES latest")
    upgraded.command("SYSTEM STOP MERGES search_inflight_keys")  # until the pair below is shown unmerged

    def page() -> list[str]:
        sq = build_search_query({"inprogress": "1"}, Scope(user="acct"))
        assert "FROM search_inflight_keys WHERE" in sq.plan.candidates("DESC", None, 10)[0]
        names, got = sq.fetch(store_run(upgraded), None, 101)
        assert all(r[names.index("type")] == "inprogress" for r in got)
        return sorted(r[names.index("recipient")] for r in got)

    assert page() == ["b@x.org", "c@x.org"]
    # b's tombstone alone: written (its placeholder is in the table), a stale candidate until merged
    upgraded.insert_events(
        [ev("p2-del", "inprogress", msgid="1fly00-000001-AA", recipient="b@x.org", user="acct", version=2,
            is_deleted=1)]
    )  # fmt: skip
    assert upgraded.query(keyed).result_rows == [("b@x.org", 0), ("b@x.org", 1), ("c@x.org", 0)]
    assert page() == ["c@x.org"]
    # a placeholder ended in its own insert writes nothing; one still open when its insert ends does
    upgraded.insert_events(
        [
            ev("p4", "inprogress", msgid="1fly00-000003-AA", recipient="d@x.org", user="acct", version=1),
            ev("p4-del", "inprogress", msgid="1fly00-000003-AA", recipient="d@x.org", user="acct", version=2,
               is_deleted=1),
            ev("f4", "failure", msgid="1fly00-000003-AA", recipient="d@x.org", deliveredto="d@x.org",
               user="acct", t=3),
            ev("p5", "inprogress", msgid="1fly00-000004-AA", recipient="e@x.org", user="acct", version=1, t=4),
        ]
    )  # fmt: skip
    assert count(upgraded, "SELECT count() FROM search_inflight_keys WHERE msgid = '1fly00-000003-AA'") == 0
    assert page() == ["c@x.org", "e@x.org"]
    upgraded.command("SYSTEM START MERGES search_inflight_keys")
    upgraded.command("OPTIMIZE TABLE search_inflight_keys FINAL")  # b's pair folds: its tombstone is left
    assert upgraded.query(keyed).result_rows == [("b@x.org", 1), ("c@x.org", 0), ("e@x.org", 0)]
    # the store's retention, and the tombstones' rule kept whatever the retention
    ttl = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'search_inflight_keys'"
    kept = "written + toIntervalHour(24) WHERE is_deleted = 1"
    assert migrations.current_retention(
        upgraded.client, "search_inflight_keys"
    ) == migrations.current_retention(upgraded.client, "search_keys")
    for days in (0, 45):
        migrations.ensure_retention(upgraded.client, days)
        assert migrations.current_retention(upgraded.client, "search_inflight_keys") == days
        assert kept in count(upgraded, ttl)


def test_the_embedded_engine_caches_decompressed_blocks(store):
    """chDB starts with a cache of decompressed blocks ($EXIMTRACK_CHDB_CACHE_MB, default 1 GiB), and both of
    the store's sessions (the writer's and the read-only one) use it; a query can still turn it off."""
    from eximtrack.config import resolve_cache_mb

    size = "SELECT value FROM system.server_settings WHERE name = 'uncompressed_cache_size'"
    assert int(count(store, size)) == resolve_cache_mb() * 1024 * 1024 > 0
    use = "SELECT value FROM system.settings WHERE name = 'use_uncompressed_cache'"
    assert count(store, use) == "1"
    assert store.query(use, readonly=True).result_rows[0][0] == "1"
    off = store.query(use, readonly=True, settings={"use_uncompressed_cache": 0}).result_rows[0][0]
    assert off == "0"


def test_the_read_only_session_compiles_no_expressions(store):
    """Reads run without ClickHouse's JIT (store.READ_SETTINGS): it compiled a search's expressions on their 4th
    run, one slow request per query shape, and made none faster. The writer's session keeps the default."""
    jit = "SELECT value FROM system.settings WHERE name = {n:String}"
    for name in ("compile_expressions", "compile_aggregate_expressions", "compile_sort_description"):
        assert store.query(jit, {"n": name}, readonly=True).result_rows[0][0] == "0", name
        assert count(store, f"SELECT value FROM system.settings WHERE name = '{name}'") == "1", name


def test_the_read_only_session_chooses_skip_index_granules_before_reading(store):
    """Reads analyse skip indexes before reading (store.READ_SETTINGS: use_skip_indexes_on_data_read = 0; a
    read through search_time's text index 10-40 % faster); a statement can still ask otherwise, and the
    writer's session keeps the engine's default."""
    name = "use_skip_indexes_on_data_read"
    setting = "SELECT value FROM system.settings WHERE name = {n:String}"
    assert store.query(setting, {"n": name}, readonly=True).result_rows[0][0] == "0"
    asked = store.query(setting, {"n": name}, readonly=True, settings={name: 1}).result_rows[0][0]
    assert asked == "1"
    assert count(store, f"SELECT value FROM system.settings WHERE name = '{name}'") == "1"


def test_inserts_run_their_views_in_parallel(store):
    """Every insert asks ClickHouse to run the materialized views it feeds in parallel (store.INSERT_SETTINGS);
    a view of its own records the setting its insert ran with. The writer's session keeps its default."""
    store.command("CREATE TABLE insert_setting_probe (v String) ENGINE = Memory")
    store.command(
        "CREATE MATERIALIZED VIEW insert_setting_probe_mv TO insert_setting_probe AS "
        "SELECT toString(getSetting('parallel_view_processing')) AS v FROM events"
    )
    try:
        store.insert_events([ev("e1", recipient="r@x.org", deliveredto="r@x.org")])
        assert count(store, "SELECT groupArray(v) FROM insert_setting_probe") == ["true"]
        assert count(store, "SELECT count() FROM latest FINAL") == 1
        assert count(store, "SELECT toString(getSetting('parallel_view_processing'))") == "false"
    finally:
        store.command("DROP VIEW insert_setting_probe_mv")
        store.command("DROP TABLE insert_setting_probe")


def test_batches(store):
    events = [ev(f"e{i}", recipient=f"r{i}@x.org", deliveredto=f"r{i}@x.org") for i in range(7)]
    assert store.insert_events(events, batch_rows=2) == 7
    assert count(store, "SELECT count() FROM latest FINAL") == 7
    assert count(store, "SELECT count(DISTINCT _part) FROM events") >= 4


def test_retention(url, store):
    # the search access paths follow (they are kept a month longer than the rows they point to)
    assert store.set_retention(30) == [
        "events",
        "latest",
        "latest_by_recipient",
        "latest_outcomes",
        "rejects",
        "log_lines",
        "search_keys",
        "search_time",
        "search_outcome_keys",
        "search_inflight_keys",
        "search_deferred_keys",
    ]
    ttl = store.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'search_keys'"
    ).result_rows[0][0]
    assert "addDays(toDateTime(if(ts = 0, msgtime, ts)), 31) + toIntervalDay(30)" in ttl
    assert store.retention_days() == 30
    assert store.set_retention(30) == []  # unchanged -> no ALTER
    # a store upgraded from 007's TTL (counted from ts, so rows without arrival expired at once): rewritten
    # on open, keeping its days
    store.command("ALTER TABLE search_time MODIFY TTL addDays(toDateTime(ts), 31) + toIntervalDay(30)")
    assert migrations.ensure_ttl_bases(store.client) == ["search_time"]
    assert migrations.ensure_ttl_bases(store.client) == [] and store.retention_days() == 30
    assert Store.open(url, retention_days=7).retention_days() == 7
    store.set_retention(0)
    assert store.retention_days() == 0
    old = ev("old", actionunixtime=NOW - 200 * 86400, sendunixtime=NOW - 200 * 86400, recipient="o@x.org")
    store.insert_events([old])
    assert count(store, "SELECT count() FROM latest FINAL") == 1  # kept forever
    store.set_retention(90)
    store.insert_events([ev("old2", actionunixtime=NOW - 200 * 86400, recipient="p@x.org")])
    store.command("OPTIMIZE TABLE latest FINAL")
    assert count(store, "SELECT count() FROM latest FINAL") == 0


def test_retention_from_environment(url, monkeypatch):
    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "45")
    assert Store.open(url).retention_days() == 45


def test_readonly_query_refuses_writes(store):
    assert store.query("SELECT 1", readonly=True).result_rows == [(1,)]
    with pytest.raises(Exception, match="(?i)readonly"):
        store.query("INSERT INTO events (event_id) VALUES ('x')", readonly=True)
    assert count(store, "SELECT count() FROM events") == 0
    store.insert_events([ev("after")])  # the session is not left read-only
    assert count(store, "SELECT count() FROM events") == 1


def test_one_chdb_path_per_process(chdb_path, tmp_path):
    with pytest.raises(StoreError, match="one store path per process"):
        Store.open(f"chdb://{tmp_path}/other")


def test_bulk_insert_throughput(store, capsys):
    n = 50_000
    events = [
        ev(
            f"bulk{i}",
            msgid=f"m{i // 4}",
            recipient=f"user{i}@example{i % 97}.com",
            deliveredto=f"user{i}@example{i % 97}.com",
            subject=f"subject {i}",
            t=i % 3000,
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    store.insert_events(events)
    elapsed = time.perf_counter() - started
    assert count(store, "SELECT count() FROM latest FINAL") == n
    started = time.perf_counter()
    assert len(search(store, recipient=f"user4242@example{4242 % 97}.com")) == 1
    lookup = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\n[store] inserted {n} events (events + latest via MV) in {elapsed:.2f}s = {n / elapsed:,.0f} rows/s; recipient search {lookup * 1000:.0f} ms"
        )


def _reference_match(value: str, wanted: str, match: str) -> bool:
    from eximtrack.search import ascii_lower

    v, w = ascii_lower(value), ascii_lower(wanted)
    return v == w if match == "eq" else v.startswith(w) if match == "begins" else w in v


def test_access_paths_never_change_results(store):
    """The access paths (search_keys for eq/begins, search_time's LIKE + hasAllTokens for the rest) must only
    narrow: compare with a plain Python filter over many substrings of real values, in mixed case and with
    non-ASCII characters."""
    import random

    rng = random.Random(7)
    domains = ["Example.com", "example.ORG", "mail.Grüße.de", "x-y_z.net", "shop.co.uk"]
    words = ["Invoice", "order", "Ärger", "re:", "FW:", "#42", "a_b", "grüße", "x.y"]
    events = []
    for i in range(300):
        events.append(
            ev(
                f"t{i}",
                msgid=f"1tok{i:02d}-000000-AA",
                email=f"{rng.choice(['Alice', 'bob', 'c.d', 'ÉMILE'])}{i % 7}@{rng.choice(domains)}",
                recipient=f"{rng.choice(['Rcpt', 'info', 'x_y', 'Ünï'])}.{i % 11}@{rng.choice(domains)}",
                deliveredto=f"d{i}",
                subject=" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))),
            )
        )
    store.insert_events(events)
    checked = 0
    for field, column in (("recipient", "recipient"), ("sender", "email"), ("subject", "subject")):
        for _ in range(40):
            value = getattr(rng.choice(events), column)
            a = rng.randrange(len(value))
            b = rng.randrange(a, len(value)) + 1
            for match, wanted in (("eq", value), ("begins", value[:b]), ("contains", value[a:b])):
                if rng.random() < 0.5:
                    wanted = wanted.upper() if rng.random() < 0.5 else wanted.lower()
                expected = sorted(
                    e.event_id for e in events if _reference_match(getattr(e, column), wanted, match)
                )
                got = sorted(r["event_id"] for r in search(store, **{field: wanted, "match": match}))
                assert got == expected, (field, match, wanted)
                checked += 1
    assert checked == 360


def test_tenant_scope(store):
    """cPanel's rules: an account sees its sends and what it receives; a reseller the accounts it owns;
    a webmail login only its own address. Applied to search and to show."""
    from eximtrack.search import Scope

    store.insert_events(
        [
            # bob (owned by res1) sends to carol (owned by res2) and to an outside address
            ev("b1", msgid="1bob00-000001-AA", user="bob", owner="res1", email="bob@bob.test", recipient="carol@carol.test",
               deliveredto="carol@carol.test", deliveryuser="carol", deliveryowner="res2"),
            ev("b2", msgid="1bob00-000001-AA", user="bob", owner="res1", email="bob@bob.test", recipient="x@remote.test",
               deliveredto="x@remote.test"),
            # an outsider sends to dave (owned by res1)
            ev("o1", msgid="1out00-000002-BB", email="spam@out.test", recipient="Dave@dave.test", deliveredto="dave@dave.test",
               deliveryuser="dave", deliveryowner="res1"),
        ]
    )  # fmt: skip
    store.insert_lines(
        [
            LogLineRecord(
                "l1",
                "web1",
                "1bob00-000001-AA",
                NOW - 3600,
                "… <= bob@bob.test … for carol@carol.test x@remote.test",
            )
        ]
    )

    def scoped(**scope):
        return ids(search(store, scope=Scope(**scope)))

    assert scoped(user="bob") == ["b1", "b2"]
    assert scoped(user="CAROL") == ["b1"]  # received; not bob's other recipient
    assert scoped(user="dave") == ["o1"]
    assert scoped(user="nobody") == []
    assert scoped(reseller="res1") == ["b1", "b2", "o1"]  # bob's sends and dave's inbound
    assert scoped(reseller="res2") == ["b1"]
    assert scoped(address="dave@dave.test") == ["o1"]
    assert scoped(address="bob@bob.test") == ["b1", "b2"]
    assert ids(search(store, recipient="x@remote.test", scope=Scope(user="carol"))) == []

    def show(msgid, **scope):
        q = build_show(msgid, scope=Scope(**scope))
        return {k: store.query_dicts(sql, params) for k, (sql, params) in q.items()}

    mine = show("1bob00-000001-AA", user="bob")
    assert [r["event_id"] for r in mine["attempts"]] == ["b1", "b2"] and mine["arrival"] and mine["lines"]
    received = show("1bob00-000001-AA", user="carol")
    assert [r["event_id"] for r in received["attempts"]] == ["b1"] and received["arrival"]
    assert received["lines"] == []  # the raw lines name bob's other recipients
    stranger = show("1bob00-000001-AA", user="dave")
    assert not any(stranger.values())


def test_rebuild_search_index_refills_the_access_paths(store):
    """Emptied access paths lose searches (the planner trusts them); `rebuild-search-index` brings them back."""
    from eximtrack import search_index

    store.insert_events(
        [
            ev(
                "rb1",
                msgid="1reb00-000001-AA",
                server="mx-Rebuild",
                recipient="Rebuild@Example.org",
                subject="Rebuilt index",
            ),
            ev("rb2", "failure", msgid="1reb00-000002-AA", server="mx-Rebuild", recipient="b@x.org", user="rebuilder"),
            ev("rb3", "inprogress", msgid="1reb00-000003-AA", server="mx-Rebuild", recipient="c@x.org",
               user="rebuilder"),
            ev("rb4", "defer", msgid="1reb00-000004-AA", server="mx-Rebuild", recipient="d@x.org", user="rebuilder",
               attempts=1),
        ]
    )  # fmt: skip
    assert ids(search(store, recipient="rebuild@example.org")) == ["rb1"]
    # migration 009: the server is a key, as is (server filters are case-sensitive)
    keys = "SELECT count() FROM search_keys FINAL WHERE field = 'server' AND value = 'mx-Rebuild'"
    assert store.query(keys).result_rows[0][0] == 4  # one row per message
    assert ids(search(store, server="mx-Rebuild", type="success")) == ["rb1"]
    assert search(store, server="mx-rebuild") == []
    for table in search_index.TABLES:
        store.command(f"TRUNCATE TABLE {table}")
    assert search(store, recipient="rebuild@example.org") == []
    done = dict((t, n) for t, n, _ in search_index.rebuild(store, progress=lambda _: None))
    assert set(done) == set(search_index.TABLES) and all(n > 0 for n in done.values())
    assert ids(search(store, recipient="rebuild@example.org")) == ["rb1"]
    assert ids(search(store, subject="rebuilt", match="begins")) == ["rb1"]
    assert ids(search(store, server="mx-Rebuild", type="success")) == ["rb1"]
    assert ids(search(store, user="rebuilder", type="failure")) == ["rb2"]  # search_outcome_keys (026)
    assert ids(search(store, user="rebuilder", type="inprogress")) == ["rb3"]  # search_inflight_keys (027)
    assert ids(search(store, user="rebuilder", type="defer")) == ["rb4"]  # search_deferred_keys (029)
    # 009's backfill once more (a migration resumed after a crash): duplicates only, folded
    from sinks.clickhouse.migrations import load_migrations

    for migration in load_migrations():
        for _, statement in migration.steps():
            if statement.startswith("INSERT INTO search_keys") and "'server' AS field" in statement:
                store.command(statement)
    assert store.query(keys).result_rows[0][0] == 4
