"""Pure row encoding: records of schemas/records.py -> column lists, and -> Arrow IPC bytes for inserts.

No I/O here. Times (epoch seconds as float in the records) become integer milliseconds (DateTime64(3)
ticks). Column order is exactly the record's field order, which is also the column order of the migrations.

The store inserts Arrow (`arrow_ipc`): the batch is parsed by ClickHouse's Arrow input, so the process that
owns the store does almost no Python per row (clickhouse-connect's Native serialization did it value by
value) and `eximtrack ingest` can encode in its joining process (eximtrack/join_process.py) and hand the
store finished bytes. The record objects are read into the columns compiled (`compiled_record_batch`); the
Python columns (`reference_record_batch`) define the values and take whatever the compiled path refuses.
The sink's compiled decoder hands over column buffers instead of records (`batch_from_buffers`;
sinks/clickhouse/decode.py), for the same columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from operator import attrgetter

import pyarrow as pa
from eximtrack_core import ColumnBuilder

from schemas.records import (
    EVENT_FIELDS,
    LOGLINE_FIELDS,
    REJECT_FIELDS,
    DeliveryEvent,
    LogLineRecord,
    RejectRecord,
)

# Record fields stored as DateTime64(3, 'UTC').
TIME_FIELDS = frozenset({"sendunixtime", "actionunixtime", "logunixtime"})

# Largest time DateTime64(3) accepts here without overflow surprises (year 2299).
_MAX_MS = 10_413_791_999_999


def to_ms(seconds: float | int | None) -> int:
    """Epoch seconds (float) -> integer milliseconds, clamped to the DateTime64 range; bad values -> 0."""
    if seconds is None:
        return 0
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(value) or value <= 0:
        return 0
    ms = round(value * 1000)
    return ms if ms <= _MAX_MS else _MAX_MS


def _opt_float(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _uint(value) -> int:
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 0
    return value if value > 0 else 0


def _str(value) -> str:
    return "" if value is None else str(value)


# Per-field converters (everything not listed is a string column).
_EVENT_CONVERT = {
    "sendunixtime": to_ms,
    "actionunixtime": to_ms,
    "spamscore": _opt_float,
    "queue_time": _opt_float,
    "delivery_time": _opt_float,
    "size": _uint,
    "attempts": _uint,
    "frozen": _uint,
    "transport_is_remote": _uint,
    "version": _uint,
    "is_deleted": _uint,
    "schema_version": _uint,
}
_REJECT_CONVERT = {"logunixtime": to_ms, "offset": int, "schema_version": _uint}
_LOGLINE_CONVERT = {"logunixtime": to_ms, "schema_version": _uint}


def _encoder(fields: tuple[str, ...], convert: dict):
    funcs = [(name, convert.get(name, _str)) for name in fields]

    def encode(record) -> list:
        return [func(getattr(record, name)) for name, func in funcs]

    return encode


encode_event = _encoder(EVENT_FIELDS, _EVENT_CONVERT)
encode_reject = _encoder(REJECT_FIELDS, _REJECT_CONVERT)
encode_logline = _encoder(LOGLINE_FIELDS, _LOGLINE_CONVERT)


# Column-oriented encoding (what the store sends: no per-row lists, one pass per column).
_MAX_SECONDS = _MAX_MS / 1000


_NONE_TYPE = type(None)


def _time_col(values: list) -> list:
    return [
        round(v * 1000) if type(v) is float and 0.0 < v < _MAX_SECONDS else to_ms(v)  # noqa: E721
        for v in values
    ]


# The fast paths check a whole column at C speed (set(map(type, …)), min) and hand it over unchanged.
def _str_col(values: list) -> list:
    if set(map(type, values)) <= {str}:
        return values
    return [v if type(v) is str else _str(v) for v in values]  # noqa: E721


def _uint_col(values: list) -> list:
    if set(map(type, values)) <= {int} and (not values or min(values) >= 0):
        return values
    return [v if type(v) is int and v >= 0 else _uint(v) for v in values]  # noqa: E721


def _opt_float_col(values: list) -> list:
    types = set(map(type, values))
    if types <= {_NONE_TYPE}:
        return values
    if types <= {float, _NONE_TYPE} and all(math.isfinite(v) for v in values if v is not None):
        return values
    return [v if v is None or (type(v) is float and math.isfinite(v)) else _opt_float(v) for v in values]  # noqa: E721


def _int_col(values: list) -> list:
    if set(map(type, values)) <= {int}:
        return values
    return [v if type(v) is int else int(v) for v in values]  # noqa: E721


_COLUMN_CONVERT = {
    to_ms: _time_col,
    _opt_float: _opt_float_col,
    _uint: _uint_col,
    int: _int_col,
    _str: _str_col,
}


def _column_encoder(fields: tuple[str, ...], convert: dict):
    plan = [(attrgetter(name), _COLUMN_CONVERT[convert.get(name, _str)]) for name in fields]

    def encode_columns(records) -> list[list]:
        records = records if isinstance(records, list) else list(records)
        return [conv(list(map(get, records))) for get, conv in plan]

    return encode_columns


event_columns = _column_encoder(EVENT_FIELDS, _EVENT_CONVERT)
reject_columns = _column_encoder(REJECT_FIELDS, _REJECT_CONVERT)
logline_columns = _column_encoder(LOGLINE_FIELDS, _LOGLINE_CONVERT)


# Arrow types per converter: ClickHouse's Arrow input casts them to the column types (UInt64 -> UInt8/16/32,
# string -> LowCardinality(String), timestamp[ms, UTC] -> DateTime64(3, 'UTC'), float64 with nulls ->
# Nullable(Float64)). large_string: one batch may hold more than 2 GiB of text (--batch-rows is the user's).
_ARROW_TYPE = {
    to_ms: pa.timestamp("ms", tz="UTC"),
    _opt_float: pa.float64(),
    _uint: pa.uint64(),
    int: pa.int64(),
    _str: pa.large_string(),
}


def _arrow_schema(fields: tuple[str, ...], convert: dict) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPE[convert.get(name, _str)]) for name in fields])


# table -> (its columns, the record encoder, the Arrow schema)
TABLES = {
    "events": (EVENT_FIELDS, event_columns, _arrow_schema(EVENT_FIELDS, _EVENT_CONVERT)),
    "rejects": (REJECT_FIELDS, reject_columns, _arrow_schema(REJECT_FIELDS, _REJECT_CONVERT)),
    "log_lines": (LOGLINE_FIELDS, logline_columns, _arrow_schema(LOGLINE_FIELDS, _LOGLINE_CONVERT)),
}


# Per column, how its values are converted: the kind names the compiled decoder
# (native/src/columns.rs `ColumnBuilder`) takes.
_KIND_NAME = {to_ms: "time", _opt_float: "optfloat", _uint: "uint", int: "int", _str: "str"}
COLUMN_KINDS = {
    "events": tuple(_KIND_NAME[_EVENT_CONVERT.get(n, _str)] for n in EVENT_FIELDS),
    "rejects": tuple(_KIND_NAME[_REJECT_CONVERT.get(n, _str)] for n in REJECT_FIELDS),
    "log_lines": tuple(_KIND_NAME[_LOGLINE_CONVERT.get(n, _str)] for n in LOGLINE_FIELDS),
}


# Per table, `ColumnBuilder`'s arguments for reading record objects (`add_objects`): every attribute is read
_OBJECT_SPECS = {
    table: [(name, kind, None) for name, kind in zip(TABLES[table][0], kinds, strict=True)]
    for table, kinds in COLUMN_KINDS.items()
}


def record_batch(table: str, records) -> pa.RecordBatch:
    """Records of `table` (events, rejects, log_lines) -> one Arrow record batch of its columns: read by the
    compiled builder (`compiled_record_batch`), or in Python (`reference_record_batch`) when it refuses."""
    records = records if isinstance(records, list) else list(records)
    batch = compiled_record_batch(table, records)
    return reference_record_batch(table, records) if batch is None else batch


def compiled_record_batch(table: str, records: list) -> pa.RecordBatch | None:
    """`record_batch` read by native/src/columns.rs (`ColumnBuilder.add_objects`: each record's slots
    straight into the columns' buffers, 2-4× faster than the columns in Python), or None when a value is
    not of its column's plain type (a `str` or None for text, a number or None for a time, an `int` for a
    counter, None or a finite `float` for a float): the reference converts those."""
    builder = ColumnBuilder(_OBJECT_SPECS[table], [], None)
    if builder.add_objects(records) < 0:
        return None
    rows, buffers = builder.finish()
    return batch_from_buffers(table, rows, buffers)


def reference_record_batch(table: str, records) -> pa.RecordBatch:
    """`record_batch` in Python: every value converted as the record encoders above convert it (the
    definition the compiled path is tested against)."""
    _, columns_of, schema = TABLES[table]
    columns = columns_of(records)
    return pa.record_batch(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )


def batch_from_buffers(table: str, rows: int, buffers: list) -> pa.RecordBatch:
    """The columns of `table` as `ColumnBuilder.finish` returns them (per column: validity bitmap, offsets,
    data, null count; little-endian) -> one Arrow record batch, without copying the buffers."""
    schema = TABLES[table][2]
    arrays = []
    for field, (validity, offsets, data, nulls) in zip(schema, buffers, strict=True):
        parts = [None if validity is None else pa.py_buffer(validity)]
        if offsets is not None:
            parts.append(pa.py_buffer(offsets))
        parts.append(pa.py_buffer(data))
        arrays.append(pa.Array.from_buffers(field.type, rows, parts, null_count=nulls))
    return pa.record_batch(arrays, schema=schema)


def ipc_file(table: str, batches: list[pa.RecordBatch]) -> bytes:
    """Record batches of `table` -> one Arrow IPC file (ClickHouse `FORMAT Arrow`)."""
    schema = TABLES[table][2]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def arrow_ipc(table: str, records) -> bytes:
    """Records of `table` (events, rejects, log_lines) -> one Arrow IPC file (ClickHouse `FORMAT Arrow`)."""
    return ipc_file(table, [record_batch(table, records)])


def concat_ipc(blobs: list[bytes]) -> bytes:
    """Several `arrow_ipc` encodings of one table as one (read without copying, written once): the sink's
    batches of a few seconds inserted into `events_rollup` together."""
    if len(blobs) == 1:
        return blobs[0]
    tables = [pa.ipc.open_file(pa.BufferReader(b)).read_all() for b in blobs]
    table = pa.concat_tables(tables)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def event_rows(events: Iterable[DeliveryEvent]) -> list[list]:
    return [encode_event(e) for e in events]


def reject_rows(rejects: Iterable[RejectRecord]) -> list[list]:
    return [encode_reject(r) for r in rejects]


def logline_rows(lines: Iterable[LogLineRecord]) -> list[list]:
    return [encode_logline(r) for r in lines]


def row_to_event(columns: Iterable[str], row: Iterable) -> DeliveryEvent:
    """A result row whose columns are DeliveryEvent field names (times as epoch seconds) -> DeliveryEvent."""
    return DeliveryEvent.from_dict(dict(zip(columns, row, strict=False)))


__all__ = [
    "COLUMN_KINDS",
    "TABLES",
    "TIME_FIELDS",
    "arrow_ipc",
    "batch_from_buffers",
    "compiled_record_batch",
    "concat_ipc",
    "encode_event",
    "encode_logline",
    "encode_reject",
    "event_columns",
    "event_rows",
    "ipc_file",
    "logline_columns",
    "reject_columns",
    "logline_rows",
    "record_batch",
    "reference_record_batch",
    "reject_rows",
    "row_to_event",
    "to_ms",
]
