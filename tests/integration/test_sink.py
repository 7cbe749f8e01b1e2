"""The sink's batching against a real broker and a real chDB store: a batch closes as soon as the sink has
caught up, not after `batch_seconds` (the lines already there would wait up to that long to be stored)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from kafka import KafkaProducer

from producers.topics import ensure_topics
from schemas import topics as T
from schemas.records import DeliveryEvent, dumps_json
from sinks.clickhouse.sink import Sink
from sinks.clickhouse.store import Store, current_chdb_path

pytestmark = [pytest.mark.kafka, pytest.mark.store]


def publish(bootstrap: str, topic: str, items: list) -> None:
    """One record holding `items` as a JSON array (the joiner's output form), acknowledged by the broker."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(topic, key=b"s1", value=dumps_json(items)).get(timeout=30)
    producer.close()


def own_store(tmp_path, name: str = "sink") -> Store:
    """A chDB store of this test's own: chDB allows one path per process, so the one the suite already
    opened (if any), with a database of this test."""
    path = current_chdb_path() or str(tmp_path / "store")
    return Store.open(f"chdb://{path}?database={name}_{uuid.uuid4().hex[:12]}")


def test_a_caught_up_batch_is_stored_without_waiting_out_the_batch_window(tmp_path, kafka_bootstrap):
    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()  # recent: older rows fall under the tables' TTL
    events = [
        DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                      recipient=f"r{i}@example.net", sendunixtime=now - 60 + i,
                      actionunixtime=now - 30 + i, version=i + 1).to_wire()
        for i in range(3)
    ]  # fmt: skip
    publish(kafka_bootstrap, prefix + T.EVENTS.name, events)
    store = own_store(tmp_path)
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=60.0)
    try:
        t0 = time.monotonic()
        records = 0
        while not records and time.monotonic() - t0 < 60:  # the first polls join the group
            records = sink.run_once()
        took = time.monotonic() - t0
    finally:
        sink.close()
    assert records == 1
    # with a 60 s window, only closing the caught-up batch returns this early (joining the group included)
    assert took < 30, f"run_once took {took:.1f} s"
    assert store.query("SELECT count() FROM events FINAL").result_rows[0][0] == 3


def test_the_sink_evaluates_alert_rules_on_its_store(tmp_path, kafka_bootstrap):
    """`eximtrack sink --alerts RULES`: the owner of an embedded store evaluates the rules from its loop and
    stores the alerts (no other process may write that store); its metrics registry carries them."""
    from eximtrack.alerts.rules import parse_rules
    from eximtrack.alerts.runner import AlertLoop
    from sinks.clickhouse.store import ENGINE_LOCK

    prefix = f"sinkalerts-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()
    events = [
        DeliveryEvent(event_id=f"a{i}", type="success", server="s1", msgid=f"1abcE{i}-000000-AA", user="acct",
                      owner="res", email="info@acct.example", senderauth="dovecot_login", protocol="esmtpsa",
                      recipient=f"r{i}@example.net", deliveredto=f"r{i}@example.net", sendunixtime=now - 60 + i,
                      actionunixtime=now - 30 + i, version=i + 1).to_wire()
        for i in range(5)
    ]  # fmt: skip
    publish(kafka_bootstrap, prefix + T.EVENTS.name, events)
    store = own_store(tmp_path, "sinkalerts")
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink")
    rules = parse_rules("rules: [{name: burst, kind: sender_burst, factor: 1, floor: 5}]")
    sink.alerts = AlertLoop(store, rules, seconds=0.5, lock=ENGINE_LOCK, registry=sink.metrics.registry)
    runner = threading.Thread(target=sink.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        rows = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.5)
            with ENGINE_LOCK:
                rows = store.query_dicts("SELECT rule, key, state, value FROM alerts FINAL")
    finally:
        sink.stop()
        runner.join(timeout=30)  # run() closes the consumer and producer
    assert rows == [{"rule": "burst", "key": "user=acct", "state": "firing", "value": 5.0}]
    assert sink.alerts.failures == 0
    assert sink.metrics.registry.get_sample_value("eximtrack_alerts_firing", {"rule": "burst"}) == 1


