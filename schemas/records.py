"""The record contracts of eximtrack: one definition of each record, used by every stage.

A raw log line (what the shipper publishes), a delivery event (what the joiner emits and the store keeps) and
a reject (a line nothing could classify) are plain dataclasses here, free of Kafka, faust and ClickHouse.
The faust records, the Kafka JSON and the ClickHouse rows are adapters built from these field lists, and a
contract test checks that the ClickHouse migrations have exactly these columns.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass

import orjson

SCHEMA_VERSION = 1

# cPanel Track Delivery's outcome vocabulary.
OUTCOMES = ("success", "filtered", "archive", "defer", "failure", "rejected", "inprogress")

# The four boxes of the Track Delivery page, as outcome sets.
SHOW_GROUPS = {
    "successes": ("success", "filtered", "archive"),
    "deferred": ("defer",),
    "failures": ("failure", "rejected"),
    "inprogress": ("inprogress",),
}

# Rank of an outcome when two events of one recipient carry the same time: a final outcome outranks a
# deferral, which outranks "in progress". Used to build the replacing version of the latest-state table.
OUTCOME_RANK = {
    "inprogress": 0,
    "defer": 1,
    "success": 2,
    "filtered": 2,
    "archive": 2,
    "failure": 2,
    "rejected": 2,
}


@dataclass(slots=True)
class RawLine:
    """One raw line of an Exim main log, with a stable identity (server, file identity, byte offset)."""

    server: str
    line: str
    file_id: str = ""
    offset: int = -1
    tz: str = "UTC"
    schema_version: int = SCHEMA_VERSION


MAX_BATCH_LINES = 65536  # the stream app's seq is kafka_offset * 65536 + index in the batch


@dataclass(slots=True)
class RawBatch:
    """Consecutive lines of ONE log file of one server in one Kafka record (the shipper's unit of publishing).

    Wire form: ``{"server", "file_id", "tz", "schema_version", "lines": [[offset, text], ...]}``. Each line
    keeps its own identity ``(server, file_id, offset)``; the batch is only the transport unit.
    """

    server: str
    file_id: str = ""
    tz: str = "UTC"
    lines: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def raw_lines(self) -> list[RawLine]:
        return [RawLine(self.server, text, self.file_id, offset, self.tz) for offset, text in self.lines]


@dataclass(slots=True)
class DeliveryEvent:
    """The state of one recipient of one message after one log line: a row of Track Delivery.

    Identity of the row in the latest-state table: (server, msgid, recipient, deliveredto).
    `event_id` is deterministic (derived from server, message, recipient, outcome and the causing line), so
    replaying the same input produces the same ids; `version` orders the states of one recipient
    (time in ms, outcome rank, whether the arrival was known). `is_deleted` marks a tombstone for the
    message-level "in progress" placeholder once the recipient's own rows exist.
    """

    event_id: str
    type: str
    server: str
    msgid: str
    # arrival (the `<=` line and what came before it)
    email: str = ""  # envelope sender ("" for <>)
    sender: str = ""  # auth login or local user
    user: str = ""  # cPanel account of the sender
    domain: str = ""  # domain of the sender
    owner: str = ""  # reseller owning `user` (trueuserowners)
    senderhost: str = ""
    senderip: str = ""
    senderauth: str = ""  # authenticator (dovecot_login …), "localuser", or "" for unauthenticated
    spamscore: float | None = None
    sendunixtime: float = 0.0  # arrival time, epoch seconds (UTC)
    size: int = 0
    subject: str = ""
    message_id: str = ""  # Message-ID header (id= / id*=)
    protocol: str = ""  # P= of the arrival
    parent_msgid: str = ""  # R= of a `<= <>` bounce/DSN: the message it reports on
    # recipient and delivery (the flag line)
    recipient: str = ""  # envelope recipient as the message had it (original address)
    deliveredto: str = ""  # where it went: final address, local part, pipe, file, :blackhole:
    deliveryuser: str = ""
    deliverydomain: str = ""
    deliveryowner: str = ""
    router: str = ""
    transport: str = ""
    host: str = ""  # delivery host name
    ip: str = ""  # delivery host IP
    message: str = ""  # full result text, never cut
    confirmation: str = ""  # C="…": the remote server's reply
    tls: str = ""  # X= cipher
    queue_time: float | None = None  # QT= seconds
    delivery_time: float | None = None  # DT= seconds
    actionunixtime: float = 0.0  # time of the line that caused this state, epoch seconds (UTC)
    attempts: int = 0  # delivery attempts of this recipient so far (== and final lines)
    frozen: int = 0
    transport_is_remote: int = 0
    version: int = 0
    is_deleted: int = 0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in EVENT_FIELDS}

    def to_wire(self) -> dict:
        """``to_dict`` without the optional fields that hold their default value: the events topic's form
        (about a third smaller and faster to encode; :meth:`from_dict` restores the defaults)."""
        d = {"event_id": self.event_id, "type": self.type, "server": self.server, "msgid": self.msgid}
        for name, default in _EVENT_DEFAULTS:
            v = getattr(self, name)
            if v is default or (type(v) is type(default) and v == default):
                continue
            d[name] = v
        return d

    def copy(self) -> DeliveryEvent:
        # every field, read by one C call and passed in field order (the joiner copies ~0.2 events a line)
        return DeliveryEvent(*_event_values(self))

    @classmethod
    def from_dict(cls, data: dict) -> DeliveryEvent:
        try:
            return cls(**data)  # the usual case: the keys are (a subset of) the fields
        except TypeError:
            return cls(**{k: data[k] for k in EVENT_FIELDS if k in data})  # unknown keys are ignored


@dataclass(slots=True)
class RejectRecord:
    """A line that no rule could classify: kept with its reason, never dropped."""

    reject_id: str
    server: str
    line: str
    reason: str
    file_id: str = ""
    offset: int = -1
    logunixtime: float = 0.0  # 0 when even the timestamp could not be read
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        # every field is a scalar: the same dict as dataclasses.asdict, without its deep copy
        return {name: getattr(self, name) for name in REJECT_FIELDS}


@dataclass(slots=True)
class LogLineRecord:
    """A raw line that belongs to a message (or an SMTP-time rejection), kept for the message's story."""

    line_id: str
    server: str
    msgid: str
    logunixtime: float
    line: str
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in LOGLINE_FIELDS}


