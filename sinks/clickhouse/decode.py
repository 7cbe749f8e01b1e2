"""The sink's records from Kafka -> what the store inserts, and the reasons for what it cannot.

Each record of the joiner's output topics is a JSON array of events, rejects or log lines (one raw-lines
record's output; a single object, the older form, is read too). Two decoders, one result:
- the reference (`decode_records`): orjson, then a record object per element, checked; its errors are the
  reasons the sink dead-letters with;
- the compiled one (`eximtrack_core.ColumnBuilder`, native/src/columns.rs): the JSON straight into Arrow
  column buffers, for the records whose every value has its column's plain type: what the worker writes.
  It refuses anything else, whole, and the reference takes that record.
`DecodedBatch` uses the compiled decoder first and the reference for what it refuses, in Kafka order; its
Arrow columns equal the reference's encoding of the same records (tests/unit/test_decode.py). Pure: the
sink (sinks/clickhouse/sink.py) does the I/O.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa
from eximtrack_core import ColumnBuilder

from schemas.records import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    DeliveryEvent,
    LogLineRecord,
    RejectRecord,
    check_record_object,
    load_record_items,
    load_record_json,
)
from sinks.clickhouse import encode

# an event without any of these is unusable (dead-lettered)
EVENT_KEY_FIELDS = ("event_id", "type", "server", "msgid")

# a record kind (what the sink calls the topic's contents) -> (its table, its record class)
KINDS = {
    "event": ("events", DeliveryEvent),
    "reject": ("rejects", RejectRecord),
    "line": ("log_lines", LogLineRecord),
}


def decode_record(kind: str, value: bytes | None):
    """A Kafka record of the given kind -> its record object; ValueError with the reason if it is unusable."""
    return decode_item(kind, load_record_json(value))


def decode_records(kind: str, value: bytes | None) -> tuple[list, list[tuple[int, str, bytes]]]:
    """A Kafka record (a JSON array of objects, or one object) -> (record objects, bad elements).

    ValueError if the whole record is unusable (not JSON, too large); each element that is not a usable
    object is returned as ``(index, reason, its JSON)`` to be dead-lettered on its own."""
    good, bad = [], []
    for i, data in enumerate(load_record_items(value)):
        try:
            good.append(decode_item(kind, check_record_object(data)))
        except ValueError as exc:
            bad.append((i, str(exc), json.dumps(data).encode()))
    return good, bad


def decode_item(kind: str, data: dict):
    """One decoded JSON object of the given kind -> its record object, or ValueError with the reason."""
    try:
        if kind == "event":
            ev = DeliveryEvent.from_dict(data)
            if not all(getattr(ev, name) for name in EVENT_KEY_FIELDS):
                raise ValueError("event without event_id/server/msgid/type")
            return ev
        if kind == "reject":
            return RejectRecord(**{k: data[k] for k in RejectRecord.__dataclass_fields__ if k in data})
        return LogLineRecord(**{k: data[k] for k in LogLineRecord.__dataclass_fields__ if k in data})
    except TypeError as exc:
        raise ValueError(f"wrong schema: {exc}") from None


def column_spec(kind: str) -> tuple[list, list[str], tuple[str, int]]:
    """`ColumnBuilder`'s arguments for a kind: per column (name, kind, value when missing: None if the
    field is required), the fields that must not be empty, and the schema-version column with the newest
    version read. Derived from the record class and `encode`, so both decoders follow one definition."""
    table, cls = KINDS[kind]
    spec = []
    for field, col_kind in zip(dataclasses.fields(cls), encode.COLUMN_KINDS[table], strict=True):
        default = None if field.default is dataclasses.MISSING else field.default
        if default is not None and col_kind == "time":
            default = encode.to_ms(default)
        spec.append((field.name, col_kind, default))
    nonempty = list(EVENT_KEY_FIELDS) if kind == "event" else []
    return spec, nonempty, ("schema_version", SCHEMA_VERSION)


_SPECS = {kind: column_spec(kind) for kind in KINDS}


class DecodedBatch:
    """The records of one kind polled for one sink batch, decoded for the store in Kafka order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.table = KINDS[kind][0]
        self.rows = 0
        self._columns = ColumnBuilder(*_SPECS[kind])
        self.compiled = 0  # records the compiled decoder took
        # in order: a record value the compiled decoder took, or the record objects of one the reference took
        self._sources: list[bytes | list] = []
        # in order: Arrow record batches of the compiled decoder's columns, and lists of record objects (encoded
        # only by `arrow_ipc`: a value the store cannot take fails the insert, which narrows it down)
        self._parts: list = []
        self._encoded: bytes | None = None

    def add(self, value: bytes | None) -> tuple[int, list[tuple[int, str, bytes]]]:
        """One Kafka record's value -> (rows added, its bad elements to dead-letter, as `decode_records`).
        ValueError (nothing added) if the whole record is unusable."""
        if self._encoded is not None:
            raise RuntimeError("the batch is encoded already")
        if value is not None and len(value) <= MAX_RECORD_BYTES:
            n = self._columns.add(value)
            if n >= 0:
                self._sources.append(value)
                self.compiled += 1
                self.rows += n
                return n, []
        good, bad = decode_records(self.kind, value)  # the reference: its reasons, its conversions
        if good:
            self._finish_columns()
            self._parts.append(good)
            self._sources.append(good)
            self.rows += len(good)
        return len(good), bad

    def __len__(self) -> int:
        return self.rows

    def arrow_ipc(self) -> bytes:
        """Every row as one Arrow IPC file for `self.table` (`encode.arrow_ipc`'s columns); the batch takes
        no more records after it. ValueError (or TypeError) if a record object holds a value its column
        cannot take, as `encode.arrow_ipc` raises it."""
        if self._encoded is None:
            self._finish_columns()
            batches = [
                p if isinstance(p, pa.RecordBatch) else encode.record_batch(self.table, p)
                for p in self._parts
            ]
            self._encoded = encode.ipc_file(self.table, batches)
            self._parts = []
        return self._encoded

    def records(self) -> list:
        """Every row as a record object, in order (what the compiled decoder took, decoded again the
        reference way): for narrowing down a permanent insert error to the rows that cause it."""
        out = []
        for source in self._sources:
            out.extend(decode_records(self.kind, source)[0] if isinstance(source, bytes) else source)
        return out

    def _finish_columns(self) -> None:
        if len(self._columns):
            rows, buffers = self._columns.finish()
            self._parts.append(encode.batch_from_buffers(self.table, rows, buffers))


__all__ = [
    "EVENT_KEY_FIELDS",
    "KINDS",
    "DecodedBatch",
    "column_spec",
    "decode_item",
    "decode_record",
    "decode_records",
]
