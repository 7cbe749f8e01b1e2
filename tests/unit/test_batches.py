"""Many lines per Kafka record: the shipper's batch codec and the stream worker's write-back state cache."""

from __future__ import annotations

import json

import pytest

from eximtrack.demo_log import SAMPLES
from producers.publish import (
    BATCH_MAX_LINES,
    batch_lines,
    decode_raw_lines,
    encode_raw_batch,
    encode_raw_line,
)
from producers.tail import Line
from schemas.records import MAX_BATCH_LINES, RawLine, decode_raw_record
from stream.app import OpenStates, ShipperPositions, TableStates
from stream.join import Joiner, MessageState, state_ends


def lines_of(texts: list[str], file_id: str = "1:2:ab", start: int = 0) -> list[Line]:
    out, off = [], start
    for t in texts:
        data = t.encode()
        out.append(Line(data, file_id, off, off + len(data) + 1))
        off += len(data) + 1
    return out


# ------------------------------------------------------------------------------------------ batch codec


def test_encode_raw_batch_is_plain_json_and_round_trips():
    lines = lines_of(['a "q" \\ é', "", "x" * 10])
    lines.append(Line(b"bad \xff\x01", "1:2:ab", lines[-1].next_offset, lines[-1].next_offset + 7))
    value = encode_raw_batch('mx"1', lines, "Europe/Paris")
    expected = {
        "server": 'mx"1',
        "file_id": "1:2:ab",
        "tz": "Europe/Paris",
        "schema_version": 1,
        "lines": [[ln.offset, ln.text] for ln in lines],
    }
    assert value == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    got = decode_raw_lines(value)
    assert got == [RawLine('mx"1', ln.text, "1:2:ab", ln.offset, "Europe/Paris") for ln in lines]
    assert got[-1].line.endswith("\\xff\x01")  # undecodable bytes stay visible
    # the single-line form is still read, by the same decoder
    assert decode_raw_record(encode_raw_line("mx1", lines[0], "UTC")) == [
        RawLine("mx1", lines[0].text, "1:2:ab", 0, "UTC")
    ]


def test_batch_lines_keeps_order_one_file_per_batch_and_the_limits():
    a = lines_of([f"line {i}" for i in range(1200)], "1:2:aa")
    b = lines_of([f"other {i}" for i in range(10)], "1:3:bb")
    c = lines_of(["after truncation"], "1:3:bb", start=0)  # same file id, offset not contiguous
    batches = list(batch_lines(a + b + c))
    assert [ln for bt in batches for ln in bt] == a + b + c
    assert [len(bt) for bt in batches] == [BATCH_MAX_LINES, BATCH_MAX_LINES, 200, 10, 1]
    for bt in batches:
        assert len({ln.file_id for ln in bt}) == 1
        assert all(x.next_offset == y.offset for x, y in zip(bt, bt[1:], strict=False))
    big = lines_of(["y" * 100_000] * 7)
    sizes = [len(bt) for bt in batch_lines(big, max_bytes=256 * 1024)]
    assert sizes == [3, 3, 1]  # closed once the byte limit is reached
    assert BATCH_MAX_LINES <= MAX_BATCH_LINES


# ------------------------------------------------------------------------------- write-back state cache


