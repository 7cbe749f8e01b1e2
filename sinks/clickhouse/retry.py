"""Which store errors are worth retrying, and how long to wait: pure, so the rules have a test table.

Transient (retry with capped, jittered exponential backoff; the sink blocks and Kafka lag is the buffer):
network errors, timeouts, a server that is starting or overloaded (ClickHouse codes 159 TIMEOUT_EXCEEDED,
164 READONLY, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR, 241
MEMORY_LIMIT_EXCEEDED, 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS, 319 UNKNOWN_STATUS_OF_INSERT, 425
SYSTEM_ERROR, 999 KEEPER_EXCEPTION), HTTP 5xx/429, chDB's "Cannot lock file" while another process holds it.
Permanent (the record can never be inserted: dead-letter it): type/parse errors of the data itself
(6 CANNOT_PARSE_TEXT, 26/27/38/41/53 CANNOT_PARSE_*/TYPE_MISMATCH, 70 CANNOT_CONVERT_TYPE, 117
INCORRECT_DATA, 16 NO_SUCH_COLUMN_IN_TABLE — the same rule Vector's ClickHouse sink uses for 117 and 53).
Anything unknown is retried: losing data on an unclassified error is worse than waiting.
"""

from __future__ import annotations

import random
import re

RETRY = "retry"
REJECT = "reject"

PERMANENT_CODES = frozenset({6, 16, 26, 27, 38, 41, 53, 70, 117})
TRANSIENT_CODES = frozenset({159, 164, 202, 209, 210, 241, 242, 252, 319, 425, 999})
_CODE_RE = re.compile(r"Code: (\d+)")


def error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE_RE.search(str(exc))
    return int(m.group(1)) if m else None


def classify(exc: BaseException) -> str:
    """RETRY or REJECT for an exception raised by an insert."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return RETRY
    if isinstance(exc, (TypeError, ValueError, KeyError, OverflowError, UnicodeError)):
        return REJECT
    code = error_code(exc)
    if code in PERMANENT_CODES:
        return REJECT
    return RETRY


def backoff(attempt: int, base: float = 0.2, cap: float = 30.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
    r = rng or random
    return r.uniform(0, min(cap, base * (2 ** min(attempt, 30))))
