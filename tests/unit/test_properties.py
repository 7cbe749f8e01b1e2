"""Property tests (hypothesis): no line crashes the parser or the joiner, every line is accounted for, and a
message's events do not depend on how its lines interleave with other messages' lines."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.join import join_lines
from stream.parse import parse_line

PREFIXES = ["2026-11-27 01:00:00 ", "2026-11-27 01:00:00.123 [42] ", "2026-11-27 01:00:00 +0100 ", ""]
IDS = ["1xWksW-0004pV-1a ", "10HmaX-000000005vi-0000 ", ""]
BODIES = [
    "<= a@b.example H=(c) [1.1.1.1]:5 P=esmtp S=1 for x@r.test y@l.test",
    '=> x@r.test R=r T=remote_smtp H=h [2.2.2.2] C="250 ok"',
    "== x@r.test R=r T=t defer (-44) H=h [2.2.2.2]: 451 later",
    "** y@l.test: Unrouteable address",
    "Completed",
    "H=(c) [1.1.1.1]:5 F=<a@b> rejected RCPT <z@l.test>: no",
    "rejected MAIL FROM:<a@b> H=(c) [1.1.1.1]: message too big: size=1 max=0",
    'H=(c) [1.1.1.1] Warning: "SpamAssassin as x detected message as spam (9.9)"',
    "removed by root",
    "frozen by ACL",
]

line_text = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda p, i, b, cut, junk: (p + i + b)[: cut if cut else None] + junk,
        st.sampled_from(PREFIXES),
        st.sampled_from(IDS),
        st.sampled_from(BODIES),
        st.integers(min_value=0, max_value=120),
        st.text(max_size=20),
    ),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(line_text, max_size=30))
def test_no_line_crashes_and_every_line_is_accounted_for(lines):
    lines = [ln.replace("\n", " ") for ln in lines]
    for ln in lines:
        p = parse_line(ln)
        assert p.kind
    j, out = join_lines("s", lines)
    s = j.stats
    assert s["lines"] == len(lines)
    assert s["message_lines"] + s["rejections"] + s["ignored"] + s["rejects"] == len(lines)
    assert len(out.rejects) == s["rejects"]
    assert all(r.reason for r in out.rejects)


def _message(msgid, second):
    t = f"2026-11-27 01:00:{second:02d}"
    return [
        f"{t} {msgid} <= a@b.example H=(c) [1.1.1.1] P=esmtp S=1 for x@r.test y@l.test",
        f"{t} {msgid} == x@r.test R=r T=remote_smtp defer (-44): 451 later",
        f"{t} {msgid} => y <y@l.test> R=virtual_user T=dovecot_virtual_delivery",
        f"{t} {msgid} => x@r.test R=r T=remote_smtp H=h [2.2.2.2]",
        f"{t} {msgid} Completed",
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_events_do_not_depend_on_interleaving(seed):
    msgs = [_message(f"1xWksW-0004p{c}-1a", i) for i, c in enumerate("ABCDEF")]
    sequential = [ln for m in msgs for ln in m]
    rng = random.Random(seed)
    queues = [list(m) for m in msgs]
    interleaved = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        interleaved.append(q.pop(0))
    _, a = join_lines("s", sequential)
    _, b = join_lines("s", interleaved)
    assert sorted((e.event_id, e.version, e.type) for e in a.events) == sorted(
        (e.event_id, e.version, e.type) for e in b.events
    )
