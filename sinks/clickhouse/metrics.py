"""The sink's metrics, in a Prometheus client registry of its own (served by eximtrack/ops_endpoint.py with
/healthz and /readyz): what it consumed, stored, dead-lettered and committed, how long inserts take, and how
far behind the topics' ends it is."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

INSERT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SinkMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.records = Counter(
            "eximtrack_sink_records", "Kafka records consumed, by topic.", ["topic"], registry=r
        )
        self.rows = Counter(
            "eximtrack_sink_rows",
            "Rows stored and committed, by kind (event, reject, line).",
            ["kind"],
            registry=r,
        )
        self.inserts = Counter(
            "eximtrack_sink_inserts", "Store inserts that succeeded, by kind.", ["kind"], registry=r
        )
        self.insert_errors = Counter(
            "eximtrack_sink_insert_errors",
            "Store inserts that failed (and were retried), by kind.",
            ["kind"],
            registry=r,
        )
        self.insert_seconds = Histogram(
            "eximtrack_sink_insert_duration_seconds",
            "Seconds per successful store insert, by kind.",
            ["kind"],
            buckets=INSERT_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "eximtrack_sink_dead_letters", "Records or rows sent to the dead-letter topic.", registry=r
        )
        self.batches = Counter("eximtrack_sink_batches", "Batches stored and committed.", registry=r)
        self.last_commit = Gauge(
            "eximtrack_sink_last_commit_timestamp_seconds", "Unix time of the last offset commit.", registry=r
        )
        self.consumer_remade = Counter(
            "eximtrack_sink_consumer_remade",
            "Kafka consumers closed and made anew after a time without records, with no partition assigned or "
            "records waiting (group_watch.py).",
            registry=r,
        )
        self.lag = Gauge(
            "eximtrack_sink_consumer_lag_records",
            "Records between the committed position and the end of each assigned partition (after each batch).",
            ["topic", "partition"],
            registry=r,
        )
        self.kafka_up = Gauge(
            "eximtrack_sink_kafka_up", "1 while the last poll and commit succeeded.", registry=r
        )
        self.store_up = Gauge("eximtrack_sink_store_up", "1 unless store inserts are failing.", registry=r)
        self.store_up.set(1)

        self.kafka_ok = False  # until the first batch round
        self.store_ok = True

    def kafka(self, ok: bool) -> None:
        self.kafka_ok = ok
        self.kafka_up.set(1 if ok else 0)

    def store(self, ok: bool) -> None:
        self.store_ok = ok
        self.store_up.set(1 if ok else 0)

    def ready(self) -> tuple[bool, str]:
        """Ready: Kafka answered the last round and inserts are not failing."""
        if not self.kafka_ok:
            return False, "Kafka does not answer"
        if not self.store_ok:
            return False, "store inserts are failing"
        return True, ""


__all__ = ["SinkMetrics"]
