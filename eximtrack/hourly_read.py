"""Reading the hourly mail counters of one range, each hour from its one source: the SQL that
`eximtrack stats` and `/api/v1/stats` use instead of the view `mail_hourly_all`.

The rule is that of `mail_hourly_all` (migrations 005 and 008): the rolled-up totals before the rollup
horizon; from the horizon on, the hour's snapshot recorded at its current insert counter (clean), else its
merged set states (dirty). The view decides clean and dirty for EVERY stored hour on each read and reads all
three sources whatever the range. Here a read is two statements: `plan()` classifies the hours of the range
only (a `ReadPlan`: the horizon and the dirty hours), then `source()` reads only the sources holding hours of
the range, and pre-aggregates the snapshot branch by the caller's keys when they are the keys of an
aggregate projection of `mail_hourly_snap` (migration 010: per hour, per hour and server), so that
ClickHouse answers it from the projection instead of the per-sender rows. (One statement that classifies
the hours itself was measured slower: every UNION branch costs a few ms even when empty.)

The counters are plain numbers summable over keys and hours (each message and each recipient row belongs to
one key and one hour), except `rcpt_addresses` (distinct addresses of one key and hour). Callers aggregate
the source again with sum(), grouped by any subset of the keys they asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from eximtrack.stats_snapshots import HORIZON_SQL, as_utc

KEY_COLUMNS = ("hour", "server", "owner", "user", "domain", "sender", "outbound")
COUNTER_COLUMNS = (
    "messages", "bytes", "recipients", "rcpt_addresses", "rows", "inprogress", "deferred", "success",
    "filtered", "archive", "failure", "rejected", "deferred_ever", "defer_or_fail_ever", "defer_attempts",
)  # fmt: skip

# the keys of the aggregate projections of mail_hourly_snap (migration 010), besides (hour, seen, writer)
PROJECTED_KEYS = ("hour", "server", "outbound")


@dataclass(frozen=True)
class ReadPlan:
    """Where the hours of one range are, decided by one statement (`plan`): the rollup horizon, the hours
    from it on that changed since their last recorded snapshot (dirty: no snapshot was recorded at their
    current insert counter), whether any hour has a current snapshot (clean), and whether the range starts
    before the horizon (rolled). `source()` then reads only the sources that hold hours of the range."""

    horizon: datetime
    dirty: tuple[datetime, ...]
    clean: bool
    rolled: bool  # the range has hours before the horizon (read from the rolled-up totals)

    @classmethod
    def sql(cls, range_sql: str) -> str:
        """The horizon, and [(hour, insert counter, smallest writer of a snapshot recorded at that counter,
        or 0)] for the hours of `range_sql` (a condition on `hour`) from the horizon on."""
        rng = f"({range_sql}) AND hour >= {HORIZON_SQL}"
        hours = (
            "(SELECT groupArray((c.hour, c.n, r.w)) FROM "
            f"(SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE {rng} GROUP BY hour) AS c "
            f"LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours WHERE {rng} "
            "GROUP BY hour, seen) AS r ON c.hour = r.hour AND c.n = r.seen)"
        )
        return f"SELECT {HORIZON_SQL}, {hours}"

    @classmethod
    def of(cls, row: Sequence, since: datetime | None) -> ReadPlan:
        """From the row of `sql()`, for a range starting at `since` (None: unbounded)."""
        horizon, hours = as_utc(row[0]), row[1]
        dirty = tuple(as_utc(h) for h, _, w in hours if not w)
        rolled = since is None or as_utc(since) < horizon
        return cls(horizon, dirty, any(w for _, _, w in hours), rolled)


def plan(run, range_sql: str, params: dict, since: datetime | None) -> ReadPlan:
    """The ReadPlan of the hours of `range_sql` (bound by `params`; its first hour `since`, None when
    unbounded) through `run(sql, params)`."""
    return ReadPlan.of(run(ReadPlan.sql(range_sql), params)[1][0], since)


def source(
    keys: Sequence[str],
    counters: Sequence[str],
    range_sql: str,
    where: Mapping[str, str] | None,
    read_plan: ReadPlan,
) -> tuple[str, dict]:
    """(a FROM-able subquery `(…)` with the columns `keys` + `counters`, its parameters): each counter
    summed per `keys` over the hours of `range_sql` (a condition on `hour` with bound
    parameters), restricted by `where` ({key column: a condition on it}), each hour from its one source as
    `read_plan` (the `plan()` of the same range) says. The branches pre-aggregate only when the keys and the
    filtered columns are keys of a projection (PROJECTED_KEYS): otherwise they pass the rows on as they are
    (a second aggregation of many groups costs more than it saves).

    Read: the totals if the range starts before the horizon; the snapshots of the hours not dirty (the
    newest recorded one of each: for an hour clean when planned, that is the one at its counter, or a newer
    one recorded since); the states of the dirty hours."""
    bad = [k for k in keys if k not in KEY_COLUMNS] + [c for c in counters if c not in COUNTER_COLUMNS]
    if bad or not counters:
        raise ValueError(f"mail_hourly has no counter or key {bad[0]!r}" if bad else "no counter asked")
    where = dict(where or {})
    if {*keys, *where} <= set(PROJECTED_KEYS):
        aggs = ", ".join(f"sum({c}) AS {c}" for c in counters)
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
    else:
        aggs, group = ", ".join(counters), ""
    select = ", ".join([*keys, aggs])
    cond = " AND ".join([f"({range_sql})", *(f"({w})" for w in where.values())])
    totals = f"SELECT {select} FROM mail_hourly_totals FINAL WHERE {cond} AND hour < @H@{group}"
    snap = f"SELECT {select} FROM mail_hourly_snap WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    states = f"SELECT {select} FROM mail_hourly_v WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    h = "{hr_horizon:DateTime('UTC')}"
    params: dict = {"hr_horizon": read_plan.horizon}
    branches = [_fill(totals, h)] if read_plan.rolled else []
    if read_plan.clean:
        params["hr_dirty"] = list(read_plan.dirty)
        newest = (
            f"(hour, seen, writer) IN (SELECT hour, seen, min(writer) FROM mail_hourly_snap_hours WHERE "
            f"({range_sql}) AND hour >= {h} GROUP BY hour, seen ORDER BY seen DESC LIMIT 1 BY hour)"
        )
        branches.append(_fill(snap, h, f"hour NOT IN {_DIRTY} AND {newest}"))
    if read_plan.dirty:
        params["hr_dirty"] = list(read_plan.dirty)
        branches.append(_fill(states, h, f"hour IN {_DIRTY}"))
    if not branches:  # nothing stored in the range: no row
        branches.append(_fill(snap, h, "0"))
    return "(" + "\nUNION ALL\n".join(branches) + ")", params


def _fill(branch: str, horizon: str, cond: str = "1") -> str:
    return branch.replace("@H@", horizon).replace("@COND@", cond)


_DIRTY = "{hr_dirty:Array(DateTime('UTC'))}"


__all__ = [
    "COUNTER_COLUMNS",
    "KEY_COLUMNS",
    "PROJECTED_KEYS",
    "ReadPlan",
    "plan",
    "source",
]
