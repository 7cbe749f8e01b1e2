"""The ClickHouse sink (`eximtrack sink`): events, rejects and log lines from Kafka -> the store.

Commit order (docs/GUARANTEES.md), the one rule this module exists for:
  1. poll a batch (bounded by `batch_size` decoded items and `batch_seconds` of waiting; closed early once
     it is CAUGHT_UP_AGE old and nothing more is waiting),
  2. decode it (sinks/clickhouse/decode.py: JSON arrays of events / rejects / log lines straight into
     Arrow columns): a record that can never be inserted (not JSON, too large) goes to the dead-letter topic
     with the reason, and so does each element of an array that is unusable (wrong schema), on its own;
     the dead-letter producer is flushed (acks=all) before the commit, and a dead letter it could not
     deliver commits nothing: the batches are read again (DeadLetterLost),
  3. insert events, rejects and lines through clickhouse-connect; a transient error is retried inside the
     loop with capped, jittered backoff (sinks/clickhouse/retry.py) — the sink blocks, Kafka lag is the
     buffer; a permanent error is narrowed down to the bad records, which are dead-lettered,
  4. the events' rollup (`events_rollup`, which feeds the hourly aggregates: migration 020) is inserted once
     the batches held by the `RollupFeed` are `rollup_seconds` old (or many, or the sink is idle or
     stopping): one insert for several batches, since its cost is mostly fixed per insert,
  5. only then commit the consumer offsets; a batch whose rollup is still pending is not committed.
A crash anywhere before 5 replays the batches since the last commit, and so does a Kafka error in the loop
(the consumer is made anew at the committed offsets; its position was past them): harmless, because every
record has a deterministic id and the tables are ReplacingMergeTrees read with FINAL (the same insert twice
changes nothing a query sees), and the aggregates keep set states of ids (the same event counted twice is
counted once).

Between batches it also watches its consumer (sinks/clickhouse/group_watch.py): one that has consumed nothing
for `group_timeout` seconds while it has no partition, or while records wait on its partitions, is closed
and made anew, its pending rollup inserted first.

Between batches, at most every 30 s, it refreshes the hourly stats snapshots of the hours written that
settled (unchanged since the previous refresh; eximtrack/stats_snapshots.py: a speed-up for `stats` and the
dashboards; a failure is logged, never fatal). With `--close-hours-after-days N` it also rolls the hours older
than N days up into plain totals, an hour at a time (sinks/clickhouse/closing_schedule.py).

In embedded mode (chdb://) this process owns the store (chDB allows one process per directory), so it also
serves read-only queries for the CLI and the web page on 127.0.0.1 (sinks/clickhouse/query_server.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import threading
import time

from eximtrack import stats_snapshots
from eximtrack.broker_probe import client_settings
from schemas import topics as T
from schemas.records import dead_letter_record
from sinks.clickhouse import encode
from sinks.clickhouse.closing_schedule import ClosingSchedule
from sinks.clickhouse.decode import DecodedBatch
from sinks.clickhouse.group_watch import DEFAULT_TIMEOUT as GROUP_TIMEOUT
from sinks.clickhouse.group_watch import GroupWatch
from sinks.clickhouse.metrics import SinkMetrics
from sinks.clickhouse.retry import REJECT, backoff, classify
from sinks.clickhouse.rollup_feed import DEFAULT_SECONDS as ROLLUP_SECONDS
from sinks.clickhouse.rollup_feed import RollupFeed
from sinks.clickhouse.store import ENGINE_LOCK

log = logging.getLogger("eximtrack.sink")

# An embedded store held by another process at start (a CLI search that found no query endpoint and opened
# the directory itself, a sink still stopping) is waited for, not a reason to exit.
LOCK_WAIT_SECONDS = 60.0


class SinkStopped(Exception):
    """Raised inside a retry loop when the sink is asked to stop: the batch is left uncommitted."""


class DeadLetterLost(Exception):
    """A dead letter of the batches since the last commit was not delivered (the producer gave up on it):
    nothing is committed, and the consumer is made anew at the committed offsets, so they are read again."""


# a batch at least this old (seconds since its first record) closes when a poll of CAUGHT_UP_POLL finds no more
CAUGHT_UP_AGE = 0.25
CAUGHT_UP_POLL = 0.05


class Sink:
    """Kafka -> store, with the commit order above. I/O only; the rules live in decode and retry."""

    def __init__(self, store, brokers: str, *, prefix: str = "", group: str = "eximtrack-sink",
                 batch_size: int = 20000, batch_seconds: float = 1.0, max_retry_seconds: float | None = None,
                 instance_id: str | None = None, rollup_seconds: float = ROLLUP_SECONDS,
                 group_timeout: float = GROUP_TIMEOUT, close_hours_after_days: int = 0) -> None:  # fmt: skip
        """`instance_id` gives the sink a static group membership (Kafka KIP-345), as the worker has: a sink
        restarted after a crash takes its partitions back at once instead of waiting for the dead member's
        session to expire (45 s: the ~40 s pause seen after a SIGKILL). `rollup_seconds`: how long a batch's
        events wait for the hourly aggregates' insert (0: with every batch). `group_timeout`: seconds without
        a record, while records wait or no partition is assigned, before the consumer is made anew
        (GroupWatch; 0 = never)."""
        self.store = store
        self.kinds = {
            prefix + T.EVENTS.name: "event",
            prefix + T.REJECTS.name: "reject",
            prefix + T.LOG_LINES.name: "line",
        }
        self.dead_topic = prefix + T.DEAD_LETTER.name
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.max_retry_seconds = max_retry_seconds
        self.rollup = RollupFeed(rollup_seconds, max_rows=max(batch_size, 1))
        # Records are arrays of up to a few hundred items each; poll few at a time so that one batch stays
        # near batch_size items.
        self.max_poll_records = max(1, min(batch_size, 500))
        self.metrics = SinkMetrics()
        self._stop = threading.Event()
        # stats snapshots of the hours written (eximtrack/stats_snapshots.py), at most every 30 s
        self.snapshots = stats_snapshots.Refresher(store, lock=ENGINE_LOCK)
        # the hours older than close_hours_after_days rolled into totals, their states dropped (0: never)
        self.closing = (
            ClosingSchedule(store, close_hours_after_days, lock=ENGINE_LOCK)
            if close_hours_after_days > 0
            else None
        )
        self.alerts = None  # eximtrack/alerts/runner.py AlertLoop, with --alerts
        self.consumer_config = {
            "bootstrap_servers": brokers.split(","),
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.max_poll_records,
            "max_poll_interval_ms": 600_000,  # a long store outage must not get us kicked out of the group
            "group_instance_id": instance_id,
            # kafka-python gives one bootstrap attempt the whole of this: a broker that accepts connections
            # and never answers (paused, blackholed) would hold a new consumer for its default 30 s
            "bootstrap_timeout_ms": 10_000,
        }
        self.consumer = self._new_consumer()  # None while a consumer made anew has found no broker
        self.group_watch = GroupWatch(group_timeout, now=time.monotonic())
        self.brokers = brokers
        self.producer = self._new_producer()
        self.dead_letters_sent: list = []  # their delivery futures since the last commit (checked by _commit)

    def stop(self) -> None:
        self._stop.set()

    def _new_producer(self):
        """The dead-letter producer, from the servers that answer now."""
        from kafka import KafkaProducer

        return KafkaProducer(**client_settings(self.brokers), acks="all", linger_ms=5)

    def _new_consumer(self):
        from kafka import KafkaConsumer

        # from the servers that answer now (eximtrack/broker_probe.py); when none does, all of them, and the
        # bootstrap timeout above bounds the attempt (the loop makes it again)
        config = dict(self.consumer_config, **client_settings(self.consumer_config["bootstrap_servers"]))
        return KafkaConsumer(*self.kinds, **config)

    def _watch_group(self, consumed: bool) -> None:
        """Make the consumer anew when it stopped getting records it should get (GroupWatch): what was
        inserted and not committed is consumed again by whoever gets its partitions (harmless, as after a
        crash)."""
        if self.consumer is None:  # being made anew (run)
            return
        now = time.monotonic()
        since = self.group_watch.since
        assigned = bool(self.consumer.assignment())
        if not self.group_watch.check(consumed, assigned, now, self._records_waiting):
            return
        log.warning(
            "%s for %.0f s: the Kafka consumer is made anew (same group, same instance id)",
            "records waiting and none consumed" if assigned else "no partition assigned",
            now - since,
        )
        self.metrics.consumer_remade.inc()
        self._finish()
        self._drop_consumer()

    def _drop_consumer(self) -> None:
        """Close the consumer without committing; run's next round makes a new one (retried while no broker
        answers), which starts at the group's committed offsets."""
        self.dead_letters_sent.clear()  # what they belonged to is read again
        try:
            self.consumer.close(autocommit=False, timeout_ms=5000)
        except Exception as exc:  # a consumer in this state may not close cleanly; it is dropped either way
            log.warning("closing the old consumer: %s", exc)
        self.consumer = None

    def _records_waiting(self) -> bool | None:
        """Whether any assigned partition holds records past this consumer's position, by the partitions'
        leaders (not the group's coordinator); None when they or the position cannot be had."""
        parts = list(self.consumer.assignment())
        try:
            ends = self.consumer.end_offsets(parts, timeout_ms=10_000)
            return any(
                (ends.get(tp) or 0) > (self.consumer.position(tp, timeout_ms=5000) or 0) for tp in parts
            )
        except Exception as exc:  # a timeout, a broker gone: cannot tell
            log.info("records waiting: cannot tell (%s)", exc)
            return None

    def run(self) -> None:
        from kafka.errors import KafkaError

        attempt = 0
        try:
            while not self._stop.is_set():
                consumed = 0
                try:
                    if self.consumer is None:
                        self.consumer = self._new_consumer()  # KafkaError when no broker lets it bootstrap
                    consumed = self.run_once()
                    self.metrics.kafka(True)
                    attempt = 0
                    self.snapshots.maybe()
                    if self.closing is not None:
                        self.closing.maybe()
                    if self.alerts is not None:
                        self.alerts.maybe()
                except (KafkaError, DeadLetterLost) as exc:
                    self.metrics.kafka(False)
                    # The broker went away (a poll, a dead letter or the offset commit failed), maybe in the
                    # middle of a batch. The batches since the last commit are read again by a new consumer
                    # (from the group's committed offsets; this one's position is past them): what was
                    # inserted is inserted again, harmless (idempotent tables), and nothing polled is skipped.
                    delay = backoff(attempt, base=0.5, cap=10.0)
                    attempt += 1
                    log.warning(
                        "Kafka unavailable (%s); reading again from the last commit in %.1fs", exc, delay
                    )
                    if self.consumer is not None:
                        self.rollup.take()  # those batches' rollup comes again with them
                        self._drop_consumer()
                    if isinstance(exc, DeadLetterLost):  # kafka-python's producer can stay failed after one
                        self.producer.close(timeout=5)
                        self.producer = self._new_producer()
                    if self._stop.wait(delay):
                        break
                self._watch_group(consumed > 0)
        except SinkStopped as exc:
            log.info("%s", exc)
        finally:
            self._finish()
            self.close()
            if self.alerts is not None:
                self.alerts.close()

    def _finish(self) -> None:
        """On the way out: the pending rollup inserted and its batches committed, when the store and the
        broker allow it in one try (else they are replayed by the next sink: harmless)."""
        rows = len(self.rollup)
        if not rows:
            return
        data, _ = self.rollup.take()
        try:
            with ENGINE_LOCK:
                self.store.insert_rollup_encoded(data)
            if self.consumer is not None:
                self._commit()
        except Exception as exc:  # the batches stay uncommitted: replayed, harmless
            log.warning("pending rollup of %d events not inserted at stop (%s); replayed later", rows, exc)

    def close(self) -> None:
        try:
            if self.consumer is not None:
                self.consumer.close(autocommit=False)
        finally:
            self.producer.close()

    def run_once(self) -> int:
        """One batch: poll, decode, insert (with retries), then commit. Returns the number of records."""
        records = 0
        items = 0
        decoded = {kind: DecodedBatch(kind) for kind in ("event", "reject", "line")}
        deadline = time.monotonic() + self.batch_seconds
        opened = None  # when the batch's first record came
        # A record holds an array (the joiner's output of one raw-lines record): bound the batch by the
        # number of decoded items, not of Kafka records. A batch also closes once it is CAUGHT_UP_AGE old and
        # a short poll finds nothing more: the sink has caught up, and waiting out batch_seconds would only
        # delay what is already there (up to a second of every line's freshness, and of a restart's first
        # stored line); under a steady stream batches still fill up to the limits.
        while items < self.batch_size and not self._stop.is_set():
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                break
            wait = left if opened is None else min(left, max(CAUGHT_UP_POLL, opened + CAUGHT_UP_AGE - now))
            polled = self.consumer.poll(timeout_ms=int(wait * 1000) + 1, max_records=self.max_poll_records)
            if not polled:
                if opened is not None and time.monotonic() - opened >= CAUGHT_UP_AGE:
                    break
                continue
            if opened is None:
                opened = time.monotonic()
            for tp, batch in polled.items():
                self.metrics.records.labels(tp.topic).inc(len(batch))
                for rec in batch:
                    records += 1
                    kind = self.kinds.get(rec.topic, "event")
                    try:
                        added, bad = decoded[kind].add(rec.value)
                    except ValueError as exc:
                        self._dead_letter(rec.topic, rec.partition, rec.offset, str(exc), rec.value)
                        continue
                    for i, reason, value in bad:
                        self._dead_letter(
                            rec.topic, rec.partition, rec.offset, f"element {i}: {reason}", value
                        )
                    items += added
        if not records:
            if len(self.rollup):  # idle: the aggregates catch up now, and the batches held are committed
                self._insert_rollup()
                self._commit()
            return 0
        self._insert_all("event", decoded["event"], self._insert_events)
        self._insert_all("reject", decoded["reject"], self._inserter("rejects"))
        self._insert_all("line", decoded["line"], self._inserter("log_lines"))
        m = self.metrics
        m.batches.inc()
        for kind, items in decoded.items():
            m.rows.labels(kind).inc(len(items))
        # commit now unless events of these batches wait for the rollup (a batch of lines only waits for nothing)
        if not len(self.rollup) or self.rollup.due() or self.rollup.seconds <= 0 or self._stop.is_set():
            self._insert_rollup()
            self._commit()  # only after every insert of the batches since the last commit returned
        self._measure_lag()
        return records

    def _insert_events(self, events: DecodedBatch | list) -> None:
        """Events into `events` now (searchable), their rollup held by the feed."""
        data = _encoded("events", events)
        self.store.insert_encoded("events", data, rollup=False)
        self.rollup.add(data, events)

    def _inserter(self, table: str):
        def insert(items: DecodedBatch | list) -> None:
            self.store.insert_encoded(table, _encoded(table, items))

        return insert

    def _insert_rollup(self) -> None:
        rows = len(self.rollup)
        data, held = self.rollup.take()

        def insert(items: list) -> None:  # all at once, or a part when narrowing down a permanent error
            if items is held:
                self.store.insert_rollup_encoded(data)
            else:
                self.store.insert_rollup(items)

        self._insert_all("rollup", held, insert, rows)

    def _commit(self) -> None:
        self.producer.flush()
        lost = [f for f in self.dead_letters_sent if f.failed()]
        if lost:
            raise DeadLetterLost(f"{len(lost)} dead letter(s) not delivered ({lost[0].exception!r})")
        self.dead_letters_sent.clear()
        self.consumer.commit()
        self.metrics.last_commit.set(time.time())

    def _measure_lag(self) -> None:
        """Records between this sink's position (just committed) and each assigned partition's end, as the
        last fetch responses told it (a request only for a partition whose position is not known yet)."""
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None:
                position = self.consumer.position(tp, timeout_ms=1000) or 0
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))

    def _insert_all(self, kind: str, items, insert, rows: int | None = None) -> None:
        """`insert(items)` (a DecodedBatch, or the rollup's batches: `rows` rows), retried while the error
        is transient, narrowed down to the bad records when it is permanent."""
        rows = len(items) if rows is None else rows
        if not rows:
            return
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                began = time.monotonic()
                with ENGINE_LOCK:
                    insert(items)
                self.metrics.inserts.labels(kind).inc()
                self.metrics.insert_seconds.labels(kind).observe(time.monotonic() - began)
                self.metrics.store(True)
                return
            except Exception as exc:  # classified below; nothing is dropped without a dead letter
                self.metrics.insert_errors.labels(kind).inc()
                if classify(exc) == REJECT:
                    self._insert_narrowing(kind, _records(items), insert)
                    return
                if self.max_retry_seconds is not None and time.monotonic() - started > self.max_retry_seconds:
                    raise
                self.metrics.store(False)
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "insert of %d %s records failed (%s); retry %d in %.1fs",
                    rows,
                    kind,
                    exc,
                    attempt,
                    delay,
                )
                if self._stop.wait(delay):
                    raise SinkStopped(
                        "stopped while retrying; the batch is not committed and will be replayed"
                    ) from exc

    def _insert_narrowing(self, kind: str, items: list, insert) -> None:
        """A permanent error: insert halves until the bad records are found; dead-letter only those."""
        if len(items) == 1:
            try:
                with ENGINE_LOCK:
                    insert(items)
            except Exception as exc:
                if classify(exc) != REJECT:
                    raise
                self._dead_letter(
                    kind, -1, -1, f"insert failed permanently: {exc}", json.dumps(items[0].to_dict()).encode(),
                    server=getattr(items[0], "server", None), msgid=getattr(items[0], "msgid", None),
                )  # fmt: skip
            return
        mid = len(items) // 2
        for part in (items[:mid], items[mid:]):
            try:
                with ENGINE_LOCK:
                    insert(part)
            except Exception as exc:
                if classify(exc) != REJECT:
                    raise
                self._insert_narrowing(kind, part, insert)

    def _dead_letter(self, topic: str, partition: int, offset: int, reason: str, value: bytes | None,
                     server: str | None = None, msgid: str | None = None) -> None:  # fmt: skip
        self.metrics.dead_letters.inc()
        self.dead_letters_sent.append(
            self.producer.send(self.dead_topic, dead_letter_record(topic, partition, offset, reason, value))
        )
        where = {k: v for k, v in (("server", server), ("msgid", msgid)) if v}
        log.warning("dead-lettered %s[%s]@%s: %s", topic, partition, offset, reason, extra=where)


