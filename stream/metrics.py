"""The stream worker's metrics, exported with the official Prometheus client from faust's web server.

The agent keeps plain counters (a dict increment per record on the hot path); this collector reads them,
the joiners' per-server numbers and the consumer's position at each scrape:

- ``eximtrack_stream_{records,lines,events,rejects,dead_letters,shipper_repeats,gap_records_recovered}_total``
- ``eximtrack_stream_producer_queue_records`` (now) and ``…_peak_records`` (the most at a record's end)
- ``eximtrack_stream_consumer_lag_records{partition}``: raw-lines records after the last one processed
- ``eximtrack_stream_processed_offset{partition}``: the offset of that record, -1 before the first
  (unchanged while records wait: the partition is stalled)
- ``eximtrack_stream_stalls_total{partition}``: stalled partitions the worker's watchdog fetched again
- per server: ``eximtrack_open_messages``, ``eximtrack_expired_messages_total``,
  ``eximtrack_stream_lines_by_disposition_total{disposition}``, ``eximtrack_message_notes_total``,
  ``eximtrack_message_notes_over_cap_total``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from stream.join import LINE_DISPOSITIONS

COUNTER_HELP = {
    "records": "Raw-lines records processed.",
    "lines": "Raw log lines received.",
    "events": "Delivery events sent to the sink.",
    "rejects": "Rejected SMTP attempts sent to the sink.",
    "dead_letters": "Raw-lines records that could not be decoded (sent to the dead-letter topic).",
    "shipper_repeats": "Lines a shipper sent again (already processed; skipped).",
    "gap_records_recovered": "Raw-lines records faust skipped, read again and processed.",
    "state_writes": "Join states written to or deleted from the messages table (one changelog record each).",
    "state_flushes": "Flushes of the join states (each acks the raw-lines records processed before it).",
}


def per_partition(
    name: str, text: str, values: Mapping[int, int], kind: type = GaugeMetricFamily
) -> GaugeMetricFamily | CounterMetricFamily:
    """A gauge (or a counter: `kind`) with one sample per raw-lines partition."""
    family = kind(name, text, labels=["partition"])
    for partition, value in sorted(values.items()):
        family.add_metric([str(partition)], value)
    return family


class WorkerMetrics:
    """A collector over the worker's live numbers; `registry` holds it."""

    def __init__(
        self,
        counters: Mapping[str, int],
        gauges: Mapping[str, int],
        joiners: Mapping[str, tuple],
        producer_queue: Callable[[], int],
        lag: Callable[[], Mapping[int, int]],
        processed: Callable[[], Mapping[int, int]] = dict,
        stalls: Mapping[int, int] | None = None,
    ) -> None:
        self.counters = counters
        self.gauges = gauges
        self.joiners = joiners
        self.producer_queue = producer_queue
        self.lag = lag
        self.processed = processed
        self.stalls = {} if stalls is None else stalls
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def collect(self):
        for key, text in COUNTER_HELP.items():
            yield CounterMetricFamily(f"eximtrack_stream_{key}", text, value=self.counters.get(key, 0))
        yield GaugeMetricFamily(
            "eximtrack_stream_producer_queue_peak_records",
            "The most changelog records faust's producer buffer held at the end of a record or a state flush.",
            value=self.gauges.get("producer_queue_peak_records", 0),
        )
        yield GaugeMetricFamily(
            "eximtrack_stream_producer_queue_records",
            "Records in faust's producer buffer now.",
            value=self.producer_queue(),
        )
        yield per_partition(
            "eximtrack_stream_consumer_lag_records",
            "Raw-lines records after the last one this worker processed, per assigned partition.",
            self.lag(),
        )
        yield per_partition(
            "eximtrack_stream_processed_offset",
            "Offset of the last raw-lines record this worker processed, per assigned partition.",
            self.processed(),
        )
        yield per_partition(
            "eximtrack_stream_stalls",
            "Times an assigned raw-lines partition had records waiting and did not move for the stall timeout "
            "(the worker fetched it again).",
            self.stalls,
            CounterMetricFamily,
        )
        open_messages = GaugeMetricFamily(
            "eximtrack_open_messages", "Messages whose lines are still joined.", labels=["server"]
        )
        expired = CounterMetricFamily(
            "eximtrack_expired_messages", "Open messages closed by expiry.", labels=["server"]
        )
        disposition = CounterMetricFamily(
            "eximtrack_stream_lines_by_disposition",
            "Lines by what the joiner did with them.",
            labels=["server", "disposition"],
        )
        notes = CounterMetricFamily("eximtrack_message_notes", "Notes kept on messages.", labels=["server"])
        over_cap = CounterMetricFamily(
            "eximtrack_message_notes_over_cap",
            "Notes beyond a message's cap (counted, not kept).",
            labels=["server"],
        )
        for server, (joiner, _) in sorted(self.joiners.items()):
            st = joiner.stats
            open_messages.add_metric([server], st.get("open_messages", 0))
            expired.add_metric([server], st.get("expired", 0))
            for key in LINE_DISPOSITIONS:  # every line is one of these, or a note over its message's cap
                disposition.add_metric([server, key], st.get(key, 0))
            notes.add_metric([server], st.get("notes", 0))
            over_cap.add_metric([server], st.get("notes_over_cap", 0))
        yield from (open_messages, expired, disposition, notes, over_cap)


__all__ = ["WorkerMetrics", "per_partition"]
