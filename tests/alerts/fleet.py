"""A generated fleet for the alert tests: a week and a day of ordinary outbound mail with daily cycles, the
delivery events the joiner emits for it (stream/join.py: one row per recipient, deferrals then the final
state, versions ordered by time and rank), and the incidents the alert rules exist for, injected on top.

Ordinary traffic: 6 servers, 30 cPanel accounts (each on one server, with 3 sender addresses), each sending
`base x cycle(hour) x noise` messages an hour (base 2..12; cycle 0.2 at night to 1.0 mid-afternoon; noise
±30 %) to 1..2 recipients at 5 destination domains: 95 % delivered, 3 % deferred once then delivered, 2 %
failed; half of it scanned by SpamAssassin (scores around 0.5). The messages of the last 10 minutes have no
result yet (in progress, young).
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import message_id  # noqa: E402
from schemas.records import DeliveryEvent  # noqa: E402

SERVERS = [f"mx{i}.fleet.example" for i in range(1, 7)]
DOMAINS = ["gmail.example", "yahoo.example", "outlook.example", "corp.example", "isp.example"]
DEFER = "451 4.7.1 Greylisted, please try again later"
FAIL = "550 5.1.1 <{rcpt}>: user unknown"
BLOCKED = "421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or user complaints"


@dataclass(frozen=True)
class Account:
    user: str
    domain: str
    owner: str
    server: str
    base: float

    def sender(self, i: int) -> str:
        return f"{('info', 'sales', 'admin')[i % 3]}@{self.domain}"


def accounts() -> list[Account]:
    rnd = random.Random(7)
    return [
        Account(
            f"acct{i:02d}",
            f"acct{i:02d}.example",
            f"res{i % 3}",
            SERVERS[i % len(SERVERS)],
            rnd.uniform(2, 12),
        )
        for i in range(30)
    ]


def cycle(hour_of_day: int) -> float:
    return 0.2 + 0.8 * (1 + math.sin(2 * math.pi * (hour_of_day - 9) / 24)) / 2


@dataclass
class Fleet:
    end: datetime
    days: int = 8
    seed: int = 1
    events: list = field(default_factory=list)
    _n: int = 0

    def _msgid(self, t: float) -> str:
        self._n += 1
        return message_id(int(t), 1000 + self._n % 90000, (t % 1), new_format=False)

    def message(self, acct: Account, t: float, rcpts: list[str], outcome: str, *, sender: int = 0,
                server: str | None = None, reason: str = DEFER, ip: str = "", spamscore: float | None = None) -> str:  # fmt: skip
        """One outbound message and its rows' events: outcome success, defer_success, defer (still
        deferred), failure or inprogress (no result yet)."""
        server = server or acct.server
        msgid = self._msgid(t)
        arrival = dict(
            server=server, msgid=msgid, email=acct.sender(sender), sender=acct.sender(sender), user=acct.user,
            domain=acct.domain, owner=acct.owner, senderauth="dovecot_login", sendunixtime=t, protocol="esmtpsa",
            size=4000, subject="hello", spamscore=spamscore,
        )  # fmt: skip
        for rcpt in rcpts:
            dom = rcpt.split("@")[1]
            row = dict(arrival, recipient=rcpt, deliverydomain=dom, transport_is_remote=1)
            ms = int(t * 1000)
            if outcome == "inprogress":
                self.event("inprogress", row, t, ms * 8, deliveredto="")
                continue
            if outcome in ("defer_success", "defer"):
                self.event("defer", row, t + 5, (ms + 5000) * 8 + 2, deliveredto=rcpt, message=reason, ip=ip,
                            host=f"mx.{dom}", attempts=1)  # fmt: skip
            if outcome in ("success", "defer_success"):
                done = t + (1200 if outcome == "defer_success" else 2)
                self.event("success", row, done, int(done * 1000) * 8 + 4, deliveredto=rcpt,
                            message="250 OK", host=f"mx.{dom}", ip="198.51.100.1")  # fmt: skip
            if outcome == "failure":
                self.event("failure", row, t + 3, (ms + 3000) * 8 + 4, deliveredto=rcpt,
                            message=FAIL.format(rcpt=rcpt), host=f"mx.{dom}")  # fmt: skip
        return msgid

    def event(self, type_: str, row: dict, at: float, version: int, **kw) -> None:
        self.events.append(DeliveryEvent(
            event_id=f"e{len(self.events)}", type=type_, actionunixtime=at, version=version, **row, **kw
        ))  # fmt: skip

    def ordinary(self) -> Fleet:
        rnd = random.Random(self.seed)
        start = self.end - timedelta(days=self.days)
        hour = start
        while hour < self.end:
            for acct in accounts():
                n = acct.base * cycle(hour.hour) * rnd.uniform(0.7, 1.3)
                count = int(n) + (rnd.random() < n - int(n))
                for _ in range(count):
                    t = hour.timestamp() + rnd.uniform(0, 3599)
                    if t >= self.end.timestamp():
                        continue
                    rcpts = [
                        f"u{rnd.randrange(10**6)}@{rnd.choice(DOMAINS)}" for _ in range(rnd.choice((1, 1, 2)))
                    ]
                    if t > self.end.timestamp() - 600:
                        outcome = "inprogress"
                    else:
                        x = rnd.random()
                        outcome = "success" if x < 0.95 else "defer_success" if x < 0.98 else "failure"
                    score = round(rnd.gauss(0.5, 0.8), 1) if rnd.random() < 0.5 else None  # half is scanned
                    self.message(acct, t, rcpts, outcome, sender=rnd.randrange(3), spamscore=score)
            hour += timedelta(hours=1)
        return self


def by_user(user: str) -> Account:
    return next(a for a in accounts() if a.user == user)


def epoch(dt: datetime) -> float:
    return dt.astimezone(UTC).timestamp()
