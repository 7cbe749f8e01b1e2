"""A record the worker's producer could not deliver ends the worker before any later offset commit (exit 70).

faust's producer hands each send to aiokafka and does not look at the outcome: a batch that fails (a leader
that stopped answering, its request timed out) is logged by `Topic._on_published`, and the next offset commit
flushes the producer and commits past the lost events, rejects, log lines or table changelog records. Kept
safe only by waiting long: faust's producer request timeout is 20 min, so one frozen broker held the worker's
output that long (docs/GUARANTEES.md). eximtrack gives the producer a short timeout (`--request-timeout`, 30 s)
and this guard instead: any send that raises, or whose delivery fails, logs it and exits the process at once.
Nothing past the last commit is acknowledged, so the restarted worker (its supervisor, the same instance id)
processes those records again: at-least-once, harmless (docs/GUARANTEES.md), and its new clients bootstrap
from the brokers that answer.

Why the exit comes before the commit: faust commits only after `producer.flush()` returned, which waits on
aiokafka's batch futures; a failing batch sets its own future, then each record's future, whose callbacks
(this guard's first) the event loop runs before it resumes the task that waited on the batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial

log = logging.getLogger("eximtrack.stream")

LOST_SEND_EXIT = 70  # as the stall watchdog and the gap recovery: restart me


def exit_on_lost_send(producer, exit: Callable[[int], object] = os._exit) -> None:
    """Wrap faust's `producer.send` so that a send that raises, or a delivery that fails, calls
    `exit(LOST_SEND_EXIT)` after a critical log line."""
    send = producer.send

    async def guarded_send(topic, *args, **kwargs):
        try:
            delivery = await send(topic, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every send error loses a record
            lost(topic, exc, exit)
            raise
        delivery.add_done_callback(partial(check_delivery, topic, exit))
        return delivery

    producer.send = guarded_send


def check_delivery(topic: str, exit: Callable[[int], object], delivery) -> None:
    if delivery.cancelled():
        lost(topic, "cancelled", exit)
    elif delivery.exception() is not None:
        lost(topic, delivery.exception(), exit)


def lost(topic: str, why, exit: Callable[[int], object]) -> None:
    log.critical(
        "a record for %s was not delivered (%r); exiting before any later offset commit, so that a restart "
        "processes it again",
        topic,
        why,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    exit(LOST_SEND_EXIT)


__all__ = ["LOST_SEND_EXIT", "check_delivery", "exit_on_lost_send", "lost"]
