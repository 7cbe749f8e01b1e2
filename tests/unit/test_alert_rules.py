"""Alert rules files (eximtrack/alerts/rules.py) and alert states (eximtrack/alerts/state.py): pure logic."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from eximtrack.alerts.cli import parse_every
from eximtrack.alerts.evaluate import Finding
from eximtrack.alerts.notify import email_message, payload, sign
from eximtrack.alerts.rules import DEFAULT_RULES, KINDS, Email, RulesError, parse_rules
from eximtrack.alerts.state import FIRING, RESOLVED, MemoryAlerts, step

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_the_shipped_rules_cover_every_kind_with_defaults():
    rules = parse_rules(DEFAULT_RULES)
    assert {r.kind for r in rules.rules} == set(KINDS)
    burst = rules.by_name("compromised-account")
    assert (burst["scope"], burst["factor"], burst["floor"], burst["baseline_days"]) == ("user", 5, 200, 7)
    assert burst.cooldown_seconds == 3600
    assert rules.webhook is None and rules.email is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("rules: []", "non-empty list"),
        ("[1, 2]", "mapping with `rules:`"),
        ("rules: [{kind: sender_burst}]", "rules[0]: needs a name"),
        ("rules: [{name: a, kind: spam}]", "kind must be one of"),
        ("rules: [{name: a, kind: sender_burst, factr: 3}]", "rule 'a': unknown key factr"),
        ("rules: [{name: a, kind: sender_burst, factor: 0}]", "factor: must be between 1 and 1000"),
        ("rules: [{name: a, kind: sender_burst, factor: lots}]", "factor: must be a number"),
        ("rules: [{name: a, kind: sender_burst, scope: server}]", "scope: must be one of user, sender"),
        ("rules: [{name: a, kind: stuck_queue}, {name: a, kind: silent_server}]", "unique: a"),
        ("rules: [{name: a, kind: stuck_queue}]\nnotify: {webhook: {url: ftp://x}}", "must be http(s)"),
        ("rules: [{name: a, kind: stuck_queue}]\nnotify: {email: {relay: x}}", "needs sender, to"),
        ("rules: [{name: a, kind: stuck_queue}]\nnotify: {pager: {}}", "unknown key pager"),
        ("rules: [{name: a, kind: stuck_queue}]\nextra: 1", "unknown key extra"),
        ("rules: [a: b", "not YAML"),
    ],
)
def test_a_bad_rules_file_names_the_problem(text, error):
    with pytest.raises(RulesError, match=re.escape(error)):
        parse_rules(text)


def test_notify_sections():
    rules = parse_rules(
        "rules: [{name: a, kind: stuck_queue, min_rows: 5}]\n"
        "notify:\n  webhook: {url: 'https://h.example/x', secret_env: S, retries: 2}\n"
        "  email: {relay: 'smtp.example:2525', sender: 'a@b', to: 'c@d'}\nlink_base: 'https://t.example/'\n"
    )
    assert (
        rules.webhook.retries == 2 and rules.email.to == ("c@d",) and rules.link_base == "https://t.example"
    )
    assert rules.by_name("a")["min_rows"] == 5


def finding(rule="r", key="user=a", value=500.0):
    return Finding(rule, "sender_burst", key, value, 10.0, 200.0, f"{key} sent {value}", user="a",
                   reasons=("3 x 451 later",), examples=("mx1 1abc-000000-AA",), link="https://t/?user=a")  # fmt: skip


RULES = parse_rules("rules: [{name: r, kind: sender_burst, cooldown_minutes: 60}]")


def test_an_alert_fires_updates_resolves_and_respects_its_cooldown():
    mem = MemoryAlerts()

    def at(minutes, findings):
        s = step(RULES, list(mem.open.values()), mem.last_resolved, findings, AT + timedelta(minutes=minutes))
        mem.apply(s)
        return s

    s = at(0, [finding()])
    assert [a.state for a in s.fired] == [FIRING] and not s.resolved
    first = s.fired[0]
    s = at(1, [finding(value=900)])  # still firing: new numbers stored, nothing notified
    assert not s.fired and not s.resolved and s.changed[0].finding.value == 900
    assert s.changed[0].alert_id == first.alert_id and s.changed[0].version > first.version
    s = at(2, [])
    assert [a.state for a in s.resolved] == [RESOLVED] and s.resolved[0].resolved_at == AT + timedelta(
        minutes=2
    )
    assert s.resolved[0].version > s.changed[0].version - 1
    assert not at(30, [finding()]).fired  # within the cool-down: not again
    s = at(63, [finding()])  # after it: a new alert
    assert len(s.fired) == 1 and s.fired[0].alert_id != first.alert_id
    # another key of the same rule is its own alert
    s = at(64, [finding(), finding(key="user=b")])
    assert [a.finding.key for a in s.fired] == ["user=b"]


def test_notification_documents():
    s = step(RULES, [], {}, [finding()], AT)
    doc = payload("firing", s.fired[0])
    assert (
        doc["event"] == "firing" and doc["alert"]["key"] == "user=a" and doc["alert"]["resolved_at"] is None
    )
    assert doc["alert"]["examples"] == ["mx1 1abc-000000-AA"]
    assert sign(b"k", "1", b"{}") == sign(b"k", "1", b"{}") != sign(b"k", "2", b"{}")
    msg = email_message(Email("r:25", "from@x", ("to@x",)), "firing", s.fired[0])
    assert msg["Subject"] == "[eximtrack] FIRING r: user=a"
    assert "Track Delivery: https://t/?user=a" in msg.get_content() and "3 x 451 later" in msg.get_content()


def test_test_steps():
    assert parse_every("15m") == timedelta(minutes=15) and parse_every("2h") == timedelta(hours=2)
    for bad in ("10s", "x", ""):
        with pytest.raises(ValueError):
            parse_every(bad)


def test_every_kind_has_an_evaluator():
    from eximtrack.alerts.evaluate import KIND_EVALUATORS

    assert set(KIND_EVALUATORS) == set(KINDS)


def test_queued_notifications_never_hold_the_evaluation():
    """The sink's loop evaluates while holding the store's engine: notify() only queues, a slow or retrying
    channel works on its own thread, close() sends what is queued."""
    import threading
    import time

    from eximtrack.alerts.notify import QueuedNotifiers

    release = threading.Event()
    sent = []

    class Slow:
        outcomes = {("webhook", "sent"): 0}

        def notify(self, event, alert):
            release.wait(5)
            sent.append((event, alert))
            self.outcomes[("webhook", "sent")] += 1

    queued = QueuedNotifiers(Slow())
    t0 = time.perf_counter()
    for i in range(3):
        queued.notify("firing", i)
    assert time.perf_counter() - t0 < 0.5 and sent == []
    release.set()
    queued.close(timeout=10)
    assert sent == [("firing", 0), ("firing", 1), ("firing", 2)] and queued.outcomes == {
        ("webhook", "sent"): 3
    }
