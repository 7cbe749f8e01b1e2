"""The daily stats snapshots (migration 013, eximtrack/stats_snapshots.py, eximtrack/hourly_read.py): a
stats read uses a day's snapshot only for whole days of its range whose hour counters all still equal the
ones the snapshot summed; any insert touching the day makes it read hour by hour; unrecorded, superseded and
duplicate day snapshots are never read, and the results always equal one read of the view
`mail_hourly_all` (which knows nothing of days)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from eximtrack import hourly_read, stats, stats_snapshots
from eximtrack.demo_log import write_log
from eximtrack.ingest import ingest_files
from sinks.clickhouse.store import Store, store_run
from tests.views.conftest import ingest
from tests.views.test_stats_snapshots import assert_agree

pytestmark = pytest.mark.store

BUMP = 1000
# three servers' mail: one crossing midnight into Nov 2, one inside Nov 2, one on Nov 3
STARTS = (
    datetime(2026, 11, 1, 23, 50, tzinfo=UTC),
    datetime(2026, 11, 2, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 3, 5, 30, tzinfo=UTC),
)
DAYS = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
GROUPINGS = ((), ("server",), ("user",), ("owner", "domain"))


def at(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


RANGES = (
    {},
    stats.hour_range(at(2026, 11, 2, 0, 0), None),  # Nov 2 and 3 whole
    stats.hour_range(at(2026, 11, 1, 23, 30), None),  # from 23:00 on Nov 1: Nov 2 and 3 whole
    stats.hour_range(None, at(2026, 11, 3)),  # Nov 1 and 2 whole
    stats.hour_range(at(2026, 11, 2), at(2026, 11, 2, 23, 30)),  # the last hour of Nov 2 starts before 23:30
    stats.hour_range(at(2026, 11, 2, 12, 30), at(2026, 11, 3, 6)),  # no whole day
)


@pytest.fixture
def days_store(url, tmp_path) -> Store:
    for i, start in enumerate(STARTS):
        path = tmp_path / f"d{i}.log"
        write_log(path, "cpanel", 20, start=start, salt=i)
        ingest(url, f"d{i}", path)  # ingest refreshes the snapshots at its end
    store = Store.open(url)
    store.logs = [tmp_path / f"d{i}.log" for i in range(len(STARTS))]
    return store


def recorded_days(store: Store) -> list[date]:
    return [
        d for (d,) in store.query("SELECT DISTINCT day FROM mail_daily_snap_days ORDER BY day").result_rows
    ]


def read_plan(store: Store, groups, bounds) -> hourly_read.ReadPlan:
    """The plan `eximtrack stats` makes for this request (which whole days it reads from daily snapshots)."""
    return stats.build_grouped_stats(groups, bounds).read_plan(store_run(store))


def assert_days_agree(store: Store) -> None:
    """Every grouping and range through HourlyStats equals one read of the view."""
    server = store.query("SELECT min(server) FROM mail_hourly").result_rows[0][0]
    for bounds in RANGES:
        for groups in GROUPINGS:
            for equals, outbound in (({}, False), ({"server": server}, True)):
                request = stats.build_grouped_stats(groups, bounds, equals, outbound)
                got = request.run(store_run(store))
                assert sorted(got[1]) == sorted(store.query(*request.view_sql()).result_rows), (
                    groups,
                    bounds,
                    equals,
                    outbound,
                )


def sendcount(store: Store, bounds: dict) -> int:
    request = stats.build_grouped_stats((), bounds)
    return request.run(store_run(store))[1][0][0]


def view_sendcount(store: Store, bounds: dict) -> int:
    request = stats.build_grouped_stats((), bounds)
    return store.query(*request.view_sql()).result_rows[0][0]


def daily_keys(store: Store, day: date) -> int:
    return store.query(
        "SELECT count() FROM mail_daily_snap WHERE (day, seen, writer) IN "
        "(SELECT day, seen, min(writer) FROM mail_daily_snap_days WHERE day = {d:Date} GROUP BY day, seen "
        "ORDER BY seen DESC LIMIT 1)",
        {"d": day},
    ).result_rows[0][0]


def test_whole_days_are_read_from_daily_snapshots_while_their_hours_are_unchanged(days_store):
    store = days_store
    assert recorded_days(store) == DAYS
    assert stats_snapshots.days_to_snapshot(store) == []
    assert_days_agree(store)

    # the day rows are what a read of a whole day returns: marked, the mark shows where they are read
    store.command(
        f"ALTER TABLE mail_daily_snap UPDATE messages = messages + {BUMP} WHERE 1 SETTINGS mutations_sync = 2"
    )
    marks = {d: BUMP * daily_keys(store, d) for d in DAYS}
    assert all(marks.values())
    for bounds, used in (
        (RANGES[0], DAYS),
        (RANGES[1], DAYS[1:]),
        (RANGES[3], DAYS[:2]),
        (RANGES[4], DAYS[1:2]),
        (RANGES[5], []),
    ):
        assert sendcount(store, bounds) == view_sendcount(store, bounds) + sum(marks[d] for d in used), bounds
        assert [d for d, _, _ in read_plan(store, ("server",), bounds).days] == used
    # a grouping by hour or sender, or the hourly view itself, never reads days
    assert read_plan(store, ("hour",), {}).days == ()

    # more mail for Nov 2 (the same log again, another server): that day is read hour by hour now
    ingest_files(store, [str(store.logs[1])], server="d9")
    assert sendcount(store, {}) == view_sendcount(store, {}) + marks[DAYS[0]] + marks[DAYS[2]]
    store.command(
        f"ALTER TABLE mail_daily_snap UPDATE messages = messages - {BUMP} WHERE 1 SETTINGS mutations_sync = 2"
    )
    assert_days_agree(store)  # Nov 2's hours are dirty now: read from the states
    done = stats_snapshots.refresh(store)
    assert done["days"] == 1 and recorded_days(store) == DAYS
    assert [d for d, _, _ in read_plan(store, (), {}).days] == DAYS
    assert_days_agree(store)
    assert_agree(store)


def test_unrecorded_duplicate_and_superseded_day_snapshots_are_never_read(days_store):
    store = days_store
    before = store.query("SELECT count() FROM mail_daily_snap").result_rows[0][0]
    rows = sum(daily_keys(store, d) for d in DAYS)  # Nov 2 was taken twice: after d0 and after d1
    assert before > rows
    # a second refresher wrote and recorded the same days (several sinks on one server)
    store.command("INSERT INTO mail_daily_snap SELECT * REPLACE (writer + 1 AS writer) FROM mail_daily_snap")
    store.command(
        "INSERT INTO mail_daily_snap_days SELECT * REPLACE (writer + 1 AS writer) FROM mail_daily_snap_days"
    )
    assert_days_agree(store)
    # a refresh that wrote its day rows and stopped before recording them
    store.command("TRUNCATE TABLE mail_daily_snap_days")
    assert read_plan(store, (), {}).days == ()
    assert_days_agree(store)
    assert stats_snapshots.refresh(store)["days"] == len(DAYS)
    assert store.query("SELECT count() FROM mail_daily_snap").result_rows[0][0] == 2 * before + rows
    assert_days_agree(store)
    # only the snapshots read are kept once the grace period is over (hours and days)
    assert stats_snapshots.delete_unread(store, grace_seconds=0) >= 2 * len(DAYS)
    assert store.query("SELECT count() FROM mail_daily_snap").result_rows[0][0] == rows
    assert_days_agree(store)


def test_stats_by_server_user_and_domain_read_the_daily_projections(days_store):
    store = days_store
    for groups, projection in (
        (("server",), "by_server"),
        (("user",), "by_user"),
        (("domain",), "by_domain"),
        ((), "by_day"),
    ):
        request = stats.build_grouped_stats(groups, {})
        plan = request.read_plan(store_run(store))
        days = {d for d, _, _ in plan.days}
        assert days and not [hour for hour, _, _ in plan.clean if hour.date() not in days]
        sql, params = request.sql(plan)
        explain = "\n".join(r[0] for r in store.query("EXPLAIN " + sql, params).result_rows)
        reads = [
            line.split("(")[-1].rstrip(")") for line in explain.splitlines() if "ReadFromMergeTree" in line
        ]
        assert projection in reads, explain


def test_rollup_deletes_the_day_snapshots_before_the_horizon(days_store):
    store = days_store
    until = datetime(2026, 11, 3, tzinfo=UTC)
    stats.rollup(store, until)
    assert recorded_days(store) == DAYS  # queries in flight may still read them
    assert_days_agree(store)
    stats.rollup(store, until)
    assert recorded_days(store) == DAYS[2:]
    assert store.query("SELECT count() FROM mail_daily_snap WHERE day < '2026-11-03'").result_rows[0][0] == 0
    assert_days_agree(store)
    stats.rebuild_aggregates(store)  # forgets every snapshot, then takes them again
    assert recorded_days(store) == DAYS[2:]
    assert_days_agree(store)
