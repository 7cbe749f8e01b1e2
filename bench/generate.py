"""Benchmark log generator (GitHub issue 6, part 1): realistic, fast, deterministic multi-server Exim main logs.

This module owns the synthetic input of the benchmark suite. `generate(GenConfig(...), outdir)` writes

- `outdir/<server>.log`: one Exim 4.96 main log per server with cPanel's log_selector
  (`+all_parents +arguments +incoming_port +received_recipients +retry_defer +smtp_connection +subject`: no pid,
  no milliseconds, `[ip]:port`, `cwd=` lines, `T="subject"`, `for rcpt …`), line shapes copied from the real
  Exim lines in samples/mainlog-cpanel.log. Lines of one server are sorted by timestamp; many messages are
  interleaved; deferral retries follow Exim's default retry rule and spread over hours.
- `outdir/truth.jsonl`: the expected final outcome of every recipient row, one JSON object a line:
  `{"server", "msgid", "recipient", "deliveredto", "type"[, "parent"]}` where (msgid, recipient, deliveredto)
  is exactly the row key of the joiner (stream/join.py: `deliveredto` is the delivered-to part of the delivery
  line as Exim logs it — the local part of a local delivery, the address of a remote one, the path of a file
  delivery, "" for a recipient with no result yet) and `type` is cPanel's vocabulary (success, filtered,
  archive, defer, failure, inprogress). SMTP-time rejections are rows with `"type": "rejected"`, `"msgid": ""`
  and the fields of samples/expected-*.json "rejections" (`recipient, sender, temporary, kind, code`).
- `outdir/manifest.json`: the config, per-server line/message/recipient counts and the outcome counts.

The truth is derived from the lines actually written: a message whose later lines fall after the end of the
log keeps the state of its last written line (a retry cut by the end stays `defer`, a last-second arrival stays
`inprogress`). Everything is drawn from `random.Random`, seeded per server from the config's seed, so the same
config gives the same bytes. Speed: message bodies are built once, timestamps are formatted once per second
of log, and lines are bucketed per second and flushed behind the arrival clock (memory stays bounded).

CLI: `python -m bench.generate --servers 4 --messages-per-day 100000 --days 1 --seed 1 --id-format old
--out DIR [--mix success_local=30,rejected=10,…]`.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stream.clock import base62

ID_FORMATS = ("old", "new", "mixed")

# What one "transaction" of the mix is (weights are relative; they need not add up to 100):
DEFAULT_MIX: dict[str, float] = {
    "success_local": 28.0,  # remote sender -> one local mailbox (dovecot_virtual_delivery)
    "success_remote": 18.0,  # authenticated submission (esmtpa/esmtpsa, A=dovecot_login|plain) -> remote
    "script": 4.0,  # local PHP/cron submission (`cwd=/home/<acct>/public_html`, U=<acct> P=local) -> remote
    "multi_recipient": 8.0,  # several recipients, local and remote; `->` for a second address on one host
    "forwarder": 3.0,  # a local forwarder: one recipient, several delivered-to rows
    "defer_then_success": 6.0,  # remote 4xx / connection refused, retried over minutes to hours, delivered
    "defer_pending": 2.0,  # still deferred at the end of the log (retries spread over hours)
    "defer_local": 2.0,  # a local mailbox over quota: `== lp@dom` deferrals, then `=> lp <lp@dom>` (or still full)
    "failure": 4.0,  # permanent failure (`**`) and its bounce `<= <> R=<parent>` delivered to the sender
    "rejected": 10.0,  # SMTP-time `rejected RCPT` / `temporarily rejected RCPT`: no message id
    "spam": 6.0,  # cPanel SpamAssassin "detected message as spam": spam box (success) or /dev/null (filtered)
    "archive": 1.0,  # a local delivery plus an email-archive copy (type archive)
    "inprogress": 1.0,  # arrives in the last minutes of the log and has no result yet
    "auth_failed": 2.0,  # noise: a failed dovecot_login AUTH session (no message)
}

REMOTE_DOMAINS = (  # weight ~ 1/rank: a few big providers receive most of the mail
    "mail-giant.example", "bigmail.example", "outlookish.example", "yahoomail.example", "icloudish.example",
    "corp-mail.example", "university.example", "isp-one.example", "isp-two.example", "newsletters.example",
    "shop-central.example", "bank-secure.example", "gov-portal.example", "travel-deals.example",
    "small-biz.example", "club-members.example", "nonprofit.example", "startup.example", "media.example",
    "forum.example",
)  # fmt: skip
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
         "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "info", "sales", "admin",
         "support", "billing", "office", "contact", "hello", "jobs", "noreply", "orders")  # fmt: skip
WORDS = ("bakery", "garden", "studio", "motors", "dental", "realty", "travel", "fitness", "design", "print",
         "coffee", "legal", "clinic", "school", "photo", "events", "market", "tech", "green", "home")  # fmt: skip
SUBJECTS = (
    "Invoice {n}",
    "Re: meeting on Thursday",
    "Your order #{n} has shipped",
    "Weekly report {n}",
    "Fwd: photos",
    "Password reset request",
    "Re: Re: quote for the roof",
    "Newsletter - November edition",
    "Booking confirmation {n}",
    'Question about \\"pricing\\"',
    "Café menu für nächste Woche",
    "Re: [ticket {n}] cannot log in",
    "Payment received - thank you",
    "Résumé attached",
    "Re: path C:\\\\shared\\\\docs",
    "Meeting notes",
    "Your account statement",
    "Delivery delayed",
)  # fmt: skip  (already in the log's escaped form: `\"` and `\\`)
TLS_IN = "TLS1.3:TLS_AES_256_GCM_SHA384:256"
TLS_OUT = "TLS1.3:TLS_AES_256_GCM_SHA384:256"
REJECT_REASONS = (  # (temporary, code, reason)
    (False, 550, "No Such User Here"),
    (False, 550, "JunkMail rejected - {host} [{ip}] is in an RBL: https://www.spamhaus.org/query/ip/{ip}"),
    (False, 550, "Sender verify failed"),
    (True, 451, "Greylisted, please try again later"),
    (True, 451, "Could not complete sender verify"),
)
DEFER_REASONS = (  # (errno part, message) of a remote deferral; `{a}` = the address, `{h}` = host part
    ("defer (111): Connection refused", True),
    ("defer (-44) {h}: SMTP error from remote mail server after RCPT TO:<{a}>: "
     "451 4.7.1 <{a}>: Recipient address rejected: Greylisted, try again later", False),
    ("defer (-44) {h}: SMTP error from remote mail server after RCPT TO:<{a}>: "
     "452 4.2.2 <{a}>: Mailbox full", False),
    ("defer (-46) {h}: SMTP error from remote mail server after end of data: "
     "421 4.7.0 Try again later, closing connection", False),
)  # fmt: skip
RETRY_TIMEOUT = 4 * 86400  # Exim's default retry rule gives up after 4 days
DELAY_WARNING_AFTER = 24 * 3600  # delay_warning default


def message_id(epoch: int, pid: int, fraction: float, new_format: bool) -> str:
    """An Exim message id: 6 base-62 digits of epoch seconds, the pid, the sub-second part.
    ≤ 4.96: 16 chars `tttttt-pppppp-ff` (1/2000 s); ≥ 4.97: 23 chars `tttttt-ppppppppppp-ffff` (µs)."""
    if new_format:
        return f"{base62(epoch, 6)}-{base62(pid, 11)}-{base62(int(fraction * 1_000_000), 4)}"
    return f"{base62(epoch, 6)}-{base62(pid, 6)}-{base62(int(fraction * 2000), 2)}"


def _retry_schedule() -> list[int]:
    """Seconds after arrival of Exim's attempts under the default rule `F,2h,15m; G,16h,1h,1.5; F,4d,6h`."""
    times = [0]
    t = 0
    while t < 2 * 3600:
        t += 900
        times.append(t)
    step = 3600.0
    while t < 16 * 3600:
        t += int(step)
        step *= 1.5
        times.append(t)
    while t < RETRY_TIMEOUT:
        t += 6 * 3600
        times.append(t)
    return times


