"""Migration 004 (backfill of the aggregates from stored events) and `eximtrack rebuild-aggregates`."""

from __future__ import annotations

import re

import pytest

from eximtrack import cli
from eximtrack.stats import AGGREGATE_TABLES, backfill_statements
from sinks.clickhouse.migrations import MIGRATIONS_DIR
from sinks.clickhouse.store import Store
from tests.views import checks
from tests.views.conftest import SAMPLES, ingest

MV = re.compile(r"CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+) AS\n(SELECT.*?);\n", re.S)


def test_backfill_is_exactly_the_views_selects():
    views = MV.findall((MIGRATIONS_DIR / "003_aggregates.sql").read_text(encoding="utf-8"))
    assert {dest for _, dest, _ in views} == set(AGGREGATE_TABLES)
    text = (MIGRATIONS_DIR / "004_backfill_aggregates.sql").read_text(encoding="utf-8")
    body = text[text.index("INSERT INTO") :]
    assert body == "\n".join(f"INSERT INTO {dest}\n{sel};\n" for _, dest, sel in views)


@pytest.mark.store
def test_backfill_after_an_upgrade_and_rebuild(capsys, url):
    for mode in ("all", "default"):
        ingest(url, f"s-{mode}", SAMPLES / f"mainlog-{mode}.log")
    store = Store.open(url)
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
    assert not checks.mismatches(store)
    assert checks.totals(store) == before