def _committed(sink) -> int:
    """Offsets the sink's group has committed, summed over its partitions (0 where none is)."""
    return sum(sink.consumer.committed(tp) or 0 for tp in sink.consumer.assignment())


def test_the_hourly_aggregates_are_fed_after_their_batches_and_before_the_commit(tmp_path, kafka_bootstrap):
    """Events are searchable after their batch's insert; the hourly aggregates get them from one later insert
    into events_rollup (migration 020), and the offsets are committed only after it: on the sink's next idle
    poll, and at its stop (docs/GUARANTEES.md)."""
    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")

    def send(first: int, n: int) -> None:
        events = [
            DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                          recipient=f"r{i}@example.net", sendunixtime=now - 60, actionunixtime=now - 30,
                          protocol="esmtpa", senderauth="dovecot_login", version=1).to_wire()
            for i in range(first, first + n)
        ]  # fmt: skip
        producer.send(prefix + T.EVENTS.name, key=b"s1", value=dumps_json(events)).get(timeout=30)

    store = own_store(tmp_path)

    def counts() -> tuple[int, int]:
        stored = store.query("SELECT count() FROM events FINAL").result_rows[0][0]
        counted = store.query("SELECT uniqExactMerge(events) FROM activity_hourly").result_rows[0][0]
        return stored, counted

    def sink_of(rollup_seconds: float) -> Sink:
        return Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=1.0,
                    rollup_seconds=rollup_seconds)  # fmt: skip

    send(0, 3)
    sink = sink_of(60.0)
    try:
        t0 = time.monotonic()
        while not sink.run_once() and time.monotonic() - t0 < 60:  # the first polls join the group
            pass
        assert counts() == (3, 0)  # searchable at once; the aggregates' feed waits for more batches
        assert _committed(sink) == 0  # and so does the commit: a crash now replays the batch
        assert sink.run_once() == 0  # idle: the pending rollup goes in, then the offsets are committed
        assert counts() == (3, 3)
        assert _committed(sink) == 1
        send(3, 2)
        while not sink.run_once() and time.monotonic() - t0 < 60:
            pass
        assert counts() == (5, 3) and _committed(sink) == 1
        sink.stop()
        sink.run()  # stops at once: the pending rollup is inserted and committed on the way out
    finally:
        producer.close()
    assert counts() == (5, 5)
    again = sink_of(0.0)  # a new member of the group starts after the committed offsets: nothing to replay
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8:
            assert again.run_once() == 0
        assert counts() == (5, 5)
    finally:
        again.close()


def test_a_search_through_the_query_endpoint_does_not_hold_up_an_insert(tmp_path):
    """The query endpoint answers on the store's read-only session, not on the writer's turn (ENGINE_LOCK):
    an insert made while a slow search runs returns before the search does."""
    from sinks.clickhouse.query_server import QueryServer, RemoteStore
    from sinks.clickhouse.store import ENGINE_LOCK

    store = own_store(tmp_path)
    server = QueryServer(store)
    server.start()
    done: list[str] = []
    started = threading.Event()

    def search() -> None:
        started.set()
        RemoteStore(store.url, {"port": server.port, "token": server.token}).query(
            "SELECT sum(sleepEachRow(0.5)) FROM numbers(4) SETTINGS max_block_size = 4"
        )  # 2 s
        done.append("search")

    now = time.time()
    event = DeliveryEvent(event_id="e1", type="success", server="s1", msgid="1abcD1-000000-AA",
                          recipient="r1@example.net", sendunixtime=now - 60, actionunixtime=now - 30, version=1)  # fmt: skip
    thread = threading.Thread(target=search)
    try:
        thread.start()
        assert started.wait(10)
        time.sleep(0.5)  # the search is running
        with ENGINE_LOCK:  # as the sink inserts
            store.insert_events([event])
        done.append("insert")
        thread.join(30)
    finally:
        server.stop()
    assert done == ["insert", "search"]
    assert store.query("SELECT count() FROM events").result_rows[0][0] == 1


