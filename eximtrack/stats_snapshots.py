"""Hourly snapshots of the set-state aggregates: the finalised numbers of every hour, kept as plain rows so
that `eximtrack stats`, the dashboards and the abuse views do not merge set states at query time —
`mail_hourly` (migration 008) and the event-hour tables `activity_hourly` and `reasons_hourly` (014), each
described by a `Snapshotted`. The text below says `mail_hourly`; the others work the same way, without a
rollup horizon and without days.

`refresh(store)` finds the hours whose insert counter (sum(mail_hourly.inserts), which grows with every
insert touching the hour) has no recorded snapshot, writes the numbers of `mail_hourly_v` for those hours
with the counter they were computed at (`seen`: one read, so both describe the same parts) and a random
`writer` id, then records (hour, seen, writer) in `mail_hourly_snap_hours`. `mail_hourly_all` uses a
snapshot only while its `seen` equals the hour's current counter (the smallest recorded writer of it) and
merges the states otherwise, so a snapshot never hides an insert, concurrent refreshers (several sinks on
one server) never double a key, and rows of a refresh that stopped half-way are never read. Refreshing is
a speed-up, never a condition for exact numbers.

Daily snapshots (migration 013): once every hour of a day that has mail has a recorded snapshot at its
current counter, the day's rows are the sums of exactly those hourly snapshots per (day, server, owner,
user, domain, outbound), recorded with `seen` = the sum of the hours' counters. A read uses a day's snapshot
only while that sum is unchanged (counters never shrink: every hour is then still at its snapshot), so stats
over weeks read one row per (day, key) (eximtrack/hourly_read.py) and stay exact.

Window snapshots (migration 017, eximtrack/window_snapshots.py) sum the current daily and hourly snapshots
of the 30 days before the current hour per server, owner, user or domain, built after the days.

Run by the sink every `REFRESH_SECONDS`, at the end of `eximtrack ingest`, and by `eximtrack rollup`.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime

from eximtrack import window_snapshots

log = logging.getLogger("eximtrack.stats_snapshots")

REFRESH_SECONDS = 30.0
BATCH_HOURS = 96  # hours per INSERT … SELECT (bounded memory: one batch of set states merged at a time)
SUPERSEDED_GRACE_SECONDS = 600  # an unread snapshot is kept this long (a query in flight may read it)
CLEANUP_SECONDS = 600.0  # the Refresher deletes unread snapshots at most this often (a DELETE is a mutation)

# mail_hourly_v's plain numbers, as stored in mail_hourly_snap after (hour, seen, writer)
SNAPSHOT_COLUMNS = (
    "server", "owner", "user", "domain", "sender", "outbound", "messages", "bytes", "recipients",
    "rcpt_addresses", "rows", "inprogress", "deferred", "success", "filtered", "archive", "failure",
    "rejected", "deferred_ever", "defer_or_fail_ever", "defer_attempts", "last_event",
)  # fmt: skip

# mail_daily_snap's columns after (day, seen, writer): the keys without sender and the summable counters
DAILY_KEYS = ("server", "owner", "user", "domain", "outbound")
DAILY_COUNTERS = (
    "messages", "bytes", "recipients", "rows", "inprogress", "deferred", "success", "filtered", "archive",
    "failure", "rejected", "deferred_ever", "defer_or_fail_ever", "defer_attempts",
)  # fmt: skip
BATCH_DAYS = 7  # days per INSERT … SELECT

ACTIVITY_COLUMNS = ("server", "type", "events", "rows", "last_event")
DELAYS_COLUMNS = ("type", "transport_is_remote", "rows", "delay_seconds", "max_delay_ms")
REASONS_COLUMNS = (
    "server", "type", "deliverydomain", "host", "ip", "template", "attempts", "recipients", "messages", "example",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshotted:
    """A set-state table `states` kept as hourly snapshots (same names for every one, after `name`, default
    `states`): the states' `inserts` counter and projection `hour_inserts`, the finalised view `<name>_v`
    (plus sum(inserts)), the snapshot rows `<name>_snap` (`hour`, `seen`, `writer`, then `columns`), the
    recorded snapshots `<name>_snap_hours`, read by the view `<name>_all` (each hour from one of them).
    `rolled`: hours before the rollup horizon are read from totals (mail_hourly only)."""

    states: str
    columns: tuple[str, ...]
    rolled: bool = False
    name: str = ""

    @property
    def prefix(self) -> str:
        return self.name or self.states

    @property
    def view(self) -> str:
        return f"{self.prefix}_v"

    @property
    def rows(self) -> str:
        return f"{self.prefix}_snap"

    @property
    def recorded(self) -> str:
        return f"{self.prefix}_snap_hours"


MAIL = Snapshotted("mail_hourly", SNAPSHOT_COLUMNS, rolled=True)
ACTIVITY = Snapshotted("activity_hourly", ACTIVITY_COLUMNS)
REASONS = Snapshotted("reasons_hourly", REASONS_COLUMNS)
# the fleet's delivery delays (migration 019): quantiles do not add up over keys, so the snapshot is taken at
# the fleet dashboard's grain, per (hour, type, transport_is_remote)
DELAYS = Snapshotted("delays_hourly", DELAYS_COLUMNS, name="delays_fleet")
SNAPSHOTTED = (MAIL, ACTIVITY, REASONS, DELAYS)

_PAIRS = "{pairs:Array(Tuple(DateTime('UTC'), UInt64))}"
_HOURS = "{hours:Array(DateTime('UTC'))}"
# the rollup horizon (migration 005) as a scalar subquery: the hours before it are read from the totals
HORIZON_SQL = "(SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')"


def as_utc(value: datetime) -> datetime:
    """A DateTime('UTC') value as read back (naive or aware) -> an aware UTC datetime."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dirty_hours(store, table: Snapshotted = MAIL) -> list[tuple[datetime, int]]:
    """[(hour, current insert counter)] of the hours of `table` (from the rollup horizon on, where it has
    one) that have no recorded snapshot taken at their current counter."""
    since = f" WHERE hour >= {HORIZON_SQL}" if table.rolled else ""
    rows = store.query(
        f"SELECT hour, sum(inserts) AS n FROM {table.states}{since} GROUP BY hour "
        f"HAVING (hour, n) NOT IN (SELECT hour, seen FROM {table.recorded}) ORDER BY hour"
    ).result_rows
    return [(as_utc(h), int(n)) for h, n in rows]


