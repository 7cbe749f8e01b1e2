from __future__ import annotations

import math

from schemas.records import (
    EVENT_FIELDS,
    LOGLINE_FIELDS,
    REJECT_FIELDS,
    DeliveryEvent,
    LogLineRecord,
    RejectRecord,
)
from sinks.clickhouse import encode


def _row(fields, values):
    return dict(zip(fields, values, strict=True))


def test_to_ms():
    assert encode.to_ms(1700000000.5) == 1700000000500
    assert encode.to_ms(1700000000.0004) == 1700000000000
    assert encode.to_ms(1700000000.9996) == 1700000001000
    assert encode.to_ms(0) == 0
    assert encode.to_ms(0.0) == 0
    assert encode.to_ms(None) == 0
    assert encode.to_ms(-5) == 0
    assert encode.to_ms(math.nan) == 0
    assert encode.to_ms(math.inf) == 0
    assert encode.to_ms("garbage") == 0
    assert encode.to_ms(1e20) == encode._MAX_MS


def test_event_row_order_and_types():
    e = DeliveryEvent(
        event_id="e1",
        type="success",
        server="web1",
        msgid="1abcde-000001-AB",
        email="a@example.com",
        spamscore=2.5,
        sendunixtime=1700000000.25,
        size=1234,
        recipient="b@example.org",
        queue_time=None,
        delivery_time=1.5,
        actionunixtime=1700000001.0,
        attempts=2,
        transport_is_remote=1,
        version=17,
    )
    row = encode.encode_event(e)
    assert len(row) == len(EVENT_FIELDS)
    d = _row(EVENT_FIELDS, row)
    assert d["event_id"] == "e1" and d["msgid"] == "1abcde-000001-AB"
    assert d["sendunixtime"] == 1700000000250
    assert d["actionunixtime"] == 1700000001000
    assert d["spamscore"] == 2.5
    assert d["queue_time"] is None
    assert d["delivery_time"] == 1.5
    assert d["size"] == 1234 and d["attempts"] == 2 and d["version"] == 17
    assert d["transport_is_remote"] == 1 and d["is_deleted"] == 0
    assert d["subject"] == ""
    assert isinstance(d["schema_version"], int)


def test_event_row_cleans_bad_values():
    e = DeliveryEvent(event_id="e", type="defer", server="s", msgid="m", spamscore=math.nan, size=-1)
    e.subject = None  # a sloppy producer
    d = _row(EVENT_FIELDS, encode.encode_event(e))
    assert d["spamscore"] is None
    assert d["size"] == 0
    assert d["subject"] == ""


def test_reject_and_logline_rows():
    r = RejectRecord(
        reject_id="r1", server="web1", line="garbage", reason="unparsed", offset=42, logunixtime=0.0
    )
    d = _row(REJECT_FIELDS, encode.encode_reject(r))
    assert d == {
        "reject_id": "r1",
        "server": "web1",
        "line": "garbage",
        "reason": "unparsed",
        "file_id": "",
        "offset": 42,
        "logunixtime": 0,
        "schema_version": r.schema_version,
    }
    ll = LogLineRecord(line_id="l1", server="web1", msgid="m", logunixtime=1700000000.123, line="x <= y")
    d = _row(LOGLINE_FIELDS, encode.encode_logline(ll))
    assert d["logunixtime"] == 1700000000123 and d["line"] == "x <= y"


def test_bulk_helpers_and_row_to_event():
    events = [DeliveryEvent(event_id=f"e{i}", type="success", server="s", msgid="m") for i in range(3)]
    rows = encode.event_rows(events)
    assert [r[0] for r in rows] == ["e0", "e1", "e2"]
    back = encode.row_to_event(EVENT_FIELDS, encode.encode_event(events[0]))
    assert back.event_id == "e0" and back.type == "success"
    assert encode.reject_rows([]) == [] and encode.logline_rows([]) == []


def test_column_encoding_equals_row_encoding():
    events = [
        DeliveryEvent(
            event_id="a", type="success", server="s", msgid="m", sendunixtime=1700000000.25, spamscore=1.0
        ),
        DeliveryEvent(
            event_id="b", type="defer", server="s", msgid="m", sendunixtime=0.0, spamscore=math.nan, size=-3
        ),
        DeliveryEvent(
            event_id="c", type="defer", server="s", msgid="m", actionunixtime=math.inf, queue_time=2
        ),
    ]
    events[2].subject = None
    columns = encode.event_columns(events)
    assert len(columns) == len(EVENT_FIELDS)
    assert [list(r) for r in zip(*columns, strict=True)] == encode.event_rows(events)
    rejects = [RejectRecord("r", "s", "x", "why", offset=5, logunixtime=1.5)]
    assert [list(r) for r in zip(*encode.reject_columns(rejects), strict=True)] == encode.reject_rows(rejects)
    lines = [LogLineRecord("l", "s", "m", 1700000000.001, "x")]
    assert [list(r) for r in zip(*encode.logline_columns(lines), strict=True)] == encode.logline_rows(lines)


def test_arrow_batches_hold_the_column_encoding():
    """arrow_ipc(table, records) is one Arrow IPC file whose columns are the column encoding: times as
    millisecond timestamps (UTC), NULL floats as nulls, every field in the record's order."""
    import pyarrow as pa

    events = [
        DeliveryEvent(
            event_id="a", type="success", server="s", msgid="m", sendunixtime=1700000000.25, size=7
        ),
        DeliveryEvent(event_id="b", type="defer", server="s", msgid="m", spamscore=math.nan, subject="é\t"),
    ]
    for table, records in (
        ("events", events),
        ("rejects", [RejectRecord("r", "s", "x", "why", offset=-1, logunixtime=1.5)]),
        ("log_lines", [LogLineRecord("l", "s", "m", 1700000000.001, "x")]),
    ):
        fields, columns_of, _ = encode.TABLES[table]
        got = pa.ipc.open_file(pa.BufferReader(encode.arrow_ipc(table, records))).read_all()
        assert got.column_names == list(fields)
        for name, column in zip(fields, columns_of(records), strict=True):
            values = got.column(name)
            if pa.types.is_timestamp(values.type):
                assert values.type.unit == "ms" and values.type.tz == "UTC"
                values = values.cast(pa.int64())
            assert values.to_pylist() == column, (table, name)
