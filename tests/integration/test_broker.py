"""The local broker itself: it starts, serves a produce/consume round trip, and reports itself ready."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from eximtrack.broker_probe import metadata_brokers
from eximtrack.local_broker import BrokerError, LocalBroker

pytestmark = [pytest.mark.kafka]


def test_metadata_probe_lists_the_broker(kafka_broker):
    host, port = kafka_broker.bootstrap.split(":")
    brokers = metadata_brokers(host, int(port))
    assert [(b[1], b[2]) for b in brokers] == [("127.0.0.1", int(port))]
    assert kafka_broker.ready()


def test_produce_consume_round_trip(kafka_bootstrap, unique_topic):
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(unique_topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    sent = [(f"server{i % 3}".encode(), f"line {i}".encode()) for i in range(300)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    try:
        futures = [producer.send(unique_topic, key=k, value=v) for k, v in sent]
        producer.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    # Same key -> same partition (the default partitioner hashes the key bytes).
    by_key: dict[bytes, set[int]] = {}
    for (k, _), m in zip(sent, metas, strict=True):
        by_key.setdefault(k, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())

    consumer = KafkaConsumer(
        unique_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        got = []
        for msg in consumer:
            got.append((msg.key, msg.value))
            if len(got) == len(sent):
                break
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)
    # Order is kept within one key (one partition).
    for key in by_key:
        assert [v for k, v in got if k == key] == [v for k, v in sent if k == key]


def test_bad_config_fails_with_the_reason(tmp_path):
    broker = LocalBroker(tmp_path / "bad", extra_config={"num.network.threads": "not-a-number"})
    with pytest.raises(BrokerError) as info:
        broker.start()
    assert "num.network.threads" in str(info.value)
    assert not broker.running()


def test_cli_start_status_stop_and_startup_failure(tmp_path):
    """The CLI round trip; then a broker that dies during startup reports the tail of its log."""
    from eximtrack.local_broker import main

    workdir = tmp_path / "cli"
    try:
        assert main(["start", "--dir", str(workdir)]) == 0
        bootstrap = (workdir / "bootstrap").read_text().strip()
        host, port = bootstrap.split(":")
        assert metadata_brokers(host, int(port))
        assert main(["status", "--dir", str(workdir)]) == 0
    finally:
        assert main(["stop", "--dir", str(workdir)]) == 0
    assert main(["status", "--dir", str(workdir)]) == 3

    # Corrupt the formatted storage: the JVM starts, then exits during startup.
    meta = workdir / "data" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    broker = LocalBroker(workdir, start_timeout=60)
    try:
        with pytest.raises(BrokerError) as info:
            broker.start()
    finally:
        broker.stop()
    msg = str(info.value)
    assert "exited with code" in msg and "server.log" in msg
    assert not broker.running()
