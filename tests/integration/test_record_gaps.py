"""RecordGaps (stream/app.py) against a real Kafka broker: which raw-lines records a worker never handled it
reads back, from where, and in bounded chunks."""

from __future__ import annotations

import asyncio

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from stream.app import RecordGaps


def make_partition(bootstrap: str, topic: str, n: int) -> None:
    """`topic` with 2 partitions; records 0..n-1 in partition 1 (value = its offset as text)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i in range(n):
            producer.send(topic, str(i).encode(), partition=1)
        producer.flush()
    finally:
        producer.close()


def read_back(gaps: RecordGaps, partition: int, offset: int) -> list[list[int]]:
    async def collect() -> list[list[int]]:
        return [[r.offset for r in chunk] async for chunk in gaps.missing_before(partition, offset)]

    return asyncio.run(collect())


def test_records_never_handled_are_read_back_in_chunks(kafka_bootstrap, unique_topic):
    make_partition(kafka_bootstrap, unique_topic, 40)
    table: dict[str, int] = {}
    gaps = RecordGaps(kafka_bootstrap, unique_topic, table)
    gaps.CHUNK_RECORDS = 16
    # nothing handled yet: from the first record Kafka holds, 16 at a time
    assert read_back(gaps, 1, 40) == [list(range(0, 16)), list(range(16, 32)), list(range(32, 40))]
    assert read_back(gaps, 1, 0) == []  # the first record: nothing can be missing
    # after the last handled record only; nothing when the record follows it, or is a replay
    gaps.done(1, 9)
    assert table == {"1": 9}
    assert read_back(gaps, 1, 30) == [list(range(10, 26)), list(range(26, 30))]
    assert read_back(gaps, 1, 10) == [] and read_back(gaps, 1, 5) == []
    gaps.done(1, 5)  # a replay does not move the last handled record back
    assert gaps.last_handled(1) == 9


def test_read_back_starts_at_the_first_record_retention_kept(kafka_bootstrap, unique_topic):
    """Records deleted from the start of the partition (retention) are not asked for."""
    make_partition(kafka_bootstrap, unique_topic, 30)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        from kafka.structs import TopicPartition

        admin.delete_records({TopicPartition(unique_topic, 1): 12})
    finally:
        admin.close()
    gaps = RecordGaps(kafka_bootstrap, unique_topic, {})
    assert read_back(gaps, 1, 30) == [list(range(12, 30))]
