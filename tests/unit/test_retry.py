"""The sink's error classification (retry vs dead-letter) and backoff, as a table."""

import random

import pytest

from sinks.clickhouse.retry import REJECT, RETRY, backoff, classify, error_code


class CHError(Exception):
    def __init__(self, code):
        super().__init__(f"Code: {code}. DB::Exception: something")
        self.code = code


@pytest.mark.parametrize(
    "exc,verdict",
    [
        (ConnectionRefusedError("refused"), RETRY),
        (TimeoutError("timed out"), RETRY),
        (OSError("network unreachable"), RETRY),
        (CHError(210), RETRY),  # NETWORK_ERROR
        (CHError(241), RETRY),  # MEMORY_LIMIT_EXCEEDED
        (CHError(252), RETRY),  # TOO_MANY_PARTS
        (CHError(117), REJECT),  # INCORRECT_DATA
        (CHError(53), REJECT),  # TYPE_MISMATCH
        (CHError(6), REJECT),  # CANNOT_PARSE_TEXT
        (Exception("Code: 27. DB::Exception: Cannot parse input"), REJECT),
        (TypeError("bad value"), REJECT),
        (RuntimeError("Cannot lock file /data/status. Another server instance in same directory"), RETRY),
        (RuntimeError("something nobody has seen"), RETRY),  # unknown: waiting beats losing data
    ],
)
def test_classify(exc, verdict):
    assert classify(exc) == verdict


def test_error_code_from_attribute_or_text():
    assert error_code(CHError(159)) == 159
    assert error_code(Exception("Code: 202. too many")) == 202
    assert error_code(Exception("no code")) is None


def test_backoff_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [backoff(a, base=0.2, cap=5.0, rng=rng) for a in range(40)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 30
    assert max(backoff(0, rng=random.Random(s)) for s in range(50)) <= 0.2
