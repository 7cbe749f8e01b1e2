"""Alert rules: what each kind of rule watches, its parameters with their defaults and limits, and loading a
rules file (YAML) with errors that name the rule and the key. Pure: no store, no network.

    rules:
      - name: compromised-account
        kind: sender_burst
        scope: user            # user (cPanel account), sender (address), domain or owner (reseller)
        factor: 5              # sends in an hour above 5 x its own 7-day hourly median ...
        floor: 200             # ... and at least 200
    notify:
      webhook: {url: "https://hooks.example/eximtrack", secret_env: EXIMTRACK_ALERT_SECRET}
      email: {relay: "smtp.example:25", sender: "eximtrack@example", to: ["postmaster@example"]}
    link_base: "https://track.example"

Every rule has `name` (unique), `kind`, `cooldown_minutes` (after an alert resolves, the same key does not
fire again for that long: a flapping sender makes one alert an hour, not sixty) and the parameters of its
kind (KINDS). `DEFAULT_RULES` are the shipped defaults, each with why (docs/ALERTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RulesError(ValueError):
    """A rules file that cannot be used, with where and why."""


@dataclass(frozen=True)
class Param:
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def check(self, where: str, value: Any) -> Any:
        if self.choices:
            if value not in self.choices:
                raise RulesError(f"{where}: must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RulesError(f"{where}: must be a number, not {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise RulesError(f"{where}: must be between {self.low} and {self.high}, not {value}")
        return value


# the sending side a sender rule groups by: mail_hourly's columns (owner = the reseller)
SENDER_SCOPES = ("user", "sender", "domain", "owner")

COMMON = {
    "cooldown_minutes": Param(
        60, 0, 7 * 24 * 60, doc="minutes after an alert resolves before its key fires again"
    ),
}
BASELINE = {"baseline_days": Param(7, 1, 28, doc="days of hourly history the baseline median is taken over")}

# kind -> its parameters (besides name, kind and COMMON)
KINDS: dict[str, dict[str, Param]] = {
    # a compromised account or mailbox: sends far above its own habit
    "sender_burst": {
        "scope": Param(
            "user", choices=SENDER_SCOPES, doc="an account (user), a sender address, a domain, a reseller"
        ),
        "factor": Param(5.0, 1, 1000, doc="sends in an hour above factor x the key's hourly median"),
        "floor": Param(200, 1, 10**9, doc="and at least this many sends in the hour"),
        **BASELINE,
    },
    # a compromised account or a spam run: mail to very many distinct addresses in an hour
    "unique_recipients": {
        "scope": Param("user", choices=SENDER_SCOPES),
        "limit": Param(300, 1, 10**9, doc="distinct recipient addresses in an hour"),
    },
    # cPanel's defer/fail rule, fleet-wide: a sender whose mail mostly does not get through
    "defer_fail_rate": {
        "scope": Param("user", choices=SENDER_SCOPES),
        "window_hours": Param(1, 1, 24, doc="hour buckets counted before the current one"),
        "percent": Param(50.0, 1, 100, doc="deferred, failed or rejected recipients in % of all"),
        "min_rows": Param(50, 1, 10**9, doc="recipients in the hour before the rate counts"),
    },
    # a mailbox provider deferring or refusing one server's mail
    "destination_deferrals": {
        "factor": Param(5.0, 1, 1000, doc="deferrals + failures in an hour above factor x the hourly median"),
        "floor": Param(50, 1, 10**9, doc="and at least this many recipients deferred or failed in the hour"),
        **BASELINE,
    },
    # a queue that stopped moving
    "stuck_queue": {
        "min_age_minutes": Param(
            60, 5, 7 * 24 * 60, doc="a recipient in progress at least this long is stuck"
        ),
        "max_age_hours": Param(48, 1, 30 * 24, doc="older in-progress rows are left to the joiner's expiry"),
        "min_rows": Param(20, 1, 10**9, doc="stuck recipients on one server before it fires"),
    },
    # a mailbox whose outbound mail starts to score as spam (scanned outbound mail only: migration 016)
    "spam_score_jump": {
        "scope": Param("sender", choices=SENDER_SCOPES),
        "min_score": Param(5.0, -100, 100, doc="mean SpamAssassin score in the hour at least this"),
        "jump": Param(3.0, 0, 100, doc="and at least this much above its mean over the baseline days"),
        "min_messages": Param(10, 1, 10**9, doc="scored messages in the hour before the mean counts"),
        **BASELINE,
    },
    # a queue growing: many recipients still deferred on one server
    "deferred_backlog": {
        "max_age_hours": Param(48, 1, 30 * 24, doc="mail arrived within this many hours"),
        "min_rows": Param(500, 1, 10**9, doc="recipients still deferred on one server"),
    },
    # a server that stopped logging (or shipping)
    "silent_server": {
        "silent_minutes": Param(30, 5, 24 * 60, doc="no event for at least this long"),
        "expected": Param(
            20,
            1,
            10**6,
            doc="and at least this many messages would have arrived meanwhile (hour-of-day median)",
        ),
        **BASELINE,
    },
}


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    params: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    @property
    def cooldown_seconds(self) -> float:
        return float(self.params["cooldown_minutes"]) * 60


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_env: str = ""  # the environment variable holding the HMAC key (never the key itself)
    retries: int = 5
    timeout_seconds: float = 10.0
    dead_letter: str = "eximtrack-alerts.dead.jsonl"


@dataclass(frozen=True)
class Email:
    relay: str  # host[:port]
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    username_env: str = ""
    password_env: str = ""


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    webhook: Webhook | None = None
    email: Email | None = None
    link_base: str = ""

    def by_name(self, name: str) -> Rule:
        return next(r for r in self.rules if r.name == name)


DEFAULT_RULES = """\
# eximtrack alert rules (docs/ALERTS.md says why each default is what it is)
rules:
  - name: compromised-account
    kind: sender_burst
    scope: user
    factor: 5
    floor: 200
  - name: compromised-mailbox
    kind: sender_burst
    scope: sender
    factor: 5
    floor: 200
  - name: many-recipients
    kind: unique_recipients
    scope: user
    limit: 300
  - name: defer-fail-rate
    kind: defer_fail_rate
    scope: user
    percent: 50
    min_rows: 50
  - name: destination-deferrals
    kind: destination_deferrals
    factor: 5
    floor: 50
  - name: stuck-queue
    kind: stuck_queue
    min_age_minutes: 60
    min_rows: 20
  - name: spam-score-jump
    kind: spam_score_jump
    scope: sender
    min_score: 5
    jump: 3
    min_messages: 10
  - name: deferred-backlog
    kind: deferred_backlog
    max_age_hours: 48
    min_rows: 500
  - name: silent-server
    kind: silent_server
    silent_minutes: 30
    expected: 20
