"""Dashboards in one place: the panels' SQL, the Grafana dashboards generated from it, and the same panels
rendered as PNG with matplotlib.

    eximtrack report --out DIR [--since … --until …] [--server S] [--domain D] [--user U]   # PNG + index.html
    eximtrack dashboards --out deploy/grafana/dashboards                                   # Grafana JSON

Each `Panel` holds ONE SQL text over the aggregated views (schemas/clickhouse/003_aggregates.sql; never the
raw events) with two placeholders that are rendered per target:

    $RANGE        the time range on the `hour` column: Grafana `hour >= toStartOfHour($__fromTime) AND
                  hour <= $__toTime`; the report binds {t_from:DateTime('UTC')} / {t_to:DateTime('UTC')}
    $VAR(name)    a dashboard variable: Grafana '${name}'; the report binds {v_name:String}

The committed JSON in deploy/grafana/dashboards is checked against `grafana_dashboard()` by
tests/views/test_report.py, so Grafana and the PNG report can never drift apart.
Result shapes: "timeseries" = first column `time`, then either one column per series (wide) or
(`series`, `value`) columns (long, pivoted); "bar" = label column then value column(s); "table" = as is.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eximtrack.hourly_read import classified_hours_sql
from eximtrack.stats_snapshots import HORIZON_SQL, MAIL, REASONS, Snapshotted

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "eximtrack-clickhouse"}
_VAR = re.compile(r"\$VAR\((\w+)\)")

# mail_hourly_all (migration 005): plain numbers per key, summable (rolled-up hours + finalised recent states)
SUCCESS = "sum(success + filtered + archive)"
DEFERRED = "sum(deferred)"
INPROGRESS = "sum(inprogress)"
FAILED = "sum(failure + rejected)"


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    kind: str  # timeseries | bar | table
    sql: str
    description: str = ""
    unit: str = ""
    threshold: float | None = None  # a line on the chart (Grafana: threshold style "line"; the default value)
    threshold_sql: str | None = None  # the report reads the current value from abuse_thresholds


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    variables: tuple[tuple[str, str], ...] = ()  # (name, SQL listing the values)
    description: str = ""
    tags: tuple[str, ...] = field(default=("eximtrack",))


def _hours_of_range(table: Snapshotted) -> str:
    """The hours of the range as `<table>_all` classifies every stored hour: (h: hour, n: insert counter,
    w: smallest writer of a snapshot recorded at that counter, or 0)."""
    hours = classified_hours_sql("$RANGE", table)
    return f"(SELECT x.1 AS h, x.2 AS n, x.3 AS w FROM (SELECT arrayJoin({hours}) AS x))"


_HOURS_OF_RANGE = _hours_of_range(MAIL)
_REASON_HOURS_OF_RANGE = _hours_of_range(REASONS)


def _fleet_hourly_sql(counters: tuple[str, ...]) -> str:
    """`mail_hourly_all` summed per hour over the whole fleet, for the fleet's per-hour panels: the rule of
    the view (totals before the rollup horizon; from it on, each hour's recorded snapshot at its current
    insert counter, else its merged states), with the hours classified for the panel's range only and the
    snapshot branch summed per (hour, seen, writer, outbound), which the `by_hour` projection answers
    (migration 010) instead of the per-sender rows: about half the time at 1e8 (docs/BENCHMARKS.md)."""
    sums = ", ".join(f"sum({c}) AS {c}" for c in counters)
    return f"""(SELECT hour, {sums} FROM mail_hourly_totals FINAL WHERE $RANGE AND hour < {HORIZON_SQL} GROUP BY hour
    UNION ALL
    SELECT hour, {sums} FROM mail_hourly_snap WHERE $RANGE AND hour >= {HORIZON_SQL}
        AND (hour, seen, writer) IN (SELECT h, n, w FROM {_HOURS_OF_RANGE} WHERE w != 0)
        GROUP BY hour, seen, writer, outbound
    UNION ALL
    SELECT hour, {sums} FROM mail_hourly_v WHERE $RANGE AND hour >= {HORIZON_SQL}
        AND hour IN (SELECT h FROM {_HOURS_OF_RANGE} WHERE w = 0)
        GROUP BY hour)"""


# The deferrals of the range as (template, attempts) rows, for the top deferral reasons: `reasons_hourly_all`'s
# rule (each hour's snapshot recorded at its current insert counter, else its merged states) with the hours
# classified for the panel's range only, and the snapshot branch summed per (hour, seen, writer, type,
# template), which the `by_template` projection of `reasons_hourly_snap` answers (migration 014) instead of the
# per-key rows. Since migration 032 groups destinations with digits in their names, a day's deferrals have tens
# of templates per hour: at 1e8 events the projection holds ~1k rows of a day where the table holds ~420k
# (the panel 35.9 -> 27.5 ms p50 in alternating rounds, docs/BENCHMARKS.md). The dirty hours are merged per
# key, as the view merges them.
_DEFERRALS_BY_TEMPLATE = f"""(SELECT template, sum(attempts) AS attempts FROM reasons_hourly_snap
        WHERE $RANGE AND type = 'defer' AND (hour, seen, writer) IN (SELECT h, n, w FROM {_REASON_HOURS_OF_RANGE} WHERE w != 0)
        GROUP BY hour, seen, writer, type, template
    UNION ALL
    SELECT template, uniqExactMerge(attempts) AS attempts FROM reasons_hourly
        WHERE $RANGE AND type = 'defer' AND hour IN (SELECT h FROM {_REASON_HOURS_OF_RANGE} WHERE w = 0)
        GROUP BY hour, server, type, deliverydomain, host, ip, template)"""


def _top_series_sql(source: str, series: str, value: str, top: int = 5) -> str:
    """A per-hour chart of the `top` series with the largest sums of `value` over the range (ties: by
    name), from one read of `source` (a view and its condition): each series' sum and its (hour, value)
    rows in one aggregation, the top ones kept, their rows unfolded and summed per hour. A top list taken
    by a second read (`series IN (SELECT … LIMIT 5)`) classified the view's hours and merged the dirty ones
    twice."""
    return f"""SELECT point.1 AS time, series, sum(point.2) AS value
