"""The aggregated views agree EXACTLY with a direct aggregation over latest FINAL / events FINAL:
after ingesting real-Exim and generated multi-server logs, after re-ingesting the same files (duplicates),
and while rows change state between inserts (inprogress -> defer -> success arriving in later batches,
cutthrough deliveries logged before their arrival, overlapping re-inserts of earlier batches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eximtrack import stats_snapshots
from sinks.clickhouse.store import Store
from stream.join import Joiner
from tests.views import checks
from tests.views.conftest import GOLDEN, SAMPLES, ingest, populate

pytestmark = pytest.mark.store


def assert_agree(store: Store) -> None:
    bad = checks.mismatches(store)
    assert not bad, bad


def test_views_agree_with_direct_aggregation_and_ignore_reingest(url, generated_logs):
    populate(url, generated_logs)
    store = Store.open(url)
    assert_agree(store)
    before = checks.totals(store)
    assert before["messages"] > 5000 and before["success"] > 0 and before["deferred"] > 0
    assert before["failure"] > 0 and before["rejected"] > 0 and before["inprogress"] > 0
    servers = store.query("SELECT uniqExact(server) FROM mail_hourly").result_rows[0][0]
    assert servers >= 4 + 3
    # the very same files again: every event a second time
    populate(url, generated_logs)
    assert_agree(store)
    assert checks.totals(store) == before
    # and merged parts say the same as unmerged ones
    for table in ("events", "latest", "mail_hourly", "reasons_hourly", "delays_hourly", "rejections_hourly"):
        store.command(f"OPTIMIZE TABLE {table} FINAL")
    assert_agree(store)
    assert checks.totals(store) == before


def _join_in_batches(store: Store, server: str, lines: list[str], cuts: list[int], overlap: int) -> None:
    """Feed the joiner line by line; insert its output in batches that end at `cuts`; every batch also
    re-inserts the last `overlap` events of the batch before (a retried insert); check after each batch,
    first with the stats snapshots of the batch before (the hours it touched are dirty), then refreshed."""
    joiner = Joiner(server)
    pending, previous = [], []
    rejects = []
    bounds = [*cuts, len(lines)]
    start = 0
    for end in bounds:
        for n in range(start, end):
            out = joiner.process(lines[n], offset=n)
            pending.extend(out.events)
            rejects.extend(out.rejects)
        batch = previous[-overlap:] + pending if overlap else pending
        store.insert_events(batch)
        store.insert_rejects(rejects)
        previous, pending = pending, []
        start = end
        assert_agree(store)
        stats_snapshots.refresh(store)
        assert stats_snapshots.dirty_hours(store) == []
        bad = checks.mismatches(store, only=checks.SNAPSHOT_PAIRS)  # the pairs that read the snapshots
        assert not bad, bad


@pytest.mark.parametrize(
    "source",
    [
        SAMPLES / "mainlog-all.log",
        GOLDEN / "cutthrough" / "input.log",
        GOLDEN / "defer_then_success" / "input.log",
        GOLDEN / "frozen_then_cancelled" / "input.log",
        GOLDEN / "mid_log_start" / "input.log",
    ],
    ids=lambda p: p.parent.name if p.name == "input.log" else p.stem,
)
def test_state_changes_across_batches(url, source: Path):
    lines = source.read_text(encoding="utf-8").splitlines()
    store = Store.open(url)
    cuts = sorted({max(1, len(lines) * k // 5) for k in range(1, 5)})
    _join_in_batches(store, "s1", lines, cuts, overlap=7)
    # final state after everything: a row that went defer -> success is counted once, as success
    t = checks.totals(store)
    latest = dict(
        store.query(
            "SELECT type, count() FROM latest FINAL WHERE protocol != '' OR type = 'rejected' GROUP BY type"
        ).result_rows
    )
    assert t["success"] == latest.get("success", 0)
    assert t["deferred"] == latest.get("defer", 0)
    assert t["inprogress"] == latest.get("inprogress", 0)


def test_defer_then_success_counts_once(url):
    lines = (GOLDEN / "defer_then_success" / "input.log").read_text(encoding="utf-8").splitlines()
    store = Store.open(url)
    # up to (and including) the first deferral: the row is deferred
    first_defer = next(i for i, line in enumerate(lines) if " == " in line)
    _join_in_batches(store, "s1", lines, [first_defer + 1], overlap=0)
    t = checks.totals(store)
    assert t["deferred"] == 0 and t["success"] >= 1 and t["defer_attempts"] >= 1


def test_generated_log_reingest_of_one_server_changes_nothing(url, generated_logs):
    server, path = generated_logs[0]
    ingest(url, server, path)
    store = Store.open(url)
    before = checks.totals(store)
    ingest(url, server, path)
    ingest(url, server, path)
    assert checks.totals(store) == before
    assert_agree(store)
