"""Dashboards: one SQL per panel shared by Grafana and the PNG report; committed JSON == generator; every
panel's query runs against a populated store and reads only aggregated views; the report writes PNGs."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from eximtrack import cli, report, stats_snapshots
from tests.views.conftest import ROOT, ingest

GRAFANA = ROOT / "deploy" / "grafana"
AGGREGATES = {
    "mail_hourly",
    "mail_hourly_all",
    # the fleet's per-hour panels read mail_hourly_all's sources directly (report._fleet_hourly_sql)
    "mail_hourly_totals",
    "mail_hourly_snap",
    "mail_hourly_snap_hours",
    "mail_hourly_v",
    "rollup_state",
    "reasons_hourly",
    # the top deferral reasons read reasons_hourly_all's sources directly (report._DEFERRALS_BY_TEMPLATE)
    "reasons_hourly_snap",
    "reasons_hourly_snap_hours",
    "delays_hourly",
    "rejections_hourly",
    "activity_hourly",
    "activity_hourly_all",
    "reasons_hourly_all",
    "delays_fleet_all",
    "unclassified_hourly",
    "abuse_senders_hourly",
    "abuse_domains_hourly",
    "abuse_thresholds",
}


def dirty_the_busiest_hour(store, table, keys: str, counter: str, where: str = "", copied: str = ""):
    """Make the hour with the most snapshot rows of `table` (a stats_snapshots.Snapshotted; `where`: a condition
    on its snapshot rows and states) dirty: the insert counter of one of its keys moves (a row of the key with
    `inserts` 1 and its `copied` columns: its numbers and those columns do not change, so the shared store keeps
    them), and its stale snapshot is marked (`counter` + 1000 in each of its rows). The hour, and the call that
    takes the mark off again."""
    cond = f" AND {where}" if where else ""
    hour = store.query(
        f"SELECT hour FROM {table.rows} WHERE 1{cond} GROUP BY hour ORDER BY count() DESC, hour LIMIT 1"
    ).result_rows[0][0]
    cols = ", ".join(c for c in (keys, copied) if c)
    store.command(
        f"INSERT INTO {table.states} (hour, {cols}, inserts) SELECT hour, {cols}, 1 FROM {table.states} FINAL "
        f"WHERE hour = {{h:DateTime('UTC')}}{cond} LIMIT 1",
        {"h": hour},
    )
    mark = f"ALTER TABLE {table.rows} UPDATE {counter} = {counter} {{}} 1000 WHERE hour = {{{{h:DateTime('UTC')}}}} "
    mark += "SETTINGS mutations_sync = 2"
    store.command(mark.format("+"), {"h": hour})
    return hour, lambda: store.command(mark.format("-"), {"h": hour})


def test_committed_dashboards_match_the_generator():
    from eximtrack import ops_dashboard  # the Prometheus one: tests/unit/test_ops_dashboard.py

    committed = sorted(p.name for p in (GRAFANA / "dashboards").glob("*.json"))
    assert committed == sorted([f"{d.uid}.json" for d in report.DASHBOARDS] + [f"{ops_dashboard.UID}.json"])
    for d in report.DASHBOARDS:
        text = (GRAFANA / "dashboards" / f"{d.uid}.json").read_text(encoding="utf-8")
        assert text == report.dashboard_json(d), (
            f"regenerate: eximtrack dashboards --out {GRAFANA / 'dashboards'}"
        )


def test_dashboards_use_the_provisioned_datasource_and_only_aggregates():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "eximtrack-clickhouse.yaml").read_text())
    source = ds["datasources"][0]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == report.DATASOURCE["uid"]
    yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "eximtrack.yaml").read_text())
    titles = set()
    for d in report.DASHBOARDS:
        data = json.loads(report.dashboard_json(d))
        titles.add(data["title"])
        for panel in data["panels"]:
            sql = panel["targets"][0]["rawSql"]
            assert panel["targets"][0]["datasource"] == report.DATASOURCE
            tables = set(re.findall(r"\bFROM\s+(\w+)", sql))
            assert tables and tables <= AGGREGATES, (d.uid, panel["title"], tables)
            assert "$__fromTime" in sql and "$RANGE" not in sql and "$VAR" not in sql
    assert len(titles) == 7


@pytest.mark.store
def test_every_panel_query_runs(populated):
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM activity_hourly").result_rows[0]
    t_from, t_to = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    values = report.pick_variables(populated, t_from, t_to, {})
    assert values["server"] and values["domain"]
    empty = []
    for d in report.DASHBOARDS:
        for panel in d.panels:
            columns, rows, threshold = report.run_panel(populated, panel, t_from, t_to, values)
            if panel.kind == "timeseries" and rows:
                assert columns[0] == "time"
            if panel.threshold_sql:
                assert threshold == panel.threshold  # the table's default equals the Grafana line
            if not rows:
                empty.append(f"{d.uid}/{panel.id}")
    # the populated store has deferrals, failures, rejections and busy senders; only the abuse
    # "flagged" table and the unclassified-lines panel may legitimately be empty
    assert set(empty) <= {"eximtrack-abuse/flagged", "eximtrack-pipeline/unclassified"}, empty


@pytest.mark.store
def test_grafana_queries_run_and_equal_the_report(populated):
    """The SQL Grafana runs (macros expanded as the ClickHouse plugin does: `$__fromTime` ->
    `toDateTime(intDiv(ms, 1000))`, variables quoted) returns what the report's panel returns for the same
    whole hours."""
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM activity_hourly").result_rows[0]
    t_from, t_to = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    values = report.pick_variables(populated, t_from, t_to, {})
    for d in report.DASHBOARDS:
        for panel in d.panels:
            sql = report.grafana_sql(panel.sql)
            sql = sql.replace("$__fromTime", f"toDateTime(intDiv({int(t_from.timestamp()) * 1000}, 1000))")
            sql = sql.replace("$__toTime", f"toDateTime(intDiv({int(t_to.timestamp() - 1) * 1000}, 1000))")
            for name, value in values.items():
                sql = sql.replace("'${" + name + "}'", "'" + value.replace("'", "''") + "'")
            got = populated.query(sql).result_rows
            _, want, _ = report.run_panel(populated, panel, t_from, t_to, values)
            assert sorted(got) == sorted(want), (d.uid, panel.id)  # ties may come in any order


@pytest.mark.store
def test_the_fleet_per_hour_panels_equal_mail_hourly_all(populated):
    """The fleet's per-hour panels read the sources of `mail_hourly_all` themselves (hours classified for
    the range only, snapshots summed per hour): the same rows as the view."""
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM mail_hourly").result_rows[0]
    t_from, t_to = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    fleet = next(d for d in report.DASHBOARDS if d.uid == "eximtrack-fleet")
    panels = {p.id: p for p in fleet.panels}
    view = {
        "received": "SELECT hour AS time, sum(messages), sum(recipients) FROM mail_hourly_all WHERE $RANGE "
        "GROUP BY time ORDER BY time",
        "outcomes": f"SELECT hour AS time, {report.SUCCESS}, {report.DEFERRED}, {report.FAILED}, "
        f"{report.INPROGRESS} FROM mail_hourly_all WHERE $RANGE GROUP BY time ORDER BY time",
    }
    params = {"t_from": t_from, "t_to": t_to}
    assert "mail_hourly_all" not in panels["received"].sql + panels["outcomes"].sql
    for name, sql in view.items():
        want = populated.query(report.report_sql(sql), params).result_rows
        got = report.run_panel(populated, panels[name], t_from, t_to, {})[1]
        assert want and got == want, name


TOP_DEFERRAL_REASONS_FROM_THE_VIEW = """SELECT template, sum(attempts) AS attempts
FROM reasons_hourly_all WHERE $RANGE AND type = 'defer'
GROUP BY template ORDER BY attempts DESC, template LIMIT 12"""


@pytest.mark.store
def test_the_top_deferral_reasons_equal_reasons_hourly_all(populated):
    """The top deferral reasons read the sources of `reasons_hourly_all` themselves (hours classified for the
    range only, the snapshots summed per template through the `by_template` projection): the rows of the
    view, over the whole store and its last two hours, with every hour clean, with an hour written since its
    snapshot whose stale snapshot is marked (it must be read from the states), and with no snapshot at all."""
    from datetime import UTC, timedelta

    lo, hi = populated.query(
        "SELECT min(hour), max(hour) FROM reasons_hourly WHERE type = 'defer'"
    ).result_rows[0]
    lo, hi = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    panel = next(
        p
        for d in report.DASHBOARDS
        for p in d.panels
        if (d.uid, p.id) == ("eximtrack-reasons", "defer_reasons")
    )
    assert "reasons_hourly_all" not in panel.sql

    def check() -> None:
        for t_from, t_to in ((lo, hi), (hi - timedelta(hours=2), hi)):
            params = {"t_from": t_from, "t_to": t_to}
            want = populated.query(report.report_sql(TOP_DEFERRAL_REASONS_FROM_THE_VIEW), params).result_rows
            assert want, t_from
            assert report.run_panel(populated, panel, t_from, t_to, {})[1] == want, t_from

    stats_snapshots.refresh(populated)
    assert not stats_snapshots.dirty_hours(populated, stats_snapshots.REASONS)
    check()
    # the busiest deferral hour becomes dirty, and its stale snapshot is marked: read through the projection,
    # the panel would count 1000 more attempts per row
    hour, unmark = dirty_the_busiest_hour(
        populated, stats_snapshots.REASONS, "server, type, deliverydomain, host, ip, template", "attempts",
        where="type = 'defer'", copied="example",
    )  # fmt: skip
    marked = (
        "SELECT sum(attempts) FROM reasons_hourly_snap WHERE hour = {h:DateTime('UTC')} AND type = 'defer' "
    )
    marked += "GROUP BY hour, seen, writer, type, template LIMIT 1"
    assert populated.query(marked, {"h": hour}).result_rows[0][0] >= 1000  # (the projection has the mark too)
    assert [h for h, _ in stats_snapshots.dirty_hours(populated, stats_snapshots.REASONS)] == [
        hour.replace(tzinfo=UTC)
    ]
    check()
    unmark()
    populated.command("TRUNCATE TABLE reasons_hourly_snap_hours")
    check()
    stats_snapshots.refresh(populated)


@pytest.mark.store
def test_the_most_recipients_panel_equals_a_max_per_sender(populated):
    """The abuse dashboard's "most unique recipients in one hour" takes each sender's first row by value
    (LIMIT 1 BY) instead of grouping every sender: the same senders and numbers as max() per sender of
    abuse_senders_hourly (ties at the 15th place may name other senders with the same number). The
    defer+fail panel keeps its GROUP BY: its rows (>= the minimum) are few, and LIMIT BY measured no faster."""
    from dataclasses import replace
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM mail_hourly").result_rows[0]
    t_from, t_to = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    abuse = {p.id: p for p in next(d for d in report.DASHBOARDS if d.uid == "eximtrack-abuse").panels}
    panel = abuse["top_recipients"]
    assert "LIMIT 1 BY" in panel.sql and "GROUP BY" not in panel.sql
    grouped = "SELECT if(sender != '', sender, user) AS s, max(unique_recipients) FROM abuse_senders_hourly "
    grouped += "WHERE $RANGE GROUP BY s"
    every = dict(populated.query(report.report_sql(grouped), {"t_from": t_from, "t_to": t_to}).result_rows)
    assert len(every) > 3
    # as the panel is, and cut to its first 3 senders (the store has fewer senders than 15)
    for limit in (15, 3):
        cut = replace(panel, sql=panel.sql.replace("\nLIMIT 15", f"\nLIMIT {limit}"))
        got = report.run_panel(populated, cut, t_from, t_to, {})[1]
        assert len(got) == min(limit, len(every)) and len({s for s, _ in got}) == len(got)
        assert all(every[s] == v for s, v in got)  # each sender's own worst hour
        assert [v for _, v in got] == sorted(every.values(), reverse=True)[: len(got)]


def test_the_fleet_delay_panel_equals_the_merged_states(populated):
    """The fleet's delay panel reads the hourly snapshots of its quantiles (migration 019): the numbers the
    merge of every key's states gives, with every hour snapshotted, and with some hours written since (read
    from the states), and without any snapshot."""
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM delays_hourly").result_rows[0]
    t_from, t_to = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    fleet = next(d for d in report.DASHBOARDS if d.uid == "eximtrack-fleet")
    panel = next(p for p in fleet.panels if p.id == "delay")
    merged = """SELECT hour AS time,
        arrayMap(v -> toFloat64(bitShiftRight(v, 32)) / 1000, quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delay_ms)) AS q,
        q[1], q[2], q[3] FROM delays_hourly WHERE $RANGE AND type = 'success' AND transport_is_remote = 1
        GROUP BY time ORDER BY time"""
    params = {"t_from": t_from, "t_to": t_to}
    want = [(r[0], *r[2:]) for r in populated.query(report.report_sql(merged), params).result_rows]
    assert want and "delays_hourly " not in panel.sql
    stats_snapshots.refresh(populated)
    recorded = populated.query("SELECT count() FROM delays_fleet_snap_hours").result_rows[0][0]
    assert recorded and stats_snapshots.dirty_hours(populated, stats_snapshots.DELAYS) == []
    assert report.run_panel(populated, panel, t_from, t_to, {})[1] == want
    # an hour of the panel written since its snapshot is read from the states: same numbers
    first = want[0][0].replace(tzinfo=UTC)
    populated.command(
        "INSERT INTO delays_hourly (hour, server, deliverydomain, type, transport_is_remote, inserts) "
        "SELECT hour, server, deliverydomain, type, transport_is_remote, 1 FROM delays_hourly "
        "WHERE hour = {h:DateTime('UTC')} LIMIT 1",
        {"h": first},
    )
    assert [h for h, _ in stats_snapshots.dirty_hours(populated, stats_snapshots.DELAYS)] == [first]
    assert report.run_panel(populated, panel, t_from, t_to, {})[1] == want
    populated.command("TRUNCATE TABLE delays_fleet_snap_hours")
    assert report.run_panel(populated, panel, t_from, t_to, {})[1] == want
    stats_snapshots.refresh(populated)


# the per-hour chart of the top five sending domains, written with a second read for the top list: what it
# must return
TOP_FIVE_BY_SUBQUERY = """SELECT hour AS time, domain AS series, sum(messages) AS value
FROM mail_hourly_all WHERE $RANGE AND outbound = 1 AND domain IN (
    SELECT domain FROM mail_hourly_all WHERE $RANGE AND outbound = 1
    GROUP BY domain ORDER BY sum(messages) DESC, domain LIMIT 5)
