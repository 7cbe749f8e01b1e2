"""Decoding Kafka records: every unusable record gets a reason (and goes to the dead letters), never a crash."""

import json

import pytest

from schemas.records import DeliveryEvent, dead_letter_record, load_record_json
from sinks.clickhouse.sink import decode_record
from stream.app import decode_raw_line


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
    rec = decode_raw_line(json.dumps({"server": "w1", "line": "x", "offset": "7"}).encode())
    assert (rec["server"], rec["offset"], rec["file_id"], rec["tz"]) == ("w1", -1, "", "UTC")
    for bad in ({"server": 5, "line": "x"}, {"server": "", "line": "x"}, {"server": "w1"}):
        with pytest.raises(ValueError, match="server"):
            decode_raw_line(json.dumps(bad).encode())


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
