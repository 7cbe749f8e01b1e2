"""The hourly stats snapshots (migration 008, eximtrack/stats_snapshots.py): `mail_hourly_all` reads the
snapshot of an hour only while nothing was inserted for that hour since it was taken, and the states
otherwise; a refresh interrupted half-way, repeated or run twice at once never counts a key twice; the
snapshots no query reads are deleted after the grace period. The numbers are compared with the direct
aggregation of tests/views/checks.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eximtrack import hourly_read, stats, stats_snapshots
from eximtrack.ingest import ingest_files
from sinks.clickhouse.store import Store, store_run
from tests.views import checks
from tests.views.conftest import GOLDEN, SAMPLES, ingest

pytestmark = pytest.mark.store

BUMP = 1000  # added to `messages` of every snapshot row: shows where a number was read from


def assert_agree(store: Store) -> None:
    bad = checks.mismatches(store, only=checks.SNAPSHOT_PAIRS)
    assert not bad, bad
    assert_two_statements_equal_the_view(store)


def assert_two_statements_equal_the_view(store: Store) -> None:
    """`eximtrack stats` / `/api/v1/stats` (HourlyStats.run: classify the range's hours, then read each from
    one source) give exactly what one read of mail_hourly_all gives, whatever state the snapshots are in."""
    hours = sorted(
        stats_snapshots.as_utc(h) for (h,) in store.query("SELECT DISTINCT hour FROM mail_hourly").result_rows
    )
    ranges = [{}]
    if hours:
        ranges += [stats.hour_range(hours[len(hours) // 2].timestamp() + 60, None)]
        ranges += [stats.hour_range(None, hours[-1].timestamp())]
    servers = [r[0] for r in store.query("SELECT DISTINCT server FROM mail_hourly").result_rows]
    for bounds in ranges:
        for groups, equals, outbound in (
            ((), {}, False),
            (("server",), {}, False),
            (("server",), {}, True),
            (("hour",), {"server": servers[0]}, False),
            (("hour", "user"), {}, False),
            (("domain",), {"server": servers[0]}, False),
        ):
            request = stats.build_grouped_stats(groups, bounds, equals, outbound)
            got = request.run(store_run(store))
            view = store.query(*request.view_sql())
            assert got[0] == list(view.column_names)
            assert sorted(got[1]) == sorted(view.result_rows), (groups, bounds, equals)


def test_stats_by_server_and_by_hour_read_the_snapshot_projections(url):
    """The snapshot branch of a stats read grouped by server or by hour (the default of /api/v1/stats and
    the fleet charts) is answered from the aggregate projections of migration 010, not from the per-sender
    rows: what makes 30 days by server ~4x faster at 1e8 events (docs/BENCHMARKS.md)."""
    ingest(url, "s1", SAMPLES / "mainlog-all.log")
    store = Store.open(url)
    run = store_run(store)
    for groups, projection in ((("server",), "by_server"), (("hour",), "by_hour"), (("user",), None)):
        request = stats.build_grouped_stats(groups, {})
        read_plan = hourly_read.plan(run, "1", {}, None)
        assert read_plan.clean and not read_plan.dirty
        sql, params = request.sql(read_plan)
        plan = "\n".join(r[0] for r in store.query("EXPLAIN " + sql, params).result_rows)
        reads = [line.split("(")[-1].rstrip(")") for line in plan.splitlines() if "ReadFromMergeTree" in line]
        if projection:
            assert projection in reads, plan
        else:
            assert not {"by_server", "by_hour"} & set(reads), plan


def messages_by_hour(store: Store, source: str) -> dict:
    rows = store.query(f"SELECT hour, sum(messages) FROM {source} GROUP BY hour").result_rows
    return {stats_snapshots.as_utc(h): n for h, n in rows}


def test_clean_hours_read_snapshots_and_any_insert_makes_an_hour_dirty(url):
    ingest(url, "s1", SAMPLES / "mainlog-all.log")  # ingest refreshes the snapshots at its end
    store = Store.open(url)
    assert stats_snapshots.dirty_hours(store) == []
    assert_agree(store)
    first_hours = set(messages_by_hour(store, "mail_hourly_v"))
    keys = {
        stats_snapshots.as_utc(h): n
        for h, n in store.query("SELECT hour, count() FROM mail_hourly_snap GROUP BY hour").result_rows
    }
    assert set(keys) == first_hours

    # mark every snapshot row: a clean hour must show the mark (it is read from the snapshot)
    store.command(
        f"ALTER TABLE mail_hourly_snap UPDATE messages = messages + {BUMP} WHERE 1 SETTINGS mutations_sync = 2"
    )
    got = messages_by_hour(store, "mail_hourly_all")
    want = messages_by_hour(store, "mail_hourly_v")
    assert got == {h: want[h] + BUMP * keys[h] for h in want}

    # new mail of another server in other hours, and a second copy of the first file: every hour of the
    # first file is touched again (duplicates only), so none of its marked snapshots may be read any more
    store.insert_events([])  # no-op insert: must not make anything dirty
    assert stats_snapshots.dirty_hours(store) == []
    ingest_files(store, [str(GOLDEN / "defer_then_success" / "input.log")], server="s2")
    dirty = {h for h, _ in stats_snapshots.dirty_hours(store)}
    assert dirty and not dirty & first_hours  # the new hours only
    got = messages_by_hour(store, "mail_hourly_all")
    want = messages_by_hour(store, "mail_hourly_v")
    assert {h: got[h] for h in dirty} == {h: want[h] for h in dirty}
    assert {h: got[h] for h in first_hours} == {h: want[h] + BUMP * keys[h] for h in first_hours}

    ingest_files(store, [str(SAMPLES / "mainlog-all.log")], server="s1")  # the same events again
    assert first_hours <= {h for h, _ in stats_snapshots.dirty_hours(store)}
    assert_agree(store)  # the marks are gone: every hour is read from the states

    done = stats_snapshots.refresh(store)
    assert done["hours"] >= len(first_hours) and stats_snapshots.dirty_hours(store) == []
    assert_agree(store)


def snap_rows(store: Store) -> int:
    return store.query("SELECT count() FROM mail_hourly_snap").result_rows[0][0]


def test_interrupted_concurrent_and_repeated_refreshes_count_each_key_once(url):
    ingest(url, "s1", GOLDEN / "smtp_rejections" / "input.log")
    ingest(url, "s2", SAMPLES / "mainlog-cpanel.log")
    store = Store.open(url)
    keys = store.query("SELECT count() FROM mail_hourly_v").result_rows[0][0]
    assert keys > 0 and snap_rows(store) == keys
    totals = checks.totals(store)

    # a second refresher wrote and recorded the same snapshots (several sinks on one server)
    store.command(
        "INSERT INTO mail_hourly_snap SELECT * REPLACE (writer + 1 AS writer) FROM mail_hourly_snap"
    )
    store.command(
        "INSERT INTO mail_hourly_snap_hours SELECT * REPLACE (writer + 1 AS writer) FROM mail_hourly_snap_hours"
    )
    assert snap_rows(store) == 2 * keys and stats_snapshots.dirty_hours(store) == []
    assert checks.totals(store) == totals
    assert_agree(store)

    # a refresh that wrote its rows and stopped before recording them
    store.command("TRUNCATE TABLE mail_hourly_snap_hours")
    assert stats_snapshots.dirty_hours(store)
    assert checks.totals(store) == totals  # unrecorded rows are never read
    stats_snapshots.refresh(store)
    assert stats_snapshots.dirty_hours(store) == [] and snap_rows(store) == 3 * keys
    assert checks.totals(store) == totals
    assert_agree(store)

    stats_snapshots.refresh(store)  # nothing dirty: nothing written
    assert snap_rows(store) == 3 * keys
    # only the snapshots read are kept once the grace period is over
    assert stats_snapshots.delete_unread(store) == 0
    assert stats_snapshots.delete_unread(store, grace_seconds=0) > 0
    assert snap_rows(store) == keys
    assert checks.totals(store) == totals
    assert_agree(store)


def test_superseded_snapshots_are_deleted_after_the_grace_period(url):
    ingest(url, "s1", SAMPLES / "mainlog-default.log")
    ingest(url, "s1", SAMPLES / "mainlog-default.log")  # same hours again: a second snapshot of each
    store = Store.open(url)
    hours = store.query("SELECT uniqExact(hour) FROM mail_hourly_snap_hours").result_rows[0][0]
    assert store.query("SELECT count() FROM mail_hourly_snap_hours").result_rows[0][0] == 2 * hours
    # the samples' days are taken too once they are over (wall clock: none while the day is today), and the
    # second ingest changed every hour of them, so each was taken twice as well
    days = store.query("SELECT uniqExact(day) FROM mail_daily_snap_days").result_rows[0][0]
    assert store.query("SELECT count() FROM mail_daily_snap_days").result_rows[0][0] == 2 * days
    # ... and so was every hour of the event-hour tables (migrations 014, 019)
    event_hours = {}
    for t in (stats_snapshots.ACTIVITY, stats_snapshots.REASONS, stats_snapshots.DELAYS):
        n = store.query(f"SELECT uniqExact(hour) FROM {t.recorded}").result_rows[0][0]
        assert n and store.query(f"SELECT count() FROM {t.recorded}").result_rows[0][0] == 2 * n
        event_hours[t] = n
    assert stats_snapshots.delete_unread(store) == 0  # still within the grace period
    assert stats_snapshots.delete_unread(store, grace_seconds=0) == hours + days + sum(event_hours.values())
    assert store.query("SELECT count() FROM mail_hourly_snap_hours").result_rows[0][0] == hours
    assert store.query("SELECT count() FROM mail_daily_snap_days").result_rows[0][0] == days
    keys = store.query("SELECT count() FROM mail_hourly_v").result_rows[0][0]
    assert snap_rows(store) == keys
    for t, n in event_hours.items():
        assert store.query(f"SELECT count() FROM {t.recorded}").result_rows[0][0] == n
        kept = store.query(f"SELECT count() FROM {t.rows}").result_rows[0][0]
        assert kept == store.query(f"SELECT count() FROM {t.view}").result_rows[0][0]
    assert stats_snapshots.dirty_hours(store) == []
    assert_agree(store)


class _FailingStore:
    def query(self, *_a, **_k):
        raise RuntimeError("store down")

    command = query


def test_refresher_runs_at_most_every_interval_and_never_raises():
    now = [0.0]
    r = stats_snapshots.Refresher(_FailingStore(), seconds=30, clock=lambda: now[0])
    assert r.maybe() is None and r.failures == 0  # not due yet
    now[0] = 31
    assert r.maybe() is None and r.failures == 1  # due, failed, logged
    now[0] = 40
    assert r.maybe() is None and r.failures == 1  # waits a full interval before trying again


def test_the_refresher_takes_an_hour_once_it_settled(url):
    """The sink's periodic refresh snapshots an hour only when its counter did not change for one interval
    (an hour still written would be dirty again at once); reads stay exact at every step."""
    ingest(url, "s1", SAMPLES / "mainlog-all.log")  # ingest snapshots everything at its end
    store = Store.open(url)
    now = [0.0]
    r = stats_snapshots.Refresher(store, seconds=30, clock=lambda: now[0])

    def tick() -> dict:
        now[0] += 30
        done = r.maybe()
        assert done is not None
        assert_agree(store)
        return done

    def dirty() -> int:
        return sum(len(stats_snapshots.dirty_hours(store, t)) for t in stats_snapshots.SNAPSHOTTED)

    assert tick()["hours"] == 0 and dirty() == 0
    ingest_files(store, [str(GOLDEN / "defer_then_success" / "input.log")], server="s2")
    touched = dirty()
    assert touched
    first = tick()  # seen for the first time: left dirty
    assert first["hours"] == 0 and first["unsettled"] == touched and dirty() == touched
    second = tick()  # unchanged for one interval: taken
    assert second["hours"] == touched and second["unsettled"] == 0 and dirty() == 0
    ingest_files(store, [str(GOLDEN / "defer_then_success" / "input.log")], server="s2")  # touched again
    assert dirty() == touched
    assert tick()["hours"] == 0 and dirty() == touched
    ingest_files(store, [str(GOLDEN / "defer_then_success" / "input.log")], server="s2")  # and again
    assert tick()["hours"] == 0  # it changed since the last look: still being written
    assert tick()["hours"] == touched and dirty() == 0


def test_refresher_deletes_unread_snapshots_at_most_every_cleanup_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(stats_snapshots, "refresh", lambda store, **kw: calls.append(kw["cleanup"]) or {})
    now = [0.0]
    r = stats_snapshots.Refresher(object(), seconds=30, clock=lambda: now[0])
    for t in range(30, 1300, 30):
        now[0] = float(t)
        r.maybe()
    assert len(calls) == 43 and calls.count(True) == 2  # at 600 s and 1200 s
    assert r.runs == 43 and r.failures == 0


def test_rollup_deletes_the_snapshots_of_hours_read_from_the_totals(url):
    from eximtrack import stats

    ingest(url, "s1", SAMPLES / "mainlog-all.log")
    store = Store.open(url)
    keys = snap_rows(store)
    assert keys > 0
    until = datetime(2027, 1, 1, tzinfo=UTC)
    stats.rollup(store, until)  # the horizon moves; the snapshots stay (queries may be in flight)
    assert snap_rows(store) == keys
    assert_agree(store)
    stats.rollup(store, until)  # the next rollup: the hours before the previous horizon are totals now
    assert snap_rows(store) == 0
    assert store.query("SELECT count() FROM mail_hourly_snap_hours").result_rows[0][0] == 0
    assert_agree(store)