def test_a_batch_without_events_is_committed_at_once(tmp_path, kafka_bootstrap):
    """Log lines alone wait for no rollup: their batch is committed after its insert, whatever
    --rollup-seconds says."""
    from schemas.records import LogLineRecord

    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    lines = [
        LogLineRecord(f"l{i}", "s1", "1abcD0-000000-AA", time.time() - 30, f"line {i}").to_dict()
        for i in range(3)
    ]
    publish(kafka_bootstrap, prefix + T.LOG_LINES.name, lines)
    store = own_store(tmp_path)
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", rollup_seconds=60.0)
    try:
        t0 = time.monotonic()
        while not sink.run_once() and time.monotonic() - t0 < 60:
            pass
        assert store.query("SELECT count() FROM log_lines").result_rows[0][0] == 3
        assert _committed(sink) == 1
    finally:
        sink.close()


def test_an_event_the_store_cannot_take_is_dead_lettered_alone(tmp_path, kafka_bootstrap):
    """An element that decodes but holds a value its column cannot take (a spam score that is no number)
    fails the insert of
    its batch; the sink narrows it down to that event, dead-letters it with the reason, and stores the
    others of the batch, also in the hourly aggregates (the compiled decoder refuses it, the reference
    decoder keeps it as it is: sinks/clickhouse/decode.py)."""
    from kafka import KafkaConsumer

    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()
    events = [
        DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                      recipient=f"r{i}@example.net", sendunixtime=now - 60, actionunixtime=now - 30,
                      version=1).to_wire()
        for i in range(5)
    ]  # fmt: skip
    events[2]["spamscore"] = "not a number"
    publish(kafka_bootstrap, prefix + T.EVENTS.name, events[:1])  # a record the compiled decoder takes
    publish(kafka_bootstrap, prefix + T.EVENTS.name, events[1:])  # one it leaves to the reference
    store = own_store(tmp_path)
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=2.0)
    try:
        t0 = time.monotonic()
        stored = 0
        while stored < 2 and time.monotonic() - t0 < 60:
            stored += sink.run_once()
        assert sink.run_once() == 0  # idle: the rollup goes in and the offsets are committed
        assert _committed(sink) == 2
    finally:
        sink.close()
    ids = [r[0] for r in store.query("SELECT event_id FROM events FINAL ORDER BY event_id").result_rows]
    assert ids == ["e0", "e1", "e3", "e4"]
    assert store.query("SELECT uniqExactMerge(events) FROM activity_hourly").result_rows[0][0] == 4
    dead = KafkaConsumer(prefix + T.DEAD_LETTER.name, bootstrap_servers=kafka_bootstrap,
                         auto_offset_reset="earliest", consumer_timeout_ms=5000)  # fmt: skip
    try:
        letters = [json.loads(rec.value) for rec in dead]
    finally:
        dead.close()
    assert len(letters) == 1 and "insert failed permanently" in letters[0]["reason"]
    assert json.loads(letters[0]["value"])["event_id"] == "e2"


def test_the_sinks_parts_have_the_trigram_index_from_their_insert(tmp_path, kafka_bootstrap):
    """The sink's inserts build search_time's trigram index themselves (unlike `ingest`, which leaves it to the
    merges): a live store's newest rows are found through it. Left to the merges, a rare term's search read
    the parts not rewritten yet whole: 22 -> 35 ms p50 under a steady load (docs/BENCHMARKS.md, session
    (34))."""
    from eximtrack.web import query as q
    from sinks.clickhouse.store import store_run
    from tests.integration.conftest import grams_index_reads

    prefix = f"sink-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    now = time.time()
    publish(kafka_bootstrap, prefix + T.EVENTS.name, [
        DeliveryEvent(event_id=f"e{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                      recipient=f"r{i}@quote-launch{i}.example.net", sendunixtime=now - 60,
                      actionunixtime=now - 30, version=1).to_wire()
        for i in range(6)
    ])  # fmt: skip
    store = own_store(tmp_path)
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=1.0)
    try:
        t0 = time.monotonic()
        while not sink.run_once() and time.monotonic() - t0 < 60:  # the first polls join the group
            pass
    finally:
        sink.close()
    # one part, as the sink's insert wrote it: its index skips the granule of a string found nowhere
    assert grams_index_reads(store, "zqxjvk") == ("Parts: 0/1", "Granules: 0/1")
    _, got = q.build_search_query({"all": "te-launch"}, None).fetch(store_run(store), None, 10)
    assert len(got) == 6


