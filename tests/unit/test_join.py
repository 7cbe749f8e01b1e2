"""Joiner: the outcome rules, state lifetime, deterministic ids and attribution."""

import pytest

from stream.accounts import AccountMap
from stream.clock import LocalClock, msgid_time
from stream.join import Joiner, MessageState, join_lines

ID = "1xWksW-0004pV-1a"


def L(t, body, msgid=ID):  # noqa: N802 - a log line
    return f"2026-11-27 {t} [1] {msgid} {body}" if msgid else f"2026-11-27 {t} [1] {body}"


ARRIVAL = (
    "<= alice@local.test H=(client.example) [127.0.0.1]:37234 P=esmtpsa A=dovecot_login:alice@local.test S=597 "
    'id=m1@client.example T="Hello" for ok-a@remote.test carol@local.test'
)


def latest_types(joiner):
    return {(k[1], k[2]): ev.type for k, ev in joiner.latest().items()}


def test_arrival_creates_inprogress_rows_per_recipient_with_arrival_fields():
    j, out = join_lines("s1", [L("01:00:00.000", ARRIVAL)])
    assert latest_types(j) == {("ok-a@remote.test", ""): "inprogress", ("carol@local.test", ""): "inprogress"}
    ev = out.events[0]
    assert (ev.email, ev.sender, ev.senderauth, ev.senderip, ev.senderhost) == (
        "alice@local.test",
        "alice@local.test",
        "dovecot_login",
        "127.0.0.1",
        "client.example",
    )
    assert (ev.size, ev.subject, ev.message_id, ev.protocol, ev.domain) == (
        597,
        "Hello",
        "m1@client.example",
        "esmtpsa",
        "local.test",
    )
    assert ev.sendunixtime == ev.actionunixtime == LocalClock("UTC").epoch("2026-11-27", "01:00:00.000")


def test_arrival_without_recipient_list_gives_one_message_level_row():
    j, _ = join_lines("s1", [L("01:00:00", "<= a@b.example U=bob P=local S=10")])
    assert latest_types(j) == {("", ""): "inprogress"}
    j, _ = join_lines(
        "s1",
        [
            L("01:00:00", "<= a@b.example U=bob P=local S=10"),
            L("01:00:01", "=> x@remote.test R=r T=remote_smtp"),
        ],
    )
    assert latest_types(j) == {("x@remote.test", "x@remote.test"): "success"}