RETRY_SCHEDULE = _retry_schedule()
# Mail volume by hour of day (UTC here): a quiet night, a busy working day.
HOURLY_WEIGHT = (2, 1.5, 1, 1, 1, 1.5, 3, 5, 8, 9, 9, 8.5, 7, 8, 8.5, 8, 7, 6, 5, 4.5, 4, 3.5, 3, 2.5)


@dataclass
class GenConfig:
    """What to generate. `mix` maps a transaction kind (DEFAULT_MIX's keys) to a relative weight."""

    servers: int = 4
    messages_per_day: int = 10_000  # transactions per server per day (messages, rejected sessions, noise)
    days: float = 1.0
    seed: int = 1
    id_format: str = "old"  # old (16-char, Exim ≤ 4.96) | new (23-char, ≥ 4.97) | mixed (upgrade mid-log)
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    start: str = "2026-11-01T00:00:00+00:00"  # UTC
    accounts_per_server: int = 40  # cPanel accounts, each with 1-3 domains
    max_recipients: int = 8  # of a multi_recipient message
    inprogress_window: int = 600  # seconds before the end in which `inprogress` messages arrive

    def validate(self) -> None:
        if self.id_format not in ID_FORMATS:
            raise ValueError(f"id_format must be one of {ID_FORMATS}, not {self.id_format!r}")
        unknown = set(self.mix) - set(DEFAULT_MIX)
        if unknown:
            raise ValueError(f"unknown mix kinds {sorted(unknown)}; known: {sorted(DEFAULT_MIX)}")
        if not any(w > 0 for w in self.mix.values()):
            raise ValueError("the mix has no positive weight")
        if self.servers < 1 or self.messages_per_day < 0 or self.days <= 0:
            raise ValueError("servers >= 1, messages_per_day >= 0 and days > 0 are required")

    @property
    def start_epoch(self) -> int:
        return int(datetime.fromisoformat(self.start).astimezone(UTC).timestamp())

    @property
    def duration(self) -> int:
        return int(self.days * 86400)


def server_names(n: int) -> list[str]:
    return [f"web{i:02d}" for i in range(1, n + 1)]