GROUP BY time, series ORDER BY time, series"""


@pytest.mark.store
def test_the_top_sending_domains_chart_reads_its_view_once_and_equals_a_top_list_subquery(populated):
    """The outbound messages of the top sending domains rank the domains in the same read that sums their
    hours: the rows of the same chart with its top list taken by a subquery (ties by name), over the whole
    store and a part of it, cut to the top five and to the top two (the store has few sending domains), with
    every hour clean, and with an hour written since its snapshot whose stale snapshot is marked (the view
    must read that hour from the states)."""
    from dataclasses import replace
    from datetime import UTC, timedelta

    lo, hi = populated.query("SELECT min(hour), max(hour) FROM mail_hourly").result_rows[0]
    lo, hi = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC) + timedelta(hours=1)
    chart = next(
        p for d in report.DASHBOARDS for p in d.panels if (d.uid, p.id) == ("eximtrack-abuse", "domains")
    )
    assert len(re.findall(r"\bFROM \w+_all\b", chart.sql)) == 1

    def check() -> None:
        for t_from, t_to in ((lo, hi), (hi - timedelta(hours=2), hi)):
            params = {"t_from": t_from, "t_to": t_to}
            for top in (5, 2):
                panel = replace(chart, sql=chart.sql.replace("LIMIT 5)", f"LIMIT {top})"))
                want = populated.query(
                    report.report_sql(TOP_FIVE_BY_SUBQUERY.replace("LIMIT 5)", f"LIMIT {top})")), params
                )
                assert want.result_rows, t_from
                got = report.run_panel(populated, panel, t_from, t_to, {})
                assert got[:2] == (list(want.column_names), want.result_rows), (t_from, top)

    stats_snapshots.refresh(populated)
    assert not stats_snapshots.dirty_hours(populated)
    # more than two sending domains: the top two is a choice
    assert (
        populated.query("SELECT uniqExact(domain) FROM mail_hourly WHERE outbound = 1").result_rows[0][0] > 2
    )
    check()
    # the busiest hour becomes dirty, and its stale snapshot is marked
    hour, unmark = dirty_the_busiest_hour(
        populated, stats_snapshots.MAIL, "server, owner, user, domain, sender, outbound", "messages"
    )
    assert [h for h, _ in stats_snapshots.dirty_hours(populated)] == [hour.replace(tzinfo=UTC)]
    check()
    unmark()
    stats_snapshots.refresh(populated)


@pytest.mark.store
def test_report_command_writes_pngs(capsys, populated, tmp_path):
    out = tmp_path / "report"
    rc = cli.main(["report", "--store", populated.url_text, "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == sum(len(d.panels) for d in report.DASHBOARDS)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)
    assert "fleet__outcomes.png" in (out / "index.html").read_text()


ABUSE_FLAGS = (
    "SELECT sender, unique_recipients, defer_fail_rows, defer_fail_percent, max_unique_recipients, "
    "max_defer_fail_percent, min_defer_fail_rows, over_recipients, over_defer_fail FROM abuse_senders_hourly"
)


def abuse_flags_as_the_rule_says(rows: list[tuple], thresholds: dict[str, float]) -> list[tuple]:
    """Each row's thresholds and flags as `abuse_senders_hourly` defines them, computed here: NULL where a
    threshold is missing, and SQL's AND of a false and a NULL is false."""
    most, percent, least = (
        thresholds.get(name)
        for name in (
            "sender_unique_recipients_per_hour",
            "sender_defer_fail_percent",
            "sender_defer_fail_min_rows",
        )
    )

    def compared(value, limit):
        return None if limit is None else value >= limit

    out = []
    for sender, recipients, defer_fail, pct, *_ in rows:
        over_recipients = compared(recipients, most)
        both = (compared(defer_fail, least), compared(pct, percent))
        over_defer_fail = False if False in both else None if None in both else True
        flags = tuple(None if f is None else int(f) for f in (over_recipients, over_defer_fail))
        out.append((sender, recipients, defer_fail, pct, most, percent, least, *flags))
    return out


