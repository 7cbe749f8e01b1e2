"""Hourly snapshots of `mail_hourly` (migration 008): the finalised numbers of every hour, kept as plain
rows so that `eximtrack stats`, the dashboards and the abuse views do not merge set states at query time.

`refresh(store)` finds the hours whose insert counter (sum(mail_hourly.inserts), which grows with every
insert touching the hour) has no recorded snapshot, writes the numbers of `mail_hourly_v` for those hours
with the counter they were computed at (`seen`: one read, so both describe the same parts) and a random
`writer` id, then records (hour, seen, writer) in `mail_hourly_snap_hours`. `mail_hourly_all` uses a
snapshot only while its `seen` equals the hour's current counter (the smallest recorded writer of it) and
merges the states otherwise, so a snapshot never hides an insert, concurrent refreshers (several sinks on
one server) never double a key, and rows of a refresh that stopped half-way are never read. Refreshing is
a speed-up, never a condition for exact numbers.

Run by the sink every `REFRESH_SECONDS`, at the end of `eximtrack ingest`, and by `eximtrack rollup`.
"""

from __future__ import annotations

import logging
import secrets
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime

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

_PAIRS = "{pairs:Array(Tuple(DateTime('UTC'), UInt64))}"
_HOURS = "{hours:Array(DateTime('UTC'))}"
# the rollup horizon (migration 005) as a scalar subquery: the hours before it are read from the totals
HORIZON_SQL = "(SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')"


