"""Fleet alerts end to end on a real store (chDB): a generated week of ordinary mail with daily cycles fires
nothing; injected incidents (a compromised account, a destination deferring one server, a stuck queue, a
silent server) fire exactly the expected alerts within two evaluations, notify a real HTTP receiver (signed)
and a real SMTP server, are stored with their state, and resolve after the incident ends."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fleet import BLOCKED, SERVERS, Fleet, accounts, by_user

from eximtrack import stats_snapshots
from eximtrack.alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, Notifiers
from eximtrack.alerts.rules import DEFAULT_RULES, Webhook, parse_rules
from eximtrack.alerts.runner import Evaluator, simulate
from eximtrack.alerts.state import FIRING, RESOLVED
from sinks.clickhouse.store import Store, current_chdb_path, store_run

pytestmark = [pytest.mark.store]

END = datetime(2026, 11, 20, 18, tzinfo=UTC)
B = END - timedelta(hours=5)  # the incidents happen in [B, B + 1 h) (the silent server's in [B, B + 2 h))
MX2, MX3, MX4 = SERVERS[1], SERVERS[2], SERVERS[3]
SECRET = "test-webhook-secret"
STEP = timedelta(minutes=15)
STUCK: list[str] = []  # the msgids of the stuck queue's messages


def incident_fleet() -> Fleet:
    fleet = Fleet(END).ordinary()
    lo, hi = B.timestamp(), (B + timedelta(hours=1)).timestamp()
    # the silent server: mx4 (about 24 messages an hour at that time of day) logs nothing for two hours
    quiet = hi + 3600
    fleet.events = [
        e for e in fleet.events
        if not (e.server == MX4 and (lo <= e.actionunixtime < quiet or lo <= e.sendunixtime < quiet))
    ]  # fmt: skip
    # a compromised account: acct01 (on mx2) sends 400 messages from one mailbox
    burst = by_user("acct01")
    for i in range(400):
        fleet.message(burst, lo + i * 8, [f"victim{i}@isp.example"], "success", sender=0)
    # a mailbox provider deferring mx2: acct07's 150 messages to gmail.example all deferred, one reason
    blasted = by_user("acct07")
    assert blasted.server == MX2
    for i in range(150):
        fleet.message(blasted, lo + 60 + i * 20, [f"list{i}@gmail.example"], "defer", reason=BLOCKED,
                      ip="203.0.113.5")  # fmt: skip
    # a stuck queue: 40 messages arrive on mx3 and never get a result
    stuck = by_user("acct02")
    assert stuck.server == MX3
    # a mailbox sending spam: acct05's 30 messages from one address score about 9
    spammer = by_user("acct05")
    for i in range(30):
        fleet.message(spammer, lo + 90 + i * 100, [f"p{i}@yahoo.example"], "success", sender=1,
                      spamscore=round(9 + (i % 5) / 10, 1))  # fmt: skip
    stuck_ids = [
        fleet.message(stuck, lo + 30 + i * 60, [f"c{i}@corp.example"], "inprogress") for i in range(40)
    ]
    return fleet, stuck_ids


EXPECTED = {
    ("compromised-account", "user=acct01"),
    ("compromised-mailbox", "sender=info@acct01.example"),
    ("many-recipients", "user=acct01"),
    ("spam-score-jump", "sender=sales@acct05.example"),
    ("destination-deferrals", f"server={MX2} deliverydomain=gmail.example"),
    ("defer-fail-rate", "user=acct07"),
    ("silent-server", f"server={MX4}"),
    ("stuck-queue", f"server={MX3}"),
}


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver: answers 503 to the first `fail_first` posts, then 200; keeps what it got."""

    got: list = []
    fail_first = 0

    def do_POST(self):  # noqa: N802 - the standard library's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        cls.got.append((dict(self.headers), body))
        ok = len(cls.got) > cls.fail_first
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = current_chdb_path() or str(tmp_path_factory.mktemp("alerts"))
    s = Store.open(f"chdb://{path}?database=alerts_{uuid.uuid4().hex[:8]}", retention_days=0)
    fleet, stuck_ids = incident_fleet()
    s.insert_events(fleet.events)
    stats_snapshots.refresh(s)  # most hours read from snapshots, like a running sink's store
    STUCK.extend(stuck_ids)
    return s