def test_a_sink_without_partitions_makes_its_consumer_anew_and_stores_once_it_has_them(
    tmp_path, kafka_bootstrap
):
    """A sink whose consumer has had no partition for `group_timeout` closes it and makes a new one (same
    group, same static instance id; the wait doubling while it finds none); once the member holding the
    partitions leaves, the new consumer gets them and what waited is stored. Here another member holds the
    only partition of each topic (range assignment: its instance id sorts first); what the watch exists for is
    kafka-python's group join stopping short of an assignment after a coordinator's death (group_watch.py).
    While the consumer is made anew no broker answers at first (a listener that never replies, as a paused
    broker): the sink keeps trying and goes on once one does, instead of its loop dying."""
    import socket

    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic

    prefix = f"sinkw-{uuid.uuid4().hex[:8]}."
    names = [prefix + t.name for t in (T.EVENTS, T.REJECTS, T.LOG_LINES)]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(n, 1, 1) for n in names])
    admin.close()
    group = prefix + "sink"
    hog = KafkaConsumer(*names, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
                        group_instance_id="aa-hog", session_timeout_ms=6000)  # fmt: skip
    t0 = time.monotonic()
    while len(hog.assignment()) < 3 and time.monotonic() - t0 < 60:
        hog.poll(timeout_ms=200)
    assert len(hog.assignment()) == 3
    hogging = threading.Event()
    hogging.set()

    def keep_polling():  # the hog stays in the group, reading nothing it commits
        while hogging.is_set():
            hog.poll(timeout_ms=200)
        hog.close()  # a static member: its partitions go when its session expires (6 s)

    hog_thread = threading.Thread(target=keep_polling)
    hog_thread.start()
    store = own_store(tmp_path)
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=group, instance_id="zz-sink", group_timeout=1.0)
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    real = dict(sink.consumer_config)
    sink.consumer_config.update(
        bootstrap_servers=[f"127.0.0.1:{silent.getsockname()[1]}"], bootstrap_timeout_ms=1000
    )
    runner = threading.Thread(target=sink.run)
    runner.start()
    try:

        def remade_and_no_broker() -> bool:
            return sink.consumer is None and sink.metrics.kafka_up._value.get() == 0

        t0 = time.monotonic()
        while not remade_and_no_broker() and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert remade_and_no_broker()
        time.sleep(3)  # more attempts fail
        assert runner.is_alive() and sink.consumer is None
        sink.consumer_config.update(real)
        t0 = time.monotonic()
        while sink.metrics.consumer_remade._value.get() < 2 and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert sink.metrics.consumer_remade._value.get() >= 2
        assert sink.group_watch.wait >= 4.0  # doubled after each remake that found no partition
        now = time.time()
        events = [
            DeliveryEvent(event_id=f"w{i}", type="success", server="s1", msgid=f"1abcD{i}-000000-AA",
                          recipient=f"r{i}@example.net", sendunixtime=now - 60 + i,
                          actionunixtime=now - 30 + i, version=1).to_wire()
            for i in range(3)
        ]  # fmt: skip
        publish(kafka_bootstrap, names[0], events)
        hogging.clear()
        hog_thread.join(30)
        t0 = time.monotonic()
        stored = 0
        while stored < 3 and time.monotonic() - t0 < 90:
            time.sleep(0.5)
            stored = store.query("SELECT count() FROM events FINAL").result_rows[0][0]
        assert stored == 3
        assert len(sink.consumer.assignment()) == 3 and sink.group_watch.wait == 1.0
        assert runner.is_alive()
    finally:
        silent.close()
        hogging.clear()
        sink.stop()
        runner.join(60)


