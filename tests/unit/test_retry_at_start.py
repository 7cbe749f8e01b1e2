"""A component's start-up checks against Kafka are tried again while a broker does not answer them
(producers/topics.py `retry_at_start`): the 3-node test's worker exited at start with a node just frozen."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError, RequestTimedOutError

from producers.topics import retry_at_start


def test_a_check_that_times_out_is_tried_again_with_growing_waits():
    calls, waits = [], []

    def check():
        calls.append(1)
        if len(calls) < 4:
            raise RequestTimedOutError("Request timed out after 9999 ms")
        return 3

    assert retry_at_start(check, "the topic check", seconds=60, sleep=waits.append) == 3
    assert len(calls) == 4 and waits == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("error", "seconds"),
    [
        (KafkaTimeoutError("Unable to bootstrap"), 0),  # a Kafka error once the time is up
        (ValueError("a topic with the wrong partition count"), 60),  # not Kafka's: never tried again
    ],
)
def test_the_error_is_raised_without_a_wait(error, seconds):
    waits = []

    def check():
        raise error

    with pytest.raises(type(error)):
        retry_at_start(check, "the topic check", seconds=seconds, sleep=waits.append)
    assert waits == []