def test_defer_then_success_replaces_state_and_keeps_history():
    lines = [
        L("01:00:00", ARRIVAL),
        L(
            "01:00:01",
            "== ok-a@remote.test R=lookuphost T=remote_smtp defer (-44) H=h [1.2.3.4]: SMTP error: 451 later",
        ),
        L("01:00:01", "=> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
        L("01:10:00", '=> ok-a@remote.test R=lookuphost T=remote_smtp H=h [1.2.3.4] X=TLS1.3:x C="250 ok"'),
        L("01:10:00", "Completed"),
    ]
    j, out = join_lines("s1", lines)
    assert latest_types(j) == {
        ("ok-a@remote.test", "ok-a@remote.test"): "success",
        ("carol@local.test", "carol"): "success",
    }
    row = j.latest()[(ID, "ok-a@remote.test", "ok-a@remote.test")]
    assert (row.attempts, row.confirmation, row.tls, row.ip, row.transport_is_remote) == (
        2,
        "250 ok",
        "TLS1.3:x",
        "1.2.3.4",
        1,
    )
    history = [e.type for e in out.events if e.recipient == "ok-a@remote.test" and not e.is_deleted]
    assert history == ["inprogress", "defer", "success"]
    # the placeholder was tombstoned exactly once per recipient
    assert sum(e.is_deleted for e in out.events) == 2


def test_outcome_types_filtered_archive_failure():
    lines = [
        L(
            "01:00:00",
            "<= a@b.example U=bob P=local S=10 for devnull@l.test arch@l.test bad@r.test by@l.test",
        ),
        L("01:00:01", "=> :blackhole: <devnull@l.test> R=virtual_aliases"),
        L("01:00:01", "=> arch@l.test R=archiver_outgoing T=archiver_transport"),
        L("01:00:01", "** bad@r.test R=lookuphost T=remote_smtp: SMTP error: 550 no such user"),
        L("01:00:01", "=> /dev/null (x@l.test) <by@l.test> R=virtual_user_filter T=**bypassed**"),
    ]
    j, _ = join_lines("s1", lines)
    assert latest_types(j) == {
        ("devnull@l.test", ":blackhole:"): "filtered",
        ("arch@l.test", "arch@l.test"): "archive",
        ("bad@r.test", "bad@r.test"): "failure",
        ("by@l.test", "/dev/null"): "filtered",
    }
    failure = j.latest()[(ID, "bad@r.test", "bad@r.test")]
    assert failure.message == "SMTP error: 550 no such user"


def test_forwarder_expansion_gives_one_row_per_final_address():
    lines = [
        L("01:00:00", "<= a@b.example H=(c) [1.1.1.1] P=esmtp S=10 for list@l.test"),
        L("01:00:01", "=> ok-1@r.test <list@l.test> R=lookuphost T=remote_smtp H=h [2.2.2.2]"),
        L("01:00:01", "-> ok-2@r.test <list@l.test> R=lookuphost T=remote_smtp H=h [2.2.2.2]"),
        L("01:00:01", "=> alice <list@l.test> R=virtual_user T=dovecot_virtual_delivery"),
    ]
    j, _ = join_lines("s1", lines)
    assert latest_types(j) == {
        ("list@l.test", "ok-1@r.test"): "success",
        ("list@l.test", "ok-2@r.test"): "success",
        ("list@l.test", "alice"): "success",
    }


def test_cutthrough_before_arrival_is_enriched_when_arrival_comes():
    lines = [
        L("01:00:00.100", '>> ok@cut.test R=lookuphost T=remote_smtp H=h [2.2.2.2] C="250 ok"'),
        L("01:00:00.101", '<= a@b.example H=(c) [1.1.1.1] P=esmtp S=10 T="cut" for ok@cut.test'),
    ]
    j, out = join_lines("s1", lines)
    assert latest_types(j) == {("ok@cut.test", "ok@cut.test"): "success"}
    row = j.latest()[(ID, "ok@cut.test", "ok@cut.test")]
    assert (row.email, row.subject, row.senderip) == ("a@b.example", "cut", "1.1.1.1")
    # the enriched event has the same id and a higher version, so the store replaces it
    assert out.events[0].event_id == out.events[1].event_id and out.events[1].version > out.events[0].version


def test_spam_score_before_arrival_is_carried():
    lines = [
        L(
            "01:00:00",
            'H=(c) [1.1.1.1]:5 Warning: "SpamAssassin as cpaneleximscanner detected message as NOT spam (0.4)"',
        ),
        L("01:00:00", ARRIVAL),
        L("01:00:01", "=> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
    ]
    j, _ = join_lines("s1", lines)
    assert {ev.spamscore for ev in j.latest().values()} == {0.4}


def test_retry_time_not_reached_is_not_an_attempt():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused"),
        L(
            "01:05:00",
            "== ok-a@remote.test R=lookuphost T=remote_smtp defer (-54): retry time not reached for any host",
        ),
    ]
    j, out = join_lines("s1", lines)
    row = j.latest()[(ID, "ok-a@remote.test", "ok-a@remote.test")]
    assert (row.type, row.attempts, row.message) == ("defer", 1, "Connection refused")
    assert j.stats["retry_skips"] == 1


def test_removed_and_cancelled_fail_open_rows_only():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "=> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
        L("01:00:02", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused"),
        L("01:00:03", "cancelled by root"),
        L("01:00:03", "Completed"),
    ]
    j, _ = join_lines("s1", lines)
    assert latest_types(j) == {
        ("carol@local.test", "carol"): "success",
        ("ok-a@remote.test", "ok-a@remote.test"): "failure",
    }
    assert j.latest()[(ID, "ok-a@remote.test", "ok-a@remote.test")].message == "cancelled by root"
    j, _ = join_lines("s1", [L("01:00:00", ARRIVAL), L("01:00:03", "removed by root")])
    assert set(latest_types(j).values()) == {"failure"}


def test_frozen_marks_open_rows_once():
    lines = [L("01:00:00", ARRIVAL), L("01:00:00", "frozen by ACL"), L("01:30:00", "Message is frozen")]
    j, out = join_lines("s1", lines)
    assert {ev.frozen for ev in j.latest().values()} == {1}
    assert {ev.type for ev in j.latest().values()} == {"inprogress"}
    assert len(out.events) == 4  # 2 arrivals + 2 frozen updates; the repeated "Message is frozen" adds none
    j, _ = join_lines("s1", lines + [L("02:00:00", "unfrozen by root")])
    assert {ev.frozen for ev in j.latest().values()} == {0}


def test_error_ignored_fails_that_address():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "ok-a@remote.test: error ignored: RFC 3461 DSN, failure notify not requested"),
    ]
    j, _ = join_lines("s1", lines)
    assert latest_types(j)[("ok-a@remote.test", "")] == "failure"


