"""Kafka side of the shipper: encode raw lines and account maps, and hand them to kafka-python.

This module owns the producer settings and the wire format; it does not decide *when* a position is safe
(``producers/checkpoint.py``) or *what* to read (``producers/tail.py``).

Producer settings and why
    ``acks="all"`` + ``enable_idempotence=True``: a record counts as delivered only when every in-sync
    replica has it, and the broker drops the duplicates that the producer's own retries would create, so
    retries neither duplicate nor reorder records within one producer session.
    ``delivery_timeout_ms`` is very large (24 days): while the broker is down, records wait in the
    producer and are retried rather than failed. kafka-python 3 has no ``buffer_memory`` limit, so memory
    is bounded by the shipper alone: it keeps at most ``AckWindow.max_records``/``max_bytes`` in flight and
    stops reading the log when the window is full; the log file itself is the buffer.
    ``allow_auto_create_topics=False``: a missing topic must not be auto-created with the broker's
    default partition count -- that would break the key rule (``schemas/topics.py``).
    ``linger_ms`` / ``batch_size``: one shipper writes all its lines to one partition (key = server), so
    large batches form naturally; 20 ms of linger costs nothing for a log tailer.
    Compression: lz4 if the ``lz4`` package is installed, else zstd if ``zstandard`` is, else gzip
    (stdlib). Exim lines compress 5-10x.

Wire format (value, UTF-8 JSON; key = server name, :func:`schemas.topics.raw_line_key`)
    raw-lines: one record per group of consecutive lines of ONE file (``schemas.records.RawBatch``):
    ``{"server", "file_id", "tz", "schema_version", "lines": [[offset, text], ...]}``, at most
    ``BATCH_MAX_LINES`` lines and about ``BATCH_MAX_BYTES`` bytes. Each line keeps its identity
    ``(server, file_id, offset)``. Consumers also read the single-line form ``{"server", "file_id",
    "offset", "line", "tz", "schema_version"}`` (``schemas.records.RawLine``, :func:`encode_raw_line`).
    accounts: see ``schemas/topics.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.codec import has_lz4, has_zstd
from kafka.partitioner.default import murmur2

from eximtrack.broker_probe import client_settings
from producers.tail import Line
from schemas.records import MAX_BATCH_LINES, SCHEMA_VERSION, RawLine, decode_raw_record
from schemas.topics import ACCOUNTS, ACCOUNTS_MAX_BYTES, RAW_LINES, raw_line_key

log = logging.getLogger(__name__)

_RAW_FIELDS = tuple(f.name for f in dataclasses.fields(RawLine))
# One raw-lines record holds at most this many lines / about this many bytes (one line more may pass the
# byte limit: a batch is closed once it reached it). Far below MAX_RECORD_BYTES and MAX_BATCH_LINES.
BATCH_MAX_LINES = 500
BATCH_MAX_BYTES = 256 * 1024
assert BATCH_MAX_LINES <= MAX_BATCH_LINES
# 24 days: effectively "retry until the broker is back"; Java's int ms limit is 2^31-1 (24.8 days).
DELIVERY_TIMEOUT_MS = 24 * 24 * 3600 * 1000


def pick_compression() -> str:
    """The best codec whose package is installed (lz4 > zstd > gzip)."""
    if has_lz4():
        return "lz4"
    if has_zstd():
        return "zstd"
    return "gzip"


def encode_raw_line(server: str, line: Line, tz: str) -> bytes:
    """One raw-lines record value; field names are exactly those of ``schemas.records.RawLine``.

    Same bytes as ``json.dumps({...}, ensure_ascii=False, separators=(",", ":"))`` of the record (a unit
    test checks it), built by hand because this runs once per log line: only the line needs escaping.
    """
    return (
        f'{{"server":{_dumps(server)},"file_id":{_dumps(line.file_id)},"offset":{line.offset:d},'
        f'"line":{_dumps(line.text)},"tz":{_dumps(tz)},"schema_version":{SCHEMA_VERSION:d}}}'
    ).encode()


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_raw_batch(server: str, lines: list[Line], tz: str) -> bytes:
    """One raw-lines record for consecutive lines of one file (all share ``lines[0].file_id``).

    Same bytes as ``json.dumps(RawBatch-dict, ensure_ascii=False, separators=(",", ":"))`` (a test checks
    it), built by hand: only the texts need escaping.
    """
    body = ",".join([f"[{ln.offset:d},{_dumps(ln.text)}]" for ln in lines])
    return (
        f'{{"server":{_dumps(server)},"file_id":{_dumps(lines[0].file_id)},"tz":{_dumps(tz)},'
        f'"schema_version":{SCHEMA_VERSION:d},"lines":[{body}]}}'
    ).encode()


def batch_lines(lines: list[Line], max_lines: int = BATCH_MAX_LINES, max_bytes: int = BATCH_MAX_BYTES):
    """Split the follower's lines into batches: consecutive lines of one file (same ``file_id``, each line
    starting where the previous one ended), at most ``max_lines`` lines, closed once ``max_bytes`` of log
    text are in. Order is kept; every line is in exactly one batch."""
    batch: list[Line] = []
    size = 0
    for ln in lines:
        if batch and (
            ln.file_id != batch[-1].file_id
            or ln.offset != batch[-1].next_offset
            or len(batch) >= max_lines
            or size >= max_bytes
        ):
            yield batch
            batch, size = [], 0
        batch.append(ln)
        size += len(ln.data) + 16
    if batch:
        yield batch


def key_partition(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner assigns to ``key`` (murmur2, positive, modulo)."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


def decode_raw_line(value: bytes) -> RawLine:
    """Inverse of :func:`encode_raw_line` (used by tests and consumers that want the dataclass)."""
    data = json.loads(value)
    return RawLine(**{k: data[k] for k in _RAW_FIELDS if k in data})


def decode_raw_lines(value: bytes) -> list[RawLine]:
    """The lines of one raw-lines record, batch or single line (:func:`schemas.records.decode_raw_record`)."""
    return decode_raw_record(value)


def producer_config(
    brokers: str,
    *,
    linger_ms: int = 20,
    batch_size: int = 512 * 1024,
    compression: str | None = None,
    client_id: str = "eximtrack-ship",
) -> dict[str, Any]:
    """kafka-python ``KafkaProducer`` settings of the shipper (see the module docstring)."""
    return {
        "bootstrap_servers": brokers.split(","),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,  # the most idempotence allows while keeping order
        "linger_ms": linger_ms,
        "batch_size": batch_size,
        # "none" switches compression off; None picks the best installed codec.
        "compression_type": None if compression == "none" else (compression or pick_compression()),
        "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
        "request_timeout_ms": 30_000,
        # send() blocks at most this long for metadata or buffer space; the shipper retries the same record.
        "max_block_ms": 5_000,
        "max_request_size": ACCOUNTS_MAX_BYTES + 64 * 1024,
        "allow_auto_create_topics": False,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 5_000,
        "metadata_max_age_ms": 60_000,
        # The constructor waits this long for a first broker; the shipper retries with backoff.
        "bootstrap_timeout_ms": 5_000,
    }


class Publisher:
    """Sends one server's lines and account maps. Thin: no retry logic beyond kafka-python's own.

    :param producer_factory: builds the producer from :func:`producer_config`'s dict (tests inject).
    """

    def __init__(
        self,
        brokers: str,
        server: str,
        tz: str,
        *,
        topic: str = RAW_LINES.name,
        accounts_topic: str = ACCOUNTS.name,
        producer_factory: Callable[..., Any] = KafkaProducer,
        admin_factory: Callable[..., Any] = KafkaAdminClient,
        **config: Any,
    ) -> None:
        self.server = server
        self.key = raw_line_key(server)
        self.tz = tz
        self.topic = topic
        self.accounts_topic = accounts_topic
        self.config = producer_config(brokers, **config)
        self._factory = producer_factory
        self._admin_factory = admin_factory
        self.producer: Any = None
        self.partition: int | None = None  # of self.key in self.topic, once metadata is known

    def connect(self) -> None:
        """Create the producer. Raises a KafkaError (KafkaTimeoutError) if no broker answers in time."""
        # from the servers that answer now (eximtrack/broker_probe.py): kafka-python would give one picked at
        # random its whole bootstrap timeout, a frozen broker included
        self.producer = self._factory(
            **dict(self.config, **client_settings(self.config["bootstrap_servers"]))
        )
        # kafka-python 3.0.12 does not pass ``allow_auto_create_topics`` on to the metadata object of its
        # connection manager, so every producer metadata request asks the broker to auto-create the topic
        # (seen here: a missing raw-lines topic came back with 1 partition). Set it where it is read;
        # check_topic() below also never lets the producer ask about a topic that does not exist.
        md = getattr(self.producer, "_metadata", None)
        if isinstance(getattr(md, "config", None), dict):
            md.config["allow_auto_create_topics"] = False

    def _topic_partitions(self, topic: str) -> int | None:
        """Partition count of ``topic`` from an admin Metadata request that never auto-creates."""
        admin = self._admin_factory(
            **client_settings(self.config["bootstrap_servers"]),
            client_id=f"{self.config['client_id']}-check",
            request_timeout_ms=10_000,
            bootstrap_timeout_ms=5_000,
        )
        try:
            for t in admin.describe_topics([topic]):
                if t["name"] == topic and t["error_code"] == 0:
                    return len(t["partitions"])
            return None
        finally:
            admin.close()

    def check_topic(self, topic: str) -> bool:
        """True if ``topic`` exists (and the producer has its metadata); False if it does not.

        For the raw-lines topic this also fixes the partition of this server's key (see ``send_line``).
        """
        try:
            if not self._topic_partitions(topic):
                return False
            partitions = self.producer.partitions_for(topic)
        except Exception as exc:  # broker away, or kafka-python's KafkaTimeoutError for an unknown topic
            log.debug("metadata for %s: %r", topic, exc)
            return False
        if partitions and topic == self.topic:
            self.partition = key_partition(self.key, len(partitions))
            log.info("%s: key %r -> partition %d of %d", topic, self.server, self.partition, len(partitions))
        return bool(partitions)

    def send_line(self, line: Line) -> tuple[Any, int]:
        """Queue one line; return (delivery future, payload size). May raise KafkaTimeoutError.

        The partition is passed explicitly once known: it is exactly what the default partitioner would
        pick for the key (murmur2, as in the Java client and aiokafka), computed once instead of per line.
        """
        value = encode_raw_line(self.server, line, self.tz)
        return self.producer.send(self.topic, key=self.key, value=value, partition=self.partition), len(value)

    def send_batch(self, lines: list[Line]) -> tuple[Any, int]:
        """Queue one batch of consecutive lines of one file (see :func:`batch_lines`); like send_line."""
        value = encode_raw_batch(self.server, lines, self.tz)
        return self.producer.send(self.topic, key=self.key, value=value, partition=self.partition), len(value)

    def send_accounts(self, value: bytes) -> Any:
        return self.producer.send(self.accounts_topic, key=self.key, value=value)

    def flush(self, timeout: float | None = None) -> None:
        self.producer.flush(timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        if self.producer is not None:
            self.producer.close(timeout=timeout)
            self.producer = None


# ---------------------------------------------------------------------------------------- accounts


DEFAULT_USERDOMAINS = "/etc/userdomains"
DEFAULT_TRUEUSEROWNERS = "/etc/trueuserowners"


class AccountsWatcher:
    """Watches cPanel's account maps; :meth:`changed` returns a new snapshot record when either changed.

    A file counts as changed when its (inode, size, mtime) changed -- cPanel rewrites these files by
    rename, so the inode changes too. A missing file is shipped as ``null``. The record holds both maps so
    the compacted topic keeps one consistent snapshot per server.
    """

    def __init__(self, server: str, userdomains: str | None, trueuserowners: str | None) -> None:
        self.server = server
        self.paths = {"userdomains": userdomains, "trueuserowners": trueuserowners}
        self.acked_signature: tuple | None = None
        self.pending_signature: tuple | None = None

    @property
    def enabled(self) -> bool:
        return any(self.paths.values())

    def _signature(self) -> tuple:
        sig = []
        for name, path in self.paths.items():
            if not path:
                sig.append((name, None))
                continue
            try:
                st = os.stat(path)
                sig.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                sig.append((name, None))
        return tuple(sig)

    def changed(self) -> tuple[tuple, bytes] | None:
        """(signature, value) if the files differ from what was last acknowledged and nothing is pending."""
        if not self.enabled or self.pending_signature is not None:
            return None
        sig = self._signature()
        if sig == self.acked_signature:
            return None
        record: dict[str, Any] = {"server": self.server}
        for name, path in self.paths.items():
            text = None
            if path:
                try:
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        text = fh.read()
                except OSError:
                    text = None
            record[name] = text
        record["schema_version"] = SCHEMA_VERSION
        value = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(value) > ACCOUNTS_MAX_BYTES:
            log.error(
                "account maps of %s are %d bytes, over the %d limit; not shipped",
                self.server,
                len(value),
                ACCOUNTS_MAX_BYTES,
            )
            self.acked_signature = sig
            return None
        return sig, value
