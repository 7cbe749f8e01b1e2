"""Track Delivery search, as SQL: pure functions that build (sql, params), no I/O.

`build_search(filters)` reads the latest state per recipient (`latest FINAL`, which also drops the
tombstoned "in progress" placeholders), narrowed first by an access-path table when a filter allows it
(eximtrack/search_plan.py: which table answers which search, and why the result stays exact). Every user value is a bound parameter ({name:Type}); column names
(sort) are whitelisted against the record's field list. Result columns are exactly the DeliveryEvent field
names, with sendunixtime/actionunixtime as epoch seconds (Float64).

Matching (`match`: eq | begins | contains) is case-insensitive on lower(column) for addresses, subject,
headers, IPs, accounts and domains — the access-path tables hold lower-case values.
`msgid` and `server` are compared case-sensitively (Exim ids are base-62: case matters; server is in the
sort key). since/until apply to sendunixtime, or to actionunixtime when the arrival time is unknown (0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eximtrack.search_plan import SearchPlan, TextFilter, decide_read_all, token_edges, where_clause
from schemas.records import EVENT_FIELDS, OUTCOMES, SHOW_GROUPS

MATCH_MODES = ("eq", "begins", "contains")
TIME_COLUMNS = ("sendunixtime", "actionunixtime")
DEFAULT_SORT = "sendunixtime"


class SearchError(ValueError):
    """A filter value the search cannot use (reported to the user, exit code 2)."""


@dataclass
class SearchFilters:
    recipient: str | None = None
    sender: str | None = None  # envelope sender (`email`)
    address: str | None = None  # sender or recipient
    domain: str | None = None  # sender or recipient domain
    msgid: str | None = None
    message_id: str | None = None  # Message-ID header
    subject: str | None = None
    senderip: str | None = None
    server: str | None = None
    user: str | None = None
    type: list[str] = field(default_factory=list)
    show: list[str] = field(default_factory=list)  # successes, deferred, failures, inprogress
    since: float | str | None = None  # epoch seconds or ISO date/time (UTC unless it carries a zone)
    until: float | str | None = None
    match: str = "eq"
    sort: str | None = None  # FIELD, -FIELD, FIELD:asc, FIELD:desc
    limit: int | None = None
    # Tenant scope (cPanel's rules), ANDed with everything else; exact, case-insensitive. Set by whoever
    # serves a tenant (web app, API); the CLI is root and sees all unless --scope-… is given.
    scope: Scope | None = None


@dataclass(frozen=True)
class Scope:
    """What one tenant may see. cPanel: an account sees its own sends and the rows it receives (delivery
    user); a reseller sees the accounts it owns (and its own); a webmail login sees only its address."""

    user: str | None = None  # cPanel account
    reseller: str | None = None  # owner in /etc/trueuserowners
    address: str | None = None  # webmail login (an email address)

    def __post_init__(self):
        if sum(1 for v in (self.user, self.reseller, self.address) if v) != 1:
            raise SearchError("a scope needs exactly one of user, reseller, address")


def scope_condition(
    scope: Scope | None, params: dict, prefix: str = "scope", sender_only: bool = False
) -> str | None:
    """SQL condition (bound parameters added to `params`) restricting rows of events/latest to `scope`;
    sender_only: only the sending side (own sends), not the rows received."""
    if scope is None:
        return None
    name = f"{prefix}{len(params)}"
    kind = scope_kind(scope)
    sender_cols, rcpt_cols = SCOPE_COLUMNS[kind]
    params[name] = ascii_lower(getattr(scope, kind).strip())
    cols = sender_cols if sender_only else sender_cols + rcpt_cols
    return "(" + " OR ".join(f"lower({c}) = {_ph(name, 'String')}" for c in cols) + ")"


# What a scope may see: (its sending-side columns, its receiving-side columns), compared to the scope's value.
SCOPE_COLUMNS = {
    "user": (("user",), ("deliveryuser",)),
    "reseller": (("owner", "user"), ("deliveryowner", "deliveryuser")),
    "address": (("email",), ("recipient", "deliveredto")),
}


def scope_kind(scope: Scope) -> str:
    return "user" if scope.user else "reseller" if scope.reseller else "address"


def scope_filter(scope: Scope | None) -> TextFilter | None:
    """The scope as a text filter (eq on any of its columns), for the planner's choice of access path."""
    if scope is None:
        return None
    kind = scope_kind(scope)
    sender_cols, rcpt_cols = SCOPE_COLUMNS[kind]
    return TextFilter(sender_cols + rcpt_cols, "eq", ascii_lower(str(getattr(scope, kind)).strip()))