FROM (
    SELECT {series} AS series, sum({value}) AS total, groupArray((hour, {value})) AS points
    FROM {source}
    GROUP BY series
    ORDER BY total DESC, series
    LIMIT {top})
ARRAY JOIN points AS point
GROUP BY time, series
ORDER BY time, series"""


def _hourly_source(counters: tuple[str, ...], where: str = "") -> str:
    """The source of a per-hour panel: the fleet's (no filter) from _fleet_hourly_sql, one server's or
    domain's (`where`) from `mail_hourly_all`, whose rows of one key are few."""
    if not where:
        return _fleet_hourly_sql(counters)
    return f"mail_hourly_all\nWHERE $RANGE AND {where}"


def _outcomes_sql(where: str = "") -> str:
    source = _hourly_source(
        ("success", "filtered", "archive", "deferred", "failure", "rejected", "inprogress"), where
    )
    return f"""SELECT hour AS time,
    {SUCCESS} AS delivered,
    {DEFERRED} AS deferred,
    {FAILED} AS failed,
    {INPROGRESS} AS in_progress
FROM {source}
GROUP BY time
ORDER BY time"""


def _received_sql(where: str = "") -> str:
    source = _hourly_source(("messages", "recipients"), where)
    return f"""SELECT hour AS time,
    sum(messages) AS messages,
    sum(recipients) AS recipients
FROM {source}
GROUP BY time
ORDER BY time"""


# The fleet's remote delivery delay per hour: from the hourly snapshots of its quantiles (migration 019,
# delays_fleet_all: one row per hour, type and transport_is_remote), the merged states of hours written since
DELAY_SQL = """SELECT hour AS time,
    delay_seconds[1] AS p50_seconds, delay_seconds[2] AS p90_seconds, delay_seconds[3] AS p99_seconds
FROM delays_fleet_all
WHERE $RANGE AND type = 'success' AND transport_is_remote = 1
ORDER BY time"""


FLEET = Dashboard(
    "eximtrack-fleet",
    "eximtrack: fleet overview",
    (
        Panel(
            "received",
            "Mail received per hour",
            "timeseries",
            _received_sql(),
            "Distinct messages with an arrival line, and their recipients, by arrival hour.",
        ),
        Panel(
            "outcomes",
            "Recipients by current outcome (arrival hour)",
            "timeseries",
            _outcomes_sql(),
            "Each recipient row counted once, in its current state: a row that went in progress -> deferred -> "
            "delivered counts once, as delivered.",
        ),
        Panel(
            "servers",
            "Servers: mail received in the range",
            "bar",
            """SELECT server,
    sum(messages) AS messages
FROM mail_hourly_all
WHERE $RANGE
GROUP BY server
ORDER BY messages DESC
LIMIT 20""",
        ),
        Panel(
            "delay",
            "Remote delivery delay (arrival -> delivered), quantiles",
            "timeseries",
            DELAY_SQL,
            unit="s",
        ),
    ),
)

