"""End to end against a real Exim: feed the real main log of every log_selector mode through the parser and
joiner (stream.join.Joiner) and compare the latest state of every recipient with the harness's ground truth.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from stream.join import Joiner
from tests.exim.harness import MODES

pytestmark = [pytest.mark.exim, pytest.mark.slow]


def _ingest(res):
    j = Joiner(server="test", tz="UTC")
    events, rejects = [], []
    j.kept_lines = []  # the raw lines kept for their messages (the timeline)
    with open(res.mainlog, encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f):
            out = j.process(line.rstrip("\n"), file_id="f", offset=n)
            events.extend(out.events)
            rejects.extend(out.rejects)
            j.kept_lines.extend(out.lines)
    return j, events, rejects


@pytest.fixture(scope="module")
def joined(exim_runs):
    return {mode: (exim_runs[mode], *_ingest(exim_runs[mode])) for mode in MODES}


@pytest.fixture(params=MODES)
def case(request, joined):
    return joined[request.param]


def _same_target(row_deliveredto: str, expected: str) -> bool:
    """Joiner rows name a local delivery by its local part (`alice`), a remote one by the address."""
    d = row_deliveredto.lower()
    return d == expected or ("@" not in d and expected == f"{d}@local.test")


def _rows(latest):
    rows = defaultdict(list)
    for (msgid, rcpt, _dt), ev in latest.items():
        if ev.type != "rejected":
            rows[(msgid, rcpt)].append(ev)
    return rows


def test_no_unparsed_lines(case):
    res, j, events, rejects = case
    assert [r.line for r in rejects] == []


def test_every_expected_recipient(case):
    res, j, events, rejects = case
    rows = _rows(j.latest())
    problems = []
    for e in res.expected:
        got = rows.get((e["msgid"], e["recipient"]))
        if not got and res.mode == "default":
            # without +received_recipients a message never attempted (queued, frozen, removed) shows no
            # recipient in the log: Track Delivery can only show the message itself
            got = rows.get((e["msgid"], ""))
        if not got:
            problems.append(f"{e}: no row")
            continue
        if "deliveredto" in e:
            got = [ev for ev in got if _same_target(ev.deliveredto, e["deliveredto"])]
            if len(got) != 1:
                problems.append(
                    f"{e}: rows {[(ev.deliveredto, ev.type) for ev in rows[(e['msgid'], e['recipient'])]]}"
                )
                continue
        types = sorted({ev.type for ev in got})
        if types != [e["type"]]:
            problems.append(f"{e}: got {[(ev.deliveredto, ev.type, ev.message) for ev in got]}")
    assert problems == []


def _unexpected_rows(res, j):
    want = {(e["msgid"], e["recipient"]) for e in res.expected}
    want_msgs = {e["msgid"] for e in res.expected}
    extra = []
    for (msgid, rcpt), evs in _rows(j.latest()).items():
        if (msgid, rcpt) in want:
            continue
        if rcpt == "" and res.mode == "default" and msgid in want_msgs:
            continue
        extra.append((res.messages.get(msgid, "?"), msgid, rcpt, [(ev.deliveredto, ev.type) for ev in evs]))
    return extra


def test_no_unexpected_rows(case):
    res, j, events, rejects = case
    assert _unexpected_rows(res, j) == []


def test_arrival_fields(case):
    res, j, events, rejects = case
    first = {}
    for e in res.expected:
        first.setdefault(e["scenario"], e["msgid"])
    by_msg = defaultdict(list)
    for (msgid, _r, _d), ev in j.latest().items():
        by_msg[msgid].append(ev)
    for sc, auth in (("S24", "dovecot_login"), ("S37", "dovecot_plain")):
        for ev in by_msg[first[sc]]:
            assert (ev.senderauth, ev.sender, ev.email) == (auth, "alice@local.test", "alice@local.test"), sc
    for ev in by_msg[first["S01"]]:
        assert ev.spamscore == 0.4 and ev.senderip == "127.0.0.1" and ev.email == "alice@local.test"
        assert ev.message_id.startswith(f"{res.mode}-s01-") and ev.message_id.endswith("@client.example")
    if res.mode != "default":  # +subject
        for ev in by_msg[first["S29"]]:
            assert ev.subject.startswith(
                'S29 tricky "quoted" \\ subject for bob@local.test R=fake T=fake S=1'
            )
        for ev in by_msg[first["S01"]]:
            assert ev.subject == "S01 local delivery"


def test_bounce_parents(case):
    res, j, events, rejects = case
    latest = j.latest()
    for e in res.expected:
        if "parent" in e:
            evs = [ev for (m, _r, _d), ev in latest.items() if m == e["msgid"]]
            assert evs and all(ev.parent_msgid == e["parent"] for ev in evs), e


def test_rejections(case):
    res, j, events, rejects = case
    got = Counter(ev.recipient for ev in j.latest().values() if ev.type == "rejected")
    want = Counter(r["recipient"] for r in res.rejections)
    assert got == want
    senders = Counter(ev.email for ev in j.latest().values() if ev.type == "rejected")
    assert senders == Counter(r["sender"] for r in res.rejections)


def test_every_line_is_ignored_evented_or_attached(case):
    """Issue 16 on the real MTA: every line of the log is ignored by a named rule, makes an event, or is
    kept as a raw line of its message; none is a reject. The ACL's logwrite line (S45) and Exim's follow-up
    to a rejection outside SMTP (S44) are in their messages' stories."""
    res, j, events, rejects = case
    s = j.stats
    assert s["rejects"] == 0
    assert s["ignored"] + s["evented"] + s["attached"] == s["lines"]
    assert s["notes"] >= 2 and s["notes_over_cap"] == 0
    by_scenario = {v: k for k, v in res.messages.items()}
    kept = {(r.msgid, r.line.split(" ", 3)[-1]) for r in j.kept_lines}
    assert any(m == by_scenario["S45"] and body.endswith("data acl: dkim status pass") for m, body in kept)
    assert any(body.endswith("Error while reading message with no usable sender address: rejected by "
                             "non-SMTP ACL: local submission refused by policy") for _, body in kept)  # fmt: skip
    # the rejections outside SMTP are events of their real message ids (not synthetic `rej-` ids)
    local = [
        ev
        for ev in j.latest().values()
        if ev.type == "rejected" and ev.router == "reject" and not ev.senderip
    ]
    assert len(local) == 3 and all(not ev.msgid.startswith("rej-") for ev in local)
    assert {ev.message.split(":")[0] for ev in local} == {
        "rejected from <dave@local.test>",
        "rejected by non-SMTP ACL",
    }
