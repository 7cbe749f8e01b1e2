from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from bench.generate import GenConfig, generate
from schemas.records import (
    EVENT_FIELDS,
    LOGLINE_FIELDS,
    REJECT_FIELDS,
    DeliveryEvent,
    LogLineRecord,
    RejectRecord,
)
from sinks.clickhouse import encode
from stream.join import join_lines


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


SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def joined(tmp_path_factory) -> dict[str, list]:
    """What the joiner makes of the real-Exim samples and a generated cPanel server, and lines no rule
    reads (rejects): the record objects `eximtrack ingest` encodes."""
    out = {"events": [], "rejects": [], "log_lines": []}
    logs = [(f.stem, f.read_text().splitlines()) for f in sorted(SAMPLES.glob("mainlog-*.log"))]
    gen = tmp_path_factory.mktemp("gen")
    generate(GenConfig(servers=1, messages_per_day=600, days=0.5, seed=11), gen)
    logs += [(f.stem, f.read_text().splitlines()) for f in sorted(gen.glob("*.log"))]
    logs.append(("junk", ["garbage that is no Exim line", "2026-11-01 10:00:00 something odd"] * 3))
    for server, lines in logs:
        _, output = join_lines(server, lines)
        out["events"] += output.events
        out["rejects"] += output.rejects
        out["log_lines"] += output.lines
    assert all(len(v) > 5 for v in out.values()), {k: len(v) for k, v in out.items()}
    return out


def assert_same_batches(table: str, records: list) -> pa.RecordBatch | None:
    compiled = encode.compiled_record_batch(table, records)
    reference = encode.reference_record_batch(table, records)
    assert encode.record_batch(table, records).equals(reference)
    if compiled is not None:
        assert compiled.schema.equals(reference.schema)
        for name in reference.schema.names:
            assert compiled.column(name).equals(reference.column(name)), (table, name)
    return compiled


@pytest.mark.parametrize("table", ["events", "rejects", "log_lines"])
def test_the_joiners_records_are_read_compiled_into_the_reference_columns(joined, table):
    records = joined[table]
    assert assert_same_batches(table, records) is not None  # the compiled path took them all
    assert assert_same_batches(table, records[:1]) is not None
    assert assert_same_batches(table, []).num_rows == 0


def test_plain_values_are_read_compiled_as_the_reference_converts_them():
    events = [
        DeliveryEvent(event_id="a", type="success", server="s", msgid="m", sendunixtime=1700000000.0005),
        DeliveryEvent(event_id="b", type="defer", server="s", msgid="m", sendunixtime=1700000000, size=2**63),
        DeliveryEvent(event_id="c", type="defer", server="s", msgid="m", queue_time=3, spamscore=-1.5),
        DeliveryEvent(
            event_id="d", type="defer", server="s", msgid="m", actionunixtime=1e20, subject="é\t\0"
        ),
        DeliveryEvent(event_id="e", type="defer", server="s", msgid="m", actionunixtime=math.nan),
    ]
    events[0].subject = None  # text None -> ""
    events[1].actionunixtime = None  # time None -> 0
    batch = assert_same_batches("events", events)
    assert batch is not None
    assert batch.column("subject").to_pylist()[0] == "" and batch.column("size").to_pylist()[1] == 2**63
    assert batch.column("actionunixtime").cast(pa.int64()).to_pylist()[1:] == [0, 0, encode._MAX_MS, 0]
    # objects without slots are read by attribute
    loose = [SimpleNamespace(**{f: getattr(e, f) for f in EVENT_FIELDS}) for e in events]
    assert assert_same_batches("events", loose) is not None
    rejects = [RejectRecord("r", "s", "x", "why", offset=-(2**40), logunixtime=None)]
    assert assert_same_batches("rejects", rejects) is not None


@pytest.mark.parametrize(
    "field, value",
    [
        ("spamscore", math.inf),  # a float column's infinity: a null
        ("spamscore", math.nan),
        ("size", -1),  # a counter below 0: 0
        ("attempts", True),  # a bool: 1
        ("frozen", 2.7),  # a float counter: 2
        ("subject", 12),  # a number as text: "12"
        ("recipient", type("Text", (str,), {})("x@y")),  # a str subclass
        ("sendunixtime", "1700000000"),  # a time as text: 0
        ("version", "7"),
    ],
)
def test_other_values_are_left_to_the_reference(field, value):
    events = [DeliveryEvent(event_id=f"e{i}", type="defer", server="s", msgid="m") for i in range(3)]
    setattr(events[1], field, value)
    assert encode.compiled_record_batch("events", events) is None
    assert encode.record_batch("events", events).equals(encode.reference_record_batch("events", events))


def test_what_the_reference_refuses_still_raises():
    event = DeliveryEvent(event_id="e", type="defer", server="s", msgid="m")
    del event.subject  # an unset slot
    with pytest.raises(AttributeError):
        encode.record_batch("events", [event])
    too_big = DeliveryEvent(event_id="e", type="defer", server="s", msgid="m", size=2**64)
    with pytest.raises(OverflowError):
        encode.record_batch("events", [too_big])
