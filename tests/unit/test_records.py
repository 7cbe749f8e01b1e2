"""Decoding Kafka records: every unusable record gets a reason (and goes to the dead letters), never a crash."""

import json

import pytest

from schemas.records import (
    MAX_BATCH_LINES,
    DeliveryEvent,
    RawBatch,
    RawLine,
    dead_letter_record,
    decode_raw_record,
    load_record_items,
    load_record_json,
)
from sinks.clickhouse.decode import decode_record, decode_records


@pytest.mark.parametrize(
    "value,reason",
    [
        (None, "empty record"),
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schema_version": 99}', "schema_version"),
        (b'{"schema_version": "1"}', "schema_version"),
        (b'{"x": "' + b"a" * (1 << 20) + b'"}', "too large"),
    ],
)
def test_bad_records_have_a_reason(value, reason):
    with pytest.raises(ValueError, match=reason):
        load_record_json(value)


def test_raw_line_decoding():
    (rec,) = decode_raw_record(json.dumps({"server": "w1", "line": "x", "offset": "7"}).encode())
    assert (rec.server, rec.offset, rec.file_id, rec.tz, rec.line) == ("w1", -1, "", "UTC", "x")
    for bad in ({"server": 5, "line": "x"}, {"server": "", "line": "x"}):
        with pytest.raises(ValueError, match="server"):
            decode_raw_record(json.dumps(bad).encode())
    with pytest.raises(ValueError, match="line"):
        decode_raw_record(json.dumps({"server": "w1"}).encode())


def test_raw_batch_decoding_gives_every_line_its_identity():
    batch = RawBatch("w1", "1:2:ab", "Europe/Berlin", [(0, "a"), (2, "b \u00e9"), (9, "")])
    value = json.dumps(
        {
            "server": batch.server,
            "file_id": batch.file_id,
            "tz": batch.tz,
            "schema_version": 1,
            "lines": [list(x) for x in batch.lines],
        }  # fmt: skip
    ).encode()
    assert decode_raw_record(value) == batch.raw_lines()
    assert batch.raw_lines()[1] == RawLine("w1", "b \u00e9", "1:2:ab", 2, "Europe/Berlin")
    # a malformed batch is unusable as a whole, with the reason
    for lines, reason in (
        ([], "non-empty"),
        ("x", "non-empty"),
        ([[1, "a"], [2]], "line 1"),
        ([[1, 5]], "line 0"),
        ([[0, "a"]] * (MAX_BATCH_LINES + 1), "at most"),
    ):
        with pytest.raises(ValueError, match=reason):
            decode_raw_record(json.dumps({"server": "w1", "lines": lines}).encode())
    (rl,) = decode_raw_record(json.dumps({"server": "w1", "lines": [["3", "a"]]}).encode())
    assert (rl.offset, rl.file_id, rl.tz) == (-1, "", "UTC")


def test_output_records_are_arrays_or_single_objects():
    ev = DeliveryEvent(event_id="e1", type="success", server="w1", msgid="m1", recipient="a@b")
    ev2 = DeliveryEvent(event_id="e2", type="defer", server="w1", msgid="m1", recipient="c@d")
    value = json.dumps([ev.to_dict(), {"event_id": ""}, ev2.to_dict(), 5, {"schema_version": 9}]).encode()
    good, bad = decode_records("event", value)
    assert good == [ev, ev2]
    assert [(i, r.split(":")[0]) for i, r, _ in bad] == [(1, "wrong schema"), (3, "not a JSON object"),
                                                         (4, "schema_version 9 is not one this version reads (<= 1)")]  # fmt: skip
    assert json.loads(bad[0][2]) == {"event_id": ""}
    assert decode_records("event", json.dumps(ev.to_dict()).encode()) == ([ev], [])
    assert load_record_items(b"[]") == []
    for value, reason in ((b"5", "not a JSON object or array"), (b"\xff", "not JSON"), (None, "empty")):
        with pytest.raises(ValueError, match=reason):
            decode_records("event", value)


def test_event_decoding_round_trips_and_rejects_incomplete():
    ev = DeliveryEvent(event_id="e1", type="success", server="w1", msgid="1xWksW-0004pV-1a", recipient="a@b")
    assert decode_record("event", json.dumps(ev.to_dict()).encode()) == ev
    with pytest.raises(ValueError, match="wrong schema"):
        decode_record("event", b'{"event_id": ""}')
    with pytest.raises(ValueError, match="event without"):
        decode_record("event", b'{"event_id": "", "type": "success", "server": "w1", "msgid": "m"}')
    with pytest.raises(ValueError, match="wrong schema"):
        decode_record("reject", b'{"nope": 1}')


def test_dead_letter_record_says_where_and_why():
    rec = json.loads(dead_letter_record("t", 3, 42, "not JSON", b"\xffabc"))
    assert rec == {"topic": "t", "partition": 3, "offset": 42, "reason": "not JSON", "value": "\ufffdabc"}


def test_event_wire_form_leaves_out_defaults_and_round_trips():
    ev = DeliveryEvent(event_id="e1", type="success", server="w1", msgid="m1", recipient="a@b", spamscore=0.0,
                       sendunixtime=1.5, size=0, frozen=1)  # fmt: skip
    wire = ev.to_wire()
    assert wire == {"event_id": "e1", "type": "success", "server": "w1", "msgid": "m1", "recipient": "a@b",
                    "spamscore": 0.0, "sendunixtime": 1.5, "frozen": 1}  # fmt: skip
    assert DeliveryEvent.from_dict(json.loads(json.dumps(wire))) == ev
    assert DeliveryEvent.from_dict({**ev.to_dict(), "unknown": 1}) == ev
    good, bad = decode_records("event", json.dumps([wire, ev.to_dict()]).encode())
    assert good == [ev, ev] and not bad


def test_jsonable_rows_equal_the_per_value_rule_and_encode_like_json():
    """The API's row conversion skips columns that are JSON as they are; the result must equal converting
    every value, and json_bytes must say what json.dumps says."""
    import json
    import math
    from datetime import UTC, date, datetime

    from eximtrack.jsonable import json_bytes, jsonable, jsonable_rows

    names = ["s", "i", "f", "t", "big", "mixed", "b"]
    rows = [
        ("a", 1, 1.5, datetime(2026, 12, 1, tzinfo=UTC), 2**70, None, b"x\xff"),
        ("é", -3, math.nan, datetime(2026, 12, 1), 5, date(2026, 1, 2), b""),
        (
            "",
            2**64 - 1,
            math.inf,
            datetime(2026, 12, 1, 1, 2, 3, 456000, tzinfo=UTC),
            -(2**63),
            [1, 2.5],
            b"y",
        ),
    ]
    for datetimes in ("iso", "epoch"):
        want = [
            {n: jsonable(v, datetimes=datetimes) for n, v in zip(names, row, strict=True)} for row in rows
        ]
        got = jsonable_rows(names, rows, datetimes=datetimes)
        assert got == want
        assert json.loads(json_bytes({"rows": got})) == json.loads(json.dumps({"rows": want}))
    assert jsonable_rows(names, []) == []
    plain = [("a", 1, 2.0, True, None)] * 3
    assert jsonable_rows(list("abcde"), plain) == [dict(zip("abcde", r, strict=True)) for r in plain]
