"""One read of the hourly mail counters in one statement, scoped to the asked range: the SQL that
`eximtrack stats`, `/api/v1/stats` and the dashboards use instead of the view `mail_hourly_all`.

Every hour is read from exactly one source, by the rule of `mail_hourly_all` (migrations 005 and 008):
the rolled-up totals before the rollup horizon; from the horizon on, the hour's snapshot recorded at its
current insert counter (clean: the smallest writer of it), else its merged set states (dirty). The view
decides clean and dirty for EVERY stored hour on each read (a scalar over all hours); `source()` decides
them once per statement for the hours of the range only (a WITH scalar, evaluated once, that both
branches read, so an hour is in exactly one of them), and pre-aggregates each branch by the caller's keys
inside the branch, so that ClickHouse can answer the snapshot branch from an aggregate projection of
`mail_hourly_snap` (migration 010: per hour, per hour and server) instead of its per-sender rows.

The counters are plain numbers summable over keys and hours (each message and each recipient row belongs to
one key and one hour), except `rcpt_addresses` (distinct addresses of one key and hour) and `last_event`
(a max). Callers aggregate the source again with sum() (max() for last_event), grouped by any subset of
the keys they asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from eximtrack.stats_snapshots import as_utc

KEY_COLUMNS = ("hour", "server", "owner", "user", "domain", "sender", "outbound")
COUNTER_COLUMNS = (
    "messages", "bytes", "recipients", "rcpt_addresses", "rows", "inprogress", "deferred", "success",
    "filtered", "archive", "failure", "rejected", "deferred_ever", "defer_or_fail_ever", "defer_attempts",
    "last_event",
)  # fmt: skip

_LAST_EVENT_V = "max(toDateTime64(last_event, 3, 'UTC'))"  # the states keep a DateTime
# the keys of the aggregate projections of mail_hourly_snap (migration 010), besides (hour, seen, writer)
PROJECTED_KEYS = ("hour", "server", "outbound")
HORIZON_SQL = "(SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')"


def classify_sql(range_sql: str) -> str:
    """[(hour, insert counter, smallest writer of a snapshot recorded at that counter or 0)] for the hours
    of `range_sql` (a condition on `hour`) from the rollup horizon on: an array, for a WITH scalar."""
    rng = f"({range_sql}) AND hour >= {HORIZON_SQL}"
    return (
        "(SELECT groupArray((c.hour, c.n, r.w)) FROM "
        f"(SELECT hour, sum(inserts) AS n FROM mail_hourly WHERE {rng} GROUP BY hour) AS c "
        f"LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours WHERE {rng} "
        "GROUP BY hour, seen) AS r ON c.hour = r.hour AND c.n = r.seen)"
    )


@dataclass(frozen=True)
class ReadPlan:
    """Where the hours of one range are, decided by one classifying statement (`plan`): the rollup
    horizon, the hours from it on that changed since their last recorded snapshot (dirty), and whether
    any has a current snapshot (clean). `source(…, plan=…)` then reads only the sources that hold hours."""

    horizon: datetime
    dirty: tuple[datetime, ...]
    clean: bool
    rolled: bool  # the range has hours before the horizon (read from the rolled-up totals)

    @classmethod
    def sql(cls, range_sql: str) -> str:
        return f"SELECT {HORIZON_SQL}, {classify_sql(range_sql)}"

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
    range_sql: str = "1",
    where: Mapping[str, str] | None = None,
    read_plan: ReadPlan | None = None,
) -> tuple[str, dict]:
    """(a FROM-able subquery `(…)` with the columns `keys` + `counters`, its parameters): each counter
    summed (last_event: max) per `keys` over the hours of `range_sql` (a condition on `hour`: bound
    parameters, or the dashboards' `$RANGE`), restricted by `where` ({key column: a condition on it}), each
    hour from its one source (module docstring). The branches pre-aggregate only when the keys and the
    filtered columns are keys of a projection (PROJECTED_KEYS): otherwise they pass the rows on as they are
    (a second aggregation of many groups costs more than it saves).

    Without `read_plan` the statement classifies the hours itself (one statement, for the dashboards: the
    classification runs once per branch that reads it). With the `read_plan` of the same range it reads
    only the sources holding hours: the totals if the range starts before the horizon, the snapshots of
    the hours not dirty (the newest recorded one of each: for an hour clean when planned, that is the one
    at its counter, or a newer one recorded since), the states of the dirty hours."""
    bad = [k for k in keys if k not in KEY_COLUMNS] + [c for c in counters if c not in COUNTER_COLUMNS]
    if bad or not counters:
        raise ValueError(f"mail_hourly has no counter or key {bad[0]!r}" if bad else "no counter asked")
    where = dict(where or {})
    if {*keys, *where} <= set(PROJECTED_KEYS):
        aggs = ", ".join(f"max({c}) AS {c}" if c == "last_event" else f"sum({c}) AS {c}" for c in counters)
        group = f" GROUP BY {', '.join(keys)}" if keys else ""
    else:
        aggs, group = ", ".join(counters), ""
    select = ", ".join([*keys, aggs])
    cond = " AND ".join([f"({range_sql})", *(f"({w})" for w in where.values())])
    last_event = "max(last_event)" if group else "last_event"
    totals = f"SELECT {select} FROM mail_hourly_totals FINAL WHERE {cond} AND hour < @H@{group}"
    snap = f"SELECT {select} FROM mail_hourly_snap WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    states = (
        f"SELECT {select.replace(last_event, _LAST_EVENT_V if group else _LAST_EVENT_V[4:-1])} FROM mail_hourly_v "
        f"WHERE {cond} AND hour >= @H@ AND @COND@{group}"
    )
    if read_plan is None:
        h = "_horizon"
        branches = [
            _fill(totals, h),
            _fill(snap, h, f"(hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM {_HOURS} WHERE x.3 != 0)"),
            _fill(states, h, f"hour IN (SELECT x.1 FROM {_HOURS} WHERE x.3 = 0)"),
        ]
        with_ = f"WITH {HORIZON_SQL} AS _horizon, {classify_sql(range_sql)} AS _hours\n"
        return f"({with_}SELECT * FROM (\n" + "\nUNION ALL\n".join(branches) + "))", {}
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


_HOURS = "(SELECT arrayJoin(_hours) AS x)"
_DIRTY = "{hr_dirty:Array(DateTime('UTC'))}"


__all__ = [
    "COUNTER_COLUMNS",
    "HORIZON_SQL",
    "KEY_COLUMNS",
    "PROJECTED_KEYS",
    "ReadPlan",
    "classify_sql",
    "plan",
    "source",
]