SERVER = Dashboard(
    "eximtrack-server",
    "eximtrack: one server",
    (
        Panel("received", "Mail received per hour", "timeseries", _received_sql("server = $VAR(server)")),
        Panel(
            "outcomes", "Recipients by current outcome", "timeseries", _outcomes_sql("server = $VAR(server)")
        ),
        Panel(
            "destinations",
            "Slowest destination domains (p90 delay, remote success)",
            "bar",
            """SELECT deliverydomain,
    toFloat64(bitShiftRight(quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delay_ms)[2], 32)) / 1000 AS p90_seconds
FROM delays_hourly
WHERE $RANGE AND server = $VAR(server) AND type = 'success'
GROUP BY deliverydomain
ORDER BY p90_seconds DESC
LIMIT 15""",
            unit="s",
        ),
        Panel(
            "accounts",
            "Accounts on this server (cPanel stats)",
            "table",
            f"""SELECT user,
    sum(messages) AS SENDCOUNT,
    {SUCCESS} AS SUCCESSCOUNT,
    {FAILED} AS FAILCOUNT,
    {DEFERRED} AS DEFERCOUNT,
    {INPROGRESS} AS INPROGRESSCOUNT,
    sum(bytes) AS TOTALSIZE
FROM mail_hourly_all
WHERE $RANGE AND server = $VAR(server)
GROUP BY user
ORDER BY SENDCOUNT DESC
LIMIT 25""",
        ),
    ),
    variables=(("server", "SELECT DISTINCT server FROM activity_hourly ORDER BY server"),),
)

DOMAIN = Dashboard(
    "eximtrack-domain",
    "eximtrack: one sender domain / account",
    (
        Panel(
            "received",
            "Mail received per hour from the domain",
            "timeseries",
            _received_sql("domain = $VAR(domain)"),
        ),
        Panel(
            "outcomes", "Recipients by current outcome", "timeseries", _outcomes_sql("domain = $VAR(domain)")
        ),
        Panel(
            "senders",
            "Senders of the domain",
            "table",
            f"""SELECT user, sender,
    sum(messages) AS messages,
    sum(recipients) AS recipients,
    {FAILED} AS failed,
    {DEFERRED} AS deferred
FROM mail_hourly_all
WHERE $RANGE AND domain = $VAR(domain)
GROUP BY user, sender
ORDER BY messages DESC
LIMIT 25""",
        ),
    ),
    variables=(("domain", "SELECT DISTINCT domain FROM mail_hourly_all WHERE domain != '' ORDER BY domain"),),
)

REASONS = Dashboard(
    "eximtrack-reasons",
    "eximtrack: deferral and failure reasons",
    (
        Panel(
            "defer_reasons",
            "Top deferral reasons (templates)",
            "bar",
            f"""SELECT template,
    sum(attempts) AS attempts
FROM {_DEFERRALS_BY_TEMPLATE}
GROUP BY template
ORDER BY attempts DESC, template
LIMIT 12""",
        ),
        Panel(
            "failure_reasons",
            "Top failure reasons (templates)",
            "bar",
            """SELECT template,
    uniqExactMerge(recipients) AS recipients
FROM reasons_hourly
WHERE $RANGE AND type = 'failure'
GROUP BY template
ORDER BY recipients DESC
LIMIT 12""",
        ),
        Panel(
            "defer_domains",
            "Deferral attempts per destination domain (top 5)",
            "timeseries",
            # (not _top_series_sql's one read: with the many destination domains of 24 hours at 1e8 events it
            # measured no faster than this second read for the top list; docs/BENCHMARKS.md)
            """SELECT hour AS time,
    deliverydomain AS series,
    sum(attempts) AS value
FROM reasons_hourly_all
WHERE $RANGE AND type = 'defer' AND deliverydomain IN (
    SELECT deliverydomain FROM reasons_hourly_all WHERE $RANGE AND type = 'defer'
    GROUP BY deliverydomain ORDER BY sum(attempts) DESC, deliverydomain LIMIT 5)
GROUP BY time, series
ORDER BY time, series""",
        ),
        Panel(
            "bouncing_domains",
            "Top bouncing destination domains",
            "bar",
            """SELECT deliverydomain,
    uniqExactMerge(recipients) AS failed_recipients
FROM reasons_hourly
WHERE $RANGE AND type = 'failure'
GROUP BY deliverydomain
ORDER BY failed_recipients DESC
LIMIT 12""",
        ),
    ),
)

