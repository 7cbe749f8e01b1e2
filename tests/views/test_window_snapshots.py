"""The window snapshots (migration 017, eximtrack/window_snapshots.py; read by eximtrack/stats.py through
eximtrack/hourly_read.py): stats grouped by server, owner, user or domain read the days and hours of a window
as one row per key plus the rest of the range, only while every day and hour the window pinned is
unchanged; the first N groups are exact even when mail outside the window lifts a key over the window's
first N; a stale window is replaced (leaving the changed day or hour out), and superseded or unrecorded
windows are never read. Every answer equals one read of the view `mail_hourly_all` (which knows nothing of
days or windows).

The windows are built as at 01:xx today (`window_snapshots.refresh(now=…)`): the 30-day ones span [01:00 30
days ago, 01:00 today), the day's and the week's (the last test) end there too; the mail lies around them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eximtrack import stats, stats_snapshots, window_snapshots
from eximtrack.demo_log import write_log
from eximtrack.ingest import ingest_files
from sinks.clickhouse.store import Store, store_run
from tests.views.conftest import ingest

pytestmark = pytest.mark.store

TODAY = datetime.now(UTC).date()


def midnight(days_ago: int) -> datetime:
    return datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC) - timedelta(days=days_ago)


BUILT_AT = midnight(0) + timedelta(hours=1, minutes=10)
START, END = window_snapshots.span_of(BUILT_AT)
# (server, rounds, start, salt): three servers inside the window (wb most, wa least: 12 rounds on a whole
# day, 3 in the first, partial, day of the window), then more mail of wa after the window (today 01:30)
LOGS = (
    ("wb", 20, midnight(3) + timedelta(hours=10), 1),
    ("wc", 17, midnight(2) + timedelta(hours=9), 2),
    ("wa", 12, midnight(3) + timedelta(hours=14), 0),
    ("wa", 3, midnight(30) + timedelta(hours=20), 0),
    ("wa", 15, midnight(0) + timedelta(hours=1, minutes=30), 3),
)
WINDOW_DAYS = [midnight(3).date(), midnight(2).date()]
FIRST_DAY_HOUR = midnight(30) + timedelta(hours=20)
RANGES = (stats.hour_range(START.timestamp(), None), {})
TOPS = (
    stats.Top(),
    stats.Top(limit=1),
    stats.Top(limit=2),
    stats.Top("FAILCOUNT", 1),
    stats.Top("TOTALSIZE", 2),
    stats.Top("DEFERCOUNT", 1),
    None,
)


def fill(url, tmp_path, monkeypatch, logs) -> Store:
    """A store of `logs` with no windows yet; `window_snapshots.refresh` builds them as at BUILT_AT."""
    refresh = window_snapshots.refresh  # as at BUILT_AT unless a caller gives another clock
    monkeypatch.setattr(
        window_snapshots,
        "refresh",
        lambda *args, now=None, **kwargs: refresh(*args, now=now or BUILT_AT, **kwargs),
    )
    for i, (server, rounds, start, salt) in enumerate(logs):
        path = tmp_path / f"w{i}.log"
        write_log(path, "cpanel", rounds, start=start, salt=salt)
        ingest(url, server, path)  # ingest refreshes the snapshots (hours, days, windows) at its end
    store = Store.open(url)
    store.logs = [tmp_path / f"w{i}.log" for i in range(len(logs))]
    # the windows as one refresh takes them from these days (the ingests changed a day a window had pinned:
    # a window built then leaves that day out for an hour)
    window_snapshots.clear(store)
    return store


@pytest.fixture
def window_store(url, tmp_path, monkeypatch) -> Store:
    """The 30-day windows alone (the shorter spans: test_the_last_day_and_week_read_their_own_windows)."""
    monkeypatch.setattr(window_snapshots, "SPANS", (timedelta(days=30),))
    store = fill(url, tmp_path, monkeypatch, LOGS)
    assert window_snapshots.refresh(store) == len(window_snapshots.WINDOW_BY)
    return store


def plan(store: Store, by: str, bounds: dict):
    return stats.build_grouped_stats([by], bounds, top=stats.Top()).read_plan(store_run(store))


def assert_windows_agree(store: Store, used: bool | None = True, ranges=RANGES) -> None:
    """Every grouping a window serves, with every kind of `top`, equals one read of the view, rows in
    order, with the window read whole (these windows are small) and narrowed to the edge's keys and its
    first ones (as a window of many keys is); `used`: whether the read must (True) or must not (False) have
    used a window. A read that must not use one is the plain read of the view's rows (tested with every
    `top` elsewhere): one ordered and one unordered `top` suffice, and there is nothing to narrow."""
    whole = stats.WHOLE_WINDOW_KEYS
    passes = [(whole, window_snapshots.WINDOW_BY)]
    if used is not False:  # narrowed: two groupings suffice (the narrowing does not depend on the key)
        passes.append((0, ("server", "domain")))
    tops = TOPS if used is not False else (stats.Top(), None)
    views: dict[tuple, list] = {}  # the view's answer does not depend on the narrowing: read once
    try:
        for stats.WHOLE_WINDOW_KEYS, groupings in passes:
            for n, bounds in enumerate(ranges):
                for by in groupings:
                    if used is not None:
                        assert (plan(store, by, bounds).window is not None) is used, (by, bounds)
                    for k, top in enumerate(tops):
                        request = stats.build_grouped_stats([by], bounds, top=top)
                        got = request.run(store_run(store))[1]
                        if (n, by, k) not in views:
                            views[n, by, k] = store.query(*request.view_sql()).result_rows
                        want = views[n, by, k]
                        if top is None:
                            got, want = sorted(got), sorted(want)
                        assert got == want, (by, bounds, top, stats.WHOLE_WINDOW_KEYS)
    finally:
        stats.WHOLE_WINDOW_KEYS = whole


def test_a_window_sums_its_days_and_the_edge_lifts_a_key_over_its_first_ones(window_store, monkeypatch):
    store = window_store
    windows = {by: w for (by, _), w in window_snapshots.newest_windows(store).items()}
    assert sorted(windows) == sorted(window_snapshots.WINDOW_BY)
    for window in windows.values():
        assert (window.start, window.end) == (START, END)
        assert [d for d, _, _ in window.days] == WINDOW_DAYS
        assert [h for h, _, _ in window.hours] == [FIRST_DAY_HOUR]
        assert window.excluded_days == () and window.excluded_hours == ()
    # the window ranks wb, wc, wa; with today's mail after it, wa has the most
    ranks = store.query(
        "SELECT key FROM mail_window_snap WHERE writer = {w:UInt64} AND by = 'server' ORDER BY rank",
        {"w": windows["server"].writer},
    ).result_rows
    assert [k for (k,) in ranks] == ["wb", "wc", "wa"]
    first = stats.build_grouped_stats(["server"], RANGES[0], top=stats.Top(limit=1)).run(store_run(store))[1]
    assert [r[0] for r in first] == ["wa", "wb"]  # the first group, and the one read to say "more"
    # a window of few keys is read whole; one of many only for the edge's keys and its first ones
    request = stats.build_grouped_stats(["server"], RANGES[0], top=stats.Top(limit=1))
    assert plan(store, "server", RANGES[0]).window.keys == 3
    assert "key_hash" not in request.sql(request.read_plan(store_run(store)))[0]
    monkeypatch.setattr(stats, "WHOLE_WINDOW_KEYS", 2)
    assert "key_hash IN" in request.sql(request.read_plan(store_run(store)))[0]
    assert [r[0] for r in request.run(store_run(store))[1]] == ["wa", "wb"]
    monkeypatch.undo()
    assert_windows_agree(store)

    # the window rows are what a read of its days returns: marked, the mark shows where they are read
    bump = 100_000
    store.command(
        f"ALTER TABLE mail_window_snap UPDATE messages = messages + {bump} WHERE 1 SETTINGS mutations_sync = 2"
    )
    request = stats.build_grouped_stats(["user"], RANGES[0], top=None)
    marked = dict((r[0], r[1]) for r in request.run(store_run(store))[1])
    plain = dict((r[0], r[1]) for r in store.query(*request.view_sql()).result_rows)
    in_window = {
        k
        for (k,) in store.query(
            "SELECT key FROM mail_window_snap WHERE by = 'user' AND writer = {w:UInt64}",
            {"w": windows["user"].writer},
        ).result_rows
    }
    assert in_window and {k: marked[k] - plain[k] for k in marked} == {
        k: bump if k in in_window else 0 for k in plain
    }
    store.command(
        f"ALTER TABLE mail_window_snap UPDATE messages = messages - {bump} WHERE 1 SETTINGS mutations_sync = 2"
    )
    # a range shorter than a window's span never asks for one
    assert (
        plan(store, "server", stats.hour_range((START + timedelta(days=2)).timestamp(), None)).window is None
    )
    # a grouping with a filter, by two keys or by hour never reads a window
    assert (
        stats.build_grouped_stats(["user"], {}, {"server": "wa"}).read_plan(store_run(store)).window is None
    )
    assert stats.build_grouped_stats(["server", "user"], {}).read_plan(store_run(store)).window is None
    assert stats.build_grouped_stats(["hour"], {}).read_plan(store_run(store)).window is None


def pinned(store: Store) -> list[tuple[list, list, tuple, tuple]]:
    return [
        ([d for d, _, _ in w.days], [h for h, _, _ in w.hours], w.excluded_days, w.excluded_hours)
        for w in window_snapshots.newest_windows(store).values()
    ]


def test_a_changed_day_or_hour_stops_the_window_until_one_without_it_is_built(window_store, monkeypatch):
    store = window_store
    old = window_snapshots.newest_windows(store)
    # more mail arrives for the window's first whole day (another server): the window no longer serves
    ingest_files(store, [str(store.logs[0])], server="wd")
    assert_windows_agree(store, used=False)  # the day's hours are dirty
    stats_snapshots.refresh(store)  # the day is taken again; its window is rebuilt at most every 5 minutes
    assert {k: w.writer for k, w in window_snapshots.newest_windows(store).items()} == {
        k: w.writer for k, w in old.items()
    }
    assert_windows_agree(store, used=False)

    monkeypatch.setattr(window_snapshots, "REBUILD_SECONDS", 0)
    assert window_snapshots.refresh(store) == len(window_snapshots.WINDOW_BY)
    assert set(map(repr, pinned(store))) == {
        repr(([WINDOW_DAYS[1]], [FIRST_DAY_HOUR], (WINDOW_DAYS[0],), ()))
    }
    assert_windows_agree(store)
    assert window_snapshots.refresh(store) == 0  # it serves: nothing to build

    # more mail in the first, partial day's hour: the window no longer serves, then leaves that hour out
    monkeypatch.setattr(window_snapshots, "REBUILD_SECONDS", 300)
    ingest_files(store, [str(store.logs[3])], server="we")
    assert_windows_agree(store, used=False)  # the hour is dirty
    stats_snapshots.refresh(store)  # the hour is taken again (another snapshot than the pinned one)
    assert_windows_agree(store, used=False)
    monkeypatch.setattr(window_snapshots, "REBUILD_SECONDS", 0)
    assert window_snapshots.refresh(store) == len(window_snapshots.WINDOW_BY)
    assert_windows_agree(store)
    assert set(map(repr, pinned(store))) == {
        repr(([WINDOW_DAYS[1]], [], (WINDOW_DAYS[0],), (FIRST_DAY_HOUR,)))
    }

    # what was left out comes back once quiet
    monkeypatch.setattr(window_snapshots, "QUIET_SECONDS", 0)
    assert window_snapshots.refresh(store) == len(window_snapshots.WINDOW_BY)
    assert set(map(repr, pinned(store))) == {repr((WINDOW_DAYS, [FIRST_DAY_HOUR], (), ()))}
    assert_windows_agree(store)

    # windows written and never recorded (a refresh that stopped) are never read, then deleted with the
    # superseded ones once the grace is over; the newest windows stay
    store.command(
        "INSERT INTO mail_window_snap SELECT * REPLACE (writer + 1 AS writer, messages + 7 AS messages, "
        "last - 1 AS last) FROM mail_window_snap"
    )
    assert_windows_agree(store)
    assert stats_snapshots.delete_unread(store, grace_seconds=0) >= 4 * len(window_snapshots.WINDOW_BY)
    newest = window_snapshots.newest_windows(store)
    kept = store.query("SELECT DISTINCT by, writer FROM mail_window_snap").result_rows
    assert sorted(kept) == sorted((by, w.writer) for (by, _), w in newest.items())
    assert_windows_agree(store)

    # rebuilding the aggregates forgets every snapshot, windows too, and takes them again
    stats.rebuild_aggregates(store)
    assert sorted(by for by, _ in window_snapshots.newest_windows(store)) == sorted(
        window_snapshots.WINDOW_BY
    )
    assert_windows_agree(store)


def test_a_window_sums_the_rolled_up_hours_before_the_horizon(window_store):
    store = window_store
    stats.rollup(store, midnight(2))  # the first whole day and the first day's hour are rolled up now
    assert_windows_agree(store, used=False)  # the window pinned their snapshots: read as before
    assert stats_snapshots.refresh(store)["windows"] == len(window_snapshots.WINDOW_BY)  # the horizon moved
    for window in window_snapshots.newest_windows(store).values():
        assert window.horizon == midnight(2) and window.start < window.horizon
        assert [d for d, _, _ in window.days] == WINDOW_DAYS[1:] and window.hours == ()
    assert_windows_agree(store)
    # a range starting inside the rolled hours of the window cannot use it
    later = stats.hour_range((START + timedelta(hours=1)).timestamp(), (END + timedelta(hours=2)).timestamp())
    assert plan(store, "server", later).window is None
    assert plan(store, "server", stats.hour_range(START.timestamp(), later["until"].timestamp())).window
    stats.rollup(store, midnight(2))  # deletes the snapshots before the horizon
    assert_windows_agree(store)


def test_the_last_day_and_week_read_their_own_windows(url, tmp_path, monkeypatch):
    """A window per span: a range of a day to a week reads the 24-hour window, of a week to 30 days the 7-day
    one, of 30 days or more the 30-day one; each equals the view."""
    logs = (
        ("wb", 20, midnight(1) + timedelta(hours=10), 1),  # in every span
        ("wc", 17, midnight(4) + timedelta(hours=9), 2),  # in the week and the month
        ("wa", 12, midnight(20) + timedelta(hours=14), 0),  # in the month
        ("wa", 15, midnight(0) + timedelta(hours=1, minutes=30), 3),  # after the windows
    )
    store = fill(url, tmp_path, monkeypatch, logs)
    spans = window_snapshots.SPANS
    assert window_snapshots.refresh(store) == len(spans) * len(window_snapshots.WINDOW_BY)
    newest = window_snapshots.newest_windows(store)
    assert sorted(newest) == sorted((by, span) for by in window_snapshots.WINDOW_BY for span in spans)
    day, week, month = (newest["server", span] for span in spans)
    assert (day.start, day.end) == (END - timedelta(days=1), END) and not day.days
    assert {h.date() for h, _, _ in day.hours} == {midnight(1).date()}
    week_days = {d for d, _, _ in week.days}
    assert (
        {midnight(4).date(), midnight(1).date()}
        <= week_days
        <= set(window_snapshots.whole_days(week.start, END))
    )
    assert (month.start, month.end) == (START, END)
    keys = {
        w.writer: {k for (k,) in store.query(
            "SELECT key FROM mail_window_snap WHERE writer = {w:UInt64}", {"w": w.writer}
        ).result_rows}
        for w in (day, week, month)
    }  # fmt: skip
    assert (keys[day.writer], keys[week.writer], keys[month.writer]) == (
        {"wb"},
        {"wb", "wc"},
        {"wa", "wb", "wc"},
    )
    for span, window in zip(spans, (day, week, month), strict=True):
        bounds = stats.hour_range(window.start.timestamp(), None)
        got = plan(store, "server", bounds).window
        assert got is not None and got.writer == window.writer, span
        assert_windows_agree(store, ranges=(bounds,))
    # a range shorter than a day asks for none
    short = stats.hour_range((END - timedelta(hours=20)).timestamp(), END.timestamp())
    assert plan(store, "server", short).window is None
    assert_windows_agree(
        store, used=None, ranges=(short, stats.hour_range(START.timestamp(), END.timestamp()))
    )
    # the next hour's windows supersede them span by span; the superseded ones are deleted, and only they
    assert window_snapshots.refresh(store, now=BUILT_AT + timedelta(hours=1)) == len(newest)
    later = window_snapshots.newest_windows(store)
    assert sorted(later) == sorted(newest) and not {w.writer for w in later.values()} & set(keys)
    assert window_snapshots.delete_unread(store, grace_seconds=0) == len(newest)
    kept = store.query("SELECT DISTINCT by, writer FROM mail_window_snap").result_rows
    assert sorted(kept) == sorted((by, w.writer) for (by, _), w in later.items())
    assert {k: w.writer for k, w in window_snapshots.newest_windows(store).items()} == {
        k: w.writer for k, w in later.items()
    }
