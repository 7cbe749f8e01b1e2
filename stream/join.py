"""Per-message joiner: parsed Exim lines -> per-recipient delivery events (pure: no faust, Kafka, ClickHouse).

The rules below run compiled: native/src/join.rs, in the module `eximtrack_core` with the parser it reads
directly (issue 12: parse + join of a line cost ~11-15 us in CPython). This module is their Python interface:
`Joiner` (the compiled one, with this signature), `MessageState` (the compiled state; `to_bytes` keeps the
stored form, format 2, byte for byte), `state_ends`, `JoinOutput`, `join_lines` and the constants.
tests/golden/joiner holds what the Python joiner it replaced gave; the compiled one gives the same.

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

import eximtrack_core
from eximtrack_core import (
    ARRIVAL_FIELDS,  # the fields the arrival gives every row of its message, in stored order
    NOTE_CAP,  # notes kept per message (a runaway `logwrite` must not flood a message's timeline)
    STATE_FORMAT,  # MessageState.to_dict(): rows as differences from the arrival (1: rows as full events)
    SWEEP_EVERY,  # lines between two sweeps of finished/idle states …
    SWEEP_MIN_INTERVAL,  # … and at least this much event time
    MessageState,  # everything the joiner holds for one message (its rows, natively)
    stable_id,  # the deterministic id of a record: replays are harmless
)

from schemas.records import OUTCOME_RANK, SCHEMA_VERSION, DeliveryEvent, LogLineRecord, RejectRecord
from stream.accounts import AccountMap
from stream.clock import LocalClock

DEFAULT_GRACE = 300.0  # seconds of event time a completed message is kept for late lines
DEFAULT_EXPIRY = (
    8 * 86400.0
)  # longer than Exim's default retry timeout (4 days), so deferrals keep their arrival
# the Joiner.stats keys that count every line once: ignored by a named rule, made an event, kept as a line
# of its message only, stored as a reject (a note over NOTE_CAP is counted in `notes_over_cap` instead)
LINE_DISPOSITIONS = ("ignored", "evented", "attached", "rejects")
ARRIVAL_KEYS = frozenset(ARRIVAL_FIELDS)

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


@dataclass(slots=True)
class JoinOutput:
    """What one line produced: events for the store, rejects, and the raw line kept for its message."""

    events: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    lines: list = field(default_factory=list)


# the records the compiled joiner makes, and the outcome ranks of versions: schemas/records.py defines them
eximtrack_core.use_records(
    DeliveryEvent, RejectRecord, LogLineRecord, JoinOutput, OUTCOME_RANK, SCHEMA_VERSION
)


class Joiner(eximtrack_core.Joiner):
    """Joins the lines of one server's main log into delivery events.

    `process(line, file_id="", offset=-1, seq=None) -> JoinOutput` parses and applies one line (`seq`: the
    line's position in a replayable source, the Kafka offset in the stream app: a line whose message state has
    already applied it (seq <= state.hw) changes nothing and re-emits the message's current rows, and the
    tombstones of the rows it removed (`MessageState.gone`, kept once a line came with a `seq`), instead, so a
    replay after a crash is harmless;
    the state is written back to `states`, whose changelog from the first pass may have been lost).
    `sweep(now)` ends finished and idle states (called by `process` itself
    every SWEEP_EVERY lines, by event time). `latest()` folds every event emitted so far the way the
    latest-state table does (only when `keep_latest`; for tests and small inputs). `states` is the mapping
    msgid -> MessageState (a dict here, the worker's table adapter in stream/app.py); `accounts` may be
    reassigned (the rules read a snapshot of it); `stats` and `ignored_by_rule` are counters (new dicts).
    Other attributes may be set on it, as on any Python object (it has a `__dict__`).
    """

    def __new__(
        cls,
        server: str,
        tz: str = "UTC",
        accounts: AccountMap | None = None,
        grace: float = DEFAULT_GRACE,
        expiry: float = DEFAULT_EXPIRY,
        keep_latest: bool = True,
        states: MutableMapping[str, MessageState] | None = None,
    ) -> Joiner:
        return super().__new__(
            cls,
            server,
            LocalClock(tz),
            accounts or AccountMap(),
            grace,
            expiry,
            keep_latest,
            {} if states is None else states,
        )


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


__all__ = [
    "ARRIVAL_FIELDS",
    "ARRIVAL_KEYS",
    "DEFAULT_EXPIRY",
    "DEFAULT_GRACE",
    "LINE_DISPOSITIONS",
    "NOTE_CAP",
    "STATE_FORMAT",
    "SWEEP_EVERY",
    "SWEEP_MIN_INTERVAL",
    "JoinOutput",
    "Joiner",
    "MessageState",
    "join_lines",
    "stable_id",
    "state_ends",
]
