"""The shipper's metrics: a few named numbers of one log, exported with the official Prometheus client.

The shipping loop owns the numbers (`ShipMetrics.set` / `inc`, thread-safe) and a collector reads them at
each scrape, so the hot loop never touches the client. Every metric is labelled with ``server``:

- ``eximtrack_ship_lines_shipped_total``        lines acknowledged by Kafka (``acks=all``)
- ``eximtrack_ship_lag_bytes``                  bytes of the log not yet acknowledged: unread + in flight
- ``eximtrack_ship_reconnects_total``           times the shipper lost the broker and got it back
- ``eximtrack_ship_checkpoint_offset_bytes``    offset in the checkpointed file (the resume point)
- ``eximtrack_ship_lines_truncated_total``      lines longer than the cap (the rest of the line was dropped)
- ``eximtrack_ship_rotations_total``, ``eximtrack_ship_truncations_total``  rotations seen (rename, copytruncate)
- ``eximtrack_ship_inflight_records``           records sent, not yet acknowledged
- ``eximtrack_ship_accounts_sent_total``        account-map snapshots acknowledged
- ``eximtrack_ship_broker_up``                  1 while the last delivery or metadata request succeeded

`serve` puts them, with /healthz and /readyz (ready = the broker answers), on eximtrack/ops_endpoint.py.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from eximtrack.ops_endpoint import OpsEndpoint

PREFIX = "eximtrack_ship_"
METRICS = {  # name without the prefix (counters with their _total) -> (kind, help)
    "lines_shipped_total": ("counter", "Log lines acknowledged by Kafka."),
    "lag_bytes": ("gauge", "Bytes of the log not yet acknowledged by Kafka (unread plus in flight)."),
    "reconnects_total": ("counter", "Times the broker was lost and reached again."),
    "checkpoint_offset_bytes": ("gauge", "Byte offset stored in the checkpoint."),
    "lines_truncated_total": ("counter", "Lines longer than the cap; the rest of each was dropped."),
    "rotations_total": ("counter", "Rename rotations of the log seen."),
    "truncations_total": ("counter", "Truncations (copytruncate) of the log seen."),
    "inflight_records": ("gauge", "Records sent and not yet acknowledged."),
    "accounts_sent_total": ("counter", "Account-map snapshots acknowledged by Kafka."),
    "broker_up": ("gauge", "1 if the broker answered recently, else 0."),
}


class ShipMetrics:
    """The numbers above for one server; ``set``/``inc`` from any thread; ``registry`` for the client."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(METRICS, 0.0)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def set(self, name: str, value: float) -> None:
        if name not in METRICS:
            raise KeyError(name)
        with self._lock:
            self._values[name] = float(value)

    def inc(self, name: str, by: float = 1.0) -> None:
        if name not in METRICS:
            raise KeyError(name)
        with self._lock:
            self._values[name] += by

    def get(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def collect(self):
        """The Prometheus client's collector protocol: one family per number."""
        for name, value in self.snapshot().items():
            kind, text = METRICS[name]
            if kind == "counter":
                family = CounterMetricFamily(PREFIX + name.removesuffix("_total"), text, labels=["server"])
            else:
                family = GaugeMetricFamily(PREFIX + name, text, labels=["server"])
            family.add_metric([self.server], value)
            yield family

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def ready(self) -> tuple[bool, str]:
        return (True, "") if self.get("broker_up") else (False, "the Kafka broker does not answer")


def serve(metrics: ShipMetrics, port: int, host: str = "127.0.0.1") -> OpsEndpoint:
    """Serve /metrics, /healthz and /readyz on ``host:port`` from a daemon thread; ``.shutdown()`` stops it."""
    return OpsEndpoint(metrics.registry, port, host, ready=metrics.ready)
