"""The faust-streaming app (`eximtrack stream`): raw lines from Kafka -> the core joiner -> events to Kafka.

A thin I/O shell around `stream.join.Joiner` (the same joiner `eximtrack ingest` uses). What it owns:

- State: the per-message `MessageState`s live in a faust Table (`messages`, changelog-backed, so a restarted
  or re-balanced worker recovers them; held in a local RocksDB under `--data-dir`, so a restart on the same
  disk reads only the changelog written since). The table is keyed by "server\\x1fmsgid"; the raw-lines topic is keyed
  by server, and faust writes each table change to the changelog partition of the event being processed, so
  a message's state always sits on its server's partition (co-partitioned).
- Bounded state: the joiner ends states on `Completed` (+ grace) and on expiry by event time, sweeping
  inside the agent while it handles lines of the same server (faust has no per-key TTL, and tables may only
  change while processing an event). `eximtrack_open_messages` counts what is held.
- Batches: a raw-lines record holds many lines of one file (`schemas.records.decode_raw_record` reads a
  batch or a single line). Every line is processed in order with `seq = kafka_offset * 65536 + index in
  the batch` (monotone per partition). The states touched by one record are cached in `TableStates` and
  written to the table once at the end of the record; the record's events, rejects and log lines go out
  as ONE record per output topic (a JSON array, keyed by server; split in halves only above
  OUT_RECORD_BYTES).
- Delivery (docs/GUARANTEES.md): at-least-once with deterministic ids. The agent runs with concurrency 1
  (faust-streaming#606: concurrency > 1 can commit past in-flight events). Each record's table changelog is
  handed to the Kafka client before the next record (back-pressure: faust's producer queue stays at one
  record's states), and faust flushes the producer (events, and the table changelog) before it commits the
  source offsets. After a crash, records past the committed offset are processed again: a message whose
  state already applied a line (`seq <= hw`) re-emits its current rows and its removed rows' tombstones
  instead of applying it twice, and a line the shipper re-sent (same file id and offset, in a newer record)
  is recognised by the per-server position table and skipped. The sink makes the repeats harmless
  (ReplacingMergeTree by event id + version). A record the producer could not deliver ends the worker before
  the next commit (stream/send_guard.py), so it is replayed too.
- Bad records (not JSON, wrong schema, huge, a malformed line in a batch) go to the dead-letter topic with
  the reason; the agent goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, MutableMapping
from pathlib import Path

import faust
import orjson

# faust's own record of the event being processed: table writes go to its partition (flush_held sets it)
from faust.streams import _current_event
from faust.tables import TableManager
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eximtrack.broker_probe import answering, client_settings
from schemas import topics as T
from schemas.records import MAX_BATCH_LINES, dead_letter_record, decode_raw_record, dumps_json
from stream.accounts import AccountMap
from stream.join import Joiner, MessageState, state_ends
from stream.metrics import WorkerMetrics
from stream.send_guard import exit_on_lost_send
from stream.stall_detector import Stall, StallDetector

log = logging.getLogger("eximtrack.stream")

SEP = "\x1f"
# An output record (a JSON array) is split in halves above this size: below the sink's MAX_RECORD_BYTES and
# the producers' and broker's default 1 MB record limit.
OUT_RECORD_BYTES = 512 * 1024
# The producer's batch per partition (events, rejects, log lines and the tables' changelog): see create_app.
PRODUCER_BATCH_BYTES = 256 * 1024
# RocksDB of one table partition (faust opens one per table and partition: 3 x 12 here). faust's defaults are
# sized for a dedicated host (a 2 GiB block cache and 64 MiB write buffers each); the join states of a
# partition are tens of MB, so small buffers and caches keep the worker's memory near the states' size.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
    "max_open_files": 256,
}


# The joiners' states are written to the `messages` table (and its changelog) once per touched message per
# flush, and a flush comes after this many lines or this many seconds since the first record it holds,
# whichever is first (or at once while the group rebalances). Most messages arrive, are delivered and complete
# within a few thousand lines of each other: flushed every record (500 lines) the pipeline's corpus wrote
# 0.29 states a line, every 10,000 lines 0.15, and a state never written needs no changelog record. The
# records' offsets are acked, so committed, only by the flush that wrote their states (docs/GUARANTEES.md).
STATE_FLUSH_LINES = 10_000
STATE_FLUSH_SECONDS = 1.0

_DELETED = object()  # a write-back cache entry: the state was deleted since the last flush


class _StoredState:
    """A table value seen by `Joiner.sweep`, which reads only `completed_at` and `last_seen`: those come
    from the open-state index (`OpenStates`), and the state is read from the table and decoded only if anything
    else is asked for. (A sweep visits every open message of its server; reading each one would cost
    O(open messages).)"""

    __slots__ = ("table", "key", "ends", "state")

    def __init__(self, table, key: str, ends: tuple[float, float]) -> None:
        self.table = table
        self.key = key
        self.ends = ends
        self.state: MessageState | None = None

    @property
    def completed_at(self) -> float:
        return self.ends[0]

    @property
    def last_seen(self) -> float:
        return self.ends[1]

    def __getattr__(self, name: str):
        if self.state is None:
            self.state = MessageState.from_value(self.table[self.key])
        return getattr(self.state, name)


class OpenStates:
    """Per server, the `(completed_at, last_seen)` of every state in the `messages` table: all that a sweep and
    the open-message count read, so that neither walks the table (with RocksDB a walk reads and decodes every
    key of every server: ~0.5 s per 100k open messages, once per server per sweep).

    Built by one walk of the table on first use, and again after the worker's partitions change (faust has
    then restored the table from its changelog); kept up to date by `TableStates.flush`, the only writer of the
    table while the agent runs."""

    def __init__(self, table) -> None:
        self.table = table
        self.by_server: dict[str, dict[str, tuple[float, float]]] | None = None
        self.builds = 0

    def invalidate(self) -> None:
        self.by_server = None

    def of(self, server: str) -> dict[str, tuple[float, float]]:
        """{msgid: (completed_at, last_seen)} of the server's states in the table (a live dict: flush updates it)."""
        if self.by_server is None:
            by: dict[str, dict[str, tuple[float, float]]] = {}
            for k, v in self._items():  # nothing writes the table during this walk: no copy
                if isinstance(k, str) and v is not None and SEP in k:
                    server_of, _, msgid = k.partition(SEP)
                    by.setdefault(server_of, {})[msgid] = state_ends(v)
            self.by_server = by
            self.builds += 1
        return self.by_server.setdefault(server, {})

    def _items(self) -> Iterator[tuple]:
        """(key, stored bytes) of every state. From a faust table, the raw items of its store (the hook
        faust's SerializedStore reads them through), keys decoded here: they are JSON strings (faust's
        default key serializer), and decoding each key and value through faust's serializer registry took
        most of the walk (~1 s per 200k states after a restart, before the first record)."""
        raw = getattr(getattr(self.table, "data", None), "_iteritems", None)
        if raw is None:  # a plain mapping (tests)
            yield from self.table.items()
            return
        for k, v in raw():
            try:
                yield orjson.loads(k), v
            except orjson.JSONDecodeError:
                continue  # not a key this app wrote


