"""The operations dashboard and alerting rules: the committed files are the generator's, and every metric
they name is one a component exports (from the components' own registries, not a list kept here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import yaml

from eximtrack import ops_dashboard
from eximtrack.alerts.metrics import AlertMetrics
from eximtrack.web.app import AppMetrics
from producers.metrics import ShipMetrics
from sinks.clickhouse.metrics import SinkMetrics
from stream.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> set[str]:
    registries = [
        ShipMetrics("mx1").registry,
        SinkMetrics().registry,
        WorkerMetrics({}, {}, {}, lambda: 0, dict).registry,
        AppMetrics(4).registry,
        AlertMetrics().registry,
    ]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


def test_committed_files_are_the_generators():
    board = ROOT / "deploy" / "grafana" / "dashboards" / f"{ops_dashboard.UID}.json"
    alerts = ROOT / "deploy" / "prometheus" / "eximtrack-alerts.yml"
    hint = "regenerate: eximtrack dashboards"
    assert board.read_text(encoding="utf-8") == ops_dashboard.dashboard_json(), hint
    assert alerts.read_text(encoding="utf-8") == ops_dashboard.alert_rules_yaml(), hint


def test_every_expression_is_valid_promql():
    for expr in ops_dashboard.expressions():
        promql_parser.parse(expr)  # ValueError with the reason otherwise


def test_every_metric_named_is_exported_by_a_component():
    names = exported()
    used = {m for expr in ops_dashboard.expressions() for m in re.findall(r"\beximtrack_[a-z0-9_]+", expr)}
    assert used and used <= names, sorted(used - names)
    # and every component is watched by at least one alert
    rules_text = " ".join(a.expr for a in ops_dashboard.ALERTS)
    for prefix in ("eximtrack_ship_", "eximtrack_stream_", "eximtrack_sink_", "eximtrack_http_"):
        assert prefix in rules_text, prefix


def test_rules_and_dashboard_are_well_formed():
    rules = yaml.safe_load(ops_dashboard.alert_rules_yaml())
    (group,) = rules["groups"]
    assert [r["alert"] for r in group["rules"]] == [a.name for a in ops_dashboard.ALERTS]
    for rule in group["rules"]:
        assert (
            rule["expr"]
            and re.fullmatch(r"\d+[smh]", rule["for"])
            and rule["labels"]["severity"] in ("warning", "critical")
        )
    board = json.loads(ops_dashboard.dashboard_json())
    ds = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/eximtrack-prometheus.yaml").read_text()
    )
    assert ds["datasources"][0]["uid"] == ops_dashboard.DATASOURCE["uid"]
    for panel in board["panels"]:
        assert panel["datasource"] == ops_dashboard.DATASOURCE and panel["targets"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert {j["job_name"] for j in scrape["scrape_configs"]} == set(ops_dashboard.JOBS.values())