class _Server:
    """Generates one server's log: buckets of line bodies per second, flushed behind the arrival clock."""

    def __init__(self, cfg: GenConfig, index: int, name: str, log_fh, truth_fh) -> None:
        self.cfg = cfg
        self.name = name
        self.rng = random.Random(cfg.seed * 1_000_003 + index * 7919)
        self.start = cfg.start_epoch
        self.end = self.start + cfg.duration
        self.log_fh = log_fh
        self.truth_fh = truth_fh
        self.buckets: dict[int, list[str]] = {}
        self.flushed_upto = self.start
        self.lines = 0
        self.pid = 1000 + self.rng.randrange(50_000)
        self.port = 32768 + self.rng.randrange(20_000)
        self.conn_count = 0
        self.arrivals = 0
        self.rows = 0
        self.types: Counter = Counter()
        self.kinds: Counter = Counter()
        self.ids: set[str] = set()
        self.hostname = f"{name}.hosting.example"
        if cfg.id_format == "new":
            self.upgrade_at = self.start - 1
        elif cfg.id_format == "old":
            self.upgrade_at = self.end + RETRY_TIMEOUT
        else:
            self.upgrade_at = self.start + int(cfg.duration * self.rng.uniform(0.3, 0.7))
        self._accounts(index)
        self._remote_pool()

    # pools -------------------------------------------------------------------------------------------

    def _accounts(self, index: int) -> None:
        rng = self.rng
        self.local_domains: list[str] = []
        self.domain_account: dict[str, str] = {}
        self.mailboxes: list[tuple[str, str, str]] = []  # (local part, domain, account)
        for a in range(self.cfg.accounts_per_server):
            word = WORDS[rng.randrange(len(WORDS))]
            acct = f"{word[:5]}{index}{a:02d}"[:8]
            for d in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
                dom = f"{word}-{index}{a:02d}{'abc'[d]}.example"
                self.local_domains.append(dom)
                self.domain_account[dom] = acct
                for lp in rng.sample(NAMES, 3 + rng.randrange(6)):
                    self.mailboxes.append((lp, dom, acct))

    def _remote_pool(self) -> None:
        rng = self.rng
        self.remote_cum = list(_cumulate([1.0 / (r + 1) for r in range(len(REMOTE_DOMAINS))]))
        self.remote_hosts = {}
        for i, dom in enumerate(REMOTE_DOMAINS):
            ip = f"{(198, 203)[i % 2]}.{(51, 0)[i % 2]}.{(100, 113)[i % 2]}.{10 + i * 7}"
            self.remote_hosts[dom] = (f"mx{1 + rng.randrange(3)}.{dom}", ip)
        self.clients = []  # (H= host info without port, ip, helo) of SMTP clients
        for i in range(200):
            ip = f"192.0.2.{i + 1}" if i < 120 else f"198.51.100.{i - 119}"
            dom = REMOTE_DOMAINS[i % len(REMOTE_DOMAINS)]
            if i % 3:
                self.clients.append((f"mail{i}.{dom}", ip, f"mail{i}.{dom} [{ip}]"))
            else:
                self.clients.append((f"mail{i}.{dom}", ip, f"(mail{i}.{dom}) [{ip}]"))
        self.users = []  # authenticated submitters: (host info, ip)
        for i in range(60):
            ip = f"203.0.113.{i + 1}"
            self.users.append((f"(DESKTOP-{i:04X}) [{ip}]", ip))

    def remote_domain(self) -> str:
        return REMOTE_DOMAINS[bisect.bisect(self.remote_cum, self.rng.random() * self.remote_cum[-1])]

    def remote_address(self) -> str:
        rng = self.rng
        return f"{NAMES[rng.randrange(len(NAMES))]}.{rng.randrange(1000)}@{self.remote_domain()}"

    def mailbox(self) -> tuple[str, str, str]:
        return self.mailboxes[self.rng.randrange(len(self.mailboxes))]

    # lines -------------------------------------------------------------------------------------------

    def emit(self, t: int, body: str) -> bool:
        """Queue one line for second `t`; False when `t` is past the end of the log (the line is not written)."""
        if t >= self.end:
            return False
        bucket = self.buckets.get(t)
        if bucket is None:
            self.buckets[t] = [body]
        else:
            bucket.append(body)
        return True

    def flush(self, upto: int) -> None:
        """Write every second before `upto` (no later arrival can add lines there)."""
        buckets = self.buckets
        write = self.log_fh.write
        t = self.flushed_upto
        while t < upto:
            bucket = buckets.pop(t, None)
            if bucket:
                prefix = time.strftime("%Y-%m-%d %H:%M:%S ", time.gmtime(t))
                write(prefix + ("\n" + prefix).join(bucket) + "\n")
                self.lines += len(bucket)
            t += 1
        self.flushed_upto = max(self.flushed_upto, upto)

    def new_pid(self) -> int:
        self.pid += 1 + self.rng.randrange(12)
        if self.pid > 4_000_000:
            self.pid = 300 + self.rng.randrange(1000)
        return self.pid

    def new_id(self, t: int, fraction: float) -> str:
        msgid = message_id(t, self.new_pid(), fraction, t >= self.upgrade_at)
        while msgid in self.ids:  # pid wrap-around in the same second: take the next pid
            msgid = message_id(t, self.new_pid(), fraction, t >= self.upgrade_at)
        self.ids.add(msgid)
        return msgid

    def connect(self, t: int) -> int:
        rng = self.rng
        self.port += 1 + rng.randrange(40)
        if self.port > 60999:
            self.port = 32768 + rng.randrange(500)
        self.conn_count = 1 + rng.randrange(6)
        return self.port

    def truth(self, msgid: str, rcpt: str, deliveredto: str, etype: str, parent: str = "") -> None:
        row = {
            "server": self.name,
            "msgid": msgid,
            "recipient": rcpt,
            "deliveredto": deliveredto,
            "type": etype,
        }
        if parent:
            row["parent"] = parent
        self.truth_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows += 1
        self.types[etype] += 1

    def subject(self) -> str:
        rng = self.rng
        return SUBJECTS[rng.randrange(len(SUBJECTS))].replace("{n}", str(rng.randrange(100000)))

    def size(self) -> int:
        return min(int(self.rng.lognormvariate(8.6, 1.1)) + 400, 50_000_000)

    def confirmation(self) -> str:
        return f'C="250 2.0.0 Ok: queued as {self.rng.getrandbits(44):011X}"'

    # deliveries --------------------------------------------------------------------------------------

    def remote_delivery(self, msgid: str, rcpt: str, first: bool = True, original: str = "") -> str:
        host, ip = self.remote_hosts[rcpt.rsplit("@", 1)[1]]
        flag = "=>" if first else "->"
        orig = f" <{original}>" if original else ""
        return (f"{msgid} {flag} {rcpt}{orig} R=dkim_lookuphost T=dkim_remote_smtp H={host} [{ip}] "
                f"X={TLS_OUT} CV=yes {self.confirmation()}")  # fmt: skip

    @staticmethod
    def local_delivery(msgid: str, lp: str, rcpt: str) -> str:
        return f"{msgid} => {lp} <{rcpt}> R=virtual_user T=dovecot_virtual_delivery"

    def deliver_remote_group(self, msgid: str, t: int, rcpts: list[str], rows: dict) -> int:
        """One SMTP delivery per domain: `=>` for the first address, `->` for the others on the same host."""
        by_domain: dict[str, list[str]] = {}
        for r in rcpts:
            by_domain.setdefault(r.rsplit("@", 1)[1], []).append(r)
        for addrs in by_domain.values():
            t += self.rng.randrange(2)
            for i, r in enumerate(addrs):
                if self.emit(t, self.remote_delivery(msgid, r, first=i == 0)):
                    rows[(r, r)] = "success"
        return t

    def complete(self, msgid: str, t: int) -> None:
        self.emit(t, f"{msgid} Completed")

    def write_rows(self, msgid: str, recipients: list[str], rows: dict, parent: str = "") -> None:
        """Truth of one message: every delivered-to row written, and a placeholder for a recipient with none."""
        have = {r for r, _ in rows}
        for rcpt in recipients:
            if rcpt not in have:
                self.truth(msgid, rcpt, "", "inprogress", parent)
        for (rcpt, dt), etype in rows.items():
            self.truth(msgid, rcpt, dt, etype, parent)

    # arrivals ----------------------------------------------------------------------------------------

    def smtp_arrival(self, t: float, sender: str, recipients: list[str], *, auth: str = "", spam: float | None = None,
                     scanner: str = "cpaneleximscanner", outgoing: bool = False) -> tuple[str, int]:  # fmt: skip
        """Connection, spam verdict, `<=`, close, delivery process: the arrival of one SMTP message."""
        rng = self.rng
        sec = int(t)
        msgid = self.new_id(sec, t - sec)
        port = self.connect(sec)
        if auth:
            hostinfo, ip = self.users[rng.randrange(len(self.users))]
            proto = (
                f"P=esmtpsa X={TLS_IN} CV=no A={auth}:{sender}"
                if rng.random() < 0.8
                else f"P=esmtpa A={auth}:{sender}"
            )
        else:
            _name, ip, hostinfo = self.clients[rng.randrange(len(self.clients))]
            proto = f"P=esmtps X={TLS_IN} CV=no" if rng.random() < 0.85 else "P=esmtp"
        hostport = f"{hostinfo}:{port}"
        emit = self.emit
        emit(sec, f"SMTP connection from [{ip}]:{port} (TCP/IP connection count = {self.conn_count})")
        score = spam if spam is not None else round(rng.uniform(-1.5, 3.5), 1)
        verdict = "spam" if score >= 5.0 else "NOT spam"
        kind = "OUTGOING smtp message" if outgoing else "message"
        emit(
            sec,
            f'{msgid} H={hostport} Warning: "SpamAssassin as {scanner} detected {kind} as {verdict} ({score})"',
        )
        emit(sec, f'{msgid} <= {sender} H={hostport} {proto} S={self.size()} id={rng.getrandbits(64):016x}@'
                  f'{sender.rsplit("@", 1)[1]} T="{self.subject()}" for {" ".join(recipients)}')  # fmt: skip
        emit(sec, f"SMTP connection from {hostinfo}:{port} closed by QUIT")
        emit(sec, f"cwd=/var/spool/exim 3 args: /usr/sbin/exim -Mc {msgid}")
        self.arrivals += 1
        return msgid, sec

    def local_arrival(self, t: float, acct: str, sender: str, recipients: list[str]) -> tuple[str, int]:
        sec = int(t)
        msgid = self.new_id(sec, t - sec)
        self.emit(sec, f"cwd=/home/{acct}/public_html 3 args: /usr/sbin/sendmail -t -i")
        self.emit(sec, f'{msgid} <= {sender} U={acct} P=local S={self.size()} T="{self.subject()}" '
                       f'for {" ".join(recipients)}')  # fmt: skip
        self.arrivals += 1
        return msgid, sec

    def child_message(
        self, parent: str, t: int, sender: str, subject: str, fail_remote: bool = False
    ) -> None:
        """A bounce / delay warning: `<= <> R=<parent> U=mailnull P=local` delivered to the parent's sender."""
        if not self.emit(t, f"cwd=/var/spool/exim 7 args: /usr/sbin/exim -t -oem -oi -f <> -E{parent}"):
            return
        child = self.new_id(t, self.rng.random())
        if not self.emit(t, f'{child} <= <> R={parent} U=mailnull P=local S={1500 + self.rng.randrange(4000)} '
                            f'T="{subject}" for {sender}'):  # fmt: skip
            return
        self.arrivals += 1
        rows: dict = {}
        t2 = t + self.rng.randrange(2)
        lp, _, dom = sender.partition("@")
        if dom in self.domain_account:
            if self.emit(t2, self.local_delivery(child, lp, sender)):
                rows[(sender, lp)] = "success"
            self.complete(child, t2)
        elif fail_remote:
            host, ip = self.remote_hosts[dom]
            if self.emit(t2, f"{child} ** {sender} R=dkim_lookuphost T=dkim_remote_smtp H={host} [{ip}]: SMTP error "
                             f"from remote mail server after RCPT TO:<{sender}>: 550 5.1.1 <{sender}>: Recipient "
                             "address rejected: User unknown in virtual mailbox table"):  # fmt: skip
                rows[(sender, sender)] = "failure"
            self.emit(t2, f"{child} Frozen (delivery error message)")
        else:
            if self.emit(t2, self.remote_delivery(child, sender)):
                rows[(sender, sender)] = "success"
            self.complete(child, t2)
        self.write_rows(child, [sender], rows, parent)

    # transactions ------------------------------------------------------------------------------------

    def success_local(self, t: float) -> None:
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, sec = self.smtp_arrival(t, self.remote_address(), [rcpt], scanner=acct)
        rows: dict = {}
        t2 = sec + self.rng.randrange(2)
        if self.emit(t2, self.local_delivery(msgid, lp, rcpt)):
            rows[(rcpt, lp)] = "success"
        self.complete(msgid, t2)
        self.write_rows(msgid, [rcpt], rows)

    def _submitter(self) -> tuple[str, str]:
        lp, dom, _acct = self.mailbox()
        return f"{lp}@{dom}", "dovecot_login" if self.rng.random() < 0.6 else "dovecot_plain"

    def _outbound_lines(self, msgid: str, sec: int, sender: str, rcpts: list[str]) -> None:
        dom = sender.rsplit("@", 1)[1]
        for r in rcpts:
            self.emit(sec, f"{msgid} SMTP connection outbound {sec} {msgid} {dom} {r}")

    def success_remote(self, t: float) -> None:
        sender, auth = self._submitter()
        rcpts = [self.remote_address()]
        if self.rng.random() < 0.15:
            d = rcpts[0].rsplit("@", 1)[1]
            rcpts.append(f"{NAMES[self.rng.randrange(len(NAMES))]}.{self.rng.randrange(1000, 2000)}@{d}")
        msgid, sec = self.smtp_arrival(t, sender, rcpts, auth=auth, spam=round(self.rng.uniform(-1.0, 0.9), 1),
                                       outgoing=True)  # fmt: skip
        self._outbound_lines(msgid, sec, sender, rcpts)
        rows: dict = {}
        t2 = self.deliver_remote_group(msgid, sec, rcpts, rows)
        self.complete(msgid, t2)
        self.write_rows(msgid, rcpts, rows)

    def script(self, t: float) -> None:
        _lp, dom, acct = self.mailbox()
        sender = f"{acct}@{self.hostname}" if self.rng.random() < 0.5 else f"noreply@{dom}"
        rcpts = [self.remote_address()]
        msgid, sec = self.local_arrival(t, acct, sender, rcpts)
        rows: dict = {}
        t2 = self.deliver_remote_group(msgid, sec, rcpts, rows)
        self.complete(msgid, t2)
        self.write_rows(msgid, rcpts, rows)

    def multi_recipient(self, t: float) -> None:
        rng = self.rng
        n = 2 + min(int(rng.expovariate(0.6)), self.cfg.max_recipients - 2)
        local: dict[str, str] = {}
        remote: list[str] = []
        while len(local) + len(remote) < n:
            if rng.random() < 0.5:
                lp, dom, _ = self.mailbox()
                local.setdefault(f"{lp}@{dom}", lp)
            else:
                r = self.remote_address()
                if r not in remote:
                    remote.append(r)
        rcpts = list(local) + remote
        rng.shuffle(rcpts)
        sender, auth = self._submitter()
        msgid, sec = self.smtp_arrival(t, sender, rcpts, auth=auth, outgoing=True)
        rows: dict = {}
        t2 = sec
        for rcpt, lp in local.items():
            if self.emit(t2, self.local_delivery(msgid, lp, rcpt)):
                rows[(rcpt, lp)] = "success"
        if remote:
            self._outbound_lines(msgid, sec, sender, remote)
            t2 = self.deliver_remote_group(msgid, t2, remote, rows)
        self.complete(msgid, t2)
        self.write_rows(msgid, rcpts, rows)

    def forwarder(self, t: float) -> None:
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, sec = self.smtp_arrival(t, self.remote_address(), [rcpt], scanner=acct)
        rows: dict = {}
        t2 = sec + self.rng.randrange(2)
        if self.rng.random() < 0.5 and self.emit(
            t2, f"{msgid} => {lp} <{rcpt}> R=virtual_user T=dovecot_virtual_delivery"
        ):
            rows[(rcpt, lp)] = "success"
        targets: list[str] = []
        for _ in range(1 + self.rng.randrange(3)):
            target = self.remote_address()
            if target not in targets:
                targets.append(target)
        for target in targets:
            if self.emit(t2, self.remote_delivery(msgid, target, original=rcpt)):
                rows[(rcpt, target)] = "success"
        self.complete(msgid, t2)
        self.write_rows(msgid, [rcpt], rows)

    def _defer_line(self, msgid: str, t: int, rcpt: str, how: int) -> bool:
        host, ip = self.remote_hosts[rcpt.rsplit("@", 1)[1]]
        text, refused = DEFER_REASONS[how]
        if refused:
            self.emit(t, f"{msgid} H={host} [{ip}] Connection refused")
        reason = text.replace("{a}", rcpt).replace("{h}", f"H={host} [{ip}]")
        return self.emit(t, f"{msgid} == {rcpt} R=dkim_lookuphost T=dkim_remote_smtp {reason}")

    def _deferred(self, t: float, attempts_before_success: int | None) -> None:
        """A remote recipient deferred at each attempt of the retry schedule; delivered at attempt
        `attempts_before_success` (None: never — it times out after 4 days, failing with a bounce)."""
        rng = self.rng
        sender, auth = self._submitter()
        rcpt = self.remote_address()
        msgid, sec = self.smtp_arrival(t, sender, [rcpt], auth=auth, outgoing=True)
        self._outbound_lines(msgid, sec, sender, [rcpt])
        how = rng.randrange(len(DEFER_REASONS))
        rows: dict = {}
        dom = rcpt.rsplit("@", 1)[1]
        last = sec
        warned = False
        for n, offset in enumerate(RETRY_SCHEDULE):
            at = sec + offset + (rng.randrange(300) if n else rng.randrange(2))
            if at >= self.end:
                break
            if n and offset - RETRY_SCHEDULE[n - 1] > 3600:  # a queue run in between skips it
                skip_at = last + (at - last) // 2
                self.emit(skip_at, f"{msgid} == {rcpt} R=dkim_lookuphost T=dkim_remote_smtp defer (-54): "
                                   f"retry time not reached for any host for '{dom}'")  # fmt: skip
            last = at
            if attempts_before_success is not None and n == attempts_before_success:
                if self.emit(at, self.remote_delivery(msgid, rcpt)):
                    rows[(rcpt, rcpt)] = "success"
                self.complete(msgid, at)
                break
            if offset >= RETRY_TIMEOUT:
                if self.emit(at, f"{msgid} ** {rcpt}: retry timeout exceeded"):
                    rows[(rcpt, rcpt)] = "failure"
                    self.child_message(msgid, at, sender, "Mail delivery failed: returning message to sender")
                    self.complete(msgid, at)
                break
            if self._defer_line(msgid, at, rcpt, how):
                rows[(rcpt, rcpt)] = "defer"
            if not warned and offset >= DELAY_WARNING_AFTER:
                warned = True
                self.child_message(msgid, at, sender, f"Warning: message {msgid} delayed 24 hours")
        self.write_rows(msgid, [rcpt], rows)

    def defer_local(self, t: float) -> None:
        """A local mailbox over quota, retried every ~15 min. Exim logs a deferral with the full address
        (`== lp@dom`) and the later success with the local part (`=> lp <lp@dom>`): one row either way."""
        rng = self.rng
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, sec = self.smtp_arrival(t, self.remote_address(), [rcpt], scanner=acct)
        rows: dict = {}
        tries = 1 + rng.randrange(4)
        for n in range(tries + 1):
            at = sec + n * 900 + (rng.randrange(60) if n else rng.randrange(2))
            if at >= self.end:
                break
            if n == tries and rng.random() < 0.8:
                if self.emit(at, self.local_delivery(msgid, lp, rcpt)):
                    rows = {(rcpt, lp): "success"}
                self.complete(msgid, at)
                break
            if self.emit(at, f"{msgid} == {rcpt} R=virtual_user T=dovecot_virtual_delivery defer (-22): mailbox is "
                             f"full (MTA-imposed quota exceeded while writing to file /home/{acct}/mail/{dom}/{lp}/new)"):  # fmt: skip
                rows = {(rcpt, rcpt): "defer"}
        self.write_rows(msgid, [rcpt], rows)

    def defer_then_success(self, t: float) -> None:
        self._deferred(t, 1 + min(int(self.rng.expovariate(0.5)), 9))

    def defer_pending(self, t: float) -> None:
        self._deferred(t, None)

    def failure(self, t: float) -> None:
        rng = self.rng
        rows: dict = {}
        if rng.random() < 0.75:  # a local user writes to a non-existent remote address
            sender, auth = self._submitter()
            rcpt = self.remote_address().replace("@", ".nosuchuser@")
            msgid, sec = self.smtp_arrival(t, sender, [rcpt], auth=auth, outgoing=True)
            self._outbound_lines(msgid, sec, sender, [rcpt])
            host, ip = self.remote_hosts[rcpt.rsplit("@", 1)[1]]
            line = (f"{msgid} ** {rcpt} R=dkim_lookuphost T=dkim_remote_smtp H={host} [{ip}]: SMTP error from remote "
                    f"mail server after RCPT TO:<{rcpt}>: 550-5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
                    " in virtual mailbox table\\n550 5.1.1 Please check the address and try again")  # fmt: skip
            key = (rcpt, rcpt)
        else:  # a remote sender writes to a closed local address (`:fail:` in /etc/valiases)
            sender = self.remote_address()
            lp, dom, acct = self.mailbox()
            rcpt = f"closed-{lp}@{dom}"
            msgid, sec = self.smtp_arrival(t, sender, [rcpt], scanner=acct)
            line = f"{msgid} ** {rcpt} R=virtual_aliases: No Such User Here"
            key = (rcpt, rcpt)
        t2 = sec + rng.randrange(2)
        if self.emit(t2, line):
            rows[key] = "failure"
            self.child_message(msgid, t2, sender, "Mail delivery failed: returning message to sender",
                               fail_remote=rng.random() < 0.1)  # fmt: skip
        self.complete(msgid, t2)
        self.write_rows(msgid, [rcpt], rows)

    def spam(self, t: float) -> None:
        rng = self.rng
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, sec = self.smtp_arrival(t, self.remote_address(), [rcpt], spam=round(rng.uniform(5.0, 25.0), 1),
                                       scanner=acct)  # fmt: skip
        rows: dict = {}
        t2 = sec + rng.randrange(2)
        pick = rng.random()
        if pick < 0.5:
            line, key, etype = (f"{msgid} => {lp} <{rcpt}> R=virtual_user_spam T=virtual_userdelivery_spam",
                                (rcpt, lp), "success")  # fmt: skip
        elif pick < 0.9:
            line, key, etype = (f"{msgid} => /dev/null <{rcpt}> R=virtual_user_filter T=**bypassed**",
                                (rcpt, "/dev/null"), "filtered")  # fmt: skip
        else:
            line, key, etype = (
                f"{msgid} => :blackhole: <{rcpt}> R=virtual_aliases",
                (rcpt, ":blackhole:"),
                "filtered",
            )
        if self.emit(t2, line):
            rows[key] = etype
        self.complete(msgid, t2)
        self.write_rows(msgid, [rcpt], rows)

    def archive(self, t: float) -> None:
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, sec = self.smtp_arrival(t, self.remote_address(), [rcpt], scanner=acct)
        rows: dict = {}
        t2 = sec + self.rng.randrange(2)
        day = time.strftime("%Y-%m-%d", time.gmtime(sec))
        path = f"/home/{acct}/mail/archive/{dom}/{day}/{lp}"
        if self.emit(
            t2, f"{msgid} => {path} <{rcpt}> R=archive_incoming_email_local_user T=archive_incoming_email"
        ):
            rows[(rcpt, path)] = "archive"
        if self.emit(t2, self.local_delivery(msgid, lp, rcpt)):
            rows[(rcpt, lp)] = "success"
        self.complete(msgid, t2)
        self.write_rows(msgid, [rcpt], rows)

    def inprogress(self, t: float) -> None:
        lp, dom, acct = self.mailbox()
        rcpt = f"{lp}@{dom}"
        msgid, _sec = self.smtp_arrival(t, self.remote_address(), [rcpt], scanner=acct)
        self.write_rows(msgid, [rcpt], {})

    def rejected(self, t: float) -> None:
        rng = self.rng
        sec = int(t)
        port = self.connect(sec)
        name, ip, hostinfo = self.clients[rng.randrange(len(self.clients))]
        self.emit(sec, f"SMTP connection from [{ip}]:{port} (TCP/IP connection count = {self.conn_count})")
        sender = self.remote_address()
        seen: set[str] = set()
        for _ in range(1 + (rng.random() < 0.2)):
            temporary, code, reason = REJECT_REASONS[rng.randrange(len(REJECT_REASONS))]
            lp, dom, _acct = self.mailbox()
            rcpt = f"x{rng.randrange(10**6)}.{lp}@{dom}" if "Such" in reason else f"{lp}@{dom}"
            if rcpt in seen:  # one RCPT per address in a session (identical lines would be one rejection)
                continue
            seen.add(rcpt)
            word = "temporarily rejected" if temporary else "rejected"
            reason = reason.replace("{host}", name).replace("{ip}", ip)
            self.emit(sec, f"H={hostinfo}:{port} F=<{sender}> {word} RCPT <{rcpt}>: {reason}")
            row = {"server": self.name, "msgid": "", "recipient": rcpt, "deliveredto": "", "type": "rejected",
                   "sender": sender, "temporary": temporary, "kind": "RCPT", "code": code}  # fmt: skip
            self.truth_fh.write(json.dumps(row) + "\n")
            self.types["rejected"] += 1
        self.emit(sec + rng.randrange(2), f"SMTP connection from {hostinfo}:{port} closed by QUIT")

    def auth_failed(self, t: float) -> None:
        sec = int(t)
        port = self.connect(sec)
        hostinfo, ip = self.users[self.rng.randrange(len(self.users))]
        lp, dom, _ = self.mailbox()
        self.emit(sec, f"SMTP connection from [{ip}]:{port} (TCP/IP connection count = {self.conn_count})")
        self.emit(sec, f"dovecot_login authenticator failed for {hostinfo}:{port}: 535 Incorrect authentication "
                       f"data (set_id={lp}@{dom})")  # fmt: skip
        self.emit(sec + 1, f"SMTP connection from {hostinfo}:{port} closed by QUIT")

    # the whole log -----------------------------------------------------------------------------------

    def schedule(self) -> list[tuple[float, str]]:
        """(arrival time, kind) of every transaction, sorted by time."""
        rng = self.rng
        cfg = self.cfg
        kinds = [k for k, w in cfg.mix.items() if w > 0]
        cum = list(_cumulate([cfg.mix[k] for k in kinds]))
        hour_cum = list(_cumulate(HOURLY_WEIGHT))
        total = int(round(cfg.messages_per_day * cfg.days))
        duration = cfg.duration
        out = []
        for _ in range(total):
            kind = kinds[bisect.bisect(cum, rng.random() * cum[-1])]
            if kind == "inprogress":
                t = self.end - rng.random() * min(cfg.inprogress_window, duration)
            else:
                while True:  # daily profile: pick an hour by weight, a moment in it, within the window
                    day = rng.randrange(max(1, -(-duration // 86400)))
                    hour = bisect.bisect(hour_cum, rng.random() * hour_cum[-1])
                    off = day * 86400 + hour * 3600 + rng.random() * 3600
                    if off < duration:
                        break
                t = self.start + off
            out.append((t, kind))
        out.sort()
        return out

    def run(self) -> None:
        self.emit(self.start, f"exim 4.96 daemon started: pid={self.new_pid()}, -q1h, listening for SMTP on port 25 (IPv6 and IPv4) port 465 (IPv6 and IPv4) port 587 (IPv6 and IPv4)")  # fmt: skip
        for h in range(0, self.cfg.duration, 3600):  # the hourly queue runner
            pid = self.new_pid()
            self.emit(self.start + h + 1800, f"Start queue run: pid={pid}")
            self.emit(self.start + h + 1800 + 1 + self.rng.randrange(30), f"End queue run: pid={pid}")
        handlers = {k: getattr(self, k) for k in DEFAULT_MIX}
        for t, kind in self.schedule():
            self.flush(int(t))
            self.kinds[kind] += 1
            handlers[kind](t)
        self.flush(self.end)

    def summary(self) -> dict:
        return {"lines": self.lines, "messages": self.arrivals, "recipients": self.rows,
                "rejections": self.types.get("rejected", 0), "transactions": dict(sorted(self.kinds.items())),
                "outcomes": dict(sorted(self.types.items()))}  # fmt: skip


def _cumulate(weights):
    total = 0.0
    for w in weights:
        total += w
        yield total


def generate(config: GenConfig, outdir: str | Path) -> dict:
    """Write `<server>.log` for every server, `truth.jsonl` and `manifest.json` into `outdir`; return the manifest."""
    config.validate()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    servers: dict[str, dict] = {}
    with open(out / "truth.jsonl", "w", encoding="utf-8", newline="\n") as truth_fh:
        for index, name in enumerate(server_names(config.servers), start=1):
            with open(out / f"{name}.log", "w", encoding="utf-8", newline="\n", buffering=1 << 20) as log_fh:
                gen = _Server(config, index, name, log_fh, truth_fh)
                gen.run()
            servers[name] = gen.summary()
    totals = Counter()
    outcomes = Counter()
    for s in servers.values():
        totals.update({k: s[k] for k in ("lines", "messages", "recipients", "rejections")})
        outcomes.update(s["outcomes"])
    manifest = {
        "generator": "bench.generate",
        "config": asdict(config),
        "files": {"logs": [f"{n}.log" for n in servers], "truth": "truth.jsonl"},
        "servers": servers,
        "totals": dict(totals),
        "outcomes": dict(sorted(outcomes.items())),
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest


def parse_mix(text: str) -> dict[str, float]:
    """`success_local=30,rejected=10` -> weights; kinds not named keep weight 0 when any is named."""
    mix = {k: 0.0 for k in DEFAULT_MIX}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in DEFAULT_MIX:
            raise argparse.ArgumentTypeError(f"unknown mix kind {key!r}; known: {', '.join(DEFAULT_MIX)}")
        mix[key] = float(value)
    return mix


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=4)
    ap.add_argument("--messages-per-day", type=int, default=10_000, help="transactions per server per day")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--id-format", choices=ID_FORMATS, default="old")
    ap.add_argument("--start", default=GenConfig.start, help="ISO time of the first second (UTC)")
    ap.add_argument("--mix", type=parse_mix, default=None,
                    help=f"kind=weight,… (kinds: {', '.join(DEFAULT_MIX)}); default: the built-in mix")  # fmt: skip
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    cfg = GenConfig(servers=args.servers, messages_per_day=args.messages_per_day, days=args.days, seed=args.seed,
                    id_format=args.id_format, start=args.start, mix=args.mix or dict(DEFAULT_MIX))  # fmt: skip
    began = time.perf_counter()
    manifest = generate(cfg, args.out)
    took = time.perf_counter() - began
    tot = manifest["totals"]
    print(f"wrote {args.out}: {cfg.servers} servers, {tot['lines']} lines, {tot['messages']} messages, "
          f"{tot['recipients']} recipient rows, {tot['rejections']} rejections in {took:.1f} s "
          f"({tot['lines'] / took:,.0f} lines/s)")  # fmt: skip
    print("outcomes: " + ", ".join(f"{k}={v}" for k, v in manifest["outcomes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