def refresh(
    store,
    *,
    batch_hours: int = BATCH_HOURS,
    cleanup: bool = True,
    lock: AbstractContextManager | None = None,
    settled: dict | None = None,
    now: datetime | None = None,
) -> dict:
    """Snapshot every dirty hour of every table, then every day whose mail hours are all clean; with
    `cleanup`, delete the snapshots no query reads any more (see delete_unread). `lock` is held around each
    step (the sink's chDB engine lock: queries served meanwhile wait for one batch, not for the whole
    refresh). With `settled` ({(states table, hour): counter} seen by the previous refresh, updated here),
    only the dirty hours whose counter did not change since are snapshotted: an hour still being written
    (the current one, above all) would be dirty again at the next insert, so its snapshot would be wasted.
    Returns {"hours": hours snapshotted (all tables), "skipped": changed meanwhile, "unsettled": dirty
    hours left for a later refresh, "days": days snapshotted, "windows": window snapshots built (eximtrack/
    window_snapshots.py), "deleted": snapshots deleted}. The days are taken after the hours, the windows
    after the days: a day whose last hours were just snapshotted is taken in the same refresh. `now` is the
    clock the windows are built for (default: the wall clock; the benchmark passes its store's newest
    arrival, so that a store filled earlier is measured as it would be live)."""
    lock = lock or nullcontext()
    started = time.monotonic()
    writer = 1 + secrets.randbelow(2**63 - 1)  # 0 means "no snapshot" in mail_hourly_all

    def in_batches(find, write, size: int) -> tuple[int, int]:
        with lock:
            todo = find(store)
        done = 0
        for i in range(0, len(todo), size):
            with lock:
                done += write(store, todo[i : i + size], writer)
        return done, len(todo)

    unsettled = 0

    def settled_hours(st, table: Snapshotted) -> list[tuple[datetime, int]]:
        nonlocal unsettled
        todo = dirty_hours(st, table)
        if settled is None:
            return todo
        keep = [(h, n) for h, n in todo if settled.get((table.prefix, h)) == n]
        unsettled += len(todo) - len(keep)
        for key in [k for k in settled if k[0] == table.prefix]:  # forget hours clean again or gone
            del settled[key]
        settled.update(((table.prefix, h), n) for h, n in todo)
        return keep

    done = dirty = 0
    for table in SNAPSHOTTED:
        n, of = in_batches(
            lambda st, t=table: settled_hours(st, t),
            lambda st, batch, w, t=table: _snapshot(st, batch, w, t),
            batch_hours,
        )
        done, dirty = done + n, dirty + of
    days_done, days = in_batches(days_to_snapshot, _snapshot_days, BATCH_DAYS)
    with lock:
        horizon = as_utc(store.query(f"SELECT {HORIZON_SQL}").result_rows[0][0])
    windows = window_snapshots.refresh(store, lock, now=now, horizon=horizon)
    with lock:
        deleted = delete_unread(store) if cleanup else 0
    if dirty or days:
        log.info(
            "stats snapshots: %d of %d settled dirty hours (%d still written), %d of %d days in %.1fs",
            done,
            dirty,
            unsettled,
            days_done,
            days,
            time.monotonic() - started,
        )
    return {
        "hours": done,
        "skipped": dirty - done,
        "unsettled": unsettled,
        "days": days_done,
        "windows": windows,
        "deleted": deleted,
    }


