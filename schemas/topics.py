"""Kafka topics of eximtrack: names, partition counts, retention, cleanup policy, and the key rule.

Pure data: no Kafka import. ``producers/topics.py`` creates these topics; every producer and the faust app
take their names from here.

Topics
------
``eximtrack.raw-lines``   shipper -> joiner. One record per BATCH of consecutive lines of one log file
                          (``schemas.records.RawBatch`` as JSON: ``{"server", "file_id", "tz",
                          "schema_version", "lines": [[offset, text], ...]}``, at most 500 lines / about
                          256 KiB, never more than ``MAX_BATCH_LINES``); consumers also read the older
                          one-line form (``RawLine`` JSON). Retained 7 days: the replay buffer when the
                          joiner or the store is down or must be rebuilt.
``eximtrack.events``      joiner -> sink. A JSON array of ``DeliveryEvent`` objects per record: what one
                          raw-lines record produced (split only above 512 KiB); keyed by server as well
                          (see below). Optional fields holding their default are left out
                          (``DeliveryEvent.to_wire``). A single object is read as an array of one.
``eximtrack.rejects``     joiner -> sink. Lines nothing could classify (``RejectRecord``), kept, never dropped;
                          an array per record, like events.
``eximtrack.log-lines``   joiner -> sink. The raw lines of each message (``LogLineRecord``) for its story; an
                          array per record, like events.
``eximtrack.accounts``    shipper -> joiner. Compacted: the latest cPanel account maps of each server.
``eximtrack.dead-letter`` anything a stage gave up on after classifying the error as permanent.

The key rule: raw lines are keyed by SERVER NAME
------------------------------------------------
Every record of ``eximtrack.raw-lines`` has key ``server.encode("utf-8")`` (:func:`raw_line_key`), never
the Exim message id. The reasons:

1. *Exim message ids are unique only per server.* Two servers can (and across a fleet, eventually will)
   write the same id; the joiner's state is keyed by ``(server, msgid)``. A key of just ``msgid`` would
   put two unrelated messages in one state entry; ``(server, msgid)`` would be correct but see 2-4.
2. *Co-partitioning.* Kafka's default partitioner (murmur2 of the key bytes, the same in kafka-python,
   aiokafka/faust and the Java client) sends all records of one key to one partition. With key = server,
   every line of a given ``(server, msgid)`` is on that server's partition, so the joiner task owning that
   partition also owns the message's state (faust tables must be co-partitioned with their stream).
3. *Order.* A partition keeps the order in which records were appended, and one shipper appends one
   server's lines in log order (idempotent producer: retries neither reorder nor duplicate within a
   session). So each partition replays each server exactly in its log order -- which the joiner relies on
   (``<=`` before ``=>`` before ``Completed``), and which a per-message key would keep too but only per
   message; lines without a message id (SMTP-time rejections, connection and TLS lines, ``Start queue
   run``) would need a key of their own and lose their order relative to the message lines.
4. *Throughput.* All lines of one shipper go to one partition, so the producer fills large batches
   (``linger_ms`` + ``batch_size``) instead of spreading single records over every partition; and a
   record of many lines of one file needs one key, which only a per-server key gives.

The cost is skew: one very busy server is one partition and one joiner task. Parallelism is across
servers (a fleet has many); ``RAW_LINES.partitions`` bounds the number of joiner workers.

**The partition count of raw-lines (and of the joiner's tables) must never change after creation**:
``hash(key) % partitions`` would move servers to other partitions while their messages are half-joined,
and break both the order guarantee and the co-location with existing table state. Grow by creating a new
topic set and replaying, not by ``kafka-topics --alter --partitions``.

``eximtrack.events`` and ``eximtrack.rejects`` are keyed by server too (same partition count), so a
consumer that needs per-server order has it; the sink does not depend on it (its writes are idempotent by
``event_id``). ``eximtrack.accounts`` is keyed by server and compacted: one record per server holds both
maps (two keys per server would be compacted independently, which is fine, but one record keeps the
snapshot of both files consistent). Its value is JSON ``{"server", "userdomains", "trueuserowners",
"schema_version"}`` with each map as the file's raw text (``null`` when the file is absent), parsed on
the consumer side by ``stream.accounts.AccountMap.from_text`` so there is one parser.

Delivery and identity
---------------------
Shippers are at-least-once: after a crash between Kafka's ack and the checkpoint write, lines are sent
again with the same ``(server, file_id, offset)`` identity (maybe grouped into other batches: a batch is only
the transport unit). Downstream deduplicates on that identity, line by line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: name, partition count and the topic-level configs we set explicitly."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    doc: str = ""

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "")


# The number of raw-line partitions caps the number of joiner tasks; 12 divides evenly over 1, 2, 3, 4, 6
# and 12 workers. See the module docstring: it must not change once created.
RAW_LINE_PARTITIONS = 12

RAW_LINES = TopicSpec(
    "eximtrack.raw-lines",
    RAW_LINE_PARTITIONS,
    {
        "cleanup.policy": "delete",
        "retention.ms": str(7 * DAY_MS),
        # The shipper's records carry their own log time in the line; the broker's append time is what
        # retention should use, so a server with a wrong clock cannot make records expire early.
        "message.timestamp.type": "LogAppendTime",
        "compression.type": "producer",
    },
    "raw Exim main-log lines, key = server",
)
EVENTS = TopicSpec(
    "eximtrack.events",
    RAW_LINE_PARTITIONS,
    {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS), "compression.type": "producer"},
    "delivery events from the joiner, key = server",
)
REJECTS = TopicSpec(
    "eximtrack.rejects",
    RAW_LINE_PARTITIONS,
    {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS), "compression.type": "producer"},
    "lines no rule could classify, key = server",
)
LOG_LINES = TopicSpec(
    "eximtrack.log-lines",
    RAW_LINE_PARTITIONS,
    {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS), "compression.type": "producer"},
    "raw lines that belong to a message (LogLineRecord), for the message's story, key = server",
)
ACCOUNTS = TopicSpec(
    "eximtrack.accounts",
    3,
    {
        "cleanup.policy": "compact",
        # Tombstones (a decommissioned server) are kept a day so every consumer sees them.
        "delete.retention.ms": str(DAY_MS),
        "min.compaction.lag.ms": "0",
        "segment.ms": str(DAY_MS),
        # A big cPanel server's /etc/userdomains is several MB; one record holds the whole map.
        "max.message.bytes": str(16 * 1024 * 1024),
    },
    "latest cPanel account maps per server (compacted), key = server",
)
DEAD_LETTER = TopicSpec(
    "eximtrack.dead-letter",
    3,
    {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
    "records a stage gave up on, with the error",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (RAW_LINES, EVENTS, REJECTS, LOG_LINES, ACCOUNTS, DEAD_LETTER)
BY_NAME = {t.name: t for t in ALL_TOPICS}

# Largest accounts record the shipper may send; keep below ACCOUNTS' max.message.bytes.
ACCOUNTS_MAX_BYTES = 16 * 1024 * 1024 - 64 * 1024


def raw_line_key(server: str) -> bytes:
    """The Kafka key of every raw line (and accounts record) of ``server``: its name, UTF-8."""
    if not server:
        raise ValueError("server name must not be empty: it is the partition key")
    return server.encode("utf-8")


__all__ = [
    "ACCOUNTS",
    "ACCOUNTS_MAX_BYTES",
    "ALL_TOPICS",
    "BY_NAME",
    "DEAD_LETTER",
    "EVENTS",
    "LOG_LINES",
    "RAW_LINES",
    "RAW_LINE_PARTITIONS",
    "REJECTS",
    "TopicSpec",
    "raw_line_key",
]