def test_bounce_links_parent():
    lines = [
        L(
            "01:00:00",
            '<= <> R=1xWksa-0004pz-0A U=Debian-exim P=local S=2354 T="Mail delivery failed" for carol@local.test',
        )
    ]
    j, out = join_lines("s1", lines)
    assert out.events[0].parent_msgid == "1xWksa-0004pz-0A" and out.events[0].email == ""


def test_started_mid_log_emits_what_is_known():
    j, out = join_lines("s1", [L("01:00:01", "=> x@r.test R=lookuphost T=remote_smtp H=h [2.2.2.2]")])
    ev = out.events[0]
    assert ev.type == "success" and ev.email == "" and ev.sendunixtime == msgid_time(ID)


def test_smtp_rejection_gets_deterministic_synthetic_id():
    line = L("01:00:00", "H=(c) [1.1.1.1]:5 F=<a@b.example> rejected RCPT <trap@l.test>: spam trap", msgid="")
    _, out1 = join_lines("s1", [line])
    _, out2 = join_lines("s1", [line])
    ev = out1.events[0]
    assert (
        ev.type == "rejected"
        and ev.recipient == "trap@l.test"
        and ev.email == "a@b.example"
        and ev.senderip == "1.1.1.1"
    )
    assert ev.msgid == out2.events[0].msgid and ev.event_id == out2.events[0].event_id
    assert ev.msgid.startswith("rej-")
    _, out3 = join_lines("s2", [line])
    assert out3.events[0].msgid != ev.msgid  # ids are per server


def test_event_ids_are_deterministic_and_unique():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused"),
        L("01:00:02", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused again"),
        L("01:00:03", "=> ok-a@remote.test R=lookuphost T=remote_smtp H=h [2.2.2.2]"),
    ]
    _, a = join_lines("s1", lines)
    _, b = join_lines("s1", lines)
    assert [(e.event_id, e.version) for e in a.events] == [(e.event_id, e.version) for e in b.events]
    assert len({e.event_id for e in a.events}) == len(a.events)


def test_stable_id_is_blake2b_of_the_parts_as_stored_before_it_was_compiled():
    """The compiled id must equal the Python definition that earlier stores' ids were made with, for ASCII,
    any Unicode, empty parts, the separator inside a part and lone surrogates (encoded as surrogatepass)."""
    import hashlib

    from stream.join import stable_id

    def python_id(*parts):
        return hashlib.blake2b(
            "\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=10
        ).hexdigest()

    cases = [
        ("s1", "1abcDE-000001-AB", "a@b.c", "", "success", "2026-12-01 10:00:00 line"),
        ("s1",),
        ("",),
        ("", ""),
        ("a\x1fb", "c"),
        ("a", "b\x1fc"),
        ("sérveur", "ñame@dömain.test", "件名 📧", "\u0000"),
        ("lone \ud800 high", "lone \udfff low", "pair \ud83d\udce7"),
        ("x" * 100_000,),
    ]
    for parts in cases:
        assert stable_id(*parts) == python_id(*parts), parts
    assert stable_id("a\x1fb", "c") == stable_id("a", "b\x1fc")  # as before: the separator is not escaped
    assert stable_id() == python_id()
    with pytest.raises(TypeError):
        stable_id("a", 1)


def test_an_arrival_with_other_keys_is_copied_field_by_field():
    """The joiner passes the arrival's fields to the event's constructor only when they are exactly
    ARRIVAL_FIELDS; a state restored with a key more or less takes the field-by-field path and gives the
    same event."""
    from stream.join import ARRIVAL_FIELDS

    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:03", "=> ok-a@remote.test R=lookuphost T=remote_smtp H=h [2.2.2.2]"),
    ]
    _, expected = join_lines("s1", lines)
    j = Joiner("s1")
    j.process(lines[0])
    st = next(iter(j.states.values()))
    assert set(st.arrival) == set(ARRIVAL_FIELDS)
    st.arrival = {**st.arrival, "unknown_key_from_a_newer_state": 1}
    out = j.process(lines[1])
    assert [e.to_wire() for e in out.events] == [e.to_wire() for e in expected.events[-len(out.events) :]]