Pin = tuple[datetime, int, int]  # an hourly snapshot: (hour, seen, writer)


def days_to_snapshot(store) -> list[tuple[date, int, list[Pin]]]:
    """[(day, sum of its hours' counters, the hourly snapshots to sum)] of the days that start at or after
    the rollup horizon and have ended, whose every hour with mail has a recorded snapshot at its current
    counter, and that have no recorded daily snapshot at that sum."""
    rows = store.query(
        "SELECT toDate(c.hour) AS day, sum(c.n) AS n, groupArray((c.hour, c.n, r.w)) AS pins, "
        "countIf(r.w = 0) AS unclean FROM "
        f"(SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE hour >= {HORIZON_SQL} GROUP BY hour) AS c "
        f"LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours WHERE hour >= {HORIZON_SQL} "
        "GROUP BY hour, seen) AS r ON c.hour = r.hour AND c.n = r.seen "
        f"GROUP BY day HAVING unclean = 0 AND toDateTime(day, 'UTC') >= {HORIZON_SQL} "
        "AND toDateTime(day, 'UTC') + INTERVAL 1 DAY <= now() "
        "AND (day, n) NOT IN (SELECT day, seen FROM mail_daily_snap_days) ORDER BY day"
    ).result_rows
    return [(d, int(n), [(as_utc(h), int(c), int(w)) for h, c, w in pins]) for d, n, pins, _ in rows]


