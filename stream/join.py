"""Per-message joiner: parsed Exim lines -> per-recipient delivery events (pure: no faust, Kafka, ClickHouse).

Identity of a message is (server, Exim message id); one `Joiner` serves one server. For each message it keeps a
bounded `MessageState`: what the arrival said (sender, auth, client host/IP, size, subject, Message-ID, spam
score, parent of a bounce) and one row per (recipient, deliveredto) with the row's latest state. Every change
of a row's state emits a `DeliveryEvent` that carries the arrival's fields.

Rules (docs/ARCHITECTURE.md has the full table):
- `<=`/`(=`: one `inprogress` placeholder row per `for` recipient (`deliveredto` = ""), or one message-level
  placeholder (recipient "" ) when the log has no recipient list.
- `==` -> defer; `=>`/`->`/`>>`/`*>` -> success (`:blackhole:`, `discarded`, `/dev/null`, `**bypassed**` ->
  filtered; archiver routers/transports -> archive); `**` -> failure. The first result of a recipient
  tombstones its placeholder (`is_deleted=1`), so the latest-state table keeps only real rows.
- `original recipients ignored (system filter)` -> filtered, every row without a final outcome (the system
  filter delivered the message elsewhere: those rows are logged as `=> x <system-filter>`).
- `removed by`, `cancelled by` -> failure of every row without a final outcome; `<addr>: error ignored` ->
  failure of that address; `Frozen…`/`frozen by…` and `Unfrozen…` re-emit the open rows with `frozen` set.
- Lines before their `<=` (spam verdict, cutthrough `>>`) are kept; when the arrival comes, the rows already
  emitted are emitted again (same `event_id`, higher `version`) with the arrival's fields.
- `== … retry time not reached` is a skip, not an attempt: it changes nothing when the row is known.
- SMTP-time rejections -> one `rejected` event each, under a deterministic synthetic message id; a rejection
  outside SMTP (a local submission over the size limit or refused by the non-SMTP ACL, local_scan) has a
  message id and is a `rejected` event of that message.
- Any other line with a message id (ACL `logwrite`, TLS/DKIM/DANE details, system filter remarks, Exim's
  follow-up lines) is a "note": a raw line of its message with no outcome meaning, at most NOTE_CAP per
  message (counted beyond that, `notes_over_cap`). Lines that cannot be tied to anything stay rejects.
- State ends `grace` seconds (event time) after `Completed`, or `expiry` seconds after the message was last
  seen; both are counted. `open_messages` is the number of states held.
"""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import orjson
from eximtrack_core import stable_id  # the deterministic id of a record: replays are harmless (native/)

from schemas.records import (
    EVENT_DEFAULTS,
    EVENT_FIELDS,
    OUTCOME_RANK,
    DeliveryEvent,
    LogLineRecord,
    RejectRecord,
)
from stream.accounts import AccountMap
from stream.clock import LocalClock, msgid_time
from stream.parse import ParsedLine, parse_line

# a retry skip changes none of these
SKIP_KEEPS = frozenset(("defer", "success", "filtered", "archive", "failure"))
NO_STATE_KINDS = frozenset(("queued", "locked", "info"))
FINAL_TYPES = frozenset(("success", "filtered", "archive", "failure", "rejected"))
FILTERED_TARGETS = frozenset((":blackhole:", "discarded", "/dev/null"))
DEFAULT_GRACE = 300.0  # seconds of event time a completed message is kept for late lines
DEFAULT_EXPIRY = (
    8 * 86400.0
)  # longer than Exim's default retry timeout (4 days), so deferrals keep their arrival
NOTE_CAP = 256  # notes kept per message (a runaway `logwrite` must not flood a message's timeline)
# the Joiner.stats keys that count every line once: ignored by a named rule, made an event, kept as a line
# of its message only, stored as a reject (a note over NOTE_CAP is counted in `notes_over_cap` instead)
LINE_DISPOSITIONS = ("ignored", "evented", "attached", "rejects")
SWEEP_EVERY = 4096  # lines between two sweeps of finished/idle states …
SWEEP_MIN_INTERVAL = 30.0  # … and at least this much event time