def test_state_ends_after_completed_plus_grace_and_after_expiry():
    j = Joiner("s1", grace=60, expiry=3600)
    j.process(L("01:00:00", ARRIVAL))
    j.process(L("01:00:01", "Completed"))
    j.process(L("01:00:00", "<= b@b.example U=x P=local S=1 for y@r.test", msgid="1xWksX-0004pV-1b"))
    assert j.open_messages == 2
    j.sweep(j.clock.epoch("2026-11-27", "01:00:30"))
    assert j.open_messages == 2
    j.sweep(j.clock.epoch("2026-11-27", "01:01:02"))
    assert j.open_messages == 1 and j.stats["completed"] == 1
    j.sweep(j.clock.epoch("2026-11-27", "02:00:01"))
    assert j.open_messages == 0 and j.stats["expired"] == 1


def test_message_state_round_trips_through_dict():
    j, _ = join_lines("s1", [L("01:00:00", ARRIVAL), L("01:00:01", "=> carol <carol@local.test> R=v T=t")])
    st = j.states[ID]
    again = MessageState.from_dict(st.to_dict())
    assert again.to_dict() == st.to_dict()


def test_timezone_of_the_server_is_applied():
    j, out = join_lines("s1", [L("01:00:00", ARRIVAL)], tz="Europe/Berlin")
    assert out.events[0].actionunixtime == LocalClock("UTC").epoch("2026-11-27", "00:00:00")
    p = Joiner("s1", tz="Europe/Berlin").clock.epoch("2026-11-27", "01:00:00", "+0000")
    assert p == LocalClock("UTC").epoch("2026-11-27", "01:00:00")


def test_attribution_from_account_maps():
    accounts = AccountMap.from_text("local.test: alice\nremote.test: rem\n", "alice: reseller1\nrem: root\n")
    j, out = join_lines(
        "s1",
        [L("01:00:00", ARRIVAL), L("01:00:01", "=> carol <carol@local.test> R=v T=dovecot")],
        accounts=accounts,
    )
    row = j.latest()[(ID, "carol@local.test", "carol")]
    assert (row.user, row.owner, row.deliveryuser, row.deliverydomain, row.deliveryowner) == (
        "alice",
        "reseller1",
        "alice",
        "local.test",
        "reseller1",
    )
    local = join_lines("s1", [L("01:00:00", "<= bob@x.example U=bob P=local S=1 for a@r.test")])[1].events[0]
    assert (local.user, local.sender, local.senderauth) == ("bob", "bob", "localuser")


def test_every_line_is_accounted_for():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:00", "SMTP connection from [127.0.0.1]:1 (TCP/IP connection count = 1)", msgid=""),
        L("01:00:00", "H=(c) [1.1.1.1]:5 F=<a@b.example> rejected RCPT <trap@l.test>: spam trap", msgid=""),
        "garbage line",
        L("01:00:01", "a message line nobody knows"),
        L("01:00:02", ""),  # a message id and nothing else: malformed
    ]
    j, out = join_lines("s1", lines)
    s = j.stats
    assert s["lines"] == 6 == s["message_lines"] + s["rejections"] + s["ignored"] + s["rejects"]
    assert s["rejects"] == 2 and {r.reason for r in out.rejects} == {
        "no Exim timestamp at the start of the line",
        "a message id with no text",
    }
    # the unknown message line is a note: a raw line of its message, no event
    assert s["notes"] == 1 and any(r.line.endswith("a message line nobody knows") for r in out.lines)
    # every line is ignored, rejected, evented (made an event) or attached (kept as a raw line only)
    assert s["ignored"] + s["rejects"] + s["evented"] + s["attached"] == s["lines"]
    assert (s["evented"], s["attached"]) == (2, 1)