def _snapshot_days(store, batch: list[tuple[date, int, list[Pin]]], writer: int) -> int:
    """Write, then record, the daily snapshots of `batch` (days_to_snapshot); returns how many were
    recorded. The pinned hourly snapshots never change, so the rows are the sums the pairs describe."""
    keys = ", ".join(DAILY_KEYS)
    sums = ", ".join(f"sum({c})" for c in DAILY_COUNTERS)
    days = [d for d, _, _ in batch]
    pairs = [(d, n) for d, n, _ in batch]
    params = {
        "days": days,
        "seens": [n for _, n, _ in batch],
        "pins": [pin for _, _, pins in batch for pin in pins],
        "pairs": pairs,
        "w": writer,
    }
    store.command(
        f"INSERT INTO mail_daily_snap (day, seen, writer, {keys}, {', '.join(DAILY_COUNTERS)}, last_event) "
        "SELECT toDate(hour) AS day, transform(day, {days:Array(Date)}, {seens:Array(UInt64)}, toUInt64(0)), "
        f"{{w:UInt64}}, {keys}, {sums}, max(last_event) FROM mail_hourly_snap "
        "WHERE (hour, seen, writer) IN {pins:Array(Tuple(DateTime('UTC'), UInt64, UInt64))} "
        f"GROUP BY day, {keys}",
        params,
    )
    written = dict(
        store.query(
            "SELECT day, count() FROM mail_daily_snap WHERE writer = {w:UInt64} "
            "AND (day, seen) IN {pairs:Array(Tuple(Date, UInt64))} GROUP BY day",
            params,
        ).result_rows
    )
    store.command(
        "INSERT INTO mail_daily_snap_days (day, seen, writer, keys) SELECT r.1, r.2, {w:UInt64}, r.3 "
        "FROM (SELECT arrayJoin({rows:Array(Tuple(Date, UInt64, UInt64))}) AS r)",
        params | {"rows": [(d, n, int(written.get(d, 0))) for d, n in pairs]},
    )
    return len(batch)


def _snapshot(store, batch: list[tuple[datetime, int]], writer: int, table: Snapshotted = MAIL) -> int:
    """Write, then record, the snapshots of `batch` [(hour, counter)] of `table`; returns how many were
    recorded."""
    cols = ", ".join(table.columns)
    params = {"hours": [h for h, _ in batch], "pairs": batch, "w": writer}
    # `seen` is a window over the same read as the numbers: an insert landing meanwhile changes the
    # hour's counter, the pair no longer matches, and the hour waits for the next refresh.
    store.command(
        f"INSERT INTO {table.rows} (hour, seen, writer, {cols}) SELECT hour, seen, {{w:UInt64}}, {cols} "
        f"FROM (SELECT hour, {cols}, sum(inserts) OVER (PARTITION BY hour) AS seen FROM {table.view} "
        f"WHERE hour IN {_HOURS}) WHERE (hour, seen) IN {_PAIRS}",
        params,
    )
    store.command(
        f"INSERT INTO {table.recorded} (hour, seen, writer, keys) SELECT hour, seen, writer, count() "
        f"FROM {table.rows} WHERE hour IN {_HOURS} AND (hour, seen) IN {_PAIRS} AND writer = {{w:UInt64}} "
        "GROUP BY hour, seen, writer",
        params,
    )
    return int(
        store.query(
            f"SELECT count() FROM {table.recorded} WHERE (hour, seen) IN {_PAIRS} AND writer = {{w:UInt64}}",
            params,
        ).result_rows[0][0]
    )


# (rows, recorded snapshots, time column, its type) of the hourly and the daily mail snapshots (the ones
# the rollup horizon applies to), and of every snapshot table
_GRAINS = (
    (MAIL.rows, MAIL.recorded, "hour", "DateTime('UTC')"),
    ("mail_daily_snap", "mail_daily_snap_days", "day", "Date"),
)
_ALL_GRAINS = _GRAINS + tuple(
    (t.rows, t.recorded, "hour", "DateTime('UTC')") for t in SNAPSHOTTED if t is not MAIL
)