STATE_FORMAT = 2  # MessageState.to_dict(): rows as differences from the arrival (1: rows as full events)
_NO_VALUE = object()
_ENDS_RE = re.compile(rb'\{"v":2,"completed_at":(-?[0-9.eE+]+),"last_seen":(-?[0-9.eE+]+)[,}]')


def state_ends(value: bytes | dict) -> tuple[float, float]:
    """(completed_at, last_seen) of a stored state -- all a sweep needs -- read from the head of the bytes
    `MessageState.to_bytes()` writes, without decoding the rest (other forms are decoded)."""
    if isinstance(value, dict):
        return value.get("completed_at", 0.0), value.get("last_seen", 0.0)
    if isinstance(value, bytes):
        m = _ENDS_RE.match(value)
        if m:
            return float(m.group(1)), float(m.group(2))
    data = json.loads(value)
    return data.get("completed_at", 0.0), data.get("last_seen", 0.0)


ARRIVAL_FIELDS = ("email", "sender", "user", "domain", "owner", "senderhost", "senderip", "senderauth",
                  "spamscore", "sendunixtime", "size", "subject", "message_id", "protocol", "parent_msgid")  # fmt: skip
ARRIVAL_KEYS = frozenset(ARRIVAL_FIELDS)


# `for a b "quoted local"@c`: recipients are space-separated, but a quoted local part may contain spaces
_RCPT_LIST_RE = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^\s"])+')


def _seconds(value: str | None) -> float | None:
    """`0.005s`, `2s`, `1m3s`, `1h2m` (Exim's readconf_printtime) -> seconds."""
    if not value:
        return None
    total = 0.0
    num = ""
    try:
        for ch in value:
            if ch.isdigit() or ch == ".":
                num += ch
            elif ch in "wdhms":
                total += float(num or 0) * {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}[ch]
                num = ""
            else:
                return None
        if num:
            total += float(num)
    except ValueError:
        return None
    return total


def _domain(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1 :].lower() if at >= 0 else ""


def message_size(value: str) -> int:
    """The S= of a line as bytes; 0 when it is not a number the store's UInt64 (and the records' JSON) can
    hold: a line with an absurd S= must not stop the worker."""
    return int(value) if value.isdigit() and len(value) <= 19 else 0


def _strip_angle(value: str) -> str:
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def _row_key_part(value: str) -> str:
    """Addresses and local parts compare case-insensitively; pipes and paths keep their case."""
    return value if value[:1] in ("|", "/") else value.lower()


def _row_template(msgid: str, arrival: dict | None) -> dict:
    """What a stored row holds unless it says otherwise: field defaults, the arrival's fields, the msgid."""
    template = dict(EVENT_DEFAULTS)
    if arrival:
        template.update((k, v) for k, v in arrival.items() if k in template)
    template["msgid"] = msgid
    return template


