"""The OpenAPI 3.1 document served at /api/v1/openapi.json (built from the same parameter lists the API
checks, so the two cannot drift apart)."""

from __future__ import annotations

from eximtrack.stats import COUNTERS
from eximtrack.stats import DEFAULT_LIMIT as STATS_DEFAULT_LIMIT
from eximtrack.stats import MAX_LIMIT as STATS_MAX_LIMIT
from eximtrack.web.query import DELIVERY_TYPES, FILTER_COLUMNS, FLAGS, MAX_LIMIT, STATS_GROUPS
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


def _q(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _common_params() -> list[dict]:
    params = [_q(k, "", {"type": "string", "enum": ["0", "1"]}) for k in FLAGS]
    params[0]["description"] = (
        "Show Successes (success, filtered, archive). With none of success/defer/failure/inprogress given, "
        "all types are shown; with any given, only those set to 1 (all 0 is a 400)."
    )
    params[1]["description"] = "Show Deferred (defer)"
    params[2]["description"] = "Show Failures (failure, rejected)"
    params[3]["description"] = "Show In-Progress (inprogress)"
    params.append(_q("type", f"comma list of outcomes: {', '.join(OUTCOMES)}"))
    params.append(
        _q(
            "deliverytype",
            "all (default), remote or local delivery",
            {"type": "string", "enum": list(DELIVERY_TYPES)},
        )
    )
    for key, help_text in FILTER_HELP.items():
        assert key in FILTER_COLUMNS
        params.append(_q(key, f"{help_text}; matched per {key}_searchmatch / searchmatch (default eq)"))
        params.append(
            _q(
                f"{key}_searchmatch",
                f"how {key} matches",
                {"type": "string", "enum": ["eq", "begins", "contains"]},
            )
        )
    params.append(_q("all", "contains (default; all_searchmatch changes it) across the text fields"))
    params.append(
        _q("all_searchmatch", "how `all` matches", {"type": "string", "enum": ["eq", "begins", "contains"]})
    )
    params.append(
        _q(
            "searchmatch",
            "default match mode for every filter key (eq, begins, contains; case-insensitive except msgid, server)",
            {"type": "string", "enum": ["eq", "begins", "contains"]},
        )
    )
    params.append(
        _q("startdate", "epoch seconds or ISO 8601 (naive = UTC); sent time, or action time when unknown")
    )
    params.append(_q("enddate", "epoch seconds or ISO 8601 (naive = UTC)"))
    params.append(_q("minsize", "minimum size in bytes", {"type": "integer", "minimum": 0}))
    params.append(_q("maxsize", "maximum size in bytes", {"type": "integer", "minimum": 0}))
    return params


_SORT = _q(
    "sort",
    f"FIELD, -FIELD, FIELD:asc or FIELD:desc; any of {', '.join(EVENT_FIELDS)} (default sendunixtime:desc)",
)
_ERR = {
    "description": "bad parameter",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_AUTH = {
    "description": "missing or unknown token",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def document() -> dict:
    event_props = {name: {} for name in EVENT_FIELDS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "eximtrack Track Delivery API",
            "version": "1",
            "description": "cPanel's Track Delivery (EmailTrack::search / stats) for a fleet of Exim servers. "
            "Every endpoint except this document needs `Authorization: Bearer <token>`; the token's account "
            "(root, reseller, cPanel user, webmail address) limits every answer to the rows it may see.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "Event": {"type": "object", "properties": event_props},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/search": {
                "get": {
                    "summary": "Delivery events (latest state per recipient), cursor-paged, no caps",
                    "parameters": [
                        *_common_params(),
                        _SORT,
                        _q("limit", f"rows per page, 1..{MAX_LIMIT} (default 100)", {"type": "integer"}),
                        _q("cursor", "next_cursor of the previous page (opaque; same sort and filters)"),
                        _q(
                            "with_total",
                            "1: also count all matching rows (total)",
                            {"type": "string", "enum": ["0", "1"]},
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "a page",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "rows": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Event"},
                                            },
                                            "count": {"type": "integer"},
                                            "next_cursor": {"type": ["string", "null"]},
                                            "sort": {"type": "string"},
                                            "total": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        "400": _ERR,
                        "401": _AUTH,
                    },
                }
            },
            "/api/v1/search.csv": {
                "get": {
                    "summary": "The whole search as CSV, streamed (no cap)",
                    "parameters": [*_common_params(), _SORT],
                    "responses": {
                        "200": {"description": "CSV", "content": {"text/csv": {}}},
                        "400": _ERR,
                        "401": _AUTH,
                    },
                }
            },
            "/api/v1/message/{server}/{msgid}": {
                "get": {
                    "summary": "A message's timeline: arrival, every attempt per recipient, bounce/DSN children, raw log lines",
                    "parameters": [
                        {"name": "server", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "msgid", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "{arrival, attempts, children, lines}"},
                        "404": {"description": "no such message visible to this account"},
                        "401": _AUTH,
                    },
                }
            },
            "/api/v1/stats": {
                "get": {
                    "summary": "cPanel's SENDCOUNT, SUCCESSCOUNT, FAILCOUNT, DEFERCOUNT, DEFERFAILCOUNT, INPROGRESSCOUNT, TOTALSIZE (arrival-hour buckets)",
                    "parameters": [
                        *_common_params(),
                        _q("groupby", f"comma list of {', '.join(STATS_GROUPS)}, or none (default server)"),
                        _q(
                            "sort",
                            f"the groups with most of this counter first: {', '.join(COUNTERS)} (default SENDCOUNT)",
                        ),
                        _q(
                            "limit",
                            f"at most this many groups, 1..{STATS_MAX_LIMIT} (default {STATS_DEFAULT_LIMIT})",
                            {"type": "integer", "minimum": 1, "maximum": STATS_MAX_LIMIT},
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "{groupby, rows, more: whether groups beyond the limit exist}"
                        },
                        "400": _ERR,
                        "401": _AUTH,
                    },
                }
            },
            "/api/v1/servers": {
                "get": {
                    "summary": "servers with rows this account may see",
                    "responses": {"200": {"description": "{servers}"}},
                }
            },
            "/api/v1/whoami": {
                "get": {"summary": "the token's account", "responses": {"200": {"description": "account"}}}
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "this document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
        },
    }