@pytest.mark.store
def test_the_abuse_flags_follow_the_thresholds_as_set_and_are_null_without_one(url, generated_logs):
    """`abuse_senders_hourly` reads its three thresholds in one subquery (migration 037): every sender's
    thresholds and flags are the rule applied to its numbers, with the seeded thresholds, after three of
    them are changed (newer rows of `abuse_thresholds`) so that some senders are flagged and some not, and
    NULL where a threshold is gone, as before."""
    from sinks.clickhouse.store import Store

    server, path = generated_logs[0]
    ingest(url, server, path)
    store = Store.open(url)

    def thresholds() -> dict[str, float]:
        return dict(store.query("SELECT name, value FROM abuse_thresholds FINAL").result_rows)

    rows = store.query(ABUSE_FLAGS).result_rows
    assert len(rows) >= 4 and len(thresholds()) == 4
    assert rows == abuse_flags_as_the_rule_says(rows, thresholds())

    middle = sorted(r[1] for r in rows)[len(rows) // 2]
    store.command(
        "INSERT INTO abuse_thresholds (name, value, updated_at) VALUES "
        "('sender_unique_recipients_per_hour', {m:Float64}, now64(3) + 1), "
        "('sender_defer_fail_min_rows', 1, now64(3) + 1), ('sender_defer_fail_percent', 5, now64(3) + 1)",
        {"m": middle},
    )
    rows = store.query(ABUSE_FLAGS).result_rows
    assert thresholds()["sender_unique_recipients_per_hour"] == middle
    assert rows == abuse_flags_as_the_rule_says(rows, thresholds())
    assert {r[7] for r in rows} == {0, 1} and {r[8] for r in rows} == {0, 1}

    store.command("DELETE FROM abuse_thresholds WHERE name = 'sender_defer_fail_percent'")
    rows = store.query(ABUSE_FLAGS).result_rows
    assert "sender_defer_fail_percent" not in thresholds()
    assert rows == abuse_flags_as_the_rule_says(rows, thresholds())
    assert (
        {r[5] for r in rows} == {None}
        and {r[8] for r in rows} == {0, None}
        and {r[7] for r in rows} == {0, 1}
    )
