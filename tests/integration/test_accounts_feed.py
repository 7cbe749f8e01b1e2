"""AccountsFeed (stream/app.py) against a real Kafka broker: a server without maps has the accounts topic read
again only when the topic grew since the last read."""

from __future__ import annotations

import json
import time

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from stream.app import AccountsFeed


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def publish(bootstrap: str, topic: str, server: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        maps = {"server": server, "userdomains": {"example.com": "alice"}, "owners": {"alice": "root"}}
        producer.send(topic, json.dumps(maps).encode(), key=server.encode())
        producer.flush()
    finally:
        producer.close()


def test_an_unknown_server_reads_the_topic_again_only_when_it_grew(
    kafka_bootstrap, unique_topic, monkeypatch
):
    create_topic(kafka_bootstrap, unique_topic, 2)
    publish(kafka_bootstrap, unique_topic, "web1")
    feed = AccountsFeed(kafka_bootstrap, unique_topic)
    reads = []
    refresh = feed.refresh
    monkeypatch.setattr(feed, "refresh", lambda: reads.append(time.monotonic()) or refresh())
    feed.UNKNOWN_RETRY_SECONDS = 0.0  # every get() of an unknown server may look again
    assert feed.get("web1")["userdomains"] == {"example.com": "alice"}  # never read: read now
    assert len(reads) == 1
    # a server without maps: the topic did not grow, so it is not read again, however often it is asked
    started = time.perf_counter()
    for _ in range(20):
        assert feed.get("nomaps") is None
    per_get = (time.perf_counter() - started) / 20
    assert len(reads) == 1
    print(f"\nget() of a server without maps, the topic unchanged: {per_get * 1000:.1f} ms")
    # its maps arrive: the next look reads them
    publish(kafka_bootstrap, unique_topic, "nomaps")
    assert feed.get("nomaps")["server"] == "nomaps" and len(reads) == 2
    assert feed.get("web1") is not None and len(reads) == 2  # a known server never asks


def test_a_failed_refresh_keeps_the_maps_read_before(kafka_bootstrap, unique_topic, monkeypatch):
    """The worker's minute timer refreshes through refresh_or_keep: a broker that stopped answering fails
    the read (an exception out of a faust timer would crash the worker), and the maps read before stay."""
    import stream.app as app_module

    create_topic(kafka_bootstrap, unique_topic, 1)
    publish(kafka_bootstrap, unique_topic, "web1")
    feed = AccountsFeed(kafka_bootstrap, unique_topic)
    assert feed.refresh_or_keep() is True and set(feed.maps) == {"web1"}
    from tests.integration.test_broker_probe import silent_listener

    silent = silent_listener()  # accepts connections and never answers: a frozen broker
    try:
        monkeypatch.setattr(app_module, "HELPER_BOOTSTRAP_TIMEOUT_MS", 500)
        feed.brokers = f"127.0.0.1:{silent.getsockname()[1]}"
        assert feed.refresh_or_keep() is False
        assert set(feed.maps) == {"web1"}
    finally:
        silent.close()
