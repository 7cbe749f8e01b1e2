"""The stream worker's command-line options and producer settings reach the faust app it builds (no broker
needed to build it)."""

from __future__ import annotations

import argparse

from bench.generate import GenConfig, generate
from producers.publish import BATCH_MAX_LINES
from stream.app import PRODUCER_BATCH_BYTES, TableStates, create_app, register, stall_check_interval
from stream.join import Joiner

# a Kafka record's bytes in a batch besides its key and value (varint lengths, deltas, headers: ~10-20),
# counted generously
CHANGELOG_RECORD_OVERHEAD = 70


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["stream", *argv])


def test_session_timeout_from_the_option_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EXIMTRACK_STREAM_SESSION_TIMEOUT", raising=False)
    assert parse([]).session_timeout == 30.0
    assert parse(["--session-timeout", "12.5"]).session_timeout == 12.5
    monkeypatch.setenv("EXIMTRACK_STREAM_SESSION_TIMEOUT", "10")
    assert parse([]).session_timeout == 10.0
    app = create_app("127.0.0.1:1", data_dir=str(tmp_path), session_timeout=10.0)
    assert app.conf.broker_session_timeout == 10.0
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path)).conf.broker_session_timeout == 30.0


def test_request_timeouts_give_up_on_a_silent_broker_in_seconds_not_minutes(monkeypatch, tmp_path):
    """faust's defaults held the worker 90 s (consumer) and up to 20 min (producer) behind a frozen broker.
    The consumer's timeout is never below the session timeout (faust refuses it), a JoinGroup's wait at the
    coordinator (the rebalance timeout) stays inside it, and the producer's failed sends end the worker."""
    monkeypatch.delenv("EXIMTRACK_STREAM_REQUEST_TIMEOUT", raising=False)
    assert parse([]).request_timeout == 30.0
    monkeypatch.setenv("EXIMTRACK_STREAM_REQUEST_TIMEOUT", "12")
    assert parse([]).request_timeout == 12.0 and parse(["--request-timeout", "8"]).request_timeout == 8.0
    conf = create_app("127.0.0.1:1", data_dir=str(tmp_path)).conf
    assert (conf.broker_request_timeout, conf.producer_request_timeout) == (30.0, 30.0)
    assert conf.broker_rebalance_timeout == 25.0
    conf = create_app("127.0.0.1:1", data_dir=str(tmp_path), request_timeout=10.0, session_timeout=20.0).conf
    assert (conf.broker_request_timeout, conf.broker_session_timeout, conf.producer_request_timeout) == (
        20,
        20,
        10,
    )
    assert conf.broker_rebalance_timeout < conf.broker_request_timeout


def test_stall_timeout_from_the_option_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EXIMTRACK_STREAM_STALL_TIMEOUT", raising=False)
    assert parse([]).stall_timeout == 60.0
    assert parse(["--stall-timeout", "7.5"]).stall_timeout == 7.5
    monkeypatch.setenv("EXIMTRACK_STREAM_STALL_TIMEOUT", "0")
    assert parse([]).stall_timeout == 0.0
    assert (
        create_app("127.0.0.1:1", data_dir=str(tmp_path), stall_timeout=5.0).eximtrack_stall_detector.timeout
        == 5.0
    )
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path)).eximtrack_stall_detector.timeout == 60.0
    # 0 turns the watchdog off
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path), stall_timeout=0).eximtrack_stall_detector is None
    # sampled a few times per timeout, between 1 and 5 s apart
    assert [stall_check_interval(t) for t in (2, 5, 12, 60, 600)] == [1.0, 1.25, 3.0, 5.0, 5.0]


class ChangelogTable(dict):
    """A plain `messages` table (TableStates takes one in tests) that adds up the bytes its writes put in the
    changelog: key and value for a set, the key alone for a delete."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def __setitem__(self, key: str, value: bytes) -> None:
        super().__setitem__(key, value)
        self.written += len(key) + len(value) + CHANGELOG_RECORD_OVERHEAD

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.written += len(key) + CHANGELOG_RECORD_OVERHEAD


def test_one_producer_batch_holds_the_changelog_of_a_record(tmp_path):
    """The worker's producer batches up to PRODUCER_BATCH_BYTES per partition, and the changelog of one record
    (500 lines of a busy server, written by TableStates.flush as the worker does) fits in that: it goes out as
    one produce request instead of a dozen awaited ones (aiokafka makes a send wait while the partition's
    batch is full)."""
    app = create_app("127.0.0.1:1", data_dir=str(tmp_path / "app"))
    assert app.producer.max_batch_size == PRODUCER_BATCH_BYTES  # what faust hands to aiokafka
    generate(GenConfig(servers=1, messages_per_day=60_000, days=0.2, seed=3), tmp_path / "gen")
    (log,) = (tmp_path / "gen").glob("*.log")
    lines = log.read_text().splitlines()
    table = ChangelogTable()
    states = TableStates(table, "web01")
    joiner = Joiner("web01", "UTC", keep_latest=False, states=states)
    per_record = []
    for start in range(0, len(lines), BATCH_MAX_LINES):
        for n, line in enumerate(lines[start : start + BATCH_MAX_LINES], start):
            joiner.process(line, "f1", n, seq=n)
        before = table.written
        states.flush()  # the end of a record in the worker
        per_record.append(table.written - before)
    assert len(per_record) > 50 and sorted(per_record)[len(per_record) // 2] > 20_000  # a busy server
    assert max(per_record) <= PRODUCER_BATCH_BYTES


def test_faust_declares_no_topic_of_its_own(tmp_path):
    """eximtrack creates every topic (schemas/topics.py, ensured before the worker starts): faust's own
    CreateTopics of existing topics waited out a frozen controller (30 s at start), and its leader topic
    serves `on_leader` timers this app does not have."""
    conf = create_app("127.0.0.1:1", data_dir=str(tmp_path)).conf
    assert conf.topic_allow_declare is False
    assert conf.topic_disable_leader is True
