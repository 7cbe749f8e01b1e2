"""Query-result values -> JSON-safe values, for the CLI's JSON/CSV output and the HTTP API.

One rule for both: datetimes as ISO 8601 (CLI) or epoch seconds (API), dates as ISO, non-finite floats as
null, bytes as UTF-8 text, containers recursively, anything else as its string.

`jsonable_rows` applies it column by column and only to the columns that need it (a column of plain
strings and integers — most of a stats result — is handed over as it is), and `json_bytes` encodes with
orjson: a `/api/v1/stats` answer of 175k groups took 1.9 s more over HTTP than its query, per-value
conversion and `json.dumps` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from itertools import chain

import orjson

_PLAIN = frozenset((str, int, bool, type(None)))  # JSON as they are (json_bytes takes any int width)


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


def _plain_column(column) -> bool:
    types = set(map(type, column))
    if not types <= _PLAIN | {float}:
        return False
    return float not in types or all(math.isfinite(v) for v in column if type(v) is float)  # noqa: E721


def jsonable_rows(names: list[str], rows, *, datetimes: str = "iso") -> list[dict]:
    """Result rows -> [{name: jsonable(value)}], converting only the columns that hold anything else than
    plain strings, integers, booleans, finite floats and NULL. (A result of only strings, integers and
    NULL — most stats — is checked in one pass over its values and not transposed.)"""
    if not rows:
        return []
    if set(map(type, chain.from_iterable(rows))) <= _PLAIN:
        return [dict(zip(names, row, strict=True)) for row in rows]
    columns = list(zip(*rows, strict=True))
    for i, column in enumerate(columns):
        if not _plain_column(column):
            columns[i] = [jsonable(v, datetimes=datetimes) for v in column]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def json_bytes(payload) -> bytes:
    """UTF-8 JSON of a jsonable payload (orjson; the standard library for what it refuses, e.g. integers
    wider than 64 bits)."""
    try:
        return orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")