def delete_unread(store, grace_seconds: float = SUPERSEDED_GRACE_SECONDS) -> int:
    """Delete, for every hour (and day) whose newest recorded snapshot was recorded more than
    `grace_seconds` ago, every other snapshot of it: older ones, other writers of the same one, rows never
    recorded; and the superseded window snapshots (window_snapshots.delete_unread). Returns the number of
    snapshots deleted."""
    deleted = 0
    for rows, recorded, t, typ in _ALL_GRAINS:
        old = store.query(
            f"SELECT s.{t}, s.seen, s.writer FROM (SELECT DISTINCT {t}, seen, writer FROM {rows}) AS s "
            f"INNER JOIN (SELECT {t}, argMin((seen, writer), (-seen, writer)) AS keep, "
            f"argMin(taken_at, (-seen, writer)) AS kept_at FROM {recorded} GROUP BY {t}) AS n "
            f"ON s.{t} = n.{t} "
            "WHERE (s.seen, s.writer) != n.keep AND n.kept_at < now64(3) - toIntervalMillisecond({g:UInt64})",
            {"g": int(grace_seconds * 1000)},
        ).result_rows
        if not old:
            continue
        triples = [(as_utc(x) if isinstance(x, datetime) else x, int(n), int(w)) for x, n, w in old]
        cond = f"({t}, seen, writer) IN {{t:Array(Tuple({typ}, UInt64, UInt64))}}"
        store.command(f"DELETE FROM {store.target(rows)} WHERE {cond}", {"t": triples})
        store.command(f"DELETE FROM {store.target(recorded)} WHERE {cond}", {"t": triples})
        deleted += len(triples)
    return deleted + window_snapshots.delete_unread(store, grace_seconds)


def delete_before(store, hour: datetime) -> None:
    """Delete the snapshots of the hours before `hour`: the rollup horizon that was already in effect
    (those hours are read from mail_hourly_totals, and have been since the previous rollup)."""
    params = {"h": as_utc(hour)}
    for rows, recorded, t, _ in _GRAINS:
        # a day is read from its snapshot only when it starts at or after the horizon
        before = f"toDateTime({t}, 'UTC') < {{h:DateTime('UTC')}}"
        if store.query(f"SELECT count() FROM {recorded} WHERE {before}", params).result_rows[0][0]:
            store.command(f"DELETE FROM {store.target(rows)} WHERE {before}", params)
            store.command(f"DELETE FROM {store.target(recorded)} WHERE {before}", params)


def clear(store) -> None:
    """Forget every snapshot (after the set states were rebuilt: their counters start again)."""
    for rows, recorded, _, _ in _ALL_GRAINS:
        store.command(f"TRUNCATE TABLE {store.target(rows)}")
        store.command(f"TRUNCATE TABLE {store.target(recorded)}")
    window_snapshots.clear(store)


class Refresher:
    """Calls `refresh` at most every `seconds` (the sink's loop calls `maybe()` after each commit), each
    time snapshotting only the hours that settled since the previous call (`refresh(settled=…)`): an hour
    is taken once nothing was inserted for it for one interval, not re-taken every interval while written.
    A failed refresh is logged and retried later: snapshots are a speed-up, not a condition for exact
    numbers, so they never stop the writer."""

    def __init__(self, store, seconds: float = REFRESH_SECONDS, clock=time.monotonic, lock=None):
        self.store, self.seconds, self.clock, self.lock = store, seconds, clock, lock
        self.settled: dict = {}
        self.last = clock()
        self.last_cleanup = self.last
        self.runs = 0
        self.failures = 0

    def maybe(self) -> dict | None:
        if self.clock() - self.last < self.seconds:
            return None
        self.last = self.clock()
        cleanup = self.last - self.last_cleanup >= CLEANUP_SECONDS
        try:
            done = refresh(self.store, lock=self.lock, cleanup=cleanup, settled=self.settled)
        except Exception as exc:  # noqa: BLE001 - a speed-up must never stop the sink
            self.failures += 1
            log.warning("stats snapshots: refresh failed (%s); retrying in %.0fs", exc, self.seconds)
            return None
        self.runs += 1
        if cleanup:
            self.last_cleanup = self.last
        return done


__all__ = [
    "ACTIVITY",
    "MAIL",
    "REASONS",
    "SNAPSHOTTED",
    "Snapshotted",
    "BATCH_DAYS",
    "BATCH_HOURS",
    "DAILY_COUNTERS",
    "DAILY_KEYS",
    "days_to_snapshot",
    "HORIZON_SQL",
    "as_utc",
    "REFRESH_SECONDS",
    "Refresher",
    "SNAPSHOT_COLUMNS",
    "clear",
    "delete_before",
    "delete_unread",
    "dirty_hours",
    "refresh",
]