def test_a_sink_told_to_close_hours_rolls_the_old_ones_up_between_batches(tmp_path, kafka_bootstrap):
    """`--close-hours-after-days`: the sink's loop runs the hour closing (sinks/clickhouse/closing_schedule.py)
    on the store it holds, which `eximtrack rollup` could not open beside it; the numbers read stay."""
    from eximtrack.stats import rollup_horizon

    prefix = f"sinkc-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    store = own_store(tmp_path)
    old = time.time() - 20 * 86400  # closed 16 days after its hour ends
    store.insert_events(
        [
            DeliveryEvent(
                event_id=f"c{i}",
                type="success",
                server="s1",
                msgid=f"1abcC{i}-000000-AA",
                recipient=f"r{i}@example.net",
                sendunixtime=old + 60 * i,
                actionunixtime=old + 60 * i + 5,
                protocol="esmtps",  # an arrival's row: mail_hourly counts it
                version=1,
            )
            for i in range(5)
        ]
    )
    sent = store.query("SELECT sum(messages) FROM mail_hourly_all").result_rows[0][0]
    assert sent == 5 and store.query("SELECT count() FROM mail_hourly_totals").result_rows[0][0] == 0
    sink = Sink(store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", close_hours_after_days=16,
                batch_seconds=0.2)  # fmt: skip
    sink.closing.due = 0  # due now instead of a minute after the start
    runner = threading.Thread(target=sink.run)
    runner.start()
    try:
        t0 = time.monotonic()
        while rollup_horizon(store).timestamp() < old and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert rollup_horizon(store).timestamp() > old
        assert store.query("SELECT count() FROM mail_hourly_totals").result_rows[0][0] > 0
        assert store.query("SELECT sum(messages) FROM mail_hourly_all").result_rows[0][0] == sent
        assert sink.closing.steps >= 1 and runner.is_alive()
    finally:
        sink.stop()
        runner.join(60)


def letters_sent(sink) -> float:
    return sink.metrics.registry.get_sample_value("eximtrack_sink_dead_letters_total") or 0.0


def test_a_dead_letter_the_broker_refuses_commits_nothing_and_is_sent_again(tmp_path, kafka_bootstrap):
    """A dead letter the producer could not deliver (here the broker refuses it: the dead-letter topic's
    `max.message.bytes` made too small) must not be committed past: the batch would be lost without its
    letter. The sink commits nothing and reads the batches again from the last commit, until the letter is
    delivered (the topic fixed); then it commits, and the good record is stored once."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import ConfigResource, ConfigResourceType

    prefix = f"sinkdl-{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    dead_topic = prefix + T.DEAD_LETTER.name
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)

    def letter_limit(limit: int) -> None:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, dead_topic, {"max.message.bytes": str(limit)})]
        )

    def committed() -> int:
        offsets = admin.list_group_offsets({prefix + "sink": None}).get(prefix + "sink", {})
        return sum(o.offset for o in offsets.values() if o.offset > 0)

    letter_limit(100)  # below any dead letter
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(prefix + T.EVENTS.name, key=b"s1", value=b"this is not JSON " * 20).get(timeout=30)
    producer.close()
    now = time.time()
    good = DeliveryEvent(event_id="g1", type="success", server="s1", msgid="1abcG1-000000-AA",
                         recipient="r@example.net", sendunixtime=now - 60, actionunixtime=now - 30, version=1)  # fmt: skip
    publish(kafka_bootstrap, prefix + T.EVENTS.name, [good.to_wire()])
    store = own_store(tmp_path)
    sink = Sink(
        store, kafka_bootstrap, prefix=prefix, group=prefix + "sink", batch_seconds=0.5, rollup_seconds=0
    )
    runner = threading.Thread(target=sink.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while letters_sent(sink) < 2 and time.monotonic() < deadline:  # sent, read again, sent
            time.sleep(0.2)
        assert letters_sent(sink) >= 2, "the batch was not read again"
        assert committed() == 0  # nothing committed past the letter the broker refused
        letter_limit(1_048_588)  # fixed: the next try delivers it
        deadline = time.monotonic() + 60
        while committed() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert committed() == 2
    finally:
        sink.stop()
        runner.join(30)
        admin.close()
    assert store.query("SELECT event_id FROM events FINAL").result_rows == [("g1",)]
    dead = KafkaConsumer(dead_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                         consumer_timeout_ms=5000)  # fmt: skip
    try:
        letters = [json.loads(rec.value) for rec in dead]
    finally:
        dead.close()
    assert letters and all(letter["offset"] == 0 for letter in letters)
