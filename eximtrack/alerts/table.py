"""The `alerts` table (migration 015): the open alerts and last resolutions an evaluation starts from, and
the new versions it writes. The row's columns are the alert's finding, flattened."""

from __future__ import annotations

from datetime import datetime

from eximtrack.alerts.evaluate import Finding
from eximtrack.alerts.state import FIRING, RESOLVED, Alert
from eximtrack.stats_snapshots import as_utc

COLUMNS = (
    "alert_id", "rule", "kind", "key", "server", "owner", "user", "email", "deliverydomain", "state",
    "started_at", "updated_at", "resolved_at", "value", "baseline", "threshold", "summary", "reasons",
    "examples", "link", "version",
)  # fmt: skip


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def row(alert: Alert) -> list:
    f = alert.finding
    return [
        alert.alert_id, f.rule, f.kind, f.key, f.server, f.owner, f.user, f.sender, f.deliverydomain,
        alert.state, alert.started_at, alert.updated_at, alert.resolved_at, float(f.value), float(f.baseline),
        float(f.threshold), f.summary, list(f.reasons), list(f.examples), f.link, alert.version,
    ]  # fmt: skip


def from_row(r: dict) -> Alert:
    finding = Finding(
        r["rule"], r["kind"], r["key"], r["value"], r["baseline"], r["threshold"], r["summary"],
        server=r["server"], owner=r["owner"], user=r["user"], sender=r["email"],
        deliverydomain=r["deliverydomain"], reasons=tuple(r["reasons"]), examples=tuple(r["examples"]),
        link=r["link"],
    )  # fmt: skip
    return Alert(
        r["alert_id"],
        finding,
        r["state"],
        _utc(r["started_at"]),
        _utc(r["updated_at"]),
        _utc(r["resolved_at"]),
    )


STATES = ("firing", "resolved", "all")
MAX_LIST = 1000


def list_query(state: str = FIRING, limit: int = 100, scope=None) -> tuple[str, dict]:
    """The alerts in `state` (firing, resolved or all), newest first, that `scope` (eximtrack/search.py
    Scope; None = every alert) may see: an account the alerts about it, a reseller about its accounts, a
    webmail login about its address. Server-wide alerts (a server, a destination) are the provider's."""
    from eximtrack.search import scope_condition

    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    if not 1 <= int(limit) <= MAX_LIST:
        raise ValueError(f"limit must be between 1 and {MAX_LIST}")
    params: dict = {}
    conds = [] if state == "all" else [f"state = '{state}'"]
    cond = scope_condition(scope, params, sender_only=True)
    if cond:
        conds.append(cond)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    sql = f"SELECT {', '.join(COLUMNS)} FROM alerts FINAL{where} ORDER BY updated_at DESC, alert_id LIMIT {int(limit)}"
    return sql, params


def open_alerts(store) -> list[Alert]:
    rows = store.query_dicts(f"SELECT {', '.join(COLUMNS)} FROM alerts FINAL WHERE state = '{FIRING}'")
    return [from_row(r) for r in rows]


def last_resolved(store, since: datetime) -> dict[tuple[str, str], datetime]:
    """{(rule, key): when it last resolved} for resolutions after `since` (the longest cool-down back)."""
    rows = store.query(
        f"SELECT rule, key, max(resolved_at) FROM alerts FINAL WHERE state = '{RESOLVED}' "
        "AND resolved_at >= {s:DateTime64(3, 'UTC')} GROUP BY rule, key",
        {"s": since},
    ).result_rows
    return {(rule, key): _utc(at) for rule, key, at in rows}


def write(store, alerts: tuple[Alert, ...]) -> None:
    if alerts:
        store.client.insert("alerts", [row(a) for a in alerts], column_names=list(COLUMNS))


__all__ = ["COLUMNS", "STATES", "from_row", "last_resolved", "list_query", "open_alerts", "row", "write"]
