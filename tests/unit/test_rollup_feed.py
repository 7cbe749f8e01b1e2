"""The sink's feed of the hourly aggregates (sinks/clickhouse/rollup_feed.py): when the batches it holds are
due, and that their one insert carries every event of them, in order."""

from __future__ import annotations

import pyarrow as pa

from schemas.records import DeliveryEvent
from sinks.clickhouse import encode
from sinks.clickhouse.rollup_feed import RollupFeed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(first: int, n: int) -> list[DeliveryEvent]:
    return [
        DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"m{i}", actionunixtime=1e9 + i)
        for i in range(first, first + n)
    ]


def test_due_when_the_oldest_batch_is_old_enough_or_when_enough_events_are_held():
    clock = Clock()
    feed = RollupFeed(seconds=2.0, max_rows=10, clock=clock)
    assert not feed.due() and len(feed) == 0
    feed.add(encode.arrow_ipc("events", events(0, 3)), events(0, 3))
    clock.now += 1.5
    feed.add(encode.arrow_ipc("events", events(3, 3)), events(3, 3))
    assert not feed.due()
    clock.now += 0.5  # the first batch is 2 s old, the second 0.5 s
    assert feed.due()
    feed.take()
    assert not feed.due() and len(feed) == 0
    feed.add(encode.arrow_ipc("events", events(0, 10)), events(0, 10))
    assert feed.due()  # max_rows, however young


def test_one_insert_carries_every_event_of_the_held_batches_in_order():
    feed = RollupFeed(seconds=2.0, max_rows=100, clock=Clock())
    for first, n in ((0, 3), (3, 1), (4, 5)):
        feed.add(encode.arrow_ipc("events", events(first, n)), events(first, n))
    feed.add(b"unused", [])  # a batch without events holds nothing
    assert len(feed) == 9
    data, held = feed.take()
    table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    ids = [e.event_id for batch in held for e in batch]
    assert table.column("event_id").to_pylist() == [f"e{i}" for i in range(9)] == ids
    assert table.schema == encode.TABLES["events"][2]
    assert feed.take() == (b"", [])