# A search's rows are read by one SELECT that filters and sorts on the stored columns (the times as
# DateTime64, usable by the skip indexes) and converts the times for the result (select_list): its aliases
# are named like the columns, and prefer_column_name_to_alias keeps them from shadowing those columns in
# WHERE and ORDER BY. With a converting SELECT around the reading one, a fetch took 1.5-2.6 ms longer at
# 1e8 events, for the same rows (docs/BENCHMARKS.md, session 44).
RESULT_SETTINGS = " SETTINGS prefer_column_name_to_alias = 1"


def result_rows_sql(source: str, where: str, order: Sequence[str], limit: str = "") -> str:
    """The result rows (select_list) of `source` (a table read with FINAL, and its PREWHERE if any) that
    `where` keeps (a WHERE clause or ''), sorted by `order`, up to `limit` (a LIMIT clause or '')."""
    return f"SELECT {select_list()} FROM {source}{where} ORDER BY {', '.join(order)}{limit}{RESULT_SETTINGS}"


def select_list() -> str:
    """The result columns: the DeliveryEvent fields, times as epoch seconds (named like their columns)."""
    cols = []
    for name in EVENT_FIELDS:
        cols.append(f"toUnixTimestamp64Milli({name}) / 1000 AS {name}" if name in TIME_COLUMNS else name)
    return ", ".join(cols)