MAX_RECORD_BYTES = 1 << 20  # a Kafka record larger than this is dead-lettered (a log line is < 64 KiB)


def dumps_json(obj) -> bytes:
    """Compact UTF-8 JSON of a record's dict or array (orjson: the worker writes one array per output topic
    per input record, the sink decodes them with `load_record_items`: both on the hot path)."""
    return orjson.dumps(obj)


def _load_json(value: bytes | None):
    if value is None:
        raise ValueError("empty record")
    if len(value) > MAX_RECORD_BYTES:
        raise ValueError(f"record too large ({len(value)} bytes)")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise ValueError(f"not JSON: {exc}") from None


def check_record_object(data) -> dict:
    """One decoded JSON element -> itself if it is an object of a schema version we read, else ValueError."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r} is not one this version reads (<= {SCHEMA_VERSION})")
    return data


def load_record_json(value: bytes | None) -> dict:
    """A Kafka record value -> its JSON object, or ValueError with the reason (the caller dead-letters it)."""
    return check_record_object(_load_json(value))


def load_record_items(value: bytes | None) -> list:
    """A record of the joiner's output topics -> its elements, unchecked (see :func:`check_record_object`).

    The joiner writes a JSON array of objects per record (events, rejects or log lines of one raw-lines
    record); a single object (the format before batching) is one element. ValueError (the whole record is
    unusable) when it is not JSON, too large, or neither an object nor an array.
    """
    data = _load_json(value)
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return [check_record_object(data)]
    raise ValueError("not a JSON object or array")


def decode_raw_record(value: bytes | None) -> list[RawLine]:
    """A raw-lines record -> its lines, in order; ValueError with the reason if it is unusable.

    Reads both forms: a batch (:class:`RawBatch`: ``{"server", "file_id", "tz", "lines": [[offset, text],
    ...]}``) and a single line (:class:`RawLine`: ``{"server", "file_id", "offset", "line", "tz"}``). A
    record with any malformed line is rejected as a whole (the caller dead-letters it with the reason).
    """
    rec = load_record_json(value)
    server = rec.get("server")
    if not isinstance(server, str) or not server:
        raise ValueError("missing or invalid 'server'")
    file_id = str(rec.get("file_id") or "")
    tz = str(rec.get("tz") or "UTC")
    if "lines" in rec:
        lines = rec["lines"]
        if not isinstance(lines, list) or not lines:
            raise ValueError("'lines' is not a non-empty array")
        if len(lines) > MAX_BATCH_LINES:
            raise ValueError(f"batch of {len(lines)} lines (at most {MAX_BATCH_LINES})")
        out = []
        for i, item in enumerate(lines):
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
                raise ValueError(f"line {i} is not an [offset, text] pair")
            offset = item[0]
            if not isinstance(offset, int) or isinstance(offset, bool):
                offset = -1
            out.append(RawLine(server, item[1], file_id, offset, tz))
        return out
    line = rec.get("line")
    if not isinstance(line, str):
        raise ValueError("missing or invalid 'line' (or 'lines')")
    offset = rec.get("offset", -1)
    if not isinstance(offset, int) or isinstance(offset, bool):
        offset = -1
    return [RawLine(server, line, file_id, offset, tz)]


def dead_letter_record(topic: str, partition: int, offset: int, reason: str, value: bytes | None) -> bytes:
    """The dead-letter topic's record: where the bad record was, why, and (the first 64 KiB of) what it was."""
    body = (value or b"")[:65536].decode("utf-8", "replace")
    return json.dumps(
        {"topic": topic, "partition": partition, "offset": offset, "reason": reason, "value": body}
    ).encode()


EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(DeliveryEvent))
_event_values = operator.attrgetter(*EVENT_FIELDS)  # the field values of an event, in field order
_EVENT_DEFAULTS = tuple(
    (f.name, f.default) for f in dataclasses.fields(DeliveryEvent) if f.default is not dataclasses.MISSING
)
EVENT_DEFAULTS = dict(_EVENT_DEFAULTS)  # field -> default, for the optional fields
REJECT_FIELDS = tuple(f.name for f in dataclasses.fields(RejectRecord))
LOGLINE_FIELDS = tuple(f.name for f in dataclasses.fields(LogLineRecord))

__all__ = [
    "DeliveryEvent",
    "EVENT_DEFAULTS",
    "EVENT_FIELDS",
    "LOGLINE_FIELDS",
    "LogLineRecord",
    "MAX_BATCH_LINES",
    "OUTCOMES",
    "OUTCOME_RANK",
    "REJECT_FIELDS",
    "RawBatch",
    "RawLine",
    "RejectRecord",
    "SCHEMA_VERSION",
    "SHOW_GROUPS",
    "check_record_object",
    "dead_letter_record",
    "decode_raw_record",
    "load_record_items",
    "dumps_json",
    "load_record_json",
]