def as_utc(value: datetime) -> datetime:
    """A DateTime('UTC') value as read back (naive or aware) -> an aware UTC datetime."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def dirty_hours(store) -> list[tuple[datetime, int]]:
    """[(hour, current insert counter)] of the hours from the rollup horizon on that have no recorded
    snapshot taken at their current counter."""
    rows = store.query(
        f"SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE hour >= {HORIZON_SQL} GROUP BY hour "
        "HAVING (hour, n) NOT IN (SELECT hour, seen FROM mail_hourly_snap_hours) ORDER BY hour"
    ).result_rows
    return [(as_utc(h), int(n)) for h, n in rows]


def refresh(
    store,
    *,
    batch_hours: int = BATCH_HOURS,
    cleanup: bool = True,
    lock: AbstractContextManager | None = None,
) -> dict:
    """Snapshot every dirty hour; with `cleanup`, delete the snapshots no query reads any more (see
    delete_unread). `lock` is held around each step (the sink's chDB engine lock: queries served meanwhile
    wait for one batch, not for the whole refresh).
    Returns {"hours": snapshotted, "skipped": changed meanwhile, "deleted": snapshots deleted}."""
    lock = lock or nullcontext()
    started = time.monotonic()
    writer = 1 + secrets.randbelow(2**63 - 1)  # 0 means "no snapshot" in mail_hourly_all
    with lock:
        dirty = dirty_hours(store)
    done = 0
    for i in range(0, len(dirty), batch_hours):
        with lock:
            done += _snapshot(store, dirty[i : i + batch_hours], writer)
    with lock:
        deleted = delete_unread(store) if cleanup else 0
    if dirty:
        log.info(
            "stats snapshots: %d of %d dirty hours in %.1fs", done, len(dirty), time.monotonic() - started
        )
    return {"hours": done, "skipped": len(dirty) - done, "deleted": deleted}


def _snapshot(store, batch: list[tuple[datetime, int]], writer: int) -> int:
    """Write, then record, the snapshots of `batch` [(hour, counter)]; returns how many were recorded."""
    cols = ", ".join(SNAPSHOT_COLUMNS)
    params = {"hours": [h for h, _ in batch], "pairs": batch, "w": writer}
    # `seen` is a window over the same read as the numbers: an insert landing meanwhile changes the
    # hour's counter, the pair no longer matches, and the hour waits for the next refresh.
    store.command(
        f"INSERT INTO mail_hourly_snap (hour, seen, writer, {cols}) SELECT hour, seen, {{w:UInt64}}, {cols} "
        f"FROM (SELECT hour, {cols}, sum(inserts) OVER (PARTITION BY hour) AS seen FROM mail_hourly_v "
        f"WHERE hour IN {_HOURS}) WHERE (hour, seen) IN {_PAIRS}",
        params,
    )
    store.command(
        "INSERT INTO mail_hourly_snap_hours (hour, seen, writer, keys) SELECT hour, seen, writer, count() "
        f"FROM mail_hourly_snap WHERE hour IN {_HOURS} AND (hour, seen) IN {_PAIRS} AND writer = {{w:UInt64}} "
        "GROUP BY hour, seen, writer",
        params,
    )
    return int(
        store.query(
            f"SELECT count() FROM mail_hourly_snap_hours WHERE (hour, seen) IN {_PAIRS} AND writer = {{w:UInt64}}",
            params,
        ).result_rows[0][0]
    )


def delete_unread(store, grace_seconds: float = SUPERSEDED_GRACE_SECONDS) -> int:
    """Delete, for every hour whose newest recorded snapshot was recorded more than `grace_seconds` ago,
    every other snapshot of it: older ones, other writers of the same one, rows never recorded.
    Returns the number of (hour, seen, writer) snapshots deleted."""
    old = store.query(
        "SELECT s.hour, s.seen, s.writer FROM (SELECT DISTINCT hour, seen, writer FROM mail_hourly_snap) AS s "
        "INNER JOIN (SELECT hour, argMin((seen, writer), (-seen, writer)) AS keep, "
        "argMin(taken_at, (-seen, writer)) AS kept_at FROM mail_hourly_snap_hours GROUP BY hour) AS n "
        "ON s.hour = n.hour "
        "WHERE (s.seen, s.writer) != n.keep AND n.kept_at < now64(3) - toIntervalMillisecond({g:UInt64})",
        {"g": int(grace_seconds * 1000)},
    ).result_rows
    if not old:
        return 0
    triples = [(as_utc(h), int(n), int(w)) for h, n, w in old]
    cond = "(hour, seen, writer) IN {t:Array(Tuple(DateTime('UTC'), UInt64, UInt64))}"
    store.command(f"DELETE FROM mail_hourly_snap WHERE {cond}", {"t": triples})
    store.command(f"DELETE FROM mail_hourly_snap_hours WHERE {cond}", {"t": triples})
    return len(triples)


def delete_before(store, hour: datetime) -> None:
    """Delete the snapshots of the hours before `hour`: the rollup horizon that was already in effect
    (those hours are read from mail_hourly_totals, and have been since the previous rollup)."""
    params = {"h": as_utc(hour)}
    if store.query(
        "SELECT count() FROM mail_hourly_snap_hours WHERE hour < {h:DateTime('UTC')}", params
    ).result_rows[0][0]:
        store.command("DELETE FROM mail_hourly_snap WHERE hour < {h:DateTime('UTC')}", params)
        store.command("DELETE FROM mail_hourly_snap_hours WHERE hour < {h:DateTime('UTC')}", params)


def clear(store) -> None:
    """Forget every snapshot (after the set states were rebuilt: their counters start again)."""
    store.command("TRUNCATE TABLE mail_hourly_snap")
    store.command("TRUNCATE TABLE mail_hourly_snap_hours")


class Refresher:
    """Calls `refresh` at most every `seconds` (the sink's loop calls `maybe()` after each commit).
    A failed refresh is logged and retried later: snapshots are a speed-up, not a condition for exact
    numbers, so they never stop the writer."""

    def __init__(self, store, seconds: float = REFRESH_SECONDS, clock=time.monotonic, lock=None):
        self.store, self.seconds, self.clock, self.lock = store, seconds, clock, lock
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
            done = refresh(self.store, lock=self.lock, cleanup=cleanup)
        except Exception as exc:  # noqa: BLE001 - a speed-up must never stop the sink
            self.failures += 1
            log.warning("stats snapshots: refresh failed (%s); retrying in %.0fs", exc, self.seconds)
            return None
        self.runs += 1
        if cleanup:
            self.last_cleanup = self.last
        return done


__all__ = [
    "BATCH_HOURS",
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