def parse_time(value: float | int | str | None, name: str = "time") -> float | None:
    """Epoch seconds or an ISO 8601 date/time (naive = UTC) -> epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise SearchError(
            f"{name}: {value!r} is neither an ISO date/time (2026-11-27 or 2026-11-27T10:00) nor epoch seconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _ph(name: str, ch_type: str) -> str:
    """A bound-parameter placeholder {name:Type}."""
    return "{" + name + ":" + ch_type + "}"


# ClickHouse lower() changes ASCII letters only; lower-case values the same way so `lower(col) = value`
# means the same on both sides (Python's str.lower() would also fold Ä, É, …).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(value: str) -> str:
    return value.translate(_ASCII_LOWER)


def complete_tokens(value: str, match: str) -> list[str]:
    """Tokens of `value` that are whole tokens of every column value the match accepts.

    eq: every token; begins: every token followed by a separator (the first starts the column value);
    contains: tokens with a separator on both sides inside `value`."""
    return sorted({token for token, starts, ends in token_edges(value, match) if starts and ends})


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class ConditionBuilder:
    """AND-ed conditions on `latest` with bound parameters, and what each text filter asked for (the
    `TextFilter`s the access-path planner reads)."""

    def __init__(self, match: str):
        if match not in MATCH_MODES:
            raise SearchError(f"match must be one of {', '.join(MATCH_MODES)}, not {match!r}")
        self.match = match
        self.where: list[str] = []
        self.params: dict[str, object] = {}
        self.filters: list[TextFilter] = []
        self.types: list[str] | None = None
        self.since_ms: int | None = None
        self.until_ms: int | None = None
        self.tested: set[str] = set()  # the columns (or expressions) the conditions test

    def param(self, value, prefix: str = "p") -> str:
        name = f"{prefix}{len(self.params)}"
        self.params[name] = value
        return name

    def text(
        self, exprs: Iterable[str], value: str, *, case_sensitive: bool = False, found_in: Iterable[str] = ()
    ) -> None:
        """One condition: any of `exprs` matches `value` under the match mode. `found_in`: where `exprs` are
        expressions of columns, those columns (their text holds every value the condition matches)."""
        value = str(value)
        if not case_sensitive:
            value = ascii_lower(value)
        if self.match == "eq":
            op, arg = "=", value
        else:
            pattern = _like_escape(value) + "%" if self.match == "begins" else "%" + _like_escape(value) + "%"
            op, arg = "LIKE", pattern
        placeholder = _ph(self.param(arg), "String")
        self.filters.append(TextFilter(tuple(exprs), self.match, value, case_sensitive, tuple(found_in)))
        self.tested.update(exprs)
        parts = [f"{expr if case_sensitive else f'lower({expr})'} {op} {placeholder}" for expr in exprs]
        self.where.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")

    def restrict_types(self, types) -> None:
        self.types = sorted(set(types) if self.types is None else set(self.types) & set(types))
        self.tested.add("type")
        self.where.append("type IN " + _ph(self.param(self.types, "types"), "Array(String)"))

    def time_window(self, since: float | None, until: float | None) -> None:
        """since/until on sendunixtime, or on actionunixtime when the arrival time is unknown (0); written
        without if() so that the minmax indexes on both columns can prune granules."""
        if since is not None or until is not None:
            self.tested.update(TIME_COLUMNS)
        if since is not None:
            self.since_ms = round(since * 1000)
            t = f"fromUnixTimestamp64Milli({_ph(self.param(self.since_ms, 'since'), 'Int64')}, 'UTC')"
            self.where.append(f"(sendunixtime >= {t} OR (sendunixtime = 0 AND actionunixtime >= {t}))")
        if until is not None:
            self.until_ms = round(until * 1000)
            t = f"fromUnixTimestamp64Milli({_ph(self.param(self.until_ms, 'until'), 'Int64')}, 'UTC')"
            self.where.append(
                f"((sendunixtime != 0 AND sendunixtime <= {t}) OR (sendunixtime = 0 AND actionunixtime <= {t}))"
            )

    def condition(self, sql: str, columns: Iterable[str]) -> None:
        """One more condition, `sql`, testing `columns` (its values bound through param())."""
        self.tested.update(columns)
        self.where.append(sql)

    def plan(self, scope: Scope | None = None) -> SearchPlan:
        """The conditions so far (the scope's too, if given) and what the access paths can use of them."""
        params = dict(self.params)
        conds = list(self.where)
        if scope is not None:
            conds.append(scope_condition(scope, params))
        plan = SearchPlan(conds, params, list(self.filters), scope_filter(scope), self.types)
        plan.tested = frozenset(self.tested)
        plan.since_ms, plan.until_ms = self.since_ms, self.until_ms
        hint = plan.msgid_hint()
        if hint:
            plan.conds.append(hint)
            plan.msgtime_fixed = True
        return plan


def _domain_of(col: str) -> str:
    return f"if(position({col}, '@') > 0, substring({col}, position({col}, '@') + 1), '')"


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out = []
    for item in value:
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return out


def parse_sort(sort: str | None) -> tuple[str, str]:
    """FIELD / -FIELD / FIELD:asc / FIELD:desc → (column, direction). Time columns default to desc."""
    text = (sort or DEFAULT_SORT).strip()
    direction = None
    if text.startswith("-"):
        text, direction = text[1:], "DESC"
    if ":" in text:
        text, _, d = text.partition(":")
        d = d.strip().lower()
        if d not in ("asc", "desc"):
            raise SearchError(f"sort direction must be asc or desc, not {d!r}")
        direction = d.upper()
    column = text.strip()
    if column not in EVENT_FIELDS:
        raise SearchError(f"cannot sort by {column!r}: not a column (choose from {', '.join(EVENT_FIELDS)})")
    if direction is None:
        direction = "DESC" if column in TIME_COLUMNS else "ASC"
    return column, direction


def _filters(filters: SearchFilters | Mapping | None) -> SearchFilters:
    if filters is None:
        return SearchFilters()
    if isinstance(filters, SearchFilters):
        return filters
    known = {f.name for f in dataclasses.fields(SearchFilters)}
    unknown = set(filters) - known
    if unknown:
        raise SearchError(f"unknown search filter(s): {', '.join(sorted(unknown))}")
    values = {k: v for k, v in filters.items() if v is not None}
    if isinstance(values.get("scope"), Mapping):
        values["scope"] = Scope(**values["scope"])
    return SearchFilters(**values)


def build_search(
    filters: SearchFilters | Mapping | None = None,
    run: Callable[[str, dict], tuple[list[str], list[tuple]]] | None = None,
) -> tuple[str, dict]:
    """ONE statement for every row `filters` match (`eximtrack search`). With `run` (the store's), a text
    value on the time path asks the trigram index for its rarer trigrams only, as a page does, and rare
    conditions search_time does not hold read the messages a scan of `latest` names
    (`search_plan.decide_read_all`: a sample or a count statement first)."""
    f = _filters(filters)
    b = ConditionBuilder(f.match or "eq")
    if f.recipient:
        b.text(["recipient"], f.recipient)
    if f.sender:
        b.text(["email"], f.sender)
    if f.address:
        b.text(["email", "recipient"], f.address)
    if f.domain:
        b.text(
            ["domain", _domain_of("email"), _domain_of("recipient"), "deliverydomain"],
            f.domain,
            found_in=("domain", "email", "recipient", "deliverydomain"),
        )
    if f.msgid:
        b.text(["msgid"], f.msgid, case_sensitive=True)
    if f.message_id:
        b.text(["message_id"], f.message_id.strip().strip("<>") if b.match != "eq" else f.message_id)
    if f.subject:
        b.text(["subject"], f.subject)
    if f.senderip:
        b.text(["senderip"], f.senderip)
    if f.server:
        b.text(["server"], f.server, case_sensitive=True)
    if f.user:
        b.text(["user"], f.user)

    types = _as_list(f.type)
    bad = [t for t in types if t not in OUTCOMES]
    if bad:
        raise SearchError(f"unknown type(s) {', '.join(bad)}: choose from {', '.join(OUTCOMES)}")
    if types:
        b.restrict_types(types)

    groups = _as_list(f.show)
    bad = [g for g in groups if g not in SHOW_GROUPS]
    if bad:
        raise SearchError(f"unknown show group(s) {', '.join(bad)}: choose from {', '.join(SHOW_GROUPS)}")
    if groups:
        b.restrict_types({t for g in groups for t in SHOW_GROUPS[g]})

    b.time_window(parse_time(f.since, "since"), parse_time(f.until, "until"))
    plan = b.plan(f.scope)
    if run is not None:
        plan = decide_read_all(run, plan)
    # an indexed value or a text filter: read only the rows or messages the access paths name
    table, access, aparams = plan.read_all()
    where_conds = list(plan.conds) + access
    plan.params.update(aparams)
    b.params = plan.params

    column, direction = parse_sort(f.sort)
    tiebreak = ("server", "msgid", "recipient", "deliveredto")
    order = [f"{column} {direction}"] + [f"{c} ASC" for c in tiebreak if c != column]

    limit = ""
    if f.limit is not None:
        try:
            n = int(f.limit)
        except (TypeError, ValueError):
            raise SearchError(f"limit must be a whole number, not {f.limit!r}") from None
        if n < 0:
            raise SearchError("limit must be >= 0")
        limit = " LIMIT " + _ph(b.param(n, "limit"), "UInt64")

    sql = result_rows_sql(f"{table} FINAL", where_clause(where_conds), order, limit)
    return sql, b.params


# Columns of the arrival (the `<=` line) of a message.
ARRIVAL_FIELDS = (
    "server",
    "msgid",
    "email",
    "sender",
    "user",
    "domain",
    "owner",
    "senderhost",
    "senderip",
    "senderauth",
    "spamscore",
    "sendunixtime",
    "size",
    "subject",
    "message_id",
    "protocol",
    "parent_msgid",
)


def _arrival_select() -> str:
    return ", ".join(
        f"toUnixTimestamp64Milli(sendunixtime) / 1000 AS {c}" if c == "sendunixtime" else c
        for c in ARRIVAL_FIELDS
    )


def build_show(
    msgid: str, server: str | None = None, scope: Scope | None = None
) -> dict[str, tuple[str, dict]]:
    """Queries for `eximtrack show` (run them with run_show): {"arrival", "attempts", "has_children",
    "children", "lines"} → (sql, params).

    arrival: one row per server holding the message (the most complete state known);
    attempts: every event (tombstones excluded) in order: server, actionunixtime, version;
    has_children: a row when search_keys names a bounce/DSN of the message (children runs only then);
    children: latest rows of bounces/DSNs whose parent_msgid is the message; lines: its raw log lines.

    With a scope, attempts and children are the rows the tenant may see; the arrival only when one of the
    message's rows is visible; the raw lines (which name every recipient) only when the tenant is the
    sender side (its send), i.e. the scope matches with the recipient-side columns blanked out.
    """
    if not msgid or not str(msgid).strip():
        raise SearchError("a message id is required")
    params: dict[str, object] = {"msgid": str(msgid).strip()}
    # The message's key, as PREWHERE: events and log_lines are sorted by (server, msgid, …) and every version
    # of a row shares them, so filtering before FINAL keeps all versions of the message's rows and only
    # them (exact), and reads only the key columns of the other rows of each granule (measured at 1e8
    # events: 61 -> 34 ms for the attempts). Every other condition (scope: it may differ between versions)
    # is applied after FINAL, in WHERE.
    key = "msgid = {msgid:String}"
    child_cond = "parent_msgid = {msgid:String}"
    if server:
        params["server"] = server
        key += " AND server = {server:String}"
        child_cond += " AND server = {server:String}"
    cond = "1"
    child_scope = ""
    line_scope = ""
    if scope is not None:
        visible = scope_condition(scope, params)
        sender_side = scope_condition(scope, params, "sender", sender_only=True)
        seen = (
            f"(server, msgid) IN (SELECT server, msgid FROM events FINAL PREWHERE {key} WHERE is_deleted = 0"
        )
        line_scope = f" AND {seen} AND {sender_side})"
        cond = f"{seen} AND {visible})"
        child_scope = f" AND {visible}"
        cond_rows = f"{cond} AND {visible}"
    else:
        cond_rows = cond
    attempts = result_rows_sql(
        f"events FINAL PREWHERE {key}",
        f" WHERE {cond_rows} AND is_deleted = 0",
        ("server", "actionunixtime", "version", "recipient", "event_id"),
    )
    # children are found through search_keys (field parent_msgid), then read from `latest` by primary key;
    # `has_children` asks search_keys first (a superset: every version of a child row writes its key), so
    # that the read of `latest` (~15 ms at 1e8 events even when it finds nothing) runs only for a message
    # that has children
    child_keys = "FROM search_keys WHERE field = 'parent_msgid' AND value = {msgid:String}"
    has_children = f"SELECT 1 {child_keys}{' AND server = {server:String}' if server else ''} LIMIT 1"
    child_cond += f" AND (msgtime, server, msgid) IN (SELECT msgtime, server, msgid {child_keys})"
    children = result_rows_sql(
        "latest FINAL", f" WHERE {child_cond}{child_scope}", ("server", "sendunixtime", "msgid", "recipient")
    )
    lines = (
        "SELECT server, msgid, toUnixTimestamp64Milli(logunixtime) / 1000 AS logunixtime, line, line_id "
        f"FROM log_lines FINAL PREWHERE {key} WHERE {cond}{line_scope} ORDER BY server, logunixtime, line_id"
    )
    queries = {
        "attempts": (attempts, dict(params)),
        "has_children": (has_children, {k: v for k, v in params.items() if k in ("msgid", "server")}),
        "children": (children, dict(params)),
        "lines": (lines, dict(params)),
    }
    if scope is not None:
        # the arrival may come from a row the tenant does not see (its message is visible): its own read;
        # without a scope it is one of the attempts rows (arrival_from_attempts), so no second read
        queries["arrival"] = (
            f"SELECT {_arrival_select()} FROM events FINAL PREWHERE {key} WHERE {cond} AND is_deleted = 0 "
            "ORDER BY server, sendunixtime = 0, version DESC LIMIT 1 BY server",
            dict(params),
        )
    return queries


def arrival_from_attempts(columns: Sequence[str], rows: Sequence[Sequence]) -> tuple[list[str], list[tuple]]:
    """The `arrival` result from an unscoped `attempts` result (both read the message's events, tombstones
    excluded): per server the row with a known arrival time and the highest version, on ARRIVAL_FIELDS."""
    at = {c: i for i, c in enumerate(columns)}
    best: dict = {}
    for row in rows:
        key = (row[at["sendunixtime"]] in (0, None), -row[at["version"]])
        server = row[at["server"]]
        if server not in best or key < best[server][0]:
            best[server] = (key, row)
    return list(ARRIVAL_FIELDS), [
        tuple(row[at[c]] for c in ARRIVAL_FIELDS) for _, (_, row) in sorted(best.items())
    ]


def run_show(
    queries: dict[str, tuple[str, dict]], run: Callable[[str, dict], tuple[list[str], list]]
) -> dict[str, tuple[list[str], list]]:
    """Execute build_show's queries with `run(sql, params) -> (columns, rows)`: {name: (columns, rows)} for
    arrival, attempts, children and lines (the arrival derived from the attempts when it has no query; the
    children read only when `has_children` finds one)."""
    todo = dict(queries)
    out = {}
    if "has_children" in todo and not run(*todo.pop("has_children"))[1]:
        del todo["children"]
        out["children"] = (list(EVENT_FIELDS), [])
    out |= {name: run(sql, params) for name, (sql, params) in todo.items()}
    if "arrival" not in out:
        out["arrival"] = arrival_from_attempts(*out["attempts"])
    return {name: out[name] for name in ("arrival", "attempts", "children", "lines")}


__all__ = [
    "ARRIVAL_FIELDS",
    "MATCH_MODES",
    "ConditionBuilder",
    "ascii_lower",
    "complete_tokens",
    "scope_filter",
    "select_list",
    "SearchError",
    "Scope",
    "SearchFilters",
    "build_search",
    "RESULT_SETTINGS",
    "result_rows_sql",
    "build_show",
    "arrival_from_attempts",
    "run_show",
    "parse_sort",
    "parse_time",
    "scope_condition",
]