class TableStates(MutableMapping):
    """The joiner's `states` mapping for one server, stored in the faust `messages` table as the compact JSON
    bytes of `MessageState.to_bytes()` (dicts, as older versions stored, are read too), with a write-back
    cache for the Kafka records held since the last flush.

    The lines of a message usually come close together, in one record or a few. While records are processed,
    every state read or written is kept in `cache` (reads see the cached copy first, deletes too);
    :meth:`flush` then writes each state that was set or deleted to the table ONCE -- one changelog record per
    touched message per flush instead of one per line, and none for a message that began and ended in between
    -- and empties the cache. The agent calls flush() every STATE_FLUSH_LINES lines or STATE_FLUSH_SECONDS
    (`HeldRecords`), before the offsets of the records it covers are acked. Which states exist, and when they
    end, is read from `open` (an `OpenStates` shared by the servers of one worker)."""

    def __init__(self, table, server: str, open_states: OpenStates | None = None) -> None:
        self.table = table
        self.server = server
        self.prefix = server + SEP
        self.open = open_states or OpenStates(table)
        self.cache: dict[str, object] = {}  # msgid -> MessageState or _DELETED
        self.dirty: set[str] = set()  # msgids set or deleted since the last flush
        self.writes = 0  # table writes and deletes done by flush()

    def _load(self, msgid: str):
        hit = self.cache.get(msgid)
        if hit is None:
            data = self.table.get(self.prefix + msgid) if msgid in self.open.of(self.server) else None
            hit = _DELETED if data is None else MessageState.from_value(data)
            self.cache[msgid] = hit
        return hit

    def __getitem__(self, msgid: str) -> MessageState:
        st = self._load(msgid)
        if st is _DELETED:
            raise KeyError(msgid)
        return st  # type: ignore[return-value]

    def get(self, msgid: str, default=None):
        st = self._load(msgid)
        return default if st is _DELETED else st

    def __setitem__(self, msgid: str, state: MessageState) -> None:
        self.cache[msgid] = state
        self.dirty.add(msgid)

    def __delitem__(self, msgid: str) -> None:
        hit = self.cache.get(msgid)
        if hit is _DELETED or (hit is None and msgid not in self.open.of(self.server)):
            raise KeyError(msgid)  # (checked without reading the stored state: a sweep deletes many)
        self.cache[msgid] = _DELETED
        self.dirty.add(msgid)

    def __contains__(self, msgid) -> bool:
        return self._load(msgid) is not _DELETED

    def flush(self) -> int:
        """Write every state set or deleted since the last flush to the table, once each; clear the cache."""
        n = 0
        index = self.open.of(self.server)
        for msgid in self.dirty:
            st = self.cache[msgid]
            key = self.prefix + msgid
            if st is _DELETED:
                if index.pop(msgid, None) is not None:
                    del self.table[key]
                    n += 1
            else:
                self.table[key] = st.to_bytes()  # type: ignore[union-attr]
                index[msgid] = (st.completed_at, st.last_seen)  # type: ignore[union-attr]
                n += 1
        self.dirty.clear()
        self.cache.clear()
        self.writes += n
        return n

    def _keys(self) -> list[str]:
        index = self.open.of(self.server)
        keys = [k for k in index if self.cache.get(k) is not _DELETED]
        keys.extend(k for k, v in self.cache.items() if v is not _DELETED and k not in index)
        return keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def items(self):
        cache = self.cache
        index = self.open.of(self.server)
        for msgid, ends in list(index.items()):
            hit = cache.get(msgid)
            if hit is None:
                yield msgid, _StoredState(self.table, self.prefix + msgid, ends)
            elif hit is not _DELETED:
                yield msgid, hit
        for msgid, hit in list(cache.items()):
            if hit is not _DELETED and msgid not in index:
                yield msgid, hit


class HeldRecords:
    """The raw-lines records processed since the last flush of the states, by partition, in order, with their
    stream and the servers whose lines they held (none: dead-lettered): their acks wait for that flush. Due after
    STATE_FLUSH_LINES lines, STATE_FLUSH_SECONDS after the first one was held, or at once while the group
    rebalances."""

    def __init__(self, lines: int = STATE_FLUSH_LINES, seconds: float = STATE_FLUSH_SECONDS) -> None:
        self.max_lines = lines
        self.max_seconds = seconds
        self.by_partition: dict[int, tuple[set[str], list[tuple[object, object]]]] = {}
        self.lines = 0
        self.since = 0.0  # when the first record held was

    def hold(self, partition: int, servers: set[str], stream, event, lines: int, now: float) -> None:
        """Hold a record of `partition` (its `lines`) and the `servers` whose lines it held."""
        if not self.by_partition:
            self.since = now
        held_servers, records = self.by_partition.setdefault(partition, (set(), []))
        held_servers |= servers
        records.append((stream, event))
        self.lines += lines

    def due(self, now: float, rebalancing: bool = False) -> bool:
        return bool(self.by_partition) and (
            rebalancing or self.lines >= self.max_lines or now - self.since >= self.max_seconds
        )

    def take(self) -> dict[int, tuple[set[str], list[tuple[object, object]]]]:
        """{partition: (its servers, its records oldest first)} of the records held; none held after."""
        held, self.by_partition, self.lines = self.by_partition, {}, 0
        return held