@pytest.fixture
def receiver():
    Receiver.got, Receiver.fail_first = [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    class Keep(Sink):
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            self.messages.append(envelope)
            return "250 OK"

    import socket

    with socket.socket() as probe:  # a free port (the controller checks its server by connecting to it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, f"127.0.0.1:{port}"
    controller.stop()


def test_a_week_of_ordinary_traffic_fires_nothing(store):
    """Every rule, every 2 hours over the week before the incidents (a full baseline from day 2 on)."""
    rules = parse_rules(DEFAULT_RULES)
    since = END - timedelta(days=7)
    fired = simulate(store_run(store), rules, since, B, timedelta(hours=2))
    evaluations = len(range(0, int((B - since).total_seconds()), 7200))
    print(f"\nfalse positives: {len(fired)} alerts in {evaluations} evaluations of {len(rules.rules)} rules "
          f"over {(B - since).days} days of {len(accounts())} accounts on {len(SERVERS)} servers")  # fmt: skip
    assert fired == []


def test_incidents_fire_notify_and_resolve(store, receiver, smtp, tmp_path, monkeypatch):
    monkeypatch.setenv("EXIMTRACK_TEST_SECRET", SECRET)
    handler, relay = smtp
    text = DEFAULT_RULES + (
        f"notify:\n  webhook: {{url: 'http://127.0.0.1:{receiver.server_port}/hook', secret_env: EXIMTRACK_TEST_SECRET,"
        f" dead_letter: '{tmp_path / 'dead.jsonl'}'}}\n"
        f"  email: {{relay: '{relay}', sender: 'eximtrack@ops.example', to: ['postmaster@ops.example']}}\n"
        "link_base: 'https://track.example'\n"
    )
    rules = parse_rules(text)
    Receiver.fail_first = 2  # the first notification is retried twice before it gets through
    evaluator = Evaluator(store, rules, Notifiers(rules.webhook, rules.email, sleep=lambda _: None))
    first_fired: dict = {}
    first_resolved: dict = {}
    at = B - 2 * STEP
    evaluations = 0
    while at <= B + timedelta(hours=2, minutes=30):
        evaluator.once(at)
        evaluations += 1
        for a in store.query_dicts("SELECT rule, key, state, started_at, resolved_at FROM alerts FINAL"):
            ident = (a["rule"], a["key"])
            first_fired.setdefault(ident, at)
            if a["state"] == RESOLVED:
                first_resolved.setdefault(ident, at)
        at += STEP
    assert set(first_fired) == EXPECTED
    detectable = {  # when each incident becomes visible to its rule's definition
        "silent-server": B + timedelta(minutes=50),  # 20 of its usual messages missing
        "stuck-queue": B + timedelta(hours=2),  # every stuck arrival 60 minutes old
    }
    for (rule, key), when in first_fired.items():
        assert B <= when <= detectable.get(rule, B) + STEP, (rule, key, when)  # within two evaluations
    # the hour-long incidents are over: resolved once their hour left the window (the stuck queue is not)
    assert set(first_resolved) == EXPECTED - {("stuck-queue", f"server={MX3}")}
    for (rule, _), when in first_resolved.items():
        assert when <= B + timedelta(hours=2) + STEP, (rule, when)

    # the queue moves: the stuck recipients are delivered, and the alert resolves at the next evaluation
    fleet = Fleet(END)
    stuck = by_user("acct02")
    done_at = (B + timedelta(hours=2, minutes=40)).timestamp()
    for i, msgid in enumerate(STUCK):
        row = dict(server=MX3, msgid=msgid, recipient=f"c{i}@corp.example", user=stuck.user, domain=stuck.domain,
                   owner=stuck.owner, email=stuck.sender(0), senderauth="dovecot_login", protocol="esmtpsa",
                   sendunixtime=B.timestamp() + 30 + i * 60, deliverydomain="corp.example")  # fmt: skip
        # as the joiner emits a first result: the placeholder's tombstone, then the recipient's own row
        fleet.event("inprogress", row, done_at, int(done_at * 1000) * 8 + 3, deliveredto="", is_deleted=1)
        fleet.event("success", row, done_at, int(done_at * 1000) * 8 + 4, deliveredto=row["recipient"])
    store.insert_events(fleet.events)
    done = evaluator.once(B + timedelta(hours=2, minutes=45))
    assert done["resolved"] == 1 and done["firing"] == 0
    assert store.query_dicts("SELECT count() AS n FROM alerts FINAL WHERE state = 'firing'") == [{"n": 0}]
    metric = evaluator.registry.get_sample_value
    assert metric("eximtrack_alerts_firing", {"rule": "stuck-queue"}) == 0
    assert metric(
        "eximtrack_alert_notifications_total", {"channel": "webhook", "outcome": "sent"}
    ) == 2 * len(EXPECTED)
    assert metric("eximtrack_alert_evaluation_seconds_count") == evaluations + 1

    # every transition notified once, signed; the first post was retried until it got through
    posts = [(h, json.loads(b)) for h, b in Receiver.got]
    delivered = posts[Receiver.fail_first :]
    assert len(delivered) == 2 * len(EXPECTED)
    assert [p["alert"]["key"] for _, p in posts[:3]] == [posts[0][1]["alert"]["key"]] * 3
    for headers, body in Receiver.got:
        want = "sha256=" + hmac.new(SECRET.encode(), headers[TIMESTAMP_HEADER].encode() + b"." + body,
                                    hashlib.sha256).hexdigest()  # fmt: skip
        assert headers[SIGNATURE_HEADER] == want
    events = sorted((p["event"], p["alert"]["rule"]) for _, p in delivered)
    assert events == sorted([("firing", r) for r, _ in EXPECTED] + [("resolved", r) for r, _ in EXPECTED])
    burst = next(p["alert"] for _, p in delivered if p["alert"]["rule"] == "compromised-account")
    assert burst["value"] >= 400 and burst["baseline"] < 20 and len(burst["examples"]) == 3
    assert burst["link"].startswith("https://track.example/?user=acct01&startdate=")
    dest = next(p["alert"] for _, p in delivered if p["alert"]["rule"] == "destination-deferrals")
    assert dest["reasons"][0].startswith("150 x ") and "203.0.113.5" in dest["summary"]
    spam = next(p["alert"] for _, p in delivered if p["alert"]["rule"] == "spam-score-jump")
    assert spam["value"] > 7 and spam["baseline"] < 2 and spam["owner"] == by_user("acct05").owner
    rate = next(p["alert"] for _, p in delivered if p["alert"]["rule"] == "defer-fail-rate")
    assert rate["reasons"][0].startswith("150 x 421 4.7.0") and "temporarily deferred" in rate["reasons"][0]
    assert not (tmp_path / "dead.jsonl").exists()

    # the e-mails: one per transition, to the postmaster, with the summary and the link
    assert len(handler.messages) == 2 * len(EXPECTED)
    first = handler.messages[0]
    assert first.rcpt_tos == ["postmaster@ops.example"]
    assert b"Track Delivery: https://track.example/?" in first.content

    # the stored alerts carry the tenant columns the page scopes by
    row = store.query_dicts("SELECT owner, user FROM alerts FINAL WHERE rule = 'compromised-account'")
    assert row == [{"owner": by_user("acct01").owner, "user": "acct01"}]


def test_an_undeliverable_webhook_goes_to_the_dead_letter_file(tmp_path, receiver, monkeypatch):
    from eximtrack.alerts.evaluate import Finding
    from eximtrack.alerts.notify import WebhookNotifier, payload
    from eximtrack.alerts.state import Alert

    Receiver.fail_first = 100
    dead = tmp_path / "dead.jsonl"
    notifier = WebhookNotifier(Webhook(f"http://127.0.0.1:{receiver.server_port}/", retries=3, dead_letter=str(dead)),
                               sleep=lambda _: None)  # fmt: skip
    at = datetime(2026, 11, 20, tzinfo=UTC)
    alert = Alert("a1", Finding("r", "stuck_queue", "server=x", 30, 0, 20, "stuck"), FIRING, at, at)
    result = notifier.send(payload("firing", alert))
    assert not result.ok and result.attempts == 4 and len(Receiver.got) == 4
    kept = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(kept) == 1 and kept[0]["payload"]["alert"]["id"] == "a1" and kept[0]["error"] == "HTTP 503"
    # a 4xx is final: one attempt, dead-lettered
    Receiver.got = []

    class Refuse(Receiver):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(400)
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        bad = WebhookNotifier(Webhook(f"http://127.0.0.1:{httpd.server_port}/", dead_letter=str(dead)))
        assert bad.send(payload("firing", alert)).attempts == 1
    finally:
        httpd.shutdown()
    assert len(dead.read_text().splitlines()) == 2


def test_alerts_test_prints_what_would_have_fired(store, capsys):
    from eximtrack import cli

    url = f"chdb://{store.url.path}?database={store.url.database}"
    since, until = int((B - timedelta(minutes=30)).timestamp()), int((B + timedelta(minutes=65)).timestamp())
    argv = [
        "alerts",
        "test",
        "--store",
        url,
        "--since",
        str(since),
        "--until",
        str(until),
        "--format",
        "json",
    ]
    assert cli.main(argv) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fired = {(t["rule"], t["key"]) for t in out if t["event"] == "firing"}
    assert fired == EXPECTED - {("stuck-queue", f"server={MX3}")}  # stuck only from B + 2 h
    assert min(t["at"] for t in out) == B.isoformat()
    assert cli.main(["alerts", "test", "--store", url, "--since", "x", "--until", str(until)]) == 2


def test_the_api_shows_each_tenant_only_its_alerts(tmp_path, chdb_store_url):
    """/api/v1/alerts through the real app: root sees every alert, a reseller those about its accounts, an
    account its own, a webmail login its address's; server-wide alerts are the provider's only."""
    from eximtrack.alerts import table
    from eximtrack.alerts.evaluate import Finding
    from eximtrack.alerts.state import Alert
    from eximtrack.web import app as webapp
    from eximtrack.web.auth import TokenStore

    s = Store.open(chdb_store_url)
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    findings = [
        Finding("burst", "sender_burst", "user=acct01", 400, 5, 200, "acct01", owner="res1", user="acct01"),
        Finding("burst", "sender_burst", "user=acct02", 400, 5, 200, "acct02", owner="res2", user="acct02"),
        Finding("mbox", "sender_burst", "sender=info@acct01.example", 400, 5, 200, "info", owner="res1",
                user="acct01", sender="info@acct01.example"),
        Finding("silent", "silent_server", f"server={MX4}", 40, 30, 30, "silent", server=MX4),
    ]  # fmt: skip
    table.write(s, tuple(Alert(f"a{i}", f, FIRING, at, at) for i, f in enumerate(findings)))
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    app = webapp.App(s, tokens)

    def keys(role, **who):
        _, account = tokens.add(role, f"{role}-{uuid.uuid4().hex[:4]}", **who)
        got = webapp.alerts(app, webapp.Call({"state": ["all"]}, {}, account))["alerts"]
        return sorted(a["key"] for a in got)

    assert keys("root") == sorted(f.key for f in findings)
    assert keys("reseller", reseller="res1") == ["sender=info@acct01.example", "user=acct01"]
    assert keys("user", user="acct02") == ["user=acct02"]
    assert keys("webmail", address="info@acct01.example") == ["sender=info@acct01.example"]
    from eximtrack.web.query import BadRequest  # the API answers it with a 400

    with pytest.raises(BadRequest, match="state must be one of"):
        webapp.alerts(app, webapp.Call({"state": ["gone"]}, {}, tokens.load()[0]))


def test_a_deferred_backlog_fires_for_the_server_holding_it(store):
    rules = parse_rules("rules: [{name: backlog, kind: deferred_backlog, min_rows: 100, max_age_hours: 12}]")
    fired = simulate(store_run(store), rules, B - timedelta(hours=1), B + timedelta(minutes=1), STEP)
    assert [(t["at"], t["event"], t["key"]) for t in fired] == [(B.isoformat(), "firing", f"server={MX2}")]
    assert fired[0]["value"] == 150


def test_a_reseller_scope_sees_its_accounts_burst(store):
    rules = parse_rules("rules: [{name: reseller-burst, kind: sender_burst, scope: owner}]")
    fired = simulate(store_run(store), rules, B - timedelta(hours=1), B + timedelta(minutes=1), STEP)
    owner = by_user("acct01").owner
    assert [(t["at"], t["key"]) for t in fired] == [(B.isoformat(), f"owner={owner}")]
    assert fired[0]["link"] == ""  # no link_base in these rules