@dataclass(slots=True)
class MessageState:
    """Everything the joiner holds for one message. Bounded: ends on Completed (+grace) or expiry."""

    msgid: str
    arrival: dict | None = None  # ARRIVAL_FIELDS once the `<=` line (or what precedes it) is known
    pre: dict = field(default_factory=dict)  # fields seen before `<=` (spam score, sender identification)
    rows: dict = field(default_factory=dict)  # (recipient, deliveredto) -> last DeliveryEvent of the row
    frozen: int = 0
    completed_at: float = 0.0
    last_seen: float = 0.0
    hw: int = -1  # highest source sequence (Kafka offset) applied: a replayed line is recognised by it
    notes: int = 0  # note lines kept for this message (NOTE_CAP)

    def to_dict(self) -> dict:
        """Plain-data form (the stream worker's table value and changelog record). Format 2 stores each row
        as its difference from `_row_template()`: the arrival's fields are held once, not once per row,
        which keeps an open message's state under 1 KB (bench/footprint.py measures it)."""
        template = _row_template(self.msgid, self.arrival)
        rows = []
        for ev in self.rows.values():
            row = {}
            for name in EVENT_FIELDS:
                v = getattr(ev, name)
                t = template.get(name, _NO_VALUE)
                if t is _NO_VALUE or v != t or type(v) is not type(t):
                    row[name] = v
            rows.append(row)
        out = {
            "v": STATE_FORMAT,
            "completed_at": self.completed_at,  # first, so that state_ends() finds them without decoding
            "last_seen": self.last_seen,
            "hw": self.hw,
            "msgid": self.msgid,
            "arrival": self.arrival,
            "pre": self.pre,
            "rows": rows,
            "frozen": self.frozen,
        }
        if self.notes:  # most messages have none: no key, no bytes
            out["notes"] = self.notes
        return out

    def to_bytes(self) -> bytes:
        """The stream worker's table value and changelog record: `to_dict()` as compact JSON. Held as bytes,
        an open message costs about a third of the memory the same state costs as Python dicts. orjson: the
        worker writes one per touched message per record (json.dumps took 18 of its 28 us); the standard
        library for what orjson refuses (integers beyond 64 bits, e.g. an absurd S=; strings with lone surrogates,
        which the shippers' and ingest's decoding never produce)."""
        data = self.to_dict()
        try:
            # a copy of the exact size: the bytes orjson returns keep its writer's whole buffer (~8 KB for a
            # 1 KB state with orjson 3.13), which every holder of a state (the producer queue, a table
            # held in memory, bench/footprint.py) would pay
            return bytes(memoryview(orjson.dumps(data)))
        except orjson.JSONEncodeError:
            return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_value(cls, value: bytes | str | dict) -> MessageState:
        """A stored state: bytes of `to_bytes()` (or JSON text), or a dict of `to_dict()`."""
        if isinstance(value, dict):
            return cls.from_dict(value)
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:  # escaped lone surrogates (to_bytes' standard-library fallback)
            data = json.loads(value)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> MessageState:
        """Reads format 2 and format 1 (rows as full event dicts, written before format 2 existed)."""
        rows = {}
        template = None
        if data.get("v") == STATE_FORMAT:
            template = _row_template(data["msgid"], data.get("arrival"))
        for d in data.get("rows", []):
            ev = DeliveryEvent.from_dict(d if template is None else {**template, **d})
            rows[(ev.recipient, ev.deliveredto)] = ev
        return cls(
            msgid=data["msgid"],
            arrival=data.get("arrival"),
            pre=data.get("pre") or {},
            rows=rows,
            frozen=data.get("frozen", 0),
            completed_at=data.get("completed_at", 0.0),
            last_seen=data.get("last_seen", 0.0),
            hw=data.get("hw", -1),
            notes=data.get("notes", 0),
        )


@dataclass(slots=True)
class JoinOutput:
    """What one line produced: events for the store, rejects, and the raw line kept for its message."""

    events: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    lines: list = field(default_factory=list)


