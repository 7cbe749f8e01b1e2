"""Query-result values -> JSON-safe values, for the CLI's JSON/CSV output and the HTTP API.

One rule for both: datetimes as ISO 8601 (CLI) or epoch seconds (API), dates as ISO, non-finite floats as
null, bytes as UTF-8 text, containers recursively, anything else as its string.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime


def jsonable(value, *, datetimes: str = "iso"):
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp() if datetimes == "epoch" else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [jsonable(v, datetimes=datetimes) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, datetimes=datetimes) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