"""


def _keys(where: str, given: dict, allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise RulesError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")


def _rule(i: int, raw: Any) -> Rule:
    where = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: a rule is a mapping with name and kind")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}: needs a name")
    where = f"rule {name!r}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise RulesError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    spec = {**COMMON, **KINDS[kind]}
    _keys(where, raw, {"name", "kind", *spec})
    params = {
        key: p.check(f"{where}: {key}", raw[key]) if key in raw else p.default for key, p in spec.items()
    }
    return Rule(name, kind, params)


def _section(where: str, raw: Any, cls, required: tuple[str, ...]):
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: must be a mapping")
    fields = set(cls.__dataclass_fields__)
    _keys(where, raw, fields)
    missing = [k for k in required if not raw.get(k)]
    if missing:
        raise RulesError(f"{where}: needs {', '.join(missing)}")
    values = dict(raw)
    if "to" in values:
        to = values["to"]
        values["to"] = tuple([to] if isinstance(to, str) else to)
    try:
        return cls(**values)
    except TypeError as exc:
        raise RulesError(f"{where}: {exc}") from None


def parse_rules(text: str, source: str = "rules") -> Rules:
    """A rules file's text -> Rules, or RulesError naming the first problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: expected a mapping with `rules:`")
    _keys(source, raw, {"rules", "notify", "link_base"})
    items = raw.get("rules")
    if not isinstance(items, list) or not items:
        raise RulesError(f"{source}: `rules:` must be a non-empty list")
    rules = tuple(_rule(i, r) for i, r in enumerate(items))
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RulesError(f"{source}: rule names must be unique: {', '.join(dup)}")
    notify = raw.get("notify") or {}
    if not isinstance(notify, dict):
        raise RulesError(f"{source}: notify must be a mapping")
    _keys(f"{source}: notify", notify, {"webhook", "email"})
    webhook = _section("notify.webhook", notify.get("webhook"), Webhook, ("url",))
    if webhook and not webhook.url.startswith(("http://", "https://")):
        raise RulesError(f"notify.webhook: url must be http(s), not {webhook.url!r}")
    email = _section("notify.email", notify.get("email"), Email, ("relay", "sender", "to"))
    link_base = raw.get("link_base") or ""
    if not isinstance(link_base, str):
        raise RulesError(f"{source}: link_base must be a URL")
    return Rules(rules, webhook, email, link_base.rstrip("/"))


def load_rules(path: str | None) -> Rules:
    """The rules of `path`, or DEFAULT_RULES without one."""
    if path is None:
        return parse_rules(DEFAULT_RULES, "default rules")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read {path}: {exc.strerror}") from None
    return parse_rules(text, path)


__all__ = [
    "DEFAULT_RULES",
    "KINDS",
    "Email",
    "Param",
    "Rule",
    "Rules",
    "RulesError",
    "Webhook",
    "load_rules",
    "parse_rules",
]
