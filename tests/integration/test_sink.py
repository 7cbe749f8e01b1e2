"""The sink's batching against a real broker and a real chDB store: a batch closes as soon as the sink has
caught up, not after `batch_seconds` (the lines already there would wait up to that long to be stored)."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaProducer

from producers.topics import ensure_topics
from schemas import topics as T
from schemas.records import DeliveryEvent, dumps_json
from sinks.clickhouse.sink import Sink
from sinks.clickhouse.store import Store, current_chdb_path

pytestmark = [pytest.mark.kafka, pytest.mark.store]


def test_a_caught_up_batch_is_stored_without_waiting_out_the_batch_window(tmp_path, kafka_bootstrap):
    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()  # recent: older rows fall under the tables' TTL
    events = [
        DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                      recipient=f"r{i}@example.net", sendunixtime=now - 60 + i,
                      actionunixtime=now - 30 + i, version=i + 1).to_wire()
        for i in range(3)
    ]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(prefix + T.EVENTS.name, key=b"s1", value=dumps_json(events)).get(timeout=30)
    producer.close()
    # chDB allows one path per process: the one the suite already opened, with a database of this test's own
    path = current_chdb_path() or str(tmp_path / "store")
    store = Store.open(f"chdb://{path}?database=sink_{uuid.uuid4().hex[:12]}")
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=60.0)
    try:
        t0 = time.monotonic()
        records = 0
        while not records and time.monotonic() - t0 < 60:  # the first polls join the group
            records = sink.run_once()
        took = time.monotonic() - t0
    finally:
        sink.close()
    assert records == 1
    # with a 60 s window, only closing the caught-up batch returns this early (joining the group included)
    assert took < 30, f"run_once took {took:.1f} s"
    assert store.query("SELECT count() FROM events FINAL").result_rows[0][0] == 3
