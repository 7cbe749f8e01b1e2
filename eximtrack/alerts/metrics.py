"""`eximtrack alerts run`'s Prometheus metrics (served with /healthz and /readyz by eximtrack/ops_endpoint.py),
for Alertmanager users: the alerts firing per rule (deploy/prometheus/eximtrack-alerts.yml turns them into
Prometheus alerts), the notifications sent or failed, and how long and how recently the rules were evaluated."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AlertMetrics:
    """In a registry of their own, or in the registry of the process that evaluates the rules (the sink's,
    `eximtrack sink --alerts`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.firing = Gauge(
            "eximtrack_alerts_firing", "fleet alerts firing", ["rule"], registry=self.registry
        )
        self.notifications = Counter(
            "eximtrack_alert_notifications", "notifications sent or failed (after retries)",
            ["channel", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.evaluation = Histogram(
            "eximtrack_alert_evaluation_seconds", "one evaluation of every rule", registry=self.registry
        )
        self.last_evaluation = Gauge(
            "eximtrack_alert_last_evaluation_timestamp_seconds",
            "end of the last evaluation",
            registry=self.registry,
        )
