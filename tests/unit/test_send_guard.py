"""The send guard (stream/send_guard.py): a send that raises or a delivery that fails ends the worker (70);
delivered records do not. A stand-in producer with asyncio futures, as faust's aiokafka producer returns."""

from __future__ import annotations

import asyncio

import pytest

from stream.send_guard import LOST_SEND_EXIT, exit_on_lost_send


class Producer:
    def __init__(self, fail_at_send: bool = False) -> None:
        self.deliveries: list[asyncio.Future] = []
        self.fail_at_send = fail_at_send

    async def send(self, topic, key, value, partition, timestamp, headers):
        if self.fail_at_send:
            raise RuntimeError("accumulator full for the request timeout")
        self.deliveries.append(asyncio.get_running_loop().create_future())
        return self.deliveries[-1]


def run(producer: Producer, settle) -> list[int]:
    exits: list[int] = []
    exit_on_lost_send(producer, exit=exits.append)

    async def go():
        delivery = await producer.send("t.events", b"k", b"v", None, None, None)
        settle(delivery)
        await asyncio.sleep(0)  # the delivery's callbacks run

    asyncio.run(go())
    return exits


def test_a_delivered_record_does_not_end_the_worker():
    assert run(Producer(), lambda d: d.set_result("metadata")) == []


def test_a_failed_delivery_ends_the_worker():
    assert run(Producer(), lambda d: d.set_exception(TimeoutError("leader silent"))) == [LOST_SEND_EXIT]


def test_a_send_that_raises_ends_the_worker():
    exits: list[int] = []
    producer = Producer(fail_at_send=True)
    exit_on_lost_send(producer, exit=exits.append)
    with pytest.raises(RuntimeError):
        asyncio.run(producer.send("t.events", b"k", b"v", None, None, None))
    assert exits == [LOST_SEND_EXIT]