def test_notes_are_lines_of_their_message_and_bounded():
    """ACL logwrite output, TLS/DKIM details, system filter remarks: kept in the message's story, never a
    reject, never an outcome; at most NOTE_CAP per message held, counted beyond."""
    from stream.join import NOTE_CAP

    notes = ["data acl: dkim status pass", "peer cert verified 1",
             "cipher TLS1.3:TLS_AES_256_GCM_SHA384:256", "arc_state: <none>"]  # fmt: skip
    lines = [L("01:00:00", ARRIVAL)] + [L("01:00:01", n) for n in notes]
    j, out = join_lines("s1", lines)
    assert not out.rejects and j.stats["notes"] == 4 and j.stats["notes_over_cap"] == 0
    assert [r.line for r in out.lines[1:]] == lines[1:] and {r.msgid for r in out.lines} == {ID}
    assert len(out.events) == len(join_lines("s1", lines[:1])[1].events)  # no event from a note
    # the cap: a message keeps NOTE_CAP notes; the rest are counted, not stored
    flood = [L("01:00:00", ARRIVAL)] + [L("01:00:02", f"logwrite {i}") for i in range(NOTE_CAP + 5)]
    j, out = join_lines("s1", flood)
    assert len(out.lines) == 1 + NOTE_CAP and j.stats["notes_over_cap"] == 5
    assert j.stats["attached"] + j.stats["evented"] == 1 + NOTE_CAP
    # every line accounted for: ignored, evented, attached, rejected or over the cap
    s = j.stats
    assert s["ignored"] + s["evented"] + s["attached"] + s["rejects"] + s["notes_over_cap"] == s["lines"]
    # the count survives the state's round trip (the stream worker's table), and a replay is not counted
    st = j.states[ID]
    assert MessageState.from_value(st.to_bytes()).notes == NOTE_CAP
    j2 = Joiner("s1")
    for seq, line in enumerate(flood[:3]):
        j2.process(line, seq=seq)
    again = j2.process(flood[2], seq=2)
    assert j2.states[ID].notes == 2 and len(again.lines) == 1
    # a note of a message the joiner does not hold is kept (no state is made for it)
    j3, out3 = join_lines("s1", [L("01:00:00", "data acl: dkim status pass")])
    assert len(out3.lines) == 1 and not j3.states


def test_original_recipients_ignored_by_the_system_filter_are_filtered():
    """Real Exim 4.96 (tests/exim/harness.py s46): the system filter delivered the message to bob instead."""
    lines = [
        L("01:00:00", "<= dave@local.test U=root P=local S=436 for alice@local.test"),
        L("01:00:01", "original recipients ignored (system filter)"),
        L("01:00:01", "=> bob <system-filter> R=virtual_user T=dovecot_virtual_delivery"),
        L("01:00:01", "Completed"),
    ]
    j, out = join_lines("s1", lines)
    rows = {k[1:]: ev.type for k, ev in j.latest().items()}
    assert rows == {("alice@local.test", ""): "filtered", ("system-filter", "bob"): "success"}
    assert not out.rejects


def test_rejections_outside_smtp_are_rejected_events_of_their_message():
    """Lines real Exim 4.96 wrote (tests/exim/harness.py s42-s44): a local submission over
    message_size_limit, one refused by the non-SMTP ACL and its follow-up line; local_scan's forms."""
    lines = [
        L("01:00:00", "rejected from <dave@local.test> U=root: message too big: read=51201 max=51200"),
        L("01:00:01", "F=<dave@local.test> rejected by non-SMTP ACL: local submission refused by policy",
          msgid="1xYTDm-0002gg-0Z"),
        L("01:00:02", "F=<> rejected by non-SMTP ACL: local submission refused by policy", msgid="1xYTDm-0002gp-0h"),
        L("01:00:02", "Error while reading message with no usable sender address: rejected by non-SMTP ACL: "
          "local submission refused by policy", msgid="1xYTDm-0002gp-0h"),
        L("01:00:03", "local_scan() function timed out - message temporarily rejected (size 30)",
          msgid="1xYTDm-0002gq-0i"),
        L("01:00:04", "local_scan() function crashed with signal 11 - message temporarily rejected (size 35)",
          msgid="1xYTDm-0002gr-0j"),
    ]  # fmt: skip
    j, out = join_lines("s1", lines)
    assert not out.rejects
    got = {(e.msgid, e.type, e.email, e.sender, e.user, e.senderauth, e.size) for e in out.events}
    assert got == {
        (ID, "rejected", "dave@local.test", "root", "root", "localuser", 51201),
        ("1xYTDm-0002gg-0Z", "rejected", "dave@local.test", "", "", "", 0),
        ("1xYTDm-0002gp-0h", "rejected", "", "", "", "", 0),  # one event; the follow-up line is a note
        ("1xYTDm-0002gq-0i", "rejected", "", "", "", "", 30),
        ("1xYTDm-0002gr-0j", "rejected", "", "", "", "", 35),
    }
    by_id = {e.msgid: e for e in out.events}
    assert by_id[ID].message == "rejected from <dave@local.test>: message too big: read=51201 max=51200"
    assert by_id["1xYTDm-0002gp-0h"].message == "rejected by non-SMTP ACL: local submission refused by policy"
    assert len(out.lines) == len(lines)  # every line is in its message's story
    assert j.stats["rejections"] == 5 and j.stats["notes"] == 1