class ShipperPositions:
    """Per server, the highest byte offset applied of each recent log file: a line the shipper re-sent after
    its own crash (same file id, offset not beyond) is recognised and skipped.

    Held in memory and written to the `shipper-positions` table by :meth:`save` at the end of a Kafka record
    once WRITE_EVERY lines were applied since the last write, or a new file was seen, so the changelog gets
    at most one record per Kafka record (one per WRITE_EVERY lines for single-line records). After a worker
    crash the table may be up to WRITE_EVERY lines (or one batch) behind: a shipper re-send inside that
    window that coincides with a worker crash is applied again (same event ids; docs/GUARANTEES.md).

    The positions also keep the raw-lines offset of the last Kafka record applied (under RECORD, which no
    file id can be: those hold colons). A record at or below it is the worker's own replay (a restart after
    a crash or a lost send, a stall's fetch again), not a shipper's re-send, which always comes in a newer
    record: its lines are not skipped by position, since their output may never have reached Kafka, and the
    joiner's replay rule re-emits what they made."""

    KEEP_FILES = 8
    WRITE_EVERY = 200
    RECORD = "record"

    def __init__(self, table) -> None:
        self.table = table
        self.cache: dict[str, dict[str, int]] = {}
        self.unsaved: dict[str, int] = {}
        self.new_file: set[str] = set()

    def _files(self, server: str) -> dict[str, int]:
        files = self.cache.get(server)
        if files is None:
            files = self.cache[server] = dict(self.table.get(server) or {})
        return files

    def replayed(self, server: str, record_offset: int) -> bool:
        """Whether the raw-lines record at `record_offset` (of the server's partition) was applied before."""
        last = self._files(server).get(self.RECORD)
        return last is not None and record_offset <= last

    def seen(self, server: str, file_id: str, offset: int) -> bool:
        if not file_id or offset < 0 or file_id == self.RECORD:
            return False
        last = self._files(server).get(file_id)
        return last is not None and offset <= last

    def advance(self, server: str, file_id: str, offset: int) -> None:
        if not file_id or offset < 0 or file_id == self.RECORD:
            return
        files = self._files(server)
        last = files.get(file_id)
        if last is None:
            self.new_file.add(server)
        if last is None or offset > last:  # a replayed line does not move a position back
            files[file_id] = offset
        ids = [k for k in files if k != self.RECORD]
        if len(ids) > self.KEEP_FILES:
            for k in sorted(ids, key=files.get)[: len(ids) - self.KEEP_FILES]:
                del files[k]
        self.unsaved[server] = self.unsaved.get(server, 0) + 1

    def applied(self, server: str, record_offset: int) -> None:
        """The end of a raw-lines record of the server: remembered with the positions (saved with them)."""
        files = self._files(server)
        files[self.RECORD] = max(record_offset, files.get(self.RECORD, -1))

    def save(self, server: str) -> bool:
        """End of a Kafka record: write the server's positions if a new file was seen or WRITE_EVERY lines
        were applied since the last write."""
        if server not in self.new_file and self.unsaved.get(server, 0) < self.WRITE_EVERY:
            return False
        self.table[server] = dict(self._files(server))
        self.unsaved[server] = 0
        self.new_file.discard(server)
        return True

    def forget(self) -> None:
        """Partitions were reassigned: re-read from the table on next use."""
        self.cache.clear()
        self.unsaved.clear()
        self.new_file.clear()


class RecordGaps:
    """Per raw-lines partition, the offset of the last record handled (in the `partition-offsets` table).

    Offsets of raw-lines are contiguous (no compaction, no transactions), so a record arriving more than one
    past the last handled one means records were not delivered. faust-streaming 0.15.3 did that here after a
    SIGKILLed worker came back (the record fetched between the two rebalances of its return was acked but
    never reached the agent), and to a partition nobody had handled yet when a second worker joined the group
    under load: the joining worker started 45-49 records in, and faust committed past them. Such records are
    read straight from Kafka and handled first: after the last handled record, or for a partition with none
    handled yet (the table is changelogged, so none means nobody in the group handled one), from the first
    record Kafka still holds. Replays (an offset not beyond the last) pass through to the joiner, whose
    `seq <= hw` check makes them harmless."""

    CHUNK_RECORDS = 5000  # records read back per request: memory stays bounded however many were skipped

    def __init__(self, brokers: str, topic: str, table) -> None:
        self.brokers = brokers
        self.topic = topic
        self.table = table
        self.offsets = PartitionOffsets(brokers, topic)

    def last_handled(self, partition: int) -> int | None:
        """The offset of the last record handled of `partition` (None before the first)."""
        return self.table.get(str(partition))

    async def missing_before(self, partition: int, offset: int) -> AsyncIterator[list]:
        """The records of `partition` before `offset` that were never handled, read back from Kafka, in
        chunks of at most CHUNK_RECORDS records (none when `offset` follows the last handled record)."""
        last = self.last_handled(partition)
        if offset == 0 or last is not None and offset <= last + 1:
            return
        loop = asyncio.get_running_loop()
        try:
            if last is not None:
                start = last + 1
            else:
                start = (await loop.run_in_executor(None, self.offsets.starts, [partition]))[partition]
            while start < offset:
                end = min(offset, start + self.CHUNK_RECORDS)
                yield await loop.run_in_executor(None, self._fetch, partition, start, end)
                start = end
        except Exception as exc:
            # Going on would lose the records (faust acks an event whose agent raised): stop the worker hard,
            # before anything is committed, so that it starts again from the committed offset.
            log.critical("%s; exiting so that the records are read again after a restart", exc)
            os._exit(70)

    def _fetch(self, partition: int, start: int, end: int) -> list:
        from kafka import KafkaConsumer, TopicPartition

        tp = TopicPartition(self.topic, partition)
        consumer = KafkaConsumer(**helper_client_config(self.brokers))
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            out = []
            deadline = time.monotonic() + 60
            while consumer.position(tp) < end and time.monotonic() < deadline:
                for rec in consumer.poll(timeout_ms=1000).get(tp, []):
                    if rec.offset < end:
                        out.append(rec)
            if out and out[-1].offset != end - 1 or not out:
                raise RuntimeError(
                    f"could not read {self.topic}[{partition}] {start}..{end - 1} back from Kafka"
                )
            return out
        finally:
            consumer.close()

    def done(self, partition: int, offset: int) -> None:
        last = self.last_handled(partition)
        if last is None or offset > last:
            self.table[str(partition)] = offset


# kafka-python gives a bootstrap attempt the whole of this (30 s by default): the servers are probed first
# (helper_client_config), so it is spent only on a broker that froze between the probe and the client
HELPER_BOOTSTRAP_TIMEOUT_MS = 10_000


def helper_client_config(brokers: str) -> dict:
    """Settings of the worker's own kafka-python consumers (no group, no commits): bootstrapped from the
    servers of `brokers` that answer now (eximtrack/broker_probe.py), so that a broker that accepts
    connections and never answers neither holds nor fails them."""
    return {
        **client_settings(brokers),
        "bootstrap_timeout_ms": HELPER_BOOTSTRAP_TIMEOUT_MS,
        "enable_auto_commit": False,
        "group_id": None,
    }