class Joiner:
    """Joins the lines of one server's main log into delivery events.

    `process(line)` parses and applies one line; `sweep(now)` ends finished and idle states (called by
    `process` itself every SWEEP_EVERY lines, by event time). `latest()` folds every event emitted so far
    the way the latest-state table does (only when `keep_latest`; for tests and small inputs).
    """

    def __init__(
        self,
        server: str,
        tz: str = "UTC",
        accounts: AccountMap | None = None,
        grace: float = DEFAULT_GRACE,
        expiry: float = DEFAULT_EXPIRY,
        keep_latest: bool = True,
        states: MutableMapping[str, MessageState] | None = None,
    ) -> None:
        self.server = server
        self.clock = LocalClock(tz)
        self.accounts = accounts or AccountMap()
        self.grace = grace
        self.expiry = expiry
        # msgid -> state; a dict here, a faust Table adapter in the stream app (stream/app.py)
        self.states: MutableMapping[str, MessageState] = {} if states is None else states
        self.watermark = 0.0  # the latest event time seen (lines may go backwards; this does not)
        self._since_sweep = 0
        self._last_sweep = 0.0
        self._latest: dict | None = {} if keep_latest else None
        self.stats: dict[str, int] = {
            "lines": 0, "message_lines": 0, "rejections": 0, "ignored": 0, "rejects": 0, "events": 0,
            "completed": 0, "expired": 0, "retry_skips": 0, "replayed": 0, "open_messages": 0,
            "notes": 0, "notes_over_cap": 0, "evented": 0, "attached": 0,
        }  # fmt: skip
        self.ignored_by_rule: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ public API

    def process(self, line: str, file_id: str = "", offset: int = -1, seq: int | None = None) -> JoinOutput:
        """Parse and apply one line. `seq` is the line's position in a replayable source (the Kafka offset in
        the stream app): a line whose message state has already applied it (seq <= state.hw) changes
        nothing and re-emits the message's current rows instead, so a replay after a crash is harmless."""
        out = JoinOutput()
        stats = self.stats
        stats["lines"] += 1
        p = parse_line(line)
        kind = p.kind
        if kind == "ignored":
            stats["ignored"] += 1
            self.ignored_by_rule[p.rule] = self.ignored_by_rule.get(p.rule, 0) + 1
            return out
        if kind == "unparsed":
            self._reject(out, line, p.reason, file_id, offset, 0.0)
            return out
        try:
            ts = self.clock.epoch(p.date, p.time, p.zone)
        except (ValueError, KeyError) as exc:
            self._reject(out, line, f"invalid timestamp: {exc}", file_id, offset, 0.0)
            return out
        if ts > self.watermark:
            self.watermark = ts
        keep = True
        if kind == "rejection":
            stats["rejections"] += 1
            self._rejection(p, ts, line, out)
        elif kind == "note":
            stats["message_lines"] += 1
            keep = self._note(p.msgid, seq)
        else:
            stats["message_lines"] += 1
            self._apply(p, ts, line, out, seq)
        if keep and (p.msgid or kind == "rejection"):
            msgid = p.msgid if p.msgid else out.events[0].msgid
            out.lines.append(LogLineRecord(stable_id(self.server, line), self.server, msgid, ts, line))
        if out.events:
            stats["evented"] += 1
        elif out.lines:
            stats["attached"] += 1
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY and self.watermark - self._last_sweep >= SWEEP_MIN_INTERVAL:
            self.sweep(self.watermark)
        stats["events"] += len(out.events)
        return out

    def sweep(self, now: float) -> int:
        """End the states of messages completed more than `grace` ago and of those idle beyond `expiry`."""
        self._since_sweep = 0
        self._last_sweep = now
        done, idle = [], []
        for k, st in self.states.items():  # one pass: in the stream app this walks the whole table
            if st.completed_at and st.completed_at + self.grace <= now:
                done.append(k)
            elif st.last_seen + self.expiry <= now:
                idle.append(k)
        for k in done:
            del self.states[k]
        for k in idle:
            del self.states[k]
        self.stats["expired"] += len(idle)
        self.stats["open_messages"] = len(self.states)
        return len(done) + len(idle)

    @property
    def open_messages(self) -> int:
        return len(self.states)

    def latest(self) -> dict:
        """{(msgid, recipient, deliveredto): DeliveryEvent} as the latest-state table shows it."""
        if self._latest is None:
            raise RuntimeError("Joiner(keep_latest=False) does not fold events")
        return {k: ev for k, ev in self._latest.items() if not ev.is_deleted}

    # ------------------------------------------------------------------------------------------- internals

    def _note(self, msgid: str, seq: int | None) -> bool:
        """A note line of `msgid`: True to keep it as a raw line of the message. A message the joiner holds
        keeps at most NOTE_CAP (counted in its state; a replayed line is kept again, not counted again);
        a note of a message it does not hold (ended, or never seen) is kept. Notes never change a row."""
        self.stats["notes"] += 1
        st = self.states.get(msgid)
        if st is None:
            return True
        if seq is not None and seq <= st.hw:
            return True  # a replay: the same line id again, harmless in the store
        if st.notes >= NOTE_CAP:
            self.stats["notes_over_cap"] += 1
            return False
        st.notes += 1
        if seq is not None:
            st.hw = seq
        self.states[msgid] = st  # write back (the count is part of the state)
        return True

    def _reject(self, out: JoinOutput, line: str, reason: str, file_id: str, offset: int, ts: float) -> None:
        self.stats["rejects"] += 1
        out.rejects.append(RejectRecord(stable_id(self.server, "reject", line), self.server, line, reason,
                                        file_id, offset, ts))  # fmt: skip

    def _emit(self, out: JoinOutput, ev: DeliveryEvent) -> None:
        out.events.append(ev)
        if self._latest is not None:
            key = (ev.msgid, ev.recipient, ev.deliveredto)
            prev = self._latest.get(key)
            if prev is None or ev.version >= prev.version:
                self._latest[key] = ev

    def _apply(self, p: ParsedLine, ts: float, line: str, out: JoinOutput, seq: int | None) -> None:
        kind = p.kind
        st = self.states.get(p.msgid)
        if st is None:
            st = MessageState(p.msgid)
        elif seq is not None and seq <= st.hw:
            self.stats["replayed"] += 1
            for ev in st.rows.values():
                self._emit(out, ev)
            return
        st.last_seen = ts
        if seq is not None:
            st.hw = seq
        if kind == "arrival":
            self._arrival(st, p, ts, line, out)
        elif kind in ("delivery", "defer", "failure"):
            self._result(st, p, ts, line, out)
        elif kind == "completed":
            if not st.completed_at:
                self.stats["completed"] += 1
            st.completed_at = ts
        elif kind in ("removed", "cancelled"):
            self._fail_open_rows(st, ts, line, p.body, out)
        elif kind == "recipients_ignored":
            if st.rows:  # nothing to say before the arrival is known
                self._fail_open_rows(st, ts, line, p.body, out, "filtered")
        elif kind == "error_ignored":
            self._error_ignored(st, p, ts, line, out)
        elif kind == "frozen":
            if not st.frozen:
                st.frozen = 1
                self._reemit_open(st, ts, line, p.body, out)
        elif kind == "unfrozen":
            if st.frozen:
                st.frozen = 0
                self._reemit_open(st, ts, line, p.body, out)
        elif kind == "spam":
            try:
                st.pre["spamscore"] = float(p.fields["score"])
            except (KeyError, ValueError):
                pass
            self._late_arrival_detail(st, out)
        elif kind == "identification":
            user = p.fields.get("U", "")
            if user:
                st.pre["user"] = user
                self._late_arrival_detail(st, out)
        elif kind in NO_STATE_KINDS and p.msgid in self.states:
            # queued, locked, info: kept as log lines of the message, no state change, so no write-back (a
            # faust Table write is a changelog record); replaying such a line is harmless
            return
        if st.rows or st.arrival is not None or st.pre or st.completed_at:
            self.states[st.msgid] = st  # write back (a no-op for a dict, a changelog write for a faust Table)
        elif st.msgid in self.states:
            # a line that says nothing about a message: do not keep an empty state for it
            del self.states[st.msgid]

    # arrival -------------------------------------------------------------------------------------------

    def _arrival_fields(self, st: MessageState, p: ParsedLine, ts: float) -> dict:
        f = p.fields
        email = p.address
        if email == "<>":
            email = ""
        email = (
            email.strip('"')
            if email.count('"') == 2 and email.startswith('"') and email.endswith('"')
            else email
        )
        protocol = f.get("P", "")
        auth = f.get("A", "")
        sender = senderauth = user = ""
        if auth:
            parts = auth.split(":")
            senderauth = parts[0]
            sender = parts[1] if len(parts) > 1 else ""
            if "@" in sender:
                user = self.accounts.user_of_domain(_domain(sender)) or sender
            else:
                user = sender
        elif protocol.startswith("local"):
            senderauth = "localuser"
            sender = f.get("U", "")
            user = sender
        if "user" in st.pre:
            user = st.pre["user"]
        senderhost = f.get("Hname") or f.get("Hhelo", "")
        size = f.get("S", "0")
        return {
            "email": email,
            "sender": sender,
            "user": user,
            "domain": _domain(email),
            "owner": self.accounts.owner_of(user),
            "senderhost": senderhost,
            "senderip": f.get("Hip", ""),
            "senderauth": senderauth,
            "spamscore": st.pre.get("spamscore"),
            "sendunixtime": ts,
            "size": message_size(size),
            "subject": f.get("T", ""),
            "message_id": f.get("id") or f.get("id*", ""),
            "protocol": protocol,
            "parent_msgid": f.get("R", "") if not email else "",
        }

    def _arrival(self, st: MessageState, p: ParsedLine, ts: float, line: str, out: JoinOutput) -> None:
        st.arrival = self._arrival_fields(st, p, ts)
        recipients: list[str] = []
        seen = set()
        for rcpt in _RCPT_LIST_RE.findall(p.fields.get("for", "")):
            key = rcpt.lower()
            if key not in seen:
                seen.add(key)
                recipients.append(key)
        # rows that came before the arrival (cutthrough `>>`, a frozen mark …) now learn the arrival
        for key, prev in list(st.rows.items()):
            ev = self._copy_with_arrival(st, prev)
            ev.version = prev.version + 1
            st.rows[key] = ev
            self._emit(out, ev)
        have = {r for r, _ in st.rows}
        targets = [r for r in recipients if r not in have] if recipients else ([] if st.rows else [""])
        for rcpt in targets:
            ev = self._new_event(st, "inprogress", rcpt, "", ts, line)
            st.rows[(rcpt, "")] = ev
            self._emit(out, ev)

    def _late_arrival_detail(self, st: MessageState, out: JoinOutput) -> None:
        """A detail that usually precedes `<=` came after it: apply it and re-emit the rows."""
        if st.arrival is None:
            return
        if "spamscore" in st.pre:
            st.arrival["spamscore"] = st.pre["spamscore"]
        if "user" in st.pre:
            st.arrival["user"] = st.pre["user"]
            st.arrival["owner"] = self.accounts.owner_of(st.pre["user"])
        for key, prev in list(st.rows.items()):
            ev = self._copy_with_arrival(st, prev)
            ev.version = prev.version + 1
            st.rows[key] = ev
            self._emit(out, ev)

    # results -------------------------------------------------------------------------------------------

    def _result(self, st: MessageState, p: ParsedLine, ts: float, line: str, out: JoinOutput) -> None:
        address = p.address
        if address.startswith(">"):  # a filter's autoreply is logged as a delivery; it is not one
            return
        f = p.fields
        rcpt = (p.original or address).lower()
        deliveredto = _row_key_part(address)
        router = f.get("R", "")
        transport = f.get("T", "")
        kind = p.kind
        message = p.message
        if kind == "delivery":
            if address in FILTERED_TARGETS or transport == "**bypassed**":
                etype = "filtered"
            elif "archive" in router or "archive" in transport:
                etype = "archive"
            else:
                etype = "success"
            message = f.get("C", "") or message
        elif kind == "defer":
            etype = "defer"
        else:
            etype = "failure"
        key = (rcpt, deliveredto)
        prev = st.rows.get(key)
        if prev is None and kind == "delivery" and deliveredto and "@" not in deliveredto:
            prev = self._supersede_full_address_row(st, rcpt, deliveredto, ts, out)
        skip = kind == "defer" and "retry time not reached" in message
        if skip and prev is not None and prev.type in SKIP_KEEPS:
            self.stats["retry_skips"] += 1
            return
        self._tombstone_placeholders(st, rcpt, ts, line, out)
        dom = _domain(address) or _domain(rcpt)
        user = self.accounts.user_of_domain(dom)
        ev = self._new_event(
            st,
            etype,
            rcpt,
            deliveredto,
            ts,
            line,
            router=router,
            transport=transport,
            transport_is_remote=1 if "remote" in transport else 0,
            host=f.get("Hname", ""),
            ip=f.get("Hip", ""),
            message=message,
            confirmation=f.get("C", ""),
            tls=f.get("X", ""),
            queue_time=_seconds(f.get("QT")),
            delivery_time=_seconds(f.get("DT")),
            deliverydomain=dom,
            deliveryuser=user,
            deliveryowner=self.accounts.owner_of(user),
            attempts=(prev.attempts if prev is not None else 0) + (0 if skip else 1),
        )
        if prev is not None and ev.version <= prev.version:
            ev.version = prev.version + 1
        st.rows[key] = ev
        self._emit(out, ev)

    def _supersede_full_address_row(
        self, st: MessageState, rcpt: str, local: str, ts: float, out: JoinOutput
    ) -> DeliveryEvent | None:
        """Exim logs a local delivery as `=> bob <bob@dom>` but its deferrals as `== bob@dom …` (the full
        address: deliver.c logs the local part alone only for a success). So the deferred row keyed by the
        full address is this recipient's: it is tombstoned and the delivery carries on its attempts, or the
        recipient would show as deferred and delivered at once."""
        for key, row in list(st.rows.items()):
            if key[0] != rcpt or row.type != "defer":
                continue
            at = key[1].rfind("@")
            if at <= 0 or key[1][:at] != local:
                continue
            self._remove_row(st, key, ts, "superseded", out)
            return row
        return None

    def _remove_row(
        self, st: MessageState, key: tuple[str, str], ts: float, why: str, out: JoinOutput
    ) -> None:
        """Drop row `key` of the message and emit its tombstone (`is_deleted`, a version above the row's), so
        the latest-state table drops it too. The tombstone's id is deterministic: (row key, why)."""
        row = st.rows.pop(key)
        tomb = self._copy_with_arrival(st, row)
        tomb.event_id = stable_id(self.server, st.msgid, key[0], key[1], why)
        tomb.is_deleted = 1
        tomb.version = max(row.version + 1, self._version(ts, row.type, st))
        tomb.actionunixtime = ts
        self._emit(out, tomb)

    def _tombstone_placeholders(
        self, st: MessageState, rcpt: str, ts: float, line: str, out: JoinOutput
    ) -> None:
        for key in ((rcpt, ""), ("", "")):
            ph = st.rows.get(key)
            if ph is not None and ph.type == "inprogress":
                self._remove_row(st, key, ts, "tombstone", out)

    def _fail_open_rows(
        self, st: MessageState, ts: float, line: str, text: str, out: JoinOutput, etype: str = "failure"
    ) -> None:
        """Every row without a final outcome gets `etype` (a message-level row if the message has none)."""
        open_rows = [k for k, ev in st.rows.items() if ev.type not in FINAL_TYPES]
        if not st.rows:
            ev = self._new_event(st, etype, "", "", ts, line)
            ev.message = text
            st.rows[("", "")] = ev
            self._emit(out, ev)
            return
        for key in open_rows:
            prev = st.rows[key]
            ev = self._new_event(st, etype, key[0], key[1], ts, line)
            self._carry_delivery(prev, ev)
            ev.message = text
            ev.version = max(ev.version, prev.version + 1)
            st.rows[key] = ev
            self._emit(out, ev)

    def _error_ignored(self, st: MessageState, p: ParsedLine, ts: float, line: str, out: JoinOutput) -> None:
        addr = p.address.lower()
        for key, prev in list(st.rows.items()):
            if prev.type in FINAL_TYPES or addr not in (key[0], key[1]):
                continue
            ev = self._new_event(st, "failure", key[0], key[1], ts, line)
            self._carry_delivery(prev, ev)
            ev.message = p.message
            ev.version = max(ev.version, prev.version + 1)
            st.rows[key] = ev
            self._emit(out, ev)

    def _reemit_open(self, st: MessageState, ts: float, line: str, text: str, out: JoinOutput) -> None:
        for key, prev in list(st.rows.items()):
            if prev.type in FINAL_TYPES:
                continue
            ev = self._new_event(st, prev.type, key[0], key[1], ts, line)
            self._carry_delivery(prev, ev)
            ev.message = text
            ev.version = max(ev.version, prev.version + 1)
            st.rows[key] = ev
            self._emit(out, ev)

    # rejections ----------------------------------------------------------------------------------------

    def _rejection(self, p: ParsedLine, ts: float, line: str, out: JoinOutput) -> None:
        f = p.fields
        msgid = p.msgid or "rej-" + stable_id(self.server, line)[:16]
        st = self.states.get(p.msgid) if p.msgid else None
        rcpt = p.address.lower()
        email = _strip_angle(f.get("F", ""))
        auth = f.get("A", "")
        ev = DeliveryEvent(
            event_id=stable_id(self.server, msgid, rcpt, "", "rejected", line),
            type="rejected",
            server=self.server,
            msgid=msgid,
            email=email,
            sender=auth.split(":")[1] if auth.count(":") >= 1 else "",
            domain=_domain(email),
            senderhost=f.get("Hname") or f.get("Hhelo", ""),
            senderip=f.get("Hip", ""),
            senderauth=auth.split(":")[0] if auth else "",
            sendunixtime=ts,
            recipient=rcpt,
            deliverydomain=_domain(rcpt),
            router="reject",
            transport="**rejected**",
            message=p.message,
            actionunixtime=ts,
            attempts=1,
        )
        ev.size = message_size(f.get("S", ""))
        if not auth and f.get("U"):  # a local submission (outside SMTP): the user who ran it
            ev.senderauth, ev.sender, ev.user = "localuser", f["U"], f["U"]
        if ev.sender and "@" in ev.sender:
            ev.user = self.accounts.user_of_domain(_domain(ev.sender)) or ev.sender
        ev.owner = self.accounts.owner_of(ev.user)
        ev.deliveryuser = self.accounts.user_of_domain(ev.deliverydomain)
        ev.deliveryowner = self.accounts.owner_of(ev.deliveryuser)
        if st is not None:
            ev.spamscore = st.pre.get("spamscore")
            del self.states[p.msgid]  # a message rejected after DATA never gets an id again
        ev.version = self._version(ts, "rejected", None)
        self._emit(out, ev)

    # event construction --------------------------------------------------------------------------------

    def _version(self, ts: float, etype: str, st: MessageState | None) -> int:
        has_arrival = 1 if st is not None and st.arrival is not None else 0
        return int(round(ts * 1000)) * 8 + OUTCOME_RANK[etype] * 2 + has_arrival

    def _new_event(
        self, st: MessageState, etype: str, rcpt: str, deliveredto: str, ts: float, line: str, **delivery
    ) -> DeliveryEvent:
        """A new state of row (rcpt, deliveredto) caused by `line`, with the arrival's fields and `delivery`
        (what the line says about the delivery, for the fields that are not the arrival's)."""
        a = st.arrival
        # the arrival's fields passed to the constructor (one call instead of 15 setattr after it) when the
        # arrival holds exactly ARRIVAL_FIELDS, as _arrival_fields makes it; anything else the slow way
        arrival = a if a is not None and a.keys() == ARRIVAL_KEYS else None
        ev = DeliveryEvent(
            event_id=stable_id(self.server, st.msgid, rcpt, deliveredto, etype, line),
            type=etype,
            server=self.server,
            msgid=st.msgid,
            recipient=rcpt,
            deliveredto=deliveredto,
            actionunixtime=ts,
            frozen=st.frozen,
            version=self._version(ts, etype, st),
            **(arrival or {}),
            **delivery,
        )
        if arrival is None:
            self._fill_arrival(st, ev)
        if rcpt and not ev.deliverydomain:
            ev.deliverydomain = _domain(rcpt)
            ev.deliveryuser = self.accounts.user_of_domain(ev.deliverydomain)
            ev.deliveryowner = self.accounts.owner_of(ev.deliveryuser)
        return ev

    def _fill_arrival(self, st: MessageState, ev: DeliveryEvent) -> None:
        a = st.arrival
        if a is None:
            ev.sendunixtime = msgid_time(st.msgid)
            ev.spamscore = st.pre.get("spamscore")
            if "user" in st.pre:
                ev.user = st.pre["user"]
            return
        for name in ARRIVAL_FIELDS:
            setattr(ev, name, a[name])

    def _copy_with_arrival(self, st: MessageState, prev: DeliveryEvent) -> DeliveryEvent:
        ev = prev.copy()
        self._fill_arrival(st, ev)
        ev.frozen = prev.frozen
        return ev

    @staticmethod
    def _carry_delivery(prev: DeliveryEvent, ev: DeliveryEvent) -> None:
        """A message-level change keeps what the row's last attempt said about the delivery."""
        for name in ("router", "transport", "transport_is_remote", "host", "ip", "confirmation", "tls",
                     "queue_time", "delivery_time", "attempts", "deliverydomain", "deliveryuser", "deliveryowner"):  # fmt: skip
            setattr(ev, name, getattr(prev, name))


def join_lines(
    server: str, lines, tz: str = "UTC", accounts: AccountMap | None = None
) -> tuple[Joiner, JoinOutput]:
    """Join an iterable of lines in one go (tests, small inputs): returns the joiner and everything emitted."""
    joiner = Joiner(server, tz, accounts)
    total = JoinOutput()
    for n, line in enumerate(lines):
        out = joiner.process(line.rstrip("\n"), offset=n)
        total.events.extend(out.events)
        total.rejects.extend(out.rejects)
        total.lines.extend(out.lines)
    return joiner, total