REJECTIONS = Dashboard(
    "eximtrack-rejections",
    "eximtrack: SMTP-time rejections",
    (
        Panel(
            "per_hour",
            "Rejections per hour by reason",
            "timeseries",
            """SELECT hour AS time,
    template AS series,
    uniqExactMerge(rejections) AS value
FROM rejections_hourly
WHERE $RANGE
GROUP BY time, series
ORDER BY time, series""",
        ),
        Panel(
            "client_ips",
            "Top rejected client IPs",
            "bar",
            """SELECT senderip,
    uniqExactMerge(rejections) AS rejections
FROM rejections_hourly
WHERE $RANGE
GROUP BY senderip
ORDER BY rejections DESC
LIMIT 15""",
        ),
        Panel(
            "reasons",
            "Rejection reasons",
            "table",
            """SELECT template,
    uniqExactMerge(rejections) AS rejections,
    uniqExactMerge(senders) AS senders,
    uniqExact(senderip) AS client_ips
FROM rejections_hourly
WHERE $RANGE
GROUP BY template
ORDER BY rejections DESC
LIMIT 25""",
        ),
    ),
)

ABUSE = Dashboard(
    "eximtrack-abuse",
    "eximtrack: outbound abuse signals",
    (
        Panel(
            "flagged",
            "Senders over a threshold (per hour)",
            "table",
            """SELECT hour, server, user, sender,
    messages, unique_recipients, defer_fail_rows, defer_fail_percent, over_recipients, over_defer_fail
FROM abuse_senders_hourly
WHERE $RANGE AND (over_recipients = 1 OR over_defer_fail = 1)
ORDER BY hour DESC, unique_recipients DESC
LIMIT 50""",
            "Thresholds live in the table abuse_thresholds (INSERT a new value to change one).",
        ),
        Panel(
            "top_recipients",
            "Outbound senders: most unique recipients in one hour",
            "bar",
            # each sender's worst hour, as max() per sender would give it, without a hash table of every
            # sender of the range: rows by value, the first of each sender (LIMIT BY), the first 15 senders
            # (at 1e8 events 72-74 -> 57-58 ms p50, docs/BENCHMARKS.md); the numbers of
            # abuse_senders_hourly, whose unique_recipients is the rcpt_addresses of an outbound key
            """SELECT
    if(sender != '', sender, user) AS sender_or_user,
    rcpt_addresses AS max_unique_recipients_per_hour
FROM mail_hourly_all
WHERE $RANGE AND outbound = 1
ORDER BY max_unique_recipients_per_hour DESC
LIMIT 1 BY sender_or_user
LIMIT 15""",
            threshold=100,
            threshold_sql="SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_unique_recipients_per_hour'",
        ),
        Panel(
            "defer_fail",
            "Outbound senders: defer+fail percentage (worst hour, >= 5 rows)",
            "bar",
            """SELECT
    if(sender != '', sender, user) AS sender_or_user,
    max(defer_fail_percent) AS worst_defer_fail_percent
FROM abuse_senders_hourly
WHERE $RANGE AND rows >= min_defer_fail_rows
GROUP BY sender_or_user
ORDER BY worst_defer_fail_percent DESC
LIMIT 15""",
            unit="percent",
            threshold=50,
            threshold_sql="SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_defer_fail_percent'",
        ),
        Panel(
            "domains",
            "Outbound messages per hour, top sending domains",
            "timeseries",
            _top_series_sql(
                "mail_hourly_all\n            WHERE $RANGE AND outbound = 1", "domain", "messages"
            ),
            "Authenticated outbound messages per hour of the five domains that sent the most in the range "
            "(the numbers of abuse_domains_hourly).",
            threshold=500,
            threshold_sql="SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'domain_messages_per_hour'",
        ),
    ),
)