def test_replayed_line_reemits_current_rows_without_applying_twice():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused"),
        L("01:00:02", "=> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
    ]
    j = Joiner("s1")
    first = [j.process(line, seq=seq) for seq, line in enumerate(lines)]
    before = {k: (ev.type, ev.attempts, ev.version) for k, ev in j.latest().items()}
    tombstones = {(e.event_id, e.version) for out in first for e in out.events if e.is_deleted}
    assert len(tombstones) == 2  # both placeholders, replaced by their recipients' first results
    # a crash replays from offset 1: both lines were applied already
    out1 = j.process(lines[1], seq=1)
    out2 = j.process(lines[2], seq=2)
    assert j.stats["replayed"] == 2
    after = {k: (ev.type, ev.attempts, ev.version) for k, ev in j.latest().items()}
    assert after == before
    for out in (out1, out2):
        # the current rows, and the tombstones of the rows removed (the first pass's output, tombstones
        # included, may be what was lost): the same ids and versions as the first pass emitted
        assert {e.event_id for e in out.events if not e.is_deleted} == {
            ev.event_id for ev in j.latest().values()
        }
        assert {(e.event_id, e.version) for e in out.events if e.is_deleted} == tombstones


def test_only_a_joiner_fed_replayable_positions_keeps_the_tombstones_a_replay_emits_again():
    """`ingest` passes no `seq`, so none of its lines can be replayed: its states keep no removed rows'
    tombstones (`gone`; they cost its joining ~6 %), and it emits exactly what the worker's joiner emits."""
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "== ok-a@remote.test R=lookuphost T=remote_smtp defer (111): Connection refused"),
    ]
    plain, worker = Joiner("s1"), Joiner("s1")
    plain_out = [plain.process(line, offset=n) for n, line in enumerate(lines)]
    worker_out = [worker.process(line, offset=n, seq=n) for n, line in enumerate(lines)]
    assert [o.events for o in plain_out] == [o.events for o in worker_out]
    assert any(e.is_deleted for o in plain_out for e in o.events)  # a placeholder was replaced
    assert plain.states[ID].gone == {} and "gone" not in plain.states[ID].to_dict()
    tombs = worker.states[ID].gone
    assert [(e.recipient, e.is_deleted) for e in tombs.values()] == [("ok-a@remote.test", 1)]
    assert plain.states[ID].rows == worker.states[ID].rows


def test_retry_skip_after_a_final_outcome_changes_nothing():
    lines = [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "=> ok-a@remote.test R=lookuphost T=remote_smtp H=h [2.2.2.2]"),
        L(
            "01:05:00",
            "== ok-a@remote.test R=lookuphost T=remote_smtp defer (-54): retry time not reached for any host",
        ),
    ]
    j, out = join_lines("s1", lines)
    assert j.latest()[(ID, "ok-a@remote.test", "ok-a@remote.test")].type == "success"
    assert j.stats["retry_skips"] == 1