class CountingTable(dict):
    """Stands in for the faust Table: a dict that counts writes and deletes (changelog records)."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0
        self.dels = 0

    def __setitem__(self, key, value) -> None:
        self.sets += 1
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.dels += 1
        super().__delitem__(key)


def test_table_states_reads_cache_first_and_writes_once_per_flush():
    table = CountingTable()
    table["w1\x1fold"] = MessageState("old").to_dict()
    table["w2\x1fother"] = MessageState("other").to_dict()
    table.sets = 0
    st = TableStates(table, "w1")
    a = MessageState("a")
    st["a"] = a
    a.frozen = 1
    st["a"] = a
    st["a"] = a
    assert st.get("a") is a and st["a"].frozen == 1 and "a" in st
    assert table.sets == 0  # nothing written before the end of the record
    old = st["old"]
    assert st.get("old") is old  # the cached copy, not a new one from the table
    del st["old"]
    assert "old" not in st and st.get("old") is None
    with pytest.raises(KeyError):
        st["old"]
    with pytest.raises(KeyError):
        del st["old"]
    assert sorted(st) == ["a"] and len(st) == 1 and [k for k, _ in st.items()] == ["a"]
    st["tmp"] = MessageState("tmp")
    del st["tmp"]  # created and deleted within one record: never reaches the table
    assert st.flush() == 2
    assert (table.sets, table.dels) == (1, 1)
    assert set(table) == {"w1\x1fa", "w2\x1fother"} and MessageState.from_value(table["w1\x1fa"]).frozen == 1
    assert isinstance(table["w1\x1fa"], bytes)  # the compact form; the dicts put in above are still read
    assert not st.cache and st.flush() == 0
    # read-only use writes nothing
    assert st.get("a").frozen == 1 and st.get("nope") is None
    assert st.flush() == 0 and (table.sets, table.dels) == (1, 1)


def _joined(lines: list[str], batch: int, replay_every: int = 0):
    """The joiner over a TableStates, one flush per `batch` lines, seq as in the stream app; with
    `replay_every`, every so many records the previous record is processed again (a worker crash replay)."""
    table = CountingTable()
    j = Joiner("web1", "UTC", keep_latest=True, states=TableStates(table, "web1"))
    events = []
    records = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    todo = []
    for n, rec in enumerate(records):
        todo.append((n, rec))
        if replay_every and n and n % replay_every == 0:
            todo.append((n, rec))  # the same record again, same Kafka offset
    for kafka_offset, rec in todo:
        for i, text in enumerate(rec):
            out = j.process(text, "f", kafka_offset * 10_000 + i, seq=kafka_offset * MAX_BATCH_LINES + i)
            events.extend(out.events)
        j.states.flush()
    return j, events, table


def test_a_replayed_record_writes_its_states_back_once():
    """A worker's local table holds a record's states before their changelog reached Kafka; after a crash or
    a lost send the record is replayed, and the replay writes each state it touched back (once, at the flush),
    so that a worker that later rebuilds the partition from the changelog finds them. It changes none."""
    lines = (SAMPLES / "mainlog-all.log").read_text().splitlines()[:60]
    table = CountingTable()
    j = Joiner("web1", "UTC", states=TableStates(table, "web1"))
    for i, text in enumerate(lines):
        j.process(text, "f", i, seq=7 * MAX_BATCH_LINES + i)
    j.states.flush()
    before = dict(table)
    open_msgids = {key for key in table}
    table.sets = 0
    for i, text in enumerate(lines):  # the same record again (same Kafka offset)
        j.process(text, "f", i, seq=7 * MAX_BATCH_LINES + i)
    j.states.flush()
    assert dict(table) == before  # no state changed
    assert table.sets == len(open_msgids) > 0  # each written back once


@pytest.mark.parametrize("mode", ["cpanel", "all", "default"])
def test_cached_states_give_the_same_result_as_a_dict(mode):
    lines = (SAMPLES / f"mainlog-{mode}.log").read_text().splitlines()
    plain = Joiner("web1", "UTC")
    want = []
    for n, text in enumerate(lines):
        want.extend(plain.process(text, "f", n, seq=n).events)
    one, ev1, t1 = _joined(lines, 1)
    many, ev500, t500 = _joined(lines, 500)
    assert [e.to_dict() for e in ev1] == [e.to_dict() for e in want]
    assert [e.to_dict() for e in ev500] == [e.to_dict() for e in want]
    assert many.latest() == plain.latest() == one.latest()
    assert set(t500) == set(t1) == {"web1\x1f" + k for k in plain.states}
    assert t500.sets < t1.sets  # one write per touched message per record, not per line
    # a replayed record changes no state and re-emits only ids already emitted
    rep, ev_rep, t_rep = _joined(lines, 50, replay_every=3)
    assert rep.latest() == plain.latest()
    assert {e.event_id for e in ev_rep} <= {e.event_id for e in want}
    assert dict(t_rep) == dict(_joined(lines, 50)[2])


def test_shipper_positions_dedupe_per_line_and_save_once_per_record():
    table = CountingTable()
    pos = ShipperPositions(table)
    for off in range(0, 300, 10):
        assert not pos.seen("w1", "f1", off)
        pos.advance("w1", "f1", off)
    assert table.sets == 0
    assert pos.save("w1") and table.sets == 1 and table["w1"] == {"f1": 290}
    assert not pos.save("w1")
    assert pos.seen("w1", "f1", 100) and not pos.seen("w1", "f1", 300) and not pos.seen("w1", "f2", 0)
    pos.advance("w1", "f2", 0)
    assert pos.save("w1") and table["w1"] == {"f1": 290, "f2": 0}  # a new file is saved at once
    pos.forget()
    assert pos.seen("w1", "f2", 0)


def test_shipper_positions_tell_the_workers_own_replay_from_a_shippers_resend():
    """A record at or below the last one applied is the worker's replay (its output may be lost): positions
    skip none of its lines, and replaying it moves no position back. A re-send comes in a newer record."""
    table = CountingTable()
    pos = ShipperPositions(table)
    assert not pos.replayed("w1", 0)
    for record, offsets in ((10, range(0, 100, 10)), (11, range(100, 250, 10))):
        assert not pos.replayed("w1", record)
        for off in offsets:
            pos.advance("w1", "1:2:ab", off)
        pos.applied("w1", record)
    assert pos.save("w1") and table["w1"] == {"1:2:ab": 240, ShipperPositions.RECORD: 11}
    pos.forget()  # a restart: read back from the table
    assert pos.replayed("w1", 10) and pos.replayed("w1", 11) and not pos.replayed("w1", 12)
    assert pos.seen("w1", "1:2:ab", 50)  # what record 12 (a shipper's re-send) skips
    pos.advance("w1", "1:2:ab", 50)  # record 10 replayed
    pos.applied("w1", 10)
    assert pos.seen("w1", "1:2:ab", 240) and not pos.replayed("w1", 12)  # nothing moved back
    for n in range(10):  # the record offset is not a file: never trimmed as one, never counted as one
        pos.advance("w1", f"1:{n + 3}:cd", 0)
    assert pos.save("w1")
    assert len(table["w1"]) == ShipperPositions.KEEP_FILES + 1 and table["w1"][ShipperPositions.RECORD] == 11
    assert not pos.seen("w1", ShipperPositions.RECORD, 0)


def test_sweep_over_the_table_ends_the_same_states_without_decoding_them(monkeypatch):
    lines = (SAMPLES / "mainlog-all.log").read_text().splitlines()
    plain = Joiner("web1", "UTC")
    for n, text in enumerate(lines):
        plain.process(text, "f", n, seq=n)
    j, _, table = _joined(lines, 500)
    assert set(table) == {"web1\x1f" + k for k in plain.states} and len(table) > 5
    decoded = []
    real = MessageState.from_dict
    monkeypatch.setattr(MessageState, "from_dict", classmethod(lambda cls, d: decoded.append(d) or real(d)))
    later = plain.watermark + 10 * 86400  # past the grace of the completed and the expiry of the rest
    assert j.sweep(later) == plain.sweep(later) == len(table) - 0
    j.states.flush()
    assert decoded == [] and set(table) == set() and not plain.states
    assert j.stats["expired"] == plain.stats["expired"] > 0


class WalkCountingTable(CountingTable):
    """... that also counts walks of the whole table (a RocksDB store reads and decodes every key for one)."""

    walks = 0

    def items(self):
        self.walks += 1
        return super().items()


def test_servers_sharing_a_table_sweep_and_count_from_the_index_not_by_walking_the_table():
    """Two servers' joiners on one table, as in a worker: their open states, counts and sweeps equal those of
    plain joiners, the shared index always equals what a fresh walk of the table finds, and after the one walk
    that builds it no sweep, count or lookup walks the table again."""
    lines = (SAMPLES / "mainlog-all.log").read_text().splitlines()
    table = WalkCountingTable()
    table["gone\x1fx"] = MessageState("x").to_bytes()  # a server with no joiner in this worker
    index = OpenStates(table)
    joiners = {s: Joiner(s, "UTC", states=TableStates(table, s, index)) for s in ("web1", "web2")}
    plain = {s: Joiner(s, "UTC") for s in joiners}
    half = len(lines) // 2
    for server, part in (("web1", lines), ("web2", lines[:half])):
        for rec in range(0, len(part), 50):
            for i, text in enumerate(part[rec : rec + 50]):
                joiners[server].process(text, "f", rec + i, seq=rec + i)
                plain[server].process(text, "f", rec + i, seq=rec + i)
            joiners[server].states.flush()
    assert table.walks == 1 and index.builds == 1
    for server, j in joiners.items():
        assert sorted(j.states) == sorted(plain[server].states) and len(j.states) == len(plain[server].states)
    fresh = OpenStates(dict(table))
    servers = ("web1", "web2", "gone")
    assert {s: fresh.of(s) for s in servers} == {s: index.of(s) for s in servers}
    assert fresh.of("web2") == {k[5:]: state_ends(v) for k, v in table.items() if k.startswith("web2\x1f")}
    later = plain["web1"].watermark + 10 * 86400
    assert joiners["web1"].sweep(later) == plain["web1"].sweep(later) > 0
    joiners["web1"].states.flush()
    assert index.of("web1") == {} and not any(k.startswith("web1\x1f") for k in table)
    assert sorted(joiners["web2"].states) == sorted(plain["web2"].states)  # the other server untouched
    assert table.walks == 2  # the check above walked it once (dict() copies without items()); the sweep never
    index.invalidate()  # partitions reassigned: the next use walks the table once
    assert sorted(index.of("web2")) == sorted(plain["web2"].states) and index.builds == 2


def test_local_tables_unchanged_for_long_are_discarded_and_recent_ones_kept(tmp_path):
    """A worker back after a long absence rebuilds its tables from the changelogs (deletions older than the
    changelogs' delete.retention.ms may be gone from them); a worker restarted after a crash keeps them."""
    import os

    from stream.app import LOCAL_STATE_MAX_AGE, discard_stale_tables

    tables = tmp_path / "v1" / "tables"
    (tables / "messages-0.db").mkdir(parents=True)
    wal = tables / "messages-0.db" / "000009.log"
    wal.write_bytes(b"x")
    now = wal.stat().st_mtime
    assert not discard_stale_tables(tables, now=now + LOCAL_STATE_MAX_AGE - 60) and wal.exists()
    os.utime(wal, (now - 2 * LOCAL_STATE_MAX_AGE, now - 2 * LOCAL_STATE_MAX_AGE))
    assert discard_stale_tables(tables, now=now) and not tables.exists()
    assert not discard_stale_tables(tables, now=now)  # nothing there: nothing to do


def test_held_records_are_due_by_lines_by_age_or_a_rebalance_and_taken_by_partition():
    from stream.app import HeldRecords

    held = HeldRecords(lines=1000, seconds=1.0)
    assert not held.due(0.0) and not held.due(99.0, rebalancing=True)  # nothing held: nothing to flush
    held.hold(3, {"web1"}, "s", "e1", 400, now=10.0)
    held.hold(5, {"web2"}, "s", "e2", 400, now=10.2)
    held.hold(3, set(), "s", "e3", 0, now=10.3)  # dead-lettered: acked with its partition, no server
    assert not held.due(10.5) and held.due(10.5, rebalancing=True)
    assert held.due(11.0)  # a second after the first record held
    held.hold(3, {"web1", "web9"}, "s", "e4", 200, now=10.6)  # with a skipped record's
    assert held.due(10.6)  # 1,000 lines
    taken = held.take()
    assert taken == {
        3: ({"web1", "web9"}, [("s", "e1"), ("s", "e3"), ("s", "e4")]),
        5: ({"web2"}, [("s", "e2")]),
    }
    assert not held.due(99.0) and held.take() == {}
    held.hold(5, {"web2"}, "s", "e5", 1, now=50.0)  # the age counts from the first record held since
    assert not held.due(50.9) and held.due(51.0)
