"""The operations view of a running pipeline, on the components' Prometheus metrics: one Grafana dashboard
("eximtrack operations", Prometheus data source) and the Prometheus alerting rules operators want.

The ClickHouse dashboards of eximtrack/report.py say what happened to the mail; this one says whether the
pipeline is keeping up: shippers' lag, the worker's and the sink's consumer lag, throughput, dead letters,
insert errors and latency, the web app's requests. `eximtrack dashboards` writes both kinds, and
deploy/prometheus/eximtrack-alerts.yml; tests check the committed files equal the generator and that every
metric named here is one a component exports. The scrape jobs are those of deploy/prometheus/prometheus.yml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

DATASOURCE = {"type": "prometheus", "uid": "eximtrack-prometheus"}
UID = "eximtrack-operations"
JOBS = {
    "ship": "eximtrack-ship",
    "stream": "eximtrack-stream",
    "sink": "eximtrack-sink",
    "web": "eximtrack-web",
    "alerts": "eximtrack-alerts",
}


@dataclass(frozen=True)
class Graph:
    title: str
    description: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"


GRAPHS = (
    Graph(
        "lines shipped per second, by server",
        "Log lines the shippers got acknowledged by Kafka.",
        (("sum by (server) (rate(eximtrack_ship_lines_shipped_total[5m]))", "{{server}}"),),
        "ops",
    ),
    Graph(
        "shipper lag, by server",
        "Bytes of each Exim log not yet acknowledged by Kafka (unread plus in flight). Growing: the shipper "
        "or the broker cannot keep up.",
        (("max by (server) (eximtrack_ship_lag_bytes)", "{{server}}"),),
        "bytes",
    ),
    Graph(
        "shippers without a broker",
        "Shippers whose last Kafka request failed, and shippers Prometheus cannot scrape.",
        (
            ("count(eximtrack_ship_broker_up == 0) or vector(0)", "broker unreachable"),
            (f'count(up{{job="{JOBS["ship"]}"}} == 0) or vector(0)', "shipper down"),
        ),
    ),
    Graph(
        "worker: lines and events per second",
        "What the stream workers read and what they sent to the sink.",
        (
            ("sum(rate(eximtrack_stream_lines_total[5m]))", "lines"),
            ("sum(rate(eximtrack_stream_events_total[5m]))", "events"),
            ("sum(rate(eximtrack_stream_rejects_total[5m]))", "rejects"),
        ),
        "ops",
    ),
    Graph(
        "worker consumer lag, by partition",
        "Raw-lines records after the last one a worker processed.",
        (("sum by (partition) (eximtrack_stream_consumer_lag_records)", "partition {{partition}}"),),
    ),
    Graph(
        "stalled partitions fetched again (per hour)",
        "Raw-lines partitions a worker's watchdog found stalled (records waiting, the processed offset "
        "unmoved for --stall-timeout) and fetched again in place (faust-streaming#629).",
        (("sum by (partition) (increase(eximtrack_stream_stalls_total[1h]))", "partition {{partition}}"),),
    ),
    Graph(
        "open messages, by server",
        "Messages whose lines the workers are still joining (bounded by expiry).",
        (("sum by (server) (eximtrack_open_messages)", "{{server}}"),),
    ),
    Graph(
        "dead letters (per 5 minutes)",
        "Records the worker could not decode and rows the sink could not store: each is kept in the "
        "dead-letter topic with its reason.",
        (
            ("sum(increase(eximtrack_stream_dead_letters_total[5m]))", "worker"),
            ("sum(increase(eximtrack_sink_dead_letters_total[5m]))", "sink"),
        ),
    ),
    Graph(
        "sink: rows stored per second, by kind",
        "Rows inserted and committed (event, reject, raw line).",
        (("sum by (kind) (rate(eximtrack_sink_rows_total[5m]))", "{{kind}}"),),
        "ops",
    ),
    Graph(
        "sink insert latency",
        "Seconds per store insert (p50 and p99).",
        (
            (
                "histogram_quantile(0.5, sum by (le) (rate(eximtrack_sink_insert_duration_seconds_bucket[5m])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) (rate(eximtrack_sink_insert_duration_seconds_bucket[5m])))",
                "p99",
            ),
        ),
        "s",
    ),
    Graph(
        "sink insert errors per second",
        "Failed store inserts (each is retried; the batch is committed only once stored).",
        (("sum by (kind) (rate(eximtrack_sink_insert_errors_total[5m]))", "{{kind}}"),),
        "ops",
    ),
    Graph(
        "sink consumer lag, by topic",
        "Records between the sink's committed position and the end of each topic.",
        (("sum by (topic) (eximtrack_sink_consumer_lag_records)", "{{topic}}"),),
    ),
    Graph(
        "seconds since the sink's last commit",
        "Grows without bound when the sink is stuck (or idle: see its consumer lag).",
        (("time() - max(eximtrack_sink_last_commit_timestamp_seconds)", "since last commit"),),
        "s",
    ),
    Graph(
        "web: requests per second, by route and status",
        "Track Delivery API and page requests.",
        (("sum by (route, status) (rate(eximtrack_http_requests_total[5m]))", "{{route}} {{status}}"),),
        "reqps",
    ),
    Graph(
        "web: request latency p95, by route",
        "Seconds per request (to its last byte).",
        (
            (
                "histogram_quantile(0.95, sum by (le, route) (rate(eximtrack_http_request_duration_seconds_bucket[5m])))",
                "{{route}}",
            ),
        ),
        "s",
    ),
)


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str


ALERTS = (
    Alert(
        "EximtrackShipperLagGrowing",
        "eximtrack_ship_lag_bytes > 50e6 and deriv(eximtrack_ship_lag_bytes[15m]) > 0",
        "15m",
        "warning",
        "Shipper {{ $labels.server }} is falling behind its log",
        "{{ $value | humanize }} bytes of the Exim log are not in Kafka yet and the backlog keeps growing.",
    ),
    Alert(
        "EximtrackShipperBrokerUnreachable",
        "eximtrack_ship_broker_up == 0",
        "5m",
        "critical",
        "Shipper {{ $labels.server }} cannot reach Kafka",
        "The shipper keeps its position and resumes when the broker is back; the log's lag grows meanwhile.",
    ),
    Alert(
        "EximtrackShipperDown",
        f'up{{job="{JOBS["ship"]}"}} == 0',
        "5m",
        "critical",
        "A shipper is down: {{ $labels.instance }}",
        "Prometheus cannot scrape the shipper; its server's mail is not shipped.",
    ),
    Alert(
        "EximtrackWorkerDown",
        f'up{{job="{JOBS["stream"]}"}} == 0',
        "2m",
        "critical",
        "A stream worker is down: {{ $labels.instance }}",
        "Its partitions move to the other workers of the group, if there are any.",
    ),
    Alert(
        "EximtrackWorkerStalled",
        "sum(eximtrack_stream_consumer_lag_records) > 0 and sum(rate(eximtrack_stream_records_total[5m])) == 0",
        "10m",
        "critical",
        "The stream workers stopped processing",
        "Raw lines are waiting in Kafka and no worker processed a record for 10 minutes.",
    ),
    Alert(
        "EximtrackPartitionStalled",
        "max by (partition) (eximtrack_stream_consumer_lag_records) > 0 and on (partition) "
        "max by (partition) (changes(eximtrack_stream_processed_offset[10m])) == 0",
        "5m",
        "critical",
        "Raw-lines partition {{ $labels.partition }} is not processed while its records wait",
        "Other partitions may flow. faust-streaming can stop fetching a partition after a rebalance "
        "(faust-streaming#629). The worker heals that itself after --stall-timeout (fetched again, then a "
        "restart): its watchdog is off or did not help. Restart the worker holding it (static membership "
        "hands it back at once).",
    ),
    Alert(
        "EximtrackDeadLetters",
        "sum(increase(eximtrack_stream_dead_letters_total[15m])) + sum(increase(eximtrack_sink_dead_letters_total[15m])) > 0",
        "0m",
        "warning",
        "Records went to the dead-letter topic",
        "{{ $value }} records or rows could not be processed in 15 minutes; read the reasons in the "
        "dead-letter topic.",
    ),
    Alert(
        "EximtrackSinkInsertErrors",
        "sum(rate(eximtrack_sink_insert_errors_total[5m])) > 0",
        "10m",
        "critical",
        "The sink's inserts into ClickHouse keep failing",
        "The sink retries and commits nothing meanwhile: no new mail becomes searchable.",
    ),
    Alert(
        "EximtrackSinkStalled",
        "(time() - max(eximtrack_sink_last_commit_timestamp_seconds)) > 600 and sum(eximtrack_sink_consumer_lag_records) > 0",
        "5m",
        "critical",
        "The sink has not committed for 10 minutes while records wait",
        "Delivery events are in Kafka but not stored.",
    ),
    Alert(
        "EximtrackFleetAlertFiring",
        "max by (rule) (eximtrack_alerts_firing) > 0",
        "0m",
        "warning",
        "An eximtrack fleet alert is firing",
        "{{ $labels.rule }}: {{ $value }} alerts firing (compromised senders, deferral spikes, stuck queues, silent "
        "servers): `eximtrack alerts list` or /api/v1/alerts shows who, the numbers and example messages.",
    ),
    Alert(
        "EximtrackAlertEvaluatorStalled",
        "(time() - max(eximtrack_alert_last_evaluation_timestamp_seconds)) > 300",
        "5m",
        "critical",
        "eximtrack alerts run has not evaluated its rules for 5 minutes",
        "Fleet alerts are not being raised: check the process and its store.",
    ),
    Alert(
        "EximtrackAlertNotificationsFailing",
        'sum(rate(eximtrack_alert_notifications_total{outcome="failed"}[15m])) > 0',
        "0m",
        "warning",
        "Fleet alert notifications fail",
        "A webhook or the SMTP relay refused alerts after retries: webhook payloads are in its dead-letter file.",
    ),
    Alert(
        "EximtrackWebErrors",
        'sum(rate(eximtrack_http_requests_total{status=~"5.."}[5m])) / sum(rate(eximtrack_http_requests_total[5m])) > 0.05',
        "10m",
        "warning",
        "More than 5% of Track Delivery requests fail",
        "Server errors, timeouts (504) or a full query queue (503): see the web app's log.",
    ),
)


def _panel(graph: Graph, n: int) -> dict:
    return {
        "id": n + 1,
        "type": "timeseries",
        "title": graph.title,
        "description": graph.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": (n % 2) * 12, "y": (n // 2) * 8},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(graph.exprs)
        ],
        "fieldConfig": {"defaults": {"unit": graph.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
    }


def dashboard() -> dict:
    from eximtrack.report import dashboard_envelope

    return dashboard_envelope(
        UID,
        "eximtrack operations",
        "Is the pipeline keeping up? Shippers, stream workers, the sink and the web app, from their Prometheus "
        "metrics (deploy/prometheus/prometheus.yml scrapes them).",
        ["eximtrack", "operations"],
        [_panel(g, i) for i, g in enumerate(GRAPHS)],
        refresh="30s",
        since="now-6h",
    )


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def alert_rules() -> dict:
    """Prometheus alerting rules (rule_files format)."""
    return {
        "groups": [
            {
                "name": "eximtrack",
                "rules": [
                    {
                        "alert": a.name,
                        "expr": a.expr,
                        "for": a.for_,
                        "labels": {"severity": a.severity},
                        "annotations": {"summary": a.summary, "description": a.description},
                    }
                    for a in ALERTS
                ],
            }
        ]
    }


def alert_rules_yaml() -> str:
    header = "# Generated by `eximtrack dashboards` from eximtrack/ops_dashboard.py: do not edit by hand.\n"
    return header + yaml.safe_dump(alert_rules(), sort_keys=False, width=200, allow_unicode=True)


def expressions() -> list[str]:
    """Every PromQL expression of the dashboard and the rules."""
    return [expr for g in GRAPHS for expr, _ in g.exprs] + [a.expr for a in ALERTS]


def write(dashboards_dir: Path, alerts_file: Path) -> list[Path]:
    dashboards_dir.mkdir(parents=True, exist_ok=True)
    alerts_file.parent.mkdir(parents=True, exist_ok=True)
    board = dashboards_dir / f"{UID}.json"
    board.write_text(dashboard_json(), encoding="utf-8")
    alerts_file.write_text(alert_rules_yaml(), encoding="utf-8")
    return [board, alerts_file]


__all__ = [
    "ALERTS",
    "DATASOURCE",
    "GRAPHS",
    "JOBS",
    "UID",
    "alert_rules_yaml",
    "dashboard_json",
    "expressions",
    "write",
]