PIPELINE = Dashboard(
    "eximtrack-pipeline",
    "eximtrack: pipeline health",
    (
        Panel(
            "freshness",
            "Newest event per server (lag behind the newest overall)",
            "table",
            """SELECT server,
    max(last_event) AS newest_event,
    dateDiff('second', newest_event, (SELECT max(last_event) FROM activity_hourly)) AS behind_seconds
FROM activity_hourly
WHERE $RANGE
GROUP BY server
ORDER BY behind_seconds DESC, server""",
        ),
        Panel(
            "events",
            "Events stored per hour by type",
            "timeseries",
            """SELECT hour AS time,
    type AS series,
    sum(events) AS value
FROM activity_hourly_all
WHERE $RANGE
GROUP BY time, series
ORDER BY time, series""",
        ),
        Panel(
            "unclassified",
            "Unclassified log lines per hour (rejects table)",
            "timeseries",
            """SELECT hour AS time,
    reason AS series,
    uniqExactMerge(lines) AS value
FROM unclassified_hourly
WHERE $RANGE
GROUP BY time, series
ORDER BY time, series""",
        ),
    ),
    description="From the store's own activity tables; the workers' Prometheus /metrics are not in ClickHouse.",
)

DASHBOARDS: tuple[Dashboard, ...] = (FLEET, SERVER, DOMAIN, REASONS, REJECTIONS, ABUSE, PIPELINE)


# -- rendering the SQL -------------------------------------------------------------------------------------


def grafana_sql(sql: str) -> str:
    sql = sql.replace("$RANGE", "hour >= toStartOfHour($__fromTime) AND hour <= $__toTime")
    return _VAR.sub(lambda m: "'${" + m.group(1) + "}'", sql)


def report_sql(sql: str) -> str:
    sql = sql.replace("$RANGE", "hour >= {t_from:DateTime('UTC')} AND hour < {t_to:DateTime('UTC')}")
    return _VAR.sub(lambda m: "{v_" + m.group(1) + ":String}", sql)


def variables_of(sql: str) -> list[str]:
    return sorted(set(_VAR.findall(sql)))


# -- Grafana -----------------------------------------------------------------------------------------------