def _encoded(table: str, items: DecodedBatch | list) -> bytes:
    """A batch's Arrow IPC, or that of a part of it (record objects) while narrowing down an error."""
    return items.arrow_ipc() if isinstance(items, DecodedBatch) else encode.arrow_ipc(table, items)


def _records(items) -> list:
    """The record objects of a DecodedBatch, or of the batches the rollup feed held (a DecodedBatch each, or
    a list of events: a part inserted while narrowing down an error)."""
    if isinstance(items, DecodedBatch):
        return items.records()
    return [r for batch in items for r in (batch.records() if isinstance(batch, DecodedBatch) else batch)]


def register(subparsers) -> None:
    p = subparsers.add_parser("sink", help="run the ClickHouse sink: delivery events from Kafka -> the store")
    p.add_argument("--brokers", default="127.0.0.1:9092", help="Kafka bootstrap HOST:PORT[,…]")
    p.add_argument(
        "--store", default=None, help="chdb:///path (default ./data or $EXIMTRACK_STORE) or http://host:8123"
    )
    p.add_argument("--topic-prefix", default="", help="prefix of every topic name (tests)")
    p.add_argument("--group", default="eximtrack-sink", help="Kafka consumer group")
    p.add_argument("--batch-size", type=int, default=20000)
    p.add_argument("--batch-seconds", type=float, default=1.0)
    p.add_argument(
        "--rollup-seconds",
        type=float,
        default=ROLLUP_SECONDS,
        help="insert the hourly aggregates' feed (events_rollup) for the batches of this many seconds at once; "
        "offsets are committed after it (0 = with every batch; default %(default)s)",
    )
    p.add_argument(
        "--query-port",
        type=int,
        default=0,
        help="embedded store: serve read-only queries here (0 = any free port)",
    )
    p.add_argument(
        "--instance-id",
        default=None,
        help="static group membership id, stable across restarts (default: host + group + store); give each "
        "sink of one host its own when several write to one server store",
    )
    p.add_argument(
        "--group-timeout",
        type=float,
        default=GROUP_TIMEOUT,
        help="seconds without a record, while records wait or no partition is assigned, before the Kafka "
        "consumer is made anew (doubling while that goes on, up to 10 min; 0 = never; default %(default)s)",
    )
    p.add_argument(
        "--close-hours-after-days",
        type=int,
        default=0,
        metavar="N",
        help="roll the hours older than N days up into mail_hourly_totals and drop their set states, an hour at "
        "a time between batches (what `eximtrack rollup --drop-states` does, which cannot open an embedded store "
        "the sink holds; 16 is safe: docs/SQL.md; default 0 = never)",
    )
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics, /healthz and /readyz on this port (0 = any free port)")  # fmt: skip
    p.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default: %(default)s)"
    )
    p.add_argument(
        "--lock-wait",
        type=float,
        default=LOCK_WAIT_SECONDS,
        help="embedded store: seconds to wait while another process holds its directory (default %(default)s)",
    )
    p.add_argument(
        "--alerts",
        metavar="RULES",
        default=None,
        help="also evaluate fleet alert rules (a rules file, or `default`) every --alerts-interval seconds in "
        "this process: how alerts run on an embedded store, which only its owner may write (docs/ALERTS.md)",
    )
    p.add_argument("--alerts-interval", type=float, default=60.0, help="seconds between alert evaluations")
    p.set_defaults(func=_run)


