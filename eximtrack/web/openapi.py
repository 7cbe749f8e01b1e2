"""The HTTP API's routes and parameters, declared once, and the OpenAPI 3.1 document generated from them.

Each `Operation` names a path, the query parameters it accepts (`Param`, built from the same lists the
query builders of eximtrack/web/query.py check), its answers and whether it needs a token. eximtrack/web/app.py
turns every operation into a route and refuses any parameter an operation does not declare, so the document
served at /api/v1/openapi.json is the app's own definition and cannot drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eximtrack.stats import COUNTERS
from eximtrack.stats import DEFAULT_LIMIT as STATS_DEFAULT_LIMIT
from eximtrack.stats import MAX_LIMIT as STATS_MAX_LIMIT
from eximtrack.web.query import DEFAULT_LIMIT, DELIVERY_TYPES, FILTER_COLUMNS, FLAGS, MAX_LIMIT, STATS_GROUPS
from schemas.records import EVENT_FIELDS, OUTCOMES

FILTER_HELP = {
    "user": "cPanel account of the sender",
    "domain": "domain of the sender",
    "email": "envelope sender (From Address)",
    "sender": "authenticated login or local user who sent",
    "senderip": "client IP of the arrival",
    "senderhost": "client host name of the arrival",
    "senderauth": "authenticator (dovecot_login …, localuser)",
    "spamscore": "spam score (as text)",
    "recipient": "envelope recipient",
    "deliveredto": "final address after routing/forwarding",
    "deliveryuser": "cPanel account of the recipient",
    "deliverydomain": "domain delivered to",
    "msgid": "Exim message id (case-sensitive)",
    "ip": "delivery host IP",
    "host": "delivery host name",
    "router": "Exim router",
    "transport": "Exim transport",
    "message": "result text or the remote server's reply",
    "server": "Exim server name (case-sensitive)",
    "subject": "Subject header",
    "message_id": "Message-ID header (with or without <>)",
}
FLAG_HELP = {
    "success": "Show Successes (success, filtered, archive). With none of success/defer/failure/inprogress "
    "given, all types are shown; with any given, only those set to 1 (all 0 is a 400).",
    "defer": "Show Deferred (defer)",
    "failure": "Show Failures (failure, rejected)",
    "inprogress": "Show In-Progress (inprogress)",
}
MATCH_SCHEMA = {"type": "string", "enum": ["eq", "begins", "contains"]}
FLAG_SCHEMA = {"type": "string", "enum": ["0", "1"]}


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict = field(default_factory=lambda: {"type": "string"})
    location: str = "query"  # or "path"

    def openapi(self) -> dict:
        return {
            "name": self.name,
            "in": self.location,
            "required": self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Operation:
    """One GET route of the API: what it accepts and answers."""

    path: str
    name: str  # the route's name (operationId)
    summary: str
    params: tuple[Param, ...] = ()
    responses: dict = field(default_factory=dict)
    public: bool = False  # no token needed

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.params if p.location == "query")


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict | None = None) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def filter_params() -> tuple[Param, ...]:
    """The conditions common to search, CSV and stats (query._conditions)."""
    params = [Param(k, FLAG_HELP[k], FLAG_SCHEMA) for k in FLAGS]
    params.append(Param("type", f"comma list of outcomes: {', '.join(OUTCOMES)}"))
    params.append(
        Param(
            "deliverytype",
            "all (default), remote or local delivery",
            {"type": "string", "enum": list(DELIVERY_TYPES)},
        )
    )
    for key in FILTER_COLUMNS:
        params.append(
            Param(key, f"{FILTER_HELP[key]}; matched per {key}_searchmatch / searchmatch (default eq)")
        )
        params.append(Param(f"{key}_searchmatch", f"how {key} matches", MATCH_SCHEMA))
    params.append(Param("all", "contains (default; all_searchmatch changes it) across the text fields"))
    params.append(Param("all_searchmatch", "how `all` matches", MATCH_SCHEMA))
    params.append(
        Param(
            "searchmatch",
            "default match mode for every filter key (eq, begins, contains; case-insensitive except msgid, server)",
            MATCH_SCHEMA,
        )
    )
    params.append(
        Param("startdate", "epoch seconds or ISO 8601 (naive = UTC); sent time, or action time when unknown")
    )
    params.append(Param("enddate", "epoch seconds or ISO 8601 (naive = UTC)"))
    params.append(Param("minsize", "minimum size in bytes", {"type": "integer", "minimum": 0}))
    params.append(Param("maxsize", "maximum size in bytes", {"type": "integer", "minimum": 0}))
    return tuple(params)


SORT = Param(
    "sort",
    f"FIELD, -FIELD, FIELD:asc or FIELD:desc; any of {', '.join(EVENT_FIELDS)} (default sendunixtime:desc)",
)
BAD = _error("bad parameter")
AUTH = _error("missing or unknown token")
TIMEOUT = _error("the query took longer than the server's request timeout")
BUSY = _error("every query worker is busy and the queue is full: retry later")
GUARDED = {"400": BAD, "401": AUTH, "503": BUSY, "504": TIMEOUT}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/api/v1/search",
        "search",
        "Delivery events (latest state per recipient), cursor-paged, no caps",
        (
            *filter_params(),
            SORT,
            Param("limit", f"rows per page, 1..{MAX_LIMIT} (default {DEFAULT_LIMIT})", {"type": "integer"}),
            Param("cursor", "next_cursor of the previous page (opaque; same sort and filters)"),
            Param("with_total", "1: also count all matching rows (total)", FLAG_SCHEMA),
        ),
        {
            "200": _json(
                "a page",
                {
                    "type": "object",
                    "properties": {
                        "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        "count": {"type": "integer"},
                        "next_cursor": {"type": ["string", "null"]},
                        "sort": {"type": "string"},
                        "limit": {"type": "integer"},
                        "total": {"type": "integer"},
                    },
                },
            ),
            **GUARDED,
        },
    ),
    Operation(
        "/api/v1/search.csv",
        "search_csv",
        "The whole search as CSV, streamed (no cap)",
        (*filter_params(), SORT),
        {"200": {"description": "CSV", "content": {"text/csv": {}}}, **GUARDED},
    ),
    Operation(
        "/api/v1/message/{server}/{msgid}",
        "message",
        "A message's timeline: arrival, every attempt per recipient, bounce/DSN children, raw log lines",
        (
            Param("server", "Exim server name", location="path"),
            Param("msgid", "Exim message id", location="path"),
        ),
        {
            "200": _json("{server, msgid, arrival, attempts, children, lines}"),
            "404": _error("no such message visible to this account"),
            **GUARDED,
        },
    ),
    Operation(
        "/api/v1/stats",
        "stats",
        "cPanel's SENDCOUNT, SUCCESSCOUNT, FAILCOUNT, DEFERCOUNT, DEFERFAILCOUNT, INPROGRESSCOUNT, TOTALSIZE "
        "(arrival-hour buckets)",
        (
            *filter_params(),
            Param("groupby", f"comma list of {', '.join(STATS_GROUPS)}, or none (default server)"),
            Param(
                "sort",
                f"the groups with most of this counter first: {', '.join(COUNTERS)} (default SENDCOUNT)",
            ),
            Param(
                "limit",
                f"at most this many groups, 1..{STATS_MAX_LIMIT} (default {STATS_DEFAULT_LIMIT})",
                {"type": "integer", "minimum": 1, "maximum": STATS_MAX_LIMIT},
            ),
        ),
        {"200": _json("{groupby, rows, more: whether groups beyond the limit exist}"), **GUARDED},
    ),
    Operation(
        "/api/v1/servers",
        "servers",
        "servers with rows this account may see",
        (),
        {"200": _json("{servers}"), **GUARDED},
    ),
    Operation(
        "/api/v1/alerts",
        "alerts",
        "fleet alerts (eximtrack alerts run) about what this account may see, newest first",
        (
            Param("state", "firing (default), resolved or all"),
            Param("limit", "1..1000 (default 100)", {"type": "integer"}),
        ),
        {"200": _json("{alerts}"), **GUARDED},
    ),
    Operation(
        "/api/v1/whoami",
        "whoami",
        "the token's account and the store's retention",
        (),
        {"200": _json("{id, name, role, user|reseller|address, retention_days}"), "400": BAD, "401": AUTH},
    ),
    Operation(
        "/api/v1/openapi.json", "openapi", "this document", (), {"200": _json("OpenAPI 3.1")}, public=True
    ),
    Operation(
        "/healthz", "healthz", "liveness: the process answers", (), {"200": _json("{status}")}, public=True
    ),
    Operation(
        "/readyz",
        "readyz",
        "readiness: the store answers a query",
        (),
        {"200": _json("{status}"), "503": _json("{status, error}")},
        public=True,
    ),
    Operation(
        "/metrics",
        "metrics",
        "Prometheus metrics of this process (requests by route and status, their latency, query workers)",
        (),
        {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
        public=True,
    ),
)


def document(operations: tuple[Operation, ...] = OPERATIONS) -> dict:
    """The OpenAPI 3.1 document of `operations`."""
    paths: dict = {}
    for op in operations:
        get: dict = {"operationId": op.name, "summary": op.summary, "responses": op.responses}
        if op.params:
            get["parameters"] = [p.openapi() for p in op.params]
        if op.public:
            get["security"] = []
        paths[op.path] = {"get": get}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eximtrack Track Delivery API",
            "version": "1",
            "description": "cPanel's Track Delivery (EmailTrack::search / stats) for a fleet of Exim servers. "
            "Every /api/v1 endpoint except this document needs `Authorization: Bearer <token>`; the token's "
            "account (root, reseller, cPanel user, webmail address) limits every answer to the rows it may see. "
            "Every endpoint answers GET and HEAD; a parameter an endpoint does not list is a 400.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Event": {"type": "object", "properties": {name: {} for name in EVENT_FIELDS}},
            },
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


__all__ = ["OPERATIONS", "Operation", "Param", "document", "filter_params"]