def _grafana_panel(panel: Panel, n: int) -> dict:
    width = 12
    grid = {"h": 9, "w": width, "x": (n % 2) * width, "y": (n // 2) * 9}
    target = {
        "refId": "A",
        "datasource": DATASOURCE,
        "editorType": "sql",
        "rawSql": grafana_sql(panel.sql),
        # the plugin's (v4) QueryType: 'table' | 'logs' | 'timeSeries' | 'traces' (src/types/sql.ts)
        "queryType": "timeSeries" if panel.kind == "timeseries" else "table",
    }
    defaults: dict = {"unit": panel.unit or "short"}
    if panel.threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": panel.threshold}],
        }
        defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
    kind = {"timeseries": "timeseries", "bar": "barchart", "table": "table"}[panel.kind]
    out = {
        "id": n + 1,
        "type": kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": [target],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
    }
    if panel.kind == "bar":
        out["options"].update({"orientation": "horizontal", "xTickLabelRotation": 0, "showValue": "auto"})
    if panel.kind == "timeseries" and "series" in panel.sql:
        # long format (time, series, value) -> one line per series
        out["transformations"] = [{"id": "prepareTimeSeries", "options": {"format": "multi"}}]
    if panel.threshold_sql:
        out["description"] = (
            panel.description + " Threshold line: the default of abuse_thresholds; change both together."
        ).strip()
    return out


def grafana_dashboard(d: Dashboard) -> dict:
    templating = []
    for name, sql in d.variables:
        templating.append(
            {
                "name": name,
                "label": name,
                "type": "query",
                "datasource": DATASOURCE,
                "query": sql,
                "definition": sql,
                "refresh": 2,
                "includeAll": False,
                "multi": False,
                "sort": 1,
            }
        )
    return dashboard_envelope(
        d.uid,
        d.title,
        d.description,
        d.tags,
        [_grafana_panel(p, i) for i, p in enumerate(d.panels)],
        templating,
    )


def dashboard_envelope(
    uid: str,
    title: str,
    description: str,
    tags,
    panels: list[dict],
    templating: list[dict] | None = None,
    *,
    refresh: str = "5m",
    since: str = "now-7d",
) -> dict:
    """A Grafana dashboard's JSON around its panels (also the operations dashboard's, ops_dashboard.py)."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(tags),
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": refresh,
        "time": {"from": since, "to": "now"},
        "templating": {"list": list(templating or [])},
        "panels": panels,
    }


def dashboard_json(d: Dashboard) -> str:
    return json.dumps(grafana_dashboard(d), indent=2, ensure_ascii=False) + "\n"


def write_dashboards(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in DASHBOARDS:
        path = out / f"{d.uid}.json"
        path.write_text(dashboard_json(d), encoding="utf-8")
        paths.append(path)
    return paths


# -- the PNG report ----------------------------------------------------------------------------------------


def default_range(store) -> tuple[datetime, datetime]:
    """The 7 days up to the newest hour in the store (or up to now when it is empty)."""
    newest = store.query("SELECT max(hour) FROM activity_hourly").result_rows[0][0]
    if newest is None or newest.year < 2000:
        newest = datetime.now(UTC)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    until = newest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - timedelta(days=7), until


def pick_variables(store, t_from: datetime, t_to: datetime, given: dict[str, str | None]) -> dict[str, str]:
    """The variables' values: as given, else the busiest server / sender domain of the range."""
    out = {k: v for k, v in given.items() if v}
    params = {"t_from": t_from, "t_to": t_to}
    pick = {
        "server": "SELECT server FROM mail_hourly_all WHERE $RANGE GROUP BY server ORDER BY sum(messages) DESC LIMIT 1",
        "domain": "SELECT domain FROM mail_hourly_all WHERE $RANGE AND domain != '' GROUP BY domain "
        "ORDER BY sum(messages) DESC LIMIT 1",
    }
    for name, sql in pick.items():
        if name not in out:
            rows = store.query(report_sql(sql), params).result_rows
            out[name] = rows[0][0] if rows else ""
    return out


def run_panel(store, panel: Panel, t_from: datetime, t_to: datetime, variables: dict[str, str]):
    params = {"t_from": t_from, "t_to": t_to}
    for name in variables_of(panel.sql):
        params[f"v_{name}"] = variables.get(name, "")
    result = store.query(report_sql(panel.sql), params, readonly=True)
    threshold = panel.threshold
    if panel.threshold_sql:
        rows = store.query(panel.threshold_sql, readonly=True).result_rows
        threshold = rows[0][0] if rows and rows[0][0] is not None else None
    return list(result.column_names), result.result_rows, threshold


def render_panel(panel: Panel, columns, rows, threshold, path: Path, subtitle: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5.2), dpi=100)
    ax.set_title(panel.title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    if not rows:
        ax.text(0.5, 0.5, "no data in this range", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    elif panel.kind == "timeseries":
        _plot_timeseries(ax, columns, rows)
        _pad_time_axis(ax, rows, columns)
        if threshold is not None:
            ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        ax.set_ylabel(panel.unit or "count")
        fig.autofmt_xdate()
    elif panel.kind == "bar":
        labels = [_wrap(str(r[0]) or "(empty)") for r in rows][::-1]
        values = [float(r[1] or 0) for r in rows][::-1]
        ax.barh(range(len(values)), values, color="#3274d9")
        ax.set_yticks(range(len(values)), labels, fontsize=6.5)
        ax.set_xlabel(columns[1] + (f" ({panel.unit})" if panel.unit else ""))
        if threshold is not None:
            ax.axvline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
            ax.legend(fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_axis_off()
        cells = [[_short(_cell(v), 40) for v in r] for r in rows[:20]]
        table = ax.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        table.auto_set_column_width(list(range(len(columns))))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_timeseries(ax, columns, rows) -> None:
    ti = columns.index("time")
    if "series" in columns and "value" in columns:
        si, vi = columns.index("series"), columns.index("value")
        series: dict[str, list] = {}
        for r in rows:
            series.setdefault(_short(str(r[si]) or "(empty)", 50), []).append((r[ti], r[vi]))
    else:
        series = {
            name: [(r[ti], r[i]) for r in rows] for i, name in enumerate(columns) if i != ti and name != "q"
        }
    for name, points in series.items():
        xs, ys = _break_gaps(sorted(points, key=lambda p: p[0]))
        ax.plot(xs, ys, marker=".", label=name)


def _break_gaps(points) -> tuple[list, list]:
    """Hours without data are not zero and not a straight line: break the line there."""
    xs, ys = [], []
    for n, (x, y) in enumerate(points):
        if n and x - points[n - 1][0] > timedelta(hours=1):
            xs.append(points[n - 1][0] + timedelta(minutes=30))
            ys.append(float("nan"))
        xs.append(x)
        ys.append(float(y) if y is not None else float("nan"))
    return xs, ys


def _pad_time_axis(ax, rows, columns) -> None:
    """Half an hour either side, so that a single hour is a visible point on a readable axis."""
    times = [r[columns.index("time")] for r in rows]
    ax.set_xlim(min(times) - timedelta(minutes=30), max(times) + timedelta(minutes=30))


def _wrap(text: str, width: int = 55, lines: int = 3) -> str:
    import textwrap

    parts = textwrap.wrap(text, width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = _short(parts[-1] + " …", width)
    return "\n".join(parts)


def _cell(value) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def write_report(store, out: Path, t_from=None, t_to=None, variables: dict | None = None) -> list[Path]:
    """Every panel of every dashboard as DIR/<dashboard>__<panel>.png, plus DIR/index.html."""
    out.mkdir(parents=True, exist_ok=True)
    if t_from is None or t_to is None:
        d_from, d_to = default_range(store)
        t_from, t_to = t_from or d_from, t_to or d_to
    values = pick_variables(store, t_from, t_to, variables or {})
    paths, html = [], []
    for d in DASHBOARDS:
        html.append(f"<h2>{d.title}</h2>")
        for panel in d.panels:
            columns, rows, threshold = run_panel(store, panel, t_from, t_to, values)
            used = variables_of(panel.sql)
            sub = ", ".join(f"{k} = {values.get(k) or '(none)'}" for k in used)
            path = out / f"{d.uid.removeprefix('eximtrack-')}__{panel.id}.png"
            render_panel(panel, columns, rows, threshold, path, subtitle=sub)
            paths.append(path)
            html.append(f'<img src="{path.name}" alt="{panel.title}" width="800">')
    rng = f"{t_from:%Y-%m-%d %H:%M} – {t_to:%Y-%m-%d %H:%M} UTC"
    (out / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>eximtrack report</title><h1>eximtrack report</h1><p>{rng}</p>\n"
        + "\n".join(html)
        + "\n",
        encoding="utf-8",
    )
    return paths


# -- CLI ---------------------------------------------------------------------------------------------------


def _time_arg(value: str | None) -> datetime | None:
    from eximtrack.search import parse_time

    t = parse_time(value)
    return None if t is None else datetime.fromtimestamp(t, UTC)


def cmd_report(args) -> int:
    from eximtrack import cli

    try:
        t_from, t_to = _time_arg(args.since), _time_arg(args.until)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from exc
    store = cli.open_store(args)
    paths = write_report(
        store,
        Path(args.out),
        t_from,
        t_to,
        {"server": args.server, "domain": args.domain, "user": args.user},
    )
    print(f"wrote {len(paths)} panels and index.html to {args.out}")
    return 0


def cmd_dashboards(args) -> int:
    from eximtrack import ops_dashboard

    paths = write_dashboards(Path(args.out))
    board, alerts = ops_dashboard.write(Path(args.out), Path(args.alerts))
    print(f"wrote {len(paths) + 1} dashboards to {args.out} (ClickHouse, and {board.name} on Prometheus)")
    print(f"wrote the Prometheus alerting rules to {alerts}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from eximtrack import cli

    p = subparsers.add_parser("report", help="render the dashboard panels as PNG files (matplotlib)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--since", help="from (ISO date/time, UTC; default: 7 days before the newest data)")
    p.add_argument("--until", help="until (exclusive; default: the hour after the newest data)")
    p.add_argument("--server", help="server of the one-server dashboard (default: the busiest)")
    p.add_argument("--domain", help="sender domain of the domain dashboard (default: the busiest)")
    p.add_argument("--user", help=argparse.SUPPRESS)
    cli.add_store_arg(p)
    p.set_defaults(func=cmd_report)

    g = subparsers.add_parser(
        "dashboards", help="write the Grafana dashboards (JSON) and the Prometheus alerting rules"
    )
    g.add_argument("--out", default="deploy/grafana/dashboards", metavar="DIR")
    g.add_argument("--alerts", default="deploy/prometheus/eximtrack-alerts.yml", metavar="FILE",
                   help="Prometheus alerting rules on the components' metrics (default: %(default)s)")  # fmt: skip
    g.set_defaults(func=cmd_dashboards)


__all__ = [
    "DASHBOARDS",
    "Dashboard",
    "Panel",
    "dashboard_envelope",
    "grafana_dashboard",
    "grafana_sql",
    "register",
    "report_sql",
    "write_dashboards",
    "write_report",
]
