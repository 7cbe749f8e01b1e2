"""HTTP query parameters -> bound SQL (pure, no I/O): search with cursor paging, count, stats, message.

Every query is built on eximtrack/search.py (the `ConditionBuilder` of bound text conditions, `parse_sort`,
`parse_time`, `build_show`) and ANDs the caller's tenant `Scope` (`scope_condition`) — the scope is a
separate condition that no request parameter can remove or widen. Column names come only from whitelists.
Pages sorted by sendunixtime are read through the access paths of eximtrack/search_plan.py (`fetch`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eximtrack import stats
from eximtrack.search import (
    MATCH_MODES,
    ConditionBuilder,
    Scope,
    SearchError,
    build_show,
    parse_sort,
    parse_time,
    result_rows_sql,
    scope_condition,
)
from eximtrack.search_plan import (
    OUTCOME_TABLE,
    TEXT_COLUMNS,
    SearchPlan,
    decide_read_all,
    decide_scan,
    decide_text_read,
    run_pages,
    where_clause,
)
from schemas.records import OUTCOMES, SHOW_GROUPS

# cPanel's filter keys (EmailTrack::search) + ours -> the columns they match.
FILTER_COLUMNS: dict[str, list[str]] = {
    "user": ["user"],
    "domain": ["domain"],
    "email": ["email"],
    "sender": ["sender"],
    "senderip": ["senderip"],
    "senderhost": ["senderhost"],
    "senderauth": ["senderauth"],
    "spamscore": ["ifNull(toString(spamscore), '')"],
    "recipient": ["recipient"],
    "deliveredto": ["deliveredto"],
    "deliveryuser": ["deliveryuser"],
    "deliverydomain": ["deliverydomain"],
    "msgid": ["msgid"],
    "ip": ["ip"],
    "host": ["host"],
    "router": ["router"],
    "transport": ["transport"],
    "message": ["message", "confirmation"],
    "server": ["server"],
    "subject": ["subject"],
    "message_id": ["message_id"],
}
CASE_SENSITIVE = frozenset({"msgid", "server"})
# `all`: contains (by default) across the text fields.
ALL_COLUMNS = list(TEXT_COLUMNS)  # the columns search_time.text joins (migration 007)
FLAGS = {"success": "successes", "defer": "deferred", "failure": "failures", "inprogress": "inprogress"}
DELIVERY_TYPES = ("all", "remote", "local")
STATS_GROUPS = ("server", "user", "domain", "owner", "deliveryuser", "deliverydomain")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000

_COMMON = (
    set(FILTER_COLUMNS)
    | {"all", "searchmatch"}
    | {f"{k}_searchmatch" for k in [*FILTER_COLUMNS, "all"]}
    | set(FLAGS)
    | {"deliverytype", "type", "startdate", "enddate", "minsize", "maxsize"}
)
SEARCH_PARAMS = _COMMON | {"sort", "limit", "cursor", "with_total"}
CSV_PARAMS = _COMMON | {"sort"}
STATS_PARAMS = _COMMON | {"groupby", "sort", "limit"}

TIME_SORT = frozenset({"sendunixtime", "actionunixtime"})
NULLABLE_FLOAT = frozenset({"spamscore", "queue_time", "delivery_time"})
UNSIGNED = frozenset(
    {"size", "attempts", "frozen", "transport_is_remote", "version", "is_deleted", "schema_version"}
)
TIEBREAK = ("server", "msgid", "recipient", "deliveredto")
NULL_FLOAT = -1e308  # NULL spam scores / delays sort first (ascending), last (descending)


class BadRequest(ValueError):
    """A parameter the API cannot use: answered with 400 and this message."""


def _single(params: Mapping[str, list[str]] | Mapping[str, str], allowed: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(unknown)}")
    for key, value in params.items():
        if isinstance(value, list):
            if len(value) != 1:
                raise BadRequest(f"parameter {key} is given {len(value)} times; give it once")
            value = value[0]
        out[key] = value
    return out


def parse_flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise BadRequest(f"{name} must be 1 or 0, not {value!r}")


def _int(name: str, value: str, low: int = 0, high: int | None = None) -> int:
    try:
        n = int(value.strip())
    except (ValueError, AttributeError):
        raise BadRequest(f"{name} must be a whole number, not {value!r}") from None
    if n < low or (high is not None and n > high):
        raise BadRequest(
            f"{name} must be between {low} and {high}" if high is not None else f"{name} must be >= {low}"
        )
    return n


def _match(p: dict[str, str], key: str, default: str) -> str:
    m = p.get(f"{key}_searchmatch") or p.get("searchmatch") or default
    m = m.strip().lower()
    if m not in MATCH_MODES:
        raise BadRequest(
            f"{key}_searchmatch / searchmatch must be one of {', '.join(MATCH_MODES)}, not {m!r}"
        )
    return m


def _conditions(p: dict[str, str], scope: Scope | None) -> SearchPlan:
    """The WHERE conditions common to search, CSV and stats (scope included), as a plan."""
    b = ConditionBuilder("eq")
    for key in [k for k in p if k == "searchmatch" or k.endswith("_searchmatch")]:
        _match(p, key.removesuffix("_searchmatch"), "eq")  # a bad mode is a 400 even without its filter
    for key, exprs in FILTER_COLUMNS.items():
        value = p.get(key)
        if value is None or value == "":
            continue
        if key == "message_id":
            value = value.strip().strip("<>")
        b.match = _match(p, key, "eq")
        b.text(exprs, value, case_sensitive=key in CASE_SENSITIVE)
    if p.get("all"):
        b.match = _match(p, "all", "contains")
        b.text(ALL_COLUMNS, p["all"])
    b.match = "eq"

    flags = {k: parse_flag(k, p[k]) for k in FLAGS if k in p}
    types: set[str] = set(OUTCOMES)
    if flags:
        on = [FLAGS[k] for k, v in flags.items() if v]
        if not on:
            raise BadRequest("You must show at least one message type.")
        types = {t for g in on for t in SHOW_GROUPS[g]}
    if p.get("type"):
        wanted = {t.strip() for t in p["type"].split(",") if t.strip()}
        bad = sorted(wanted - set(OUTCOMES))
        if bad:
            raise BadRequest(f"unknown type(s) {', '.join(bad)}: choose from {', '.join(OUTCOMES)}")
        types &= wanted
        if not types:
            raise BadRequest("You must show at least one message type.")
    if types != set(OUTCOMES):
        b.restrict_types(types)

    dtype = (p.get("deliverytype") or "all").strip().lower()
    if dtype not in DELIVERY_TYPES:
        raise BadRequest(f"deliverytype must be one of {', '.join(DELIVERY_TYPES)}, not {dtype!r}")
    if dtype == "remote":
        b.condition("transport_is_remote = 1", ["transport_is_remote"])
    elif dtype == "local":
        b.condition("transport_is_remote = 0 AND transport != ''", ["transport_is_remote", "transport"])

    b.time_window(*_time_range(p))
    if p.get("minsize"):
        b.condition("size >= {" + b.param(_int("minsize", p["minsize"]), "minsize") + ":UInt64}", ["size"])
    if p.get("maxsize"):
        b.condition("size <= {" + b.param(_int("maxsize", p["maxsize"]), "maxsize") + ":UInt64}", ["size"])

    return b.plan(scope)


def _time_range(p: dict[str, str]) -> tuple[float | None, float | None]:
    """startdate, enddate -> epoch seconds (None when not given); 400 when unreadable or out of range."""
    try:
        since = parse_time(p.get("startdate"), "startdate")
        until = parse_time(p.get("enddate"), "enddate")
    except SearchError as exc:
        raise BadRequest(str(exc)) from None
    for name, value in (("startdate", since), ("enddate", until)):
        if value is not None and (not math.isfinite(value) or abs(value) > 1e11):
            raise BadRequest(f"{name} is out of range")
    return since, until


# -- sort and cursor --------------------------------------------------------------------------------


def _sort_expr(column: str) -> str:
    return f"ifNull({column}, {NULL_FLOAT!r})" if column in NULLABLE_FLOAT else column


def _param_type(column: str) -> str:
    if column in TIME_SORT:
        return "Int64"
    if column in NULLABLE_FLOAT:
        return "Float64"
    if column in UNSIGNED:
        return "UInt64"
    return "String"


def _placeholder(b: ConditionBuilder, column: str, value) -> str:
    ch_type = _param_type(column)
    name = b.param(value, "k")
    if column in TIME_SORT:
        return f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')"
    return f"{{{name}:{ch_type}}}"


def key_value(column: str, value):
    """A row's value (as the API returns it) -> the cursor's value of the sort key."""
    if column in TIME_SORT:
        return round(float(value or 0) * 1000)
    if column in NULLABLE_FLOAT:
        return NULL_FLOAT if value is None else float(value)
    if column in UNSIGNED:
        return int(value or 0)
    return "" if value is None else str(value)


def _check_key_value(column: str, value) -> None:
    kind = _param_type(column)
    ok = (
        (kind == "String" and isinstance(value, str))
        or (kind in ("Int64", "UInt64") and isinstance(value, int) and not isinstance(value, bool))
        or (kind == "Float64" and isinstance(value, (int, float)) and not isinstance(value, bool))
    )
    if (
        not ok
        or (kind == "UInt64" and not 0 <= value < 2**64)
        or (kind == "Int64" and not -(2**63) <= value < 2**63)
    ):
        raise BadRequest("invalid cursor")
    if kind == "Float64" and not math.isfinite(value):
        raise BadRequest("invalid cursor")


@dataclass
class CursorCodec:
    """Opaque cursors: base64url(JSON {"s": sort, "k": [sort value, server, msgid, recipient, deliveredto]})
    + HMAC-SHA256 (the key is the server's), so a changed cursor is a 400, not a different query."""

    key: bytes

    def encode(self, sort: str, keys: list) -> str:
        body = json.dumps({"s": sort, "k": keys}, separators=(",", ":"), ensure_ascii=False).encode()
        sig = hmac.new(self.key, body, hashlib.sha256).digest()[:16]
        return (
            base64.urlsafe_b64encode(body).decode().rstrip("=")
            + "."
            + base64.urlsafe_b64encode(sig).decode().rstrip("=")
        )

    def decode(self, cursor: str, sort: str) -> list:
        try:
            b64body, b64sig = cursor.strip().split(".")
            body = base64.urlsafe_b64decode(b64body + "=" * (-len(b64body) % 4))
            sig = base64.urlsafe_b64decode(b64sig + "=" * (-len(b64sig) % 4))
        except (ValueError, TypeError):
            raise BadRequest("invalid cursor") from None
        if not hmac.compare_digest(sig, hmac.new(self.key, body, hashlib.sha256).digest()[:16]):
            raise BadRequest(
                "invalid cursor (changed, or from another server instance): start again without it"
            )
        try:
            data = json.loads(body)
            keys = data["k"]
            if data["s"] != sort:
                raise BadRequest("the cursor belongs to another sort order: start again without it")
        except (ValueError, KeyError, TypeError):
            raise BadRequest("invalid cursor") from None
        if not isinstance(keys, list):
            raise BadRequest("invalid cursor")
        return keys


@dataclass
class SearchQuery:
    """A search: its conditions (scope included) and order; `page(keys, n)` gives the SQL of the `n` rows
    after the cursor keys (None = from the start), `count()` the SQL of the total."""

    plan: SearchPlan
    sort_column: str
    sort_dir: str
    key_columns: list[str]
    limit: int | None = None  # page size asked for (search), None for exports
    keys: list | None = None  # decoded cursor
    # the plan the last fetch read with, its text reads decided by its sample (decide_text_read, or
    # decide_read_all for a read of every row in another order: also whether it scans `latest`): the same
    # request's count() reads that way too, without sampling again
    fetched_plan: SearchPlan | None = None

    @property
    def sort(self) -> str:
        return f"{self.sort_column}:{self.sort_dir.lower()}"

    def cursor_keys(self, row: Mapping) -> list:
        return [key_value(c, row.get(c)) for c in self.key_columns]

    @property
    def conds(self) -> list[str]:
        return self.plan.conds

    @property
    def params(self) -> dict:
        return self.plan.params

    def page(
        self,
        keys: list | None,
        rows: int | None,
        extra: list[str] | None = None,
        extra_params: dict | None = None,
        plan: SearchPlan | None = None,
    ) -> tuple[str, dict]:
        """ONE statement for the `rows` rows after `keys` (None: from the start; rows None: all of them).
        Without extra conditions it reads `latest` only for the candidates of a selective access path (of
        `plan`: the search's own, or the same with its reads decided, `decide_read_all`)."""
        b = ConditionBuilder("eq")
        b.params = dict(self.params)
        conds = list(self.conds)
        table = self.plan.fetch_table()
        if extra is None:
            table, access, aparams = (plan or self.plan).read_all()
            conds += access
            b.params.update(aparams)
        conds += extra or []
        b.params.update(extra_params or {})
        if keys is not None:
            conds.append(keyset_condition(b, self.key_columns, self.sort_dir, keys))
        order = [f"{_sort_expr(self.sort_column)} {self.sort_dir}"] + [
            f"{c} ASC" for c in self.key_columns[1:]
        ]
        limit = ""
        if rows is not None:
            b.params["lim"] = rows
            limit = " LIMIT {lim:UInt64}"
        return result_rows_sql(f"{table} FINAL", where_clause(conds), order, limit), b.params

    def fetch(
        self, run: Callable[[str, dict], tuple[list[str], list[tuple]]], keys: list | None, rows: int
    ) -> tuple[list[str], list[tuple]]:
        """The `rows` rows after `keys`, as (column names, rows). A sendunixtime order is read through the
        access paths, candidates first (search_plan.run_pages); any other order in one statement, and so a
        search that names an exact msgid: its arrival second fixes the primary key's first column, so the
        rows are read from `latest` directly (search_time has no order on msgid: finding its candidates
        read the whole table, 0.8 s at 1e8 events)."""
        if self.sort_column != "sendunixtime":
            self.fetched_plan = decide_read_all(run, self.plan)
            return run(*self.page(keys, rows, plan=self.fetched_plan))
        if self.plan.msgtime_fixed:
            return run(*self.page(keys, rows, [], {}))

        def fetch_sql(extra: list[str], extra_params: dict, n: int) -> tuple[str, dict]:
            return self.page(keys, n, extra, extra_params)

        self.fetched_plan = decide_text_read(run, self.plan, rows)
        return run_pages(run, self.fetched_plan, self.sort_dir, keys, rows, fetch_sql)

    def count(
        self, run: Callable[[str, dict], tuple[list[str], list[tuple]]] | None = None
    ) -> tuple[str, dict]:
        """The SQL of the exact total: on latest_outcomes when every condition tests its columns (a search by
        outcome, time, server or msgid: SearchPlan.outcome_count), else on the rows the access path names.
        With `run`, conditions search_time does not hold count the rows a scan of `latest` names when they
        are few (`decide_scan`: one statement first)."""
        if self.plan.outcome_count():
            where = where_clause(self.conds)
            return f"SELECT count() AS total FROM {OUTCOME_TABLE} FINAL{where}", dict(self.params)
        # after a fetch that chose a value's rarer trigrams for the index, with them too (an `all` address:
        # 73 -> 51 ms at 1e8 events); a read its sample sent past the index keeps the indexes here, as before
        fetched = self.fetched_plan
        plan = fetched if fetched is not None and (fetched.text_grams or fetched.scan_latest) else self.plan
        if run is not None:
            plan = decide_scan(run, plan)
        table, access, params = plan.read_all(by_outcome=True)
        conds, params = list(self.conds) + access, dict(self.params) | params
        where = where_clause(conds)
        return f"SELECT count() AS total FROM {table} FINAL{where}", params


def build_search_query(
    raw: Mapping, scope: Scope | None, codec: CursorCodec | None = None, *, csv: bool = False
) -> SearchQuery:
    p = _single(raw, CSV_PARAMS if csv else SEARCH_PARAMS)
    plan = _conditions(p, scope)
    try:
        column, direction = parse_sort(p.get("sort") or None)
    except SearchError as exc:
        raise BadRequest(str(exc)) from None
    key_columns = [column] + [c for c in TIEBREAK if c != column]
    limit = None
    if not csv:
        limit = _int("limit", p["limit"], 1, MAX_LIMIT) if p.get("limit") else DEFAULT_LIMIT
    q = SearchQuery(plan, column, direction, key_columns, limit)
    if p.get("cursor"):
        if codec is None:
            raise BadRequest("cursor not accepted here")
        keys = codec.decode(p["cursor"], q.sort)
        keyset_condition(ConditionBuilder("eq"), key_columns, direction, keys)  # validates the keys
        q.keys = keys
    return q


def keyset_condition(b: ConditionBuilder, key_columns: list[str], direction: str, keys: list) -> str:
    """Rows strictly after `keys` in the order (sort column `direction`, tiebreak columns ASC)."""
    if not isinstance(keys, list) or len(keys) != len(key_columns):
        raise BadRequest("invalid cursor")
    for c, v in zip(key_columns, keys, strict=True):
        _check_key_value(c, v)
    expr = _sort_expr(key_columns[0])
    ph = [_placeholder(b, c, v) for c, v in zip(key_columns, keys, strict=True)]
    rest_cols = ", ".join(key_columns[1:])
    rest_vals = ", ".join(ph[1:])
    if direction == "ASC":
        return f"(tuple({expr}, {rest_cols}) > tuple({ph[0]}, {rest_vals}))"
    return f"({expr} < {ph[0]} OR ({expr} = {ph[0]} AND tuple({rest_cols}) > tuple({rest_vals})))"


# -- stats ----------------------------------------------------------------------------------------------


def build_stats_query(
    raw: Mapping, scope: Scope | None
) -> tuple[stats.HourlyStats | stats.LatestStats, list[str]]:
    """cPanel's counters (eximtrack/stats.py: the same definitions as `eximtrack stats`) for the rows the
    request and the scope select, in arrival-hour buckets [hour(startdate), enddate): (the request, to
    `.run(run)`, and the grouping). The first `limit` groups (default stats.DEFAULT_LIMIT) by the counter
    `sort` (default SENDCOUNT), descending; the request's `.top` trims the extra row read (stats.trim).

    Read from the hourly aggregates (mail_hourly_all: snapshots, no scan) when nothing but the time, an exact
    server and a grouping by the sending side (server, owner, user, domain) is asked by an unscoped token;
    otherwise computed from `latest FINAL` with the search's conditions (an indexed filter narrows it
    through the candidates), counting exactly what the aggregates count."""
    p = _single(raw, STATS_PARAMS)
    text = p.get("groupby", "server")
    groups = [g.strip() for g in text.split(",") if g.strip() and g.strip() != "none"]
    bad = [g for g in groups if g not in STATS_GROUPS]
    if bad:
        raise BadRequest(
            f"groupby must be a comma list of {', '.join(STATS_GROUPS)} (or none), not {bad[0]!r}"
        )
    groups = list(dict.fromkeys(groups))
    limit = _int("limit", p["limit"], 1, stats.MAX_LIMIT) if p.get("limit") else stats.DEFAULT_LIMIT
    try:
        top = stats.Top(p.get("sort", "SENDCOUNT").strip(), limit)  # checks the counter's name
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    top = top if groups else None
    since, until = _time_range(p)
    bounds = stats.hour_range(since, until)
    window = {k: v for k, v in p.items() if k not in ("startdate", "enddate", "groupby", "sort", "limit")}
    plan = _conditions(window, scope)  # validates every other parameter
    if scope is None and set(groups) <= set(stats.AGGREGATE_GROUPS) and set(window) <= {"server"}:
        equals = {"server": window["server"]} if window.get("server") else {}
        return stats.build_grouped_stats(groups, bounds, equals, top=top), groups
    table, access, aparams = plan.read_all()
    conds, params = list(plan.conds) + access, dict(plan.params) | aparams
    conds += [stats.ARRIVED_ROWS, *stats.hour_conditions(stats.LATEST_HOUR, bounds)]
    params.update(bounds)
    cols = ", ".join(groups)
    sql = (
        f"SELECT {cols + ',' if cols else ''}{stats.LATEST_COUNTER_SQL}\nFROM {table} FINAL\n"
        f"WHERE {' AND '.join(conds)}" + (f"\nGROUP BY {cols}\n{stats.order_by(groups, top)}" if cols else "")
    )
    return stats.LatestStats(sql, params, top), groups


# -- message ---------------------------------------------------------------------------------------------


def build_message_queries(server: str, msgid: str, scope: Scope | None) -> dict[str, tuple[str, dict]]:
    if not server or not msgid:
        raise BadRequest("the path is /api/v1/message/{server}/{msgid}")
    if len(msgid) > 200 or len(server) > 200:
        raise BadRequest("server or msgid too long")
    try:
        return build_show(msgid, server, scope=scope)
    except SearchError as exc:
        raise BadRequest(str(exc)) from None


def build_visible_query(server: str, msgid: str, scope: Scope) -> tuple[str, dict]:
    """One row when some event of the message is visible to `scope` (build_show shows nothing otherwise)."""
    params: dict = {"server": server, "msgid": msgid.strip()}
    cond = scope_condition(scope, params)
    sql = (
        "SELECT 1 FROM events FINAL WHERE server = {server:String} AND msgid = {msgid:String} "
        f"AND is_deleted = 0 AND {cond} LIMIT 1"
    )
    return sql, params


# -- alerts ---------------------------------------------------------------------------------------------

ALERTS_PARAMS = {"state", "limit"}


def build_alerts_query(raw: Mapping, scope: Scope | None) -> tuple[str, dict]:
    """/api/v1/alerts: the fleet alerts `scope` may see (eximtrack/alerts/table.py list_query)."""
    from eximtrack.alerts import table

    p = _single(raw, ALERTS_PARAMS)
    state = p.get("state", "firing")
    if state not in table.STATES:
        raise BadRequest(f"state must be one of {', '.join(table.STATES)}, not {state!r}")
    limit = _int("limit", p["limit"], 1, table.MAX_LIST) if p.get("limit") else 100
    return table.list_query(state, limit, scope)


__all__ = [
    "build_alerts_query",
    "build_visible_query",
    "BadRequest",
    "CursorCodec",
    "FILTER_COLUMNS",
    "SearchQuery",
    "build_message_queries",
    "build_search_query",
    "build_stats_query",
    "parse_flag",
]