def test_state_dict_is_lossless_for_every_state_of_the_real_exim_samples():
    """Format 2 stores rows as differences from the arrival: decoding must give back every field of every
    row, at every step (rows before their arrival, bounces, frozen, failures …), and format 1 still reads.
    The lines are fed as the stream worker feeds them (with `seq`), so the states keep `gone` too."""
    from pathlib import Path

    from stream.join import _ENDS_RE, STATE_FORMAT, state_ends

    samples = Path(__file__).resolve().parents[2] / "samples"
    checked = with_gone = 0
    for mode in ("all", "cpanel", "default"):
        j = Joiner(mode, keep_latest=False)
        for n, line in enumerate((samples / f"mainlog-{mode}.log").read_text().splitlines()):
            out = j.process(line, offset=n, seq=n)
            for ev in out.events:
                st = j.states.get(ev.msgid)
                if st is None:
                    continue
                d = st.to_dict()
                assert d["v"] == STATE_FORMAT
                again = MessageState.from_dict(d)
                assert again.rows == st.rows and again.arrival == st.arrival and again.hw == st.hw
                assert again.gone == st.gone
                with_gone += bool(st.gone)
                raw = st.to_bytes()
                assert MessageState.from_value(raw).rows == st.rows
                assert MessageState.from_value(raw).gone == st.gone
                assert _ENDS_RE.match(raw) and state_ends(raw) == (
                    st.completed_at,
                    st.last_seen,
                ) == state_ends(d)
                old = dict(d, rows=[e.to_dict() for e in st.rows.values()])
                del old["v"]
                old.pop("gone", None)  # format 1 had none
                assert MessageState.from_dict(old).rows == st.rows  # format 1 (full rows)
                checked += 1
    assert checked > 100 and with_gone > 50


def test_state_bytes_keep_what_orjson_refuses():
    """to_bytes writes orjson; a lone surrogate (an undecodable log byte kept by surrogateescape) or an
    integer beyond 64 bits falls back to the standard library and still round-trips, head first."""
    from stream.join import state_ends

    st = MessageState("1abcDE-000001-AB", arrival={"subject": "caf\udce9", "size": 1 << 70}, last_seen=5.0)
    raw = st.to_bytes()
    again = MessageState.from_value(raw)
    assert again.arrival == st.arrival and state_ends(raw) == (0.0, 5.0)


def test_local_deferral_then_delivery_is_one_row():
    """`== carol@local.test … defer` then `=> carol <carol@local.test>` (Exim logs the local part alone only
    on success; Exim test 0132 shows the full address on a local deferral): one row, delivered, 2 attempts."""
    j, out = join_lines("s1", [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "=> ok-a@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [192.0.2.1] C=\"250 OK\""),
        L("01:00:01", "== carol@local.test R=virtual_user T=dovecot_virtual_delivery defer (-22): Mailbox full"),
        L("01:15:01", "== carol@local.test R=virtual_user T=dovecot_virtual_delivery defer (-22): Mailbox full"),
        L("01:30:01", "=> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
        L("01:30:01", "Completed"),
    ])  # fmt: skip
    assert latest_types(j) == {
        ("ok-a@remote.test", "ok-a@remote.test"): "success",
        ("carol@local.test", "carol"): "success",
    }
    row = j.latest()[(ID, "carol@local.test", "carol")]
    assert row.attempts == 3
    tomb = [e for e in out.events if e.is_deleted and e.deliveredto == "carol@local.test"]
    assert len(tomb) == 1 and tomb[0].version > max(
        e.version for e in out.events if e.type == "defer" and not e.is_deleted
    )


def test_local_delivery_of_another_local_part_keeps_the_deferred_row():
    j, _ = join_lines("s1", [
        L("01:00:00", ARRIVAL),
        L("01:00:01", "== carol@local.test R=virtual_user T=dovecot_virtual_delivery defer (-22): Mailbox full"),
        L("01:30:01", "=> carolyn <carol@local.test> R=virtual_user T=dovecot_virtual_delivery"),
    ])  # fmt: skip
    types = latest_types(j)
    assert types[("carol@local.test", "carol@local.test")] == "defer"
    assert types[("carol@local.test", "carolyn")] == "success"


def test_an_absurd_size_is_no_size():
    """S= beyond 64 bits (19 digits and more) is stored as 0: the records between worker and sink (orjson) and
    the store's UInt64 cannot hold it, and one such line must not stop the worker."""
    from schemas.records import dumps_json

    j = Joiner("s1")
    out = j.process("2026-12-01 10:00:00 1abcDE-000001-AB <= a@b.c H=(x) [192.0.2.1] P=esmtp "
                    "S=999999999999999999999999 for r@d.e")  # fmt: skip
    assert [e.size for e in out.events] == [0]
    assert dumps_json([e.to_wire() for e in out.events])
    out = j.process(
        "2026-12-01 10:00:01 1abcDE-000002-AB <= a@b.c H=(x) [192.0.2.1] P=esmtp S=1234 for r@d.e"
    )
    assert [e.size for e in out.events] == [1234]
