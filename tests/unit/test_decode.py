"""The sink's decoding (sinks/clickhouse/decode.py): the compiled decoder takes what the worker writes, and
whatever it is given, a `DecodedBatch` stores what the reference decoder stores and dead-letters what it
dead-letters, with the same reasons, in the same order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from bench.generate import GenConfig, generate
from schemas.records import MAX_RECORD_BYTES, dumps_json
from sinks.clickhouse import encode
from sinks.clickhouse.decode import KINDS, DecodedBatch, decode_records
from stream.join import join_lines

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
JUNK = ["garbage that is no Exim line", "2026-11-01 10:00:00 something odd happened", "\x00\x01 binary"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, list[dict]]:
    """The worker's output objects (events as `to_wire`, rejects and lines as `to_dict`) of the real-Exim
    samples, a generated cPanel server, and lines no rule reads (rejects)."""
    out = {"event": [], "reject": [], "line": []}
    logs = [(f.stem, f.read_text().splitlines()) for f in sorted(SAMPLES.glob("mainlog-*.log"))]
    gen = tmp_path_factory.mktemp("gen")
    generate(GenConfig(servers=1, messages_per_day=600, days=0.5, seed=11), gen)
    logs += [(f.stem, f.read_text().splitlines()) for f in sorted(gen.glob("*.log"))]
    logs.append(("junk", JUNK * 3))
    for server, lines in logs:
        _, joined = join_lines(server, lines)
        out["event"] += [e.to_wire() for e in joined.events]
        out["reject"] += [r.to_dict() for r in joined.rejects]
        out["line"] += [r.to_dict() for r in joined.lines]
    assert all(len(v) > 5 for v in out.values()), {k: len(v) for k, v in out.items()}
    return out


def records(items: list[dict], per: int = 7) -> list[bytes]:
    return [dumps_json(items[i : i + per]) for i in range(0, len(items), per)]


def reference(kind: str, values: list) -> dict:
    """What the sink stored and dead-lettered before the compiled decoder: `decode_records`, then
    `encode.arrow_ipc` of every good record."""
    objects, bad, unusable = [], [], []
    for n, value in enumerate(values):
        try:
            good, bad_elements = decode_records(kind, value)
        except ValueError as exc:
            unusable.append((n, str(exc)))
            continue
        objects += good
        bad += [(n, *b) for b in bad_elements]
    try:
        table = read(encode.arrow_ipc(KINDS[kind][0], objects))
    except (ValueError, TypeError, OverflowError) as exc:
        table = type(exc)
    return {"objects": objects, "bad": bad, "unusable": unusable, "table": table}


def through_batch(kind: str, values: list) -> tuple[dict, DecodedBatch]:
    batch = DecodedBatch(kind)
    bad, unusable, rows = [], [], 0
    for n, value in enumerate(values):
        try:
            added, bad_elements = batch.add(value)
        except ValueError as exc:
            unusable.append((n, str(exc)))
            continue
        rows += added
        bad += [(n, *b) for b in bad_elements]
    assert rows == len(batch)
    try:
        table = read(batch.arrow_ipc())
    except (ValueError, TypeError, OverflowError) as exc:
        table = type(exc)
    return {"objects": batch.records(), "bad": bad, "unusable": unusable, "table": table}, batch


def read(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def assert_same(kind: str, values: list) -> DecodedBatch:
    want = reference(kind, values)
    got, batch = through_batch(kind, values)
    assert got["unusable"] == want["unusable"]
    assert got["bad"] == want["bad"]
    assert got["objects"] == want["objects"]
    if isinstance(want["table"], type):  # a value no column takes: the insert fails, then narrows it down
        assert isinstance(got["table"], type)
    else:
        assert got["table"].schema == want["table"].schema == encode.TABLES[KINDS[kind][0]][2]
        assert got["table"].equals(want["table"]), kind
    return batch


@pytest.mark.parametrize("kind", ["event", "reject", "line"])
def test_the_compiled_decoder_takes_what_the_worker_writes_and_stores_the_same(kind, outputs):
    values = records(outputs[kind])
    batch = assert_same(kind, values)
    assert batch.compiled == len(values) and len(batch) == len(outputs[kind])
    # byte for byte, too: the insert is the same
    assert batch.arrow_ipc() == encode.arrow_ipc(KINDS[kind][0], reference(kind, values)["objects"])


ODD_VALUES = [
    "", "x", "ünï€ode ✓", "a\nb\t\"q\"", 0, -1, 1, 2, 7, 2**53, 2**53 + 1, 2**63, 2**64 + 5, -(2**63),
    0.0, -0.0, 0.5, 1.5, 0.0005, 0.0015, 1699999999.9995, 1700000000.0125, 1e-7, 1e20, 1e300, -2.5,
    True, False, None, [], [1, "a"], {}, {"k": [None]}, "12", "1.5",
]  # fmt: skip


def mutate(rng: random.Random, obj: dict, fields: list[str]):
    obj = dict(obj)
    roll = rng.random()
    if roll < 0.45:
        obj[rng.choice(fields)] = rng.choice(ODD_VALUES)
    elif roll < 0.6:
        obj.pop(rng.choice(fields), None)
    elif roll < 0.7:
        obj[rng.choice(["extra", "x_y", "événement", "schema"])] = rng.choice(ODD_VALUES)
    elif roll < 0.8:
        obj["schema_version"] = rng.choice([0, 1, 2, -1, "1", 1.0, None, True])
    elif roll < 0.85:
        return rng.choice([5, "text", None, [obj], []])  # not an object
    else:
        return ("dup", obj, rng.choice(fields), rng.choice(ODD_VALUES))
    return obj


def element_json(element) -> bytes:
    if isinstance(element, tuple) and element and element[0] == "dup":  # a key twice: the last one counts
        _, obj, key, value = element
        body = json.dumps(obj)
        return (body[:-1] + (", " if obj else "") + f"{json.dumps(key)}: {json.dumps(value)}}}").encode()
    return json.dumps(element).encode()


@pytest.mark.parametrize("kind", ["event", "reject", "line"])
def test_whatever_the_records_hold_the_batch_stores_and_dead_letters_as_the_reference(kind, outputs):
    rng = random.Random(f"decode-{kind}")
    table_fields = [f.name for f in encode.TABLES[KINDS[kind][0]][2]]
    good = outputs[kind]
    values: list = []
    for _ in range(400):
        elements = []
        for _ in range(rng.randint(0, 4)):
            obj = rng.choice(good)
            elements.append(element_json(mutate(rng, obj, table_fields) if rng.random() < 0.5 else obj))
        value = b"[" + b",".join(elements) + b"]"
        roll = rng.random()
        if roll < 0.05:
            value = value[: rng.randint(0, len(value))]  # cut short
        elif roll < 0.08:
            value += b" x"  # trailing garbage
        elif roll < 0.11:
            value = json.dumps(rng.choice(good)).encode()  # a single object: the older form
        elif roll < 0.13:
            value = b'[{"event_id": "\\ud800"}]'  # a lone surrogate
        elif roll < 0.15:
            value = rng.choice([None, b"", b"\xff\xfe", b"null", b"7", b" [ ] ", b"[[]]"])
        values.append(value)
    # every kind of outcome occurs, and the compiled decoder took the clean records
    want = reference(kind, values)
    assert want["bad"] and want["unusable"] and want["objects"]
    assert_same(kind, values)
    stored = 0
    for group in range(0, len(values), 10):  # also as the sink meets them: many batches, mixed
        batch = assert_same(kind, values[group : group + 10])
        stored += batch.compiled > 0 and not isinstance(
            reference(kind, values[group : group + 10])["table"], type
        )
    assert stored >= 5  # batches whose rows both decoders stored, compared column by column


def test_a_value_the_store_cannot_take_fails_the_insert_encoding_not_the_decoding(outputs):
    """A reject whose offset is not a number decodes (the reference's objects keep what they are given)
    and fails `arrow_ipc`: the sink's insert then narrows it down to that one record, as before."""
    rejects = outputs["reject"][:3]
    odd = dict(rejects[1], offset="not a number")
    batch = DecodedBatch("reject")
    assert batch.add(dumps_json(rejects[:1]))[0] == 1
    assert batch.add(dumps_json([odd, rejects[2]])) == (2, [])
    assert batch.compiled == 1 and len(batch) == 3
    with pytest.raises(ValueError):
        batch.arrow_ipc()
    assert [r.reject_id for r in batch.records()] == [r["reject_id"] for r in rejects]


def test_an_oversized_record_is_the_reference_decoders_to_refuse(outputs):
    big = dict(outputs["line"][0], line="x" * MAX_RECORD_BYTES)
    got, batch = through_batch("line", [dumps_json([big])])
    assert got["unusable"] == reference("line", [dumps_json([big])])["unusable"] != []
    assert batch.compiled == 0 and len(batch) == 0


def test_rows_keep_the_kafka_order_across_both_decoders(outputs):
    events = outputs["event"][:12]
    odd = dict(events[5], size="123")  # a string where a number goes: the reference converts it
    values = [dumps_json(events[:5]), dumps_json([odd]), dumps_json(events[6:12])]
    batch = assert_same("event", values)
    assert batch.compiled == 2
    ids = read(batch.arrow_ipc()).column("event_id").to_pylist()
    assert ids == [e["event_id"] for e in events]