class PartitionOffsets:
    """The first and the end offset (the next to be written) of a topic's partitions, asked of Kafka itself.

    faust's `consumer.highwater(tp)` is learned from fetch responses, so for a partition faust no longer
    fetches it stays old or None: the stall watchdog needs the broker's answer (raw-lines); AccountsFeed asks
    whether the accounts topic grew; RecordGaps where a partition's records still held start. One
    kafka-python consumer without a group (it joins nothing and commits nothing), kept between calls and made
    again after an error; one call at a time per instance."""

    TIMEOUT_MS = 10_000

    def __init__(self, brokers: str, topic: str) -> None:
        self.brokers = brokers
        self.topic = topic
        self.consumer = None

    def ends(self, partitions: list[int]) -> dict[int, int]:
        return self._ask("end_offsets", partitions)

    def starts(self, partitions: list[int]) -> dict[int, int]:
        """The offset of each partition's first record Kafka still holds (retention deletes from the start)."""
        return self._ask("beginning_offsets", partitions)

    def _ask(self, question: str, partitions: list[int]) -> dict[int, int]:
        from kafka import KafkaConsumer, TopicPartition

        if self.consumer is None:
            self.consumer = KafkaConsumer(**helper_client_config(self.brokers),
                                          request_timeout_ms=self.TIMEOUT_MS + 1000)  # fmt: skip
        try:
            answer = getattr(self.consumer, question)(
                [TopicPartition(self.topic, p) for p in partitions], timeout_ms=self.TIMEOUT_MS
            )
        except Exception:
            self.close()
            raise
        return {tp.partition: offset for tp, offset in answer.items()}

    def close(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            consumer.close()


def stall_check_interval(stall_timeout: float) -> float:
    """Seconds between two samples of the stall watchdog: a quarter of the timeout, between 1 and 5 s (a
    stall is seen at most one interval after its timeout; one end-offsets request per interval)."""
    return min(5.0, max(1.0, stall_timeout / 4))


ACCOUNTS_REFRESH_SECONDS = 60.0


class AccountsFeed:
    """The latest account maps of every server, read from the compacted accounts topic.

    A faust GlobalTable would do this, but with faust-streaming 0.15.3 and Kafka 4.1 a GlobalTable never
    finished its first partition assignment here (the worker hung after "performing partition
    assignments"). The topic is small and compacted, so it is simply read from the beginning to the end
    at start and every minute, without a consumer group."""

    UNKNOWN_RETRY_SECONDS = 10.0

    def __init__(self, brokers: str, topic: str) -> None:
        self.brokers = brokers
        self.topic = topic
        self.maps: dict[str, dict] = {}
        self._unknown_checked: dict[str, float] = {}
        self._offsets = PartitionOffsets(brokers, topic)  # one kept consumer: a few ms a question
        self._read_to: dict[int, int] | None = None  # the end offsets the maps were read up to

    def get(self, server: str):
        """The maps of `server`. A server seen for the first time (its shipper sends its maps before its
        lines) triggers a re-read at once instead of waiting for the minute timer, at most every 10 s, and
        only when the topic grew since the last read: a server without maps (a shipper run with
        --no-accounts) costs an end-offsets question every 10 s, not a read of the topic (~0.13 s, in the
        agent)."""
        found = self.maps.get(server)
        if found is None:
            now = time.monotonic()
            if now - self._unknown_checked.get(server, float("-inf")) >= self.UNKNOWN_RETRY_SECONDS:
                self._unknown_checked[server] = now
                try:
                    if self._grew():
                        self.refresh()
                except Exception as exc:  # the broker hiccups: attribution waits for the next try
                    log.warning("reading the accounts topic failed: %s", exc)
                found = self.maps.get(server)
        return found

    def _grew(self) -> bool:
        """The topic holds records past those the maps were read from (or it was never read)."""
        read_to = self._read_to
        return read_to is None or self._offsets.ends(sorted(read_to)) != read_to

    def refresh_or_keep(self) -> bool:
        """`refresh`, keeping the maps read before when it fails (a broker away or frozen: logged). The
        worker's minute timer calls this: an exception out of a faust timer crashes the worker."""
        try:
            self.refresh()
            return True
        except Exception as exc:
            log.warning("reading the accounts topic failed: %s; the maps read before stay", exc)
            return False

    def refresh(self) -> int:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(**helper_client_config(self.brokers), consumer_timeout_ms=2000)
        try:
            parts = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                return 0
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            maps = dict(self.maps)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for batch in consumer.poll(timeout_ms=1000).values():
                    for rec in batch:
                        server = (rec.key or b"").decode("utf-8", "replace")
                        if rec.value is None:
                            maps.pop(server, None)
                            continue
                        try:
                            data = json.loads(rec.value)
                            maps[data.get("server") or server] = data
                        except ValueError:
                            log.warning(
                                "bad accounts record at %s[%s]@%s", rec.topic, rec.partition, rec.offset
                            )
            self.maps = maps
            self._read_to = {tp.partition: offset for tp, offset in end.items()}
            return len(maps)
        finally:
            consumer.close()


# The changelogs are compacted, and a segment is closed (so that it can be compacted) after an hour instead of
# Kafka's 7 days or 1 GiB: what a worker without local state (another machine, a lost data dir) replays stays
# near one record per open message plus a day of deletions (delete.retention.ms, Kafka's default, kept: a
# rebuild must finish reading before a deletion's tombstone may go).
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.ms": str(3600 * 1000)}


# A worker's local tables are dropped at start when nothing wrote to them for this long, and rebuilt from the
# changelogs: after a long absence its partitions may have been handled by another worker, and deletions
# older than the changelogs' delete.retention.ms (Kafka's default, 1 day) may be compacted away, so replaying
# from its old offsets would keep states that were deleted meanwhile.
LOCAL_STATE_MAX_AGE = 12 * 3600.0


def discard_stale_tables(tabledir: str | os.PathLike, max_age: float = LOCAL_STATE_MAX_AGE,
                         now: float | None = None) -> bool:  # fmt: skip
    """Remove the local table copies under `tabledir` if no file in it changed for `max_age` seconds;
    True when they were removed (faust then restores the tables from their changelogs)."""
    root = Path(tabledir)
    if not root.is_dir():
        return False
    newest = max((f.stat().st_mtime for f in root.rglob("*") if f.is_file()), default=None)
    age = (now if now is not None else time.time()) - newest if newest is not None else 0.0
    if age < max_age:
        return False
    log.warning(
        "local tables in %s unchanged for %.0f h: rebuilding them from the changelogs", root, age / 3600
    )
    shutil.rmtree(root)
    return True


def changelog_topics(app_id: str, prefix: str = "") -> list:
    """The faust tables' changelog topics, created up front: faust creates them itself on the first start
    but then does not refresh its metadata, and the first write fails with PartitionsMismatch."""
    return [
        T.TopicSpec(f"{app_id}-{name}-changelog", T.RAW_LINE_PARTITIONS, dict(CHANGELOG_CONFIG))
        for name in ("messages", "shipper-positions", "partition-offsets")
    ]


class PromptTableManager(TableManager):
    """faust's table manager, without the fixed second it sleeps before it starts the tables (on_start:
    `await self.sleep(1.0)`), a second on every start and restart of the worker. Every table of this app
    is declared in `create_app`, before the worker starts, so there is nothing to wait for."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def create_app(
    brokers: str,
    *,
    app_id: str = "eximtrack-stream",
    prefix: str = "",
    data_dir: str = "/tmp/eximtrack-stream",
    web_port: int | None = None,
    grace: float | None = None,
    expiry: float | None = None,
    instance_id: str | None = None,
    replication_factor: int = 1,
    session_timeout: float = 30.0,
    stall_timeout: float = 60.0,
    request_timeout: float = 30.0,
) -> faust.App:
    """Build the faust app. `prefix` is put before every topic name (tests use one per test).

    `instance_id` gives the worker a static group membership (Kafka KIP-345): a worker restarted after a
    crash takes its partitions back at once instead of waiting for the dead member's session to expire and
    a second rebalance (during which faust-streaming 0.15.3 was seen to skip a record: see RecordGaps).
    `session_timeout`: seconds the group waits for a silent member before its partitions go to the others
    (a worker that died for good and was replaced by one with another id).
    `stall_timeout`: seconds an assigned raw-lines partition may keep records waiting without its processed
    offset moving before the stall watchdog fetches it again (and, a timeout later, exits for a restart);
    0 turns the watchdog off (docs/GUARANTEES.md).
    `request_timeout`: seconds a request to a broker may go unanswered before the client gives up on it (a
    frozen broker: it leads, say, most partitions, until the cluster fences it and the client learns the new
    leaders): the consumer's (with the session timeout if that is longer: faust requires it) and the
    producer's, whose failed sends end the worker for a restart (stream/send_guard.py); faust's defaults, 90 s
    and 20 min, held the worker that long behind one frozen broker (docs/GUARANTEES.md)."""
    consumer_timeout = max(request_timeout, session_timeout)
    app = faust.App(
        app_id,
        # the servers that answer first: aiokafka bootstraps from them in this order, each for its request timeout
        broker=[f"kafka://{b}" for b in answering(brokers)],
        # Each table is kept in a local RocksDB per partition (rocksdict) under `data_dir`, with the offset of
        # the changelog it reflects: a restarted worker reads only the changelog written since, not all of it
        # (memory:// replayed the whole topic: 141 s after the pipeline bench's drains). The changelog stays the durable
        # copy; a worker on another machine (or with a lost data_dir) rebuilds from it.
        store="rocksdb://",
        datadir=data_dir,
        topic_partitions=T.RAW_LINE_PARTITIONS,
        topic_replication_factor=replication_factor,  # the topics faust creates itself (its leader topic)
        processing_guarantee="at_least_once",
        # A record is a batch of up to 500 lines (<= ~256 KiB): buffer few records per partition (bounded
        # memory), commit every 500 records or every second, whichever comes first.
        stream_buffer_maxsize=64,
        broker_commit_every=500,
        broker_commit_interval=1.0,
        producer_linger=0.02,  # batch the events and changelog records (one request per record otherwise)
        # aiokafka keeps one open batch per partition and makes a send wait while that batch is full, so with
        # faust's 16 KiB default a record's changelog (~100 KB, up to ~200) went out as about a dozen produce
        # requests, each awaited. One batch holds it: the drain +9-37 % and the broker's CPU per line about a
        # third less in alternating pairs (BENCHMARKS session (33)). A record above it (an events array) gets
        # a batch of its own.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=instance_id,
        broker_session_timeout=session_timeout,
        broker_request_timeout=consumer_timeout,
        # a JoinGroup waits at the coordinator up to the rebalance timeout, and aiokafka sends it with the
        # request timeout: shorter, so a slow rebalance is not taken for a frozen coordinator
        broker_rebalance_timeout=max(1.0, min(60.0, consumer_timeout - 5.0)),
        producer_request_timeout=request_timeout,
        # The topics are eximtrack's (schemas/topics.py: `_run` ensures them and the changelogs before the app
        # starts), so faust declares none: its CreateTopics for topics that exist went to a broker that
        # forwarded it to a frozen controller and held the start for its 30 s timeout (a frozen broker of
        # three; docs/GUARANTEES.md). Its leader topic is for `on_leader` timers, which this app has none of.
        topic_allow_declare=False,
        topic_disable_leader=True,
        TableManager=PromptTableManager,
    )
    exit_on_lost_send(app.producer)  # a short producer timeout, and no commit past a record it lost
    raw_topic = app.topic(prefix + T.RAW_LINES.name, key_type=bytes, value_type=bytes, value_serializer="raw")
    events_topic = app.topic(prefix + T.EVENTS.name, value_serializer="raw")
    rejects_topic = app.topic(prefix + T.REJECTS.name, value_serializer="raw")
    lines_topic = app.topic(prefix + T.LOG_LINES.name, value_serializer="raw")
    dead_topic = app.topic(prefix + T.DEAD_LETTER.name, value_serializer="raw")

    messages = app.Table("messages", default=None, partitions=T.RAW_LINE_PARTITIONS, key_type=str,
                         value_type=bytes, help="per-message join state (MessageState.to_bytes)",
                         options=dict(ROCKSDB_OPTIONS))  # fmt: skip
    # Values "raw" (faust derives "json" from the value type and takes no argument for it; its store and
    # changelog topic are made later, from this attribute): the table hands back the stored bytes, which
    # state_ends reads the head of and MessageState.from_value decodes once. With "json" every read decoded
    # the whole state into a dict, and the walk that indexes the states after a restart took 2.6 s for 225k
    # states. The bytes stored are the same either way (the json serializer passes bytes through on write).
    messages.value_serializer = "raw"
    open_states = OpenStates(messages)
    app.eximtrack_open_states = open_states  # type: ignore[attr-defined]
    positions_table = app.Table("shipper-positions", default=None, partitions=T.RAW_LINE_PARTITIONS, key_type=str,
                                options=dict(ROCKSDB_OPTIONS))  # fmt: skip
    accounts_table = AccountsFeed(brokers, prefix + T.ACCOUNTS.name)
    app.eximtrack_accounts = accounts_table  # type: ignore[attr-defined]
    positions = ShipperPositions(positions_table)
    offsets_table = app.Table("partition-offsets", default=None, partitions=T.RAW_LINE_PARTITIONS, key_type=str,
                              options=dict(ROCKSDB_OPTIONS))  # fmt: skip
    gaps = RecordGaps(brokers, prefix + T.RAW_LINES.name, offsets_table)
    app.eximtrack_gaps = gaps  # type: ignore[attr-defined]
    joiners: dict[str, tuple[Joiner, str]] = {}
    kw = {k: v for k, v in (("grace", grace), ("expiry", expiry)) if v is not None}
    counters = {
        "records": 0,
        "lines": 0,
        "events": 0,
        "rejects": 0,
        "dead_letters": 0,
        "shipper_repeats": 0,
        "gap_records_recovered": 0,
        "state_writes": 0,  # states written to (or deleted from) the messages table by the flushes
        "state_flushes": 0,
    }
    app.eximtrack_counters = counters  # type: ignore[attr-defined]
    raw_topic_name = prefix + T.RAW_LINES.name
    # the most records faust's producer buffer held at the end of a record (the changelog of that record's
    # states, before `handle` hands it to the Kafka client): bounded by one record's states
    gauges = {"producer_queue_peak_records": 0}

    def joiner_for(server: str, tz: str) -> Joiner:
        acc = accounts_table.get(server)
        acc_version = json.dumps(acc, sort_keys=True) if acc else ""
        held = joiners.get(server)
        if held is None or held[0].clock.tz != tz:
            # a joiner replaced writes the states it cached since the last flush first (under the current
            # event: this record's, of the server's partition)
            if held is not None:
                counters["state_writes"] += held[0].states.flush()
            j = Joiner(server, tz, keep_latest=False, states=TableStates(messages, server, open_states), **kw)
            held = (j, "")
            joiners[server] = held
        j, version = held
        if version != acc_version:
            j.accounts = (
                AccountMap.from_text(acc.get("userdomains") or "", acc.get("trueuserowners") or "")
                if acc
                else AccountMap()
            )
            joiners[server] = (j, acc_version)
        return j

    @app.on_partitions_revoked.connect
    async def _revoked(app, revoked, **kwargs):  # noqa: ARG001 - faust signal signature
        positions.forget()
        open_states.invalidate()

    @app.on_partitions_assigned.connect
    async def _assigned(app, assigned, **kwargs):  # noqa: ARG001 - faust signal signature
        open_states.invalidate()  # rebuilt on first use, from the table faust restored

    async def send_array(topic, key: bytes, items: list) -> None:
        """One record per output topic per input record: a JSON array of the records' dicts, split only if
        it would exceed OUT_RECORD_BYTES (the broker's and the sink's record size limits)."""
        if not items:
            return
        value = dumps_json(items)
        if len(value) <= OUT_RECORD_BYTES or len(items) == 1:
            await topic.send(key=key, value=value)
            return
        mid = len(items) // 2
        await send_array(topic, key, items[:mid])
        await send_array(topic, key, items[mid:])

    async def hand_over_sends() -> None:
        """Hand faust's producer queue (the records sent, the tables' changelog) to the Kafka client now,
        recording how many records it held (the back-pressure described in handle)."""
        queued = app.producer.buffer.size
        gauges["producer_queue_peak_records"] = max(gauges["producer_queue_peak_records"], queued)
        await app.producer.buffer.flush()

    # the servers whose lines the record being handled held (several with the records faust skipped): the
    # flush that acks it writes their states (even when the record raised half-way)
    record_servers: set[str] = set()

    async def handle(value: bytes | None, topic: str, partition: int, offset: int) -> None:
        """One raw-lines record: decode, join every line, send one array per output topic."""
        try:
            lines = decode_raw_record(value)
        except ValueError as exc:
            counters["dead_letters"] += 1
            log.warning("dead-lettered %s[%d]@%d: %s", topic, partition, offset, exc)
            await dead_topic.send(value=dead_letter_record(topic, partition, offset, str(exc), value))
            return
        first = lines[0]
        server = first.server
        record_servers.add(server)
        counters["lines"] += len(lines)
        joiner = joiner_for(server, first.tz)
        events: list[dict] = []
        rejects: list[dict] = []
        log_lines: list[dict] = []
        base = offset * MAX_BATCH_LINES  # seq: monotone per partition across and within records
        replay = positions.replayed(server, offset)  # the worker's own replay: no line is a shipper's re-send
        for i, rl in enumerate(lines):
            if not replay and positions.seen(server, rl.file_id, rl.offset):
                counters["shipper_repeats"] += 1
                continue
            out = joiner.process(rl.line, rl.file_id, rl.offset, seq=base + i)
            for ev in out.events:
                events.append(ev.to_wire())
            for rj in out.rejects:
                rejects.append(rj.to_dict())
            for ll in out.lines:
                log_lines.append(ll.to_dict())
            positions.advance(server, rl.file_id, rl.offset)
        positions.applied(server, offset)  # written with the states, by flush_held()
        key = server.encode()
        await send_array(events_topic, key, events)
        await send_array(rejects_topic, key, rejects)
        await send_array(lines_topic, key, log_lines)
        counters["events"] += len(events)
        counters["rejects"] += len(rejects)
        # Back-pressure on the table's changelog. faust queues every table write in its producer buffer, and a
        # background task hands the queue to the Kafka client only while the agent waits, which a busy agent
        # seldom does: the queue grew by hundreds of records per record (78k after 100k new messages), held
        # ~4 KB per open message, and every offset commit (which first empties it) waited 10-30 s, so a
        # killed worker re-did that much. Handing this record's sends over before the next record (and a
        # flush's changelog at its end: flush_held) keeps the queue at about one flush's states and commits
        # within the commit interval (docs/GUARANTEES.md).
        # faust's flush() returns once no message went out for 0.1 s: on a saturated machine a few records'
        # states can be left (2,398 records, ~5 records' states, in a CI run beside another test run). Asked
        # again until the queue was empty (or below one record's states), the pipeline drained ~10 % slower
        # (docs/BENCHMARKS.md, session 39): the agent then waited for every send.
        await hand_over_sends()

    # When the agent took the record it is handling (monotonic), None between records: a worker held inside
    # one record (its output blocked) has every partition waiting, which is not a partition faust stopped
    # fetching, and the stall watchdog does not judge it.
    in_record: dict[str, float | None] = {"since": None}

    unflushed = HeldRecords()  # the records whose states are not written yet

    async def flush_held() -> None:
        """Write the states and shipper positions the held records produced to their tables, then ack those
        records: faust commits a raw-lines offset only after flushing its producer, so never before the
        changelog of the states of the lines below it. Nothing in between gives way to another task.

        faust puts a table write into the partition (changelog and RocksDB) of the event being processed,
        `current_event()`, and the worker's tables are partitioned as raw-lines is: each partition's states
        are written with one of its own held records as the current event (a server's lines are all in
        one partition: the shipper keys them by server)."""
        for servers, records in unflushed.take().values():
            token = _current_event.set(weakref.ref(records[-1][1]))
            try:
                for server in servers:
                    if server in joiners:
                        counters["state_writes"] += joiners[server][0].states.flush()
                    positions.save(server)
            finally:
                _current_event.reset(token)
            for stream, event in records:
                await stream.ack(event)  # (no await inside: the acks follow the writes at once)
        counters["state_flushes"] += 1
        await hand_over_sends()

    @app.agent(raw_topic, concurrency=1)
    async def join(stream):
        manual = stream.noack()  # a record is acked by the flush that writes its states
        async for event in manual.events():
            msg = event.message
            in_record["since"] = time.monotonic()
            lines = 0
            record_servers.clear()
            try:
                # records faust skipped (raw-lines offsets are contiguous: no compaction, no transactions)
                async for missed in gaps.missing_before(msg.partition, msg.offset):
                    log.warning(
                        "recovering %s[%d]@%d..%d that faust did not deliver",
                        msg.topic,
                        msg.partition,
                        missed[0].offset,
                        missed[-1].offset,
                    )
                    for rec in missed:
                        counters["gap_records_recovered"] += 1
                        await handle(rec.value, msg.topic, msg.partition, rec.offset)
                before = counters["lines"]
                await handle(event.value, msg.topic, msg.partition, msg.offset)
                lines = counters["lines"] - before
                gaps.done(msg.partition, msg.offset)
                counters["records"] += 1
            finally:
                # held even when the record raised: faust acked such a record before, and the flush acks it
                unflushed.hold(msg.partition, set(record_servers), manual, event, lines, time.monotonic())
                in_record["since"] = None
            if unflushed.due(time.monotonic(), app.rebalancing):
                await flush_held()

    @app.timer(STATE_FLUSH_SECONDS / 4)
    async def flush_idle():
        """Flush what the agent holds when no record comes to trigger it (a pause in the load, or a
        rebalance: faust waits for every record taken to be acked before it gives partitions up)."""
        if in_record["since"] is None and unflushed.due(time.monotonic(), app.rebalancing):
            await flush_held()

    @app.timer(ACCOUNTS_REFRESH_SECONDS)
    async def refresh_accounts():
        await app.loop.run_in_executor(None, accounts_table.refresh_or_keep)

    def raw_positions() -> Iterator[tuple[TP, int]]:
        """Each assigned raw-lines partition and the offset of its last record processed, -1 before the
        first (kept in a table: right from a restart on; a partition faust never fetched stays at -1)."""
        for tp in app.consumer.assignment():
            if tp.topic == raw_topic_name:
                last = gaps.last_handled(tp.partition)
                yield tp, -1 if last is None else last

    def consumer_lag() -> dict[int, int]:
        lag = {}
        for tp, last in raw_positions():
            highwater = app.consumer.highwater(tp)
            if highwater is not None and highwater >= 0:
                lag[tp.partition] = max(0, highwater - last - 1)
        return lag

    def processed_offsets() -> dict[int, int]:
        return {tp.partition: last for tp, last in raw_positions()}

    # partition -> stalls the watchdog found and fetched again (eximtrack_stream_stalls_total)
    stalls: dict[int, int] = {}
    detector = StallDetector(stall_timeout) if stall_timeout > 0 else None
    app.eximtrack_stall_detector = detector  # type: ignore[attr-defined]
    if detector is not None:
        watch_stalls(
            app, detector, PartitionOffsets(brokers, raw_topic_name), raw_positions, in_record, stalls
        )

    worker_metrics = WorkerMetrics(
        counters, gauges, joiners, lambda: app.producer.buffer.size, consumer_lag, processed_offsets, stalls
    )

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(
            generate_latest(worker_metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/healthz")
    async def healthz(web, request):
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web, request):
        """Ready: in the consumer group, not rebalancing, with raw-lines partitions to work on."""
        if app.rebalancing:
            why = "rebalancing"
        elif not any(tp.topic == raw_topic_name for tp in app.consumer.assignment()):
            why = "no raw-lines partition assigned"
        else:
            return web.json({"status": "ready"})
        return web.json({"status": "unavailable", "error": why}, status=503)

    return app


def watch_stalls(
    app: faust.App,
    detector: StallDetector,
    offsets: PartitionOffsets,
    positions: Callable[[], Iterator[tuple[TP, int]]],
    in_record: Mapping[str, float | None],
    stalls: dict[int, int],
) -> None:
    """The stall watchdog: a timer that samples every assigned raw-lines partition (its end offset from
    Kafka, the offset of its last record processed from `positions`) into `detector`, and heals what it
    reports (docs/GUARANTEES.md).

    The first report of a stall fetches the partition again in place: faust is told to fetch it (a partition
    it stopped fetching is missing from its active set, faust-streaming#629) and its position is set to the
    record after the last one processed (which drops a fetched answer faust never took, so the next fetch
    is a new request). Nothing is skipped (every record up to that offset was handled) and anything
    handed to the agent twice is a harmless replay. If the partition is still stalled one timeout later, the
    worker exits (70) as the gap recovery does: nothing past the last record processed was committed, and the
    restarted worker (same instance id) takes its partitions back at once and fetches them from the committed
    offsets. `stalls` counts the stalls per partition."""
    timeout = detector.timeout

    def ready() -> bool:
        """In the group, not rebalancing or restoring tables, and the agent not held inside one record."""
        since = in_record["since"]
        busy = since is not None and time.monotonic() - since >= timeout
        return not (app.rebalancing or app.in_recovery or busy)

    async def heal(stall: Stall, tp: TP) -> None:
        where = f"{tp.topic}[{tp.partition}]"
        if stall.strikes > 1:
            log.critical("%s is still stalled (%d records wait after offset %d, unmoved for %.0f s) after it was "
                         "fetched again; exiting so that a restart fetches it (nothing past it is committed)",
                         where, stall.waiting, stall.processed, stall.stalled_for)  # fmt: skip
            os._exit(70)
        stalls[tp.partition] = stalls.get(tp.partition, 0) + 1
        log.warning("%s stalled: %d records wait after offset %d, which did not move for %.0f s (%s); fetching "
                    "it again from offset %d", where, stall.waiting, stall.processed, stall.stalled_for,
                    fetch_state(app.consumer, tp), stall.processed + 1)  # fmt: skip
        app.consumer.resume_partitions({tp})
        try:
            await app.consumer.seek_wait({tp: stall.processed + 1})
        except Exception as exc:  # the next report, a timeout later, restarts the worker
            log.warning("seeking %s to %d failed: %r", where, stall.processed + 1, exc)

    @app.timer(stall_check_interval(timeout))
    async def stall_watchdog() -> None:
        assigned = [tp for tp, _ in positions()]
        if not assigned or not ready():
            detector.reset()
            return
        try:
            ends = await app.loop.run_in_executor(None, offsets.ends, sorted(tp.partition for tp in assigned))
        except Exception as exc:  # no sample: the clocks go on, a stall is judged at the next one
            log.warning("stall watchdog: reading the end offsets of %s failed: %s", offsets.topic, exc)
            return
        # the processed offsets read after the end offsets: a record appended meanwhile may be missed, never
        # one that was processed, so a partition that caught up is never seen waiting
        sample = {tp.partition: (tp, last) for tp, last in positions() if tp.partition in ends}
        found = detector.check(time.monotonic(), {p: (ends[p], last) for p, (_, last) in sample.items()},
                               ready=ready(), generation=app.consumer_generation_id)  # fmt: skip
        for stall in found:
            await heal(stall, sample[stall.partition][0])


def fetch_state(consumer, tp: TP) -> str:
    """Where faust and aiokafka stand on `tp`, for the stall log line: in faust's active, paused or buffered
    set (a partition missing from all three is never fetched again), faust's read offset (it drops fetched
    records below it), aiokafka's position and whether it holds fetched records no one took. Read from
    private attributes, for diagnosis only."""
    parts = []
    for name in ("active", "paused", "buffered"):
        tps = getattr(consumer, f"_{name}_partitions", None)
        if tps is not None:
            parts.append(f"{name}={tp in tps}")
    read_offsets = getattr(consumer, "_read_offset", None)  # faust drops fetched records below it
    if read_offsets is not None:
        parts.append(f"read_offset={read_offsets.get(tp)}")
    try:
        fetcher = consumer._thread._consumer._fetcher
        state = fetcher._subscriptions.subscription.assignment.state_value(tp)
        parts.append(f"position={state.position if state else None}")
        parts.append(f"undrained={tp in fetcher._records}")
    except Exception:  # another faust or aiokafka version: say less
        pass
    return ", ".join(parts) or "fetch state unknown"


def run_worker(app: faust.App, loglevel: str = "warning") -> None:
    """Run the app in this process until SIGTERM/SIGINT."""
    from faust.worker import Worker

    from eximtrack import logs
    from eximtrack.gc_policy import tune_for_throughput

    logs.configure("stream", loglevel)
    worker = Worker(app, loglevel=loglevel, quiet=True, override_logging=False)  # our handler and format
    # faust's terminal spinner sets the root logger to DEBUG, so every debug call of faust and aiokafka
    # built a LogRecord that the handler then dropped: ~4% of the worker's CPU (bench/pipeline.py profile)
    worker.spinner = None
    tune_for_throughput()  # the app and its tables are built: keep them out of the collector's walks
    worker.execute_from_commandline()


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="run the faust joiner: raw lines from Kafka -> delivery events")
    p.add_argument("--brokers", default="127.0.0.1:9092", help="Kafka bootstrap HOST:PORT[,…]")
    p.add_argument("--topic-prefix", default="", help="prefix of every topic name (tests)")
    p.add_argument("--app-id", default="eximtrack-stream", help="consumer group / app id")
    p.add_argument("--data-dir", default="/tmp/eximtrack-stream",
                   help="the worker's local tables (RocksDB): one per worker, on a disk that survives restarts")  # fmt: skip
    p.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics, /healthz and /readyz on this port (faust web server)",
    )
    p.add_argument("--expiry", type=float, default=None, help="seconds (event time) an idle message is kept")
    p.add_argument("--instance-id", default=None,
                   help="static group membership id, stable across restarts (default: host + data dir)")  # fmt: skip
    p.add_argument("--session-timeout", type=float,
                   default=float(os.environ.get("EXIMTRACK_STREAM_SESSION_TIMEOUT", "30")),
                   help="seconds before a silent worker's partitions go to the others (default 30, or "
                        "$EXIMTRACK_STREAM_SESSION_TIMEOUT; at least 6, the broker's minimum)")  # fmt: skip
    p.add_argument("--request-timeout", type=float,
                   default=float(os.environ.get("EXIMTRACK_STREAM_REQUEST_TIMEOUT", "30")),
                   help="seconds a broker may leave a request unanswered before the worker's clients give up "
                        "on it; a record the producer then could not deliver exits the worker (70) for a "
                        "restart (default 30, or $EXIMTRACK_STREAM_REQUEST_TIMEOUT)")  # fmt: skip
    p.add_argument("--stall-timeout", type=float,
                   default=float(os.environ.get("EXIMTRACK_STREAM_STALL_TIMEOUT", "60")),
                   help="seconds an assigned raw-lines partition may keep records waiting without progress "
                        "before the worker fetches it again, and exits for a restart if that did not help "
                        "(default 60, or $EXIMTRACK_STREAM_STALL_TIMEOUT; 0 turns the watchdog off)")  # fmt: skip
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import hashlib
    import socket

    from producers.topics import admin_client, cluster_replication_factor, ensure_topics, retry_at_start

    def check_topics() -> int:
        admin = admin_client(args.brokers)  # one probe of the servers and one client for the three questions
        try:
            ensure_topics(args.brokers, prefix=args.topic_prefix, admin=admin)
            ensure_topics(args.brokers, changelog_topics(args.app_id), admin=admin)
            return cluster_replication_factor(args.brokers, admin=admin)
        finally:
            admin.close()

    replication = retry_at_start(check_topics, "the topic check")
    instance = (
        args.instance_id
        or f"{socket.gethostname()}-{hashlib.sha1(os.path.abspath(args.data_dir).encode()).hexdigest()[:8]}"
    )
    app = create_app(args.brokers, app_id=args.app_id, prefix=args.topic_prefix, data_dir=args.data_dir,
                     web_port=args.web_port, expiry=args.expiry, instance_id=instance,
                     replication_factor=replication, session_timeout=args.session_timeout,
                     stall_timeout=args.stall_timeout, request_timeout=args.request_timeout)  # fmt: skip
    discard_stale_tables(app.conf.tabledir)
    retry_at_start(app.eximtrack_accounts.refresh, "reading the accounts topic")  # type: ignore[attr-defined]
    run_worker(app, args.loglevel)
    return 0