def default_instance_id(group: str, store_url: str) -> str:
    """host + a hash of (group, store): the same after a restart, different for another store or group."""
    digest = hashlib.sha1(f"{group}\n{store_url}".encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def _run(args) -> int:
    from eximtrack import logs
    from eximtrack.gc_policy import tune_for_throughput
    from producers.topics import ensure_topics, retry_at_start
    from sinks.clickhouse.store import Store

    logs.configure("sink", logging.INFO)
    # idempotent: the sink may start before the worker
    retry_at_start(lambda: ensure_topics(args.brokers, prefix=args.topic_prefix), "the topic check")
    store = Store.open(args.store, wait_for_lock=args.lock_wait)
    server = None
    if store.url.backend == "chdb":
        from sinks.clickhouse.query_server import QueryServer

        server = QueryServer(store, port=args.query_port)
        server.start()
        log.info("embedded store %s: queries served on 127.0.0.1:%d", store.url.path, server.port)
    instance = args.instance_id or default_instance_id(args.group, store.url.display())
    sink = Sink(store, args.brokers, prefix=args.topic_prefix, group=args.group, batch_size=args.batch_size,
                batch_seconds=args.batch_seconds, instance_id=instance,
                rollup_seconds=args.rollup_seconds, group_timeout=args.group_timeout,
                close_hours_after_days=args.close_hours_after_days)  # fmt: skip
    if args.alerts:
        from eximtrack.alerts.rules import load_rules
        from eximtrack.alerts.runner import AlertLoop

        rules = load_rules(None if args.alerts == "default" else args.alerts)
        sink.alerts = AlertLoop(store, rules, args.alerts_interval, ENGINE_LOCK, sink.metrics.registry)
        log.info("fleet alerts: %d rules every %.0f s", len(rules.rules), args.alerts_interval)

    ops = None
    if args.metrics_port is not None:
        from eximtrack.ops_endpoint import OpsEndpoint

        ops = OpsEndpoint(
            sink.metrics.registry, args.metrics_port, args.metrics_host, ready=sink.metrics.ready
        )
        log.info("metrics, /healthz and /readyz on %s:%d", args.metrics_host, ops.port)

    def _stop(*_):
        sink.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    tune_for_throughput()  # the store, the consumer and the servers are up: keep them out of the collector's walks
    try:
        sink.run()
    finally:
        if server is not None:
            server.stop()
        if ops is not None:
            ops.shutdown()
    return 0
