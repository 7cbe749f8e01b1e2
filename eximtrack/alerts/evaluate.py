"""Evaluating alert rules at one moment: one statement per rule over the aggregate views (mail_hourly_all,
reasons_hourly_all, activity_hourly_all: the snapshot-aware hourly counters, no scan of raw events), then,
for each finding only, its top reasons and example message ids (index lookups). Orchestration over
`run(sql, params) -> (columns, rows)` like the search and stats builders: no I/O of its own.

Time: an evaluation at `at` looks at the hour bucket holding `at` ("cur") and the one before ("prev"); the
value of a key is the larger of the two buckets (so "in the last hour" is covered whatever the minute), and
the baseline the median over the `baseline_days` x 24 hour buckets before `prev`, hours without mail
counting as 0. A silent server compares with the median of the same hour of day over the baseline days
(servers have daily cycles: a quiet night is not silence), counted in messages that arrived (the
independent arrivals: one message's many events come together, so counting events would make a server
that gets two messages an hour look busy). Mail is counted in its arrival hour, deliveries
and deferrals in the hour they happened, as in the views. An evaluation of a past moment (`alerts test`)
reads the hour buckets as they are now: a bucket holds its whole hour, and "in progress" is the state now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from eximtrack.alerts.rules import Rule, Rules
from eximtrack.reasons import sql_expression
from eximtrack.stats_snapshots import as_utc

Run = Callable[[str, dict], tuple[list[str], list]]
# a sender scope -> (its search_keys field, the page's / API's filter parameter; None: no such filter)
SCOPE_SEARCH = {"user": ("user", "user"), "sender": ("email", "email"), "domain": ("domain", "domain"),
                "owner": ("owner", None)}  # fmt: skip
# ... and its column in `latest` (mail_hourly's `sender` is the authenticated sender's lower-cased address)
SCOPE_COLUMN = {"user": "user", "sender": "lower(email)", "domain": "domain", "owner": "owner"}
HOUR = timedelta(hours=1)
MAX_FINDINGS = 1000  # per rule and evaluation: the biggest first


@dataclass(frozen=True)
class Finding:
    """One rule's finding about one key at one moment: what a human needs to act on it."""

    rule: str
    kind: str
    key: str  # stable identity of the alerted thing within the rule (e.g. "user=bob", "server=mx1 domain=…")
    value: float
    baseline: float
    threshold: float
    summary: str
    server: str = ""
    owner: str = ""
    user: str = ""
    sender: str = ""
    deliverydomain: str = ""
    reasons: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    link: str = ""


def hour_floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _times(at: datetime, rule: Rule) -> dict:
    cur = hour_floor(at)
    prev = cur - HOUR
    out = {"at": at.astimezone(UTC), "cur": cur, "prev": prev}
    if "baseline_days" in rule.params:
        out["base_from"] = prev - timedelta(days=int(rule["baseline_days"]))
    return out


T = "DateTime('UTC')"


def _median(values: str, hours: int) -> str:
    """The median of `values` (an array of the hours that had any) over `hours` buckets, the others 0."""
    padded = f"arrayConcat({values}, arrayWithConstant(toUInt64({hours} - length({values})), toUInt64(0)))"
    return f"arrayElement(arraySort({padded}), {max(1, (hours + 1) // 2)})"


def _spike_sql(rule: Rule, keys: str, named: str, per_hour: str) -> str:
    """Keys whose count `n` in the larger of the two hour buckets is at least `floor` and above `factor` x
    its median over the baseline hours; `per_hour` selects (hour, the keys, n[, more]) over the baseline,
    `named` adds columns of the key (`, any(x) AS y`)."""
    hours = int(rule["baseline_days"]) * 24
    return f"""
SELECT {keys}{named},
    greatest(sumIf(n, hour = {{prev:{T}}}), sumIf(n, hour = {{cur:{T}}})) AS value,
    {_median(f"groupArrayIf(n, hour < {{prev:{T}}})", hours)} AS baseline
FROM ({per_hour})
GROUP BY {keys}
HAVING value >= {{floor:Float64}} AND value > {{factor:Float64}} * baseline
ORDER BY value DESC, {keys} LIMIT {MAX_FINDINGS}"""


def spike_threshold(rule: Rule, baseline: float) -> float:
    """The count a spike rule's key had to exceed (`_spike_sql`)."""
    return max(float(rule["floor"]), float(rule["factor"]) * baseline)


def sender_burst_sql(rule: Rule) -> str:
    col = rule["scope"]
    per_hour = f"""SELECT hour, {col} AS key, any(owner) AS o, any(user) AS u, toUInt64(sum(messages)) AS n
      FROM mail_hourly_all
      WHERE outbound = 1 AND {col} != '' AND hour >= {{base_from:{T}}} AND hour <= {{cur:{T}}}
      GROUP BY hour, key"""
    return _spike_sql(rule, "key", ", any(o) AS owner, any(u) AS user", per_hour)


def defer_fail_sql(rule: Rule) -> str:
    col = rule["scope"]
    return f"""
SELECT {col} AS key, any(owner) AS key_owner, any(user) AS key_user,
    toFloat64(sum(rows) + sum(rejected)) AS total, toFloat64(sum(defer_or_fail_ever) + sum(rejected)) AS bad
FROM mail_hourly_all
WHERE outbound = 1 AND {col} != '' AND hour >= {{cur:{T}}} - toIntervalHour({{window:UInt32}}) AND hour <= {{cur:{T}}}
GROUP BY key
HAVING total >= {{min_rows:Float64}} AND bad * 100 >= {{percent:Float64}} * total
ORDER BY bad DESC, key LIMIT {MAX_FINDINGS}"""


def unique_recipients_sql(rule: Rule) -> str:
    col = rule["scope"]  # distinct addresses are not summable: merge the hours' set states themselves
    return f"""
SELECT {col} AS key, any(owner) AS key_owner, any(user) AS key_user,
    greatest(uniqExactMergeIf(rcpt_addresses, hour = {{prev:{T}}}),
             uniqExactMergeIf(rcpt_addresses, hour = {{cur:{T}}})) AS value
FROM mail_hourly
WHERE outbound = 1 AND {col} != '' AND hour >= {{prev:{T}}} AND hour <= {{cur:{T}}}
GROUP BY key
HAVING value >= {{limit:Float64}}
ORDER BY value DESC, key LIMIT {MAX_FINDINGS}"""


def spam_sql(rule: Rule) -> str:
    col = rule["scope"]

    def mean(cond: str, n: str) -> str:
        total = f"toFloat64(bitShiftRight(sumDistinctMergeIf(score_sum, {cond}), 192))"
        return f"if({n} = 0, 0, {total} / 100 / {n} - 1000)"

    now, before = f"hour >= {{prev:{T}}}", f"hour < {{prev:{T}}}"
    return f"""
SELECT {col} AS key, any(owner) AS key_owner, any(user) AS key_user,
    uniqExactMergeIf(scored, {now}) AS n_now, {mean(now, "n_now")} AS mean_now,
    uniqExactMergeIf(scored, {before}) AS n_before, {mean(before, "n_before")} AS mean_before
FROM spam_hourly
WHERE {col} != '' AND hour >= {{base_from:{T}}} AND hour <= {{cur:{T}}}
GROUP BY key
HAVING n_now >= {{min_messages:Float64}} AND mean_now >= {{min_score:Float64}}
    AND mean_now - mean_before >= {{jump:Float64}}
ORDER BY mean_now DESC, key LIMIT {MAX_FINDINGS}"""


def destination_sql(rule: Rule) -> str:
    per_hour = f"""SELECT hour, server, deliverydomain, toUInt64(sum(recipients)) AS n FROM reasons_hourly_all
      WHERE type IN ('defer', 'failure') AND deliverydomain != ''
        AND hour >= {{base_from:{T}}} AND hour <= {{cur:{T}}}
      GROUP BY hour, server, deliverydomain"""
    return _spike_sql(rule, "server, deliverydomain", "", per_hour)


def queue_sql(counter: str, before_hi: bool) -> str:
    """Servers whose recipients still `counter` (inprogress, deferred) arrived from the hour `lo` on, up to
    the hour before `hi` (before_hi) or to the current one, number at least `min_rows`."""
    upper = f"hour < {{hi:{T}}}" if before_hi else f"hour <= {{cur:{T}}}"
    return f"""
SELECT server, toFloat64(sum({counter})) AS value, min(hour) AS oldest
FROM mail_hourly_all
WHERE hour >= {{lo:{T}}} AND {upper} AND {counter} > 0
GROUP BY server
HAVING value >= {{min_rows:Float64}}
ORDER BY value DESC, server LIMIT {MAX_FINDINGS}"""


def silent_sql(rule: Rule) -> str:
    days = int(rule["baseline_days"])
    return f"""
SELECT a.server, a.last_seen, m.baseline
FROM (SELECT server, max(least(last_event, {{at:DateTime64(3, 'UTC')}})) AS last_seen FROM activity_hourly_all
      WHERE hour >= {{base_from:{T}}} AND hour <= {{cur:{T}}} GROUP BY server) AS a
INNER JOIN (SELECT server, {_median("groupArray(n)", days)} AS baseline
            FROM (SELECT hour, server, toUInt64(sum(messages)) AS n FROM mail_hourly_all
                  WHERE hour >= {{base_from:{T}}} AND hour < {{prev:{T}}} AND toHour(hour) = toHour({{cur:{T}}})
                  GROUP BY hour, server)
            GROUP BY server) AS m ON a.server = m.server
WHERE a.last_seen < {{at:DateTime64(3, 'UTC')}} - toIntervalMinute({{silent:UInt32}})
    AND m.baseline * dateDiff('millisecond', a.last_seen, {{at:DateTime64(3, 'UTC')}}) / 3600000 >= {{expected:Float64}}
ORDER BY a.server LIMIT {MAX_FINDINGS}"""


def _link(rules: Rules, params: dict) -> str:
    """The Track Delivery page showing the alerted mail (the page reads its filters from the query string)."""
    return f"{rules.link_base}/?{urlencode(params)}" if rules.link_base else ""


def _examples_by_key(run: Run, field_name: str, value: str, since: datetime) -> tuple[str, ...]:
    rows = run(
        "SELECT DISTINCT server, msgid, ts FROM search_keys WHERE field = {f:String} AND value = {v:String} "
        "AND ts >= {s:DateTime64(3, 'UTC')} ORDER BY ts DESC LIMIT 3",
        {"f": field_name, "v": value.lower(), "s": since},
    )[1]
    return tuple(f"{server} {msgid}" for server, msgid, _ in rows)


def _examples_latest(run: Run, cond: str, params: dict, since: datetime) -> tuple[str, ...]:
    rows = run(
        f"SELECT DISTINCT server, msgid FROM latest WHERE msgtime >= {{s:{T}}} AND {cond} LIMIT 3",
        {**params, "s": since},
    )[1]
    return tuple(f"{server} {msgid}" for server, msgid in rows)


@dataclass(frozen=True)
class Context:
    """One rule's evaluation at one moment: where to read, the rule, its times and bound parameters."""

    run: Run
    rules: Rules
    rule: Rule
    t: dict

    @property
    def since_epoch(self) -> int:
        return int(self.t["prev"].timestamp())

    def params(self, **more) -> dict:
        return {**self.t, **more}

    def sender_finding(self, key: str, owner: str, user: str, value: float, baseline: float, threshold: float,
                       summary: str, reasons: tuple[str, ...] = (), **link) -> Finding:  # fmt: skip
        """A finding about an account, a sender address, a domain or a reseller (the rule's scope)."""
        col = self.rule["scope"]
        field, param = SCOPE_SEARCH[col]
        return Finding(
            self.rule.name, self.rule.kind, f"{col}={key}", float(value), float(baseline), float(threshold), summary,
            owner=key if col == "owner" else owner, user="" if col == "owner" else user,
            sender=key if col == "sender" else "",
            reasons=reasons,
            examples=_examples_by_key(self.run, field, key, self.t["prev"]),
            link=_link(self.rules, {param: key, "startdate": self.since_epoch, **link}) if param else "",
        )  # fmt: skip

    def reasons(self, col: str, key: str) -> tuple[str, ...]:
        """The top deferral and failure reasons (templates) of a sender's mail of the last hours."""
        rows = self.run(
            f"SELECT {sql_expression('message', 'deliverydomain')} AS reason, count() AS n FROM latest "
            f"WHERE msgtime >= {{prev:{T}}} AND type IN ('defer', 'failure') AND {SCOPE_COLUMN[col]} = {{k:String}} "
            "GROUP BY reason ORDER BY n DESC, reason LIMIT 3",
            {"prev": self.t["prev"], "k": key},
        )[1]
        return tuple(f"{n} x {reason}" for reason, n in rows)

    def server_finding(self, server: str, value: float, threshold: float, summary: str, row_type: str,
                       since: datetime, flag: str) -> Finding:  # fmt: skip
        """A finding about a server's queue: rows of `row_type` that arrived since `since`."""
        cond = "server = {sv:String} AND type = {ty:String} AND is_deleted = 0"
        return Finding(
            self.rule.name, self.rule.kind, f"server={server}", float(value), 0.0, float(threshold), summary,
            server=server, examples=_examples_latest(self.run, cond, {"sv": server, "ty": row_type}, since),
            link=_link(self.rules, {"server": server, flag: 1, "startdate": int(since.timestamp())}),
        )  # fmt: skip


def _sender_burst(c: Context) -> list[Finding]:
    r = c.rule
    rows = c.run(sender_burst_sql(r), c.params(floor=float(r["floor"]), factor=float(r["factor"])))[1]
    return [
        c.sender_finding(
            key,
            owner,
            user,
            value,
            baseline,
            spike_threshold(r, baseline),
            f"{r['scope']} {key} sent {value} messages in an hour, {value / max(baseline, 1):.0f}x its "
            f"hourly median of {baseline} over {r['baseline_days']} days",
        )  # fmt: skip
        for key, owner, user, value, baseline in rows
    ]


def _unique_recipients(c: Context) -> list[Finding]:
    r = c.rule
    rows = c.run(unique_recipients_sql(r), c.params(limit=float(r["limit"])))[1]
    return [
        c.sender_finding(
            key,
            owner,
            user,
            value,
            0.0,
            r["limit"],
            f"{r['scope']} {key} mailed {value} distinct addresses in an hour",
        )  # fmt: skip
        for key, owner, user, value in rows
    ]


def _defer_fail_rate(c: Context) -> list[Finding]:
    r = c.rule
    params = c.params(
        min_rows=float(r["min_rows"]), percent=float(r["percent"]), window=int(r["window_hours"])
    )
    rows = c.run(defer_fail_sql(r), params)[1]
    return [
        c.sender_finding(
            key,
            owner,
            user,
            round(100 * bad / total, 1),
            total,
            r["percent"],
            f"{r['scope']} {key}: {bad:.0f} of {total:.0f} recipients since "
            f"{c.t['cur'] - timedelta(hours=int(r['window_hours'])):%H:00} UTC deferred, failed or rejected "
            f"({100 * bad / total:.0f} %)",
            reasons=c.reasons(r["scope"], key),
            defer=1,
            failure=1,
        )  # fmt: skip
        for key, owner, user, total, bad in rows
    ]


def _destination_deferrals(c: Context) -> list[Finding]:
    r, t = c.rule, c.t
    out = []
    for server, domain, value, baseline in c.run(
        destination_sql(r), c.params(floor=float(r["floor"]), factor=float(r["factor"]))
    )[1]:
        reasons = c.run(
            "SELECT template, toUInt64(sum(recipients)) AS n, groupUniqArray(3)(ip) AS ips "
            "FROM reasons_hourly_all WHERE server = {sv:String} AND deliverydomain = {d:String} "
            f"AND type IN ('defer', 'failure') AND hour >= {{prev:{T}}} AND hour <= {{cur:{T}}} "
            "GROUP BY template ORDER BY n DESC, template LIMIT 3",
            {"sv": server, "d": domain, "prev": t["prev"], "cur": t["cur"]},
        )[1]
        ips = sorted({ip for _, _, found in reasons for ip in found if ip})
        out.append(Finding(
            r.name, r.kind, f"server={server} deliverydomain={domain}", float(value), float(baseline),
            spike_threshold(r, baseline),
            f"{domain} deferred or refused {value} recipients from {server} in an hour "
            f"(hourly median {baseline})" + (f", remote IPs {', '.join(ips)}" if ips else ""),
            server=server, deliverydomain=domain,
            reasons=tuple(f"{n} x {template}" for template, n, _ in reasons),
            examples=_examples_latest(
                c.run, "server = {sv:String} AND deliverydomain = {d:String} AND type IN ('defer', 'failure')",
                {"sv": server, "d": domain}, t["prev"],
            ),
            link=_link(c.rules, {"server": server, "deliverydomain": domain, "startdate": c.since_epoch,
                                 "defer": 1, "failure": 1}),
        ))  # fmt: skip
    return out


def _spam_score_jump(c: Context) -> list[Finding]:
    r = c.rule
    params = c.params(
        min_messages=float(r["min_messages"]), min_score=float(r["min_score"]), jump=float(r["jump"])
    )
    return [
        c.sender_finding(
            key,
            owner,
            user,
            round(mean_now, 2),
            round(mean_before, 2),
            max(float(r["min_score"]), mean_before + float(r["jump"])),
            f"{r['scope']} {key}: mean spam score {mean_now:.1f} over {n_now} messages in the last "
            f"hour, {mean_before:.1f} over {n_before} messages in the {r['baseline_days']} days before",
        )  # fmt: skip
        for key, owner, user, n_now, mean_now, n_before, mean_before in c.run(spam_sql(r), params)[1]
    ]


def _stuck_queue(c: Context) -> list[Finding]:
    r, at = c.rule, c.t["at"]
    hi = hour_floor(at - timedelta(minutes=int(r["min_age_minutes"])))
    lo = hour_floor(at - timedelta(hours=int(r["max_age_hours"])))
    rows = c.run(queue_sql("inprogress", True), c.params(lo=lo, hi=hi, min_rows=float(r["min_rows"])))[1]
    return [
        c.server_finding(
            server,
            value,
            r["min_rows"],
            f"{server}: {value:.0f} recipients still in progress more than {r['min_age_minutes']} "
            f"minutes after arrival (the oldest arrived in the hour of {oldest:%Y-%m-%d %H:00} UTC)",
            "inprogress",
            lo,
            "inprogress",
        )  # fmt: skip
        for server, value, oldest in rows
    ]


def _deferred_backlog(c: Context) -> list[Finding]:
    r = c.rule
    lo = hour_floor(c.t["at"] - timedelta(hours=int(r["max_age_hours"])))
    rows = c.run(queue_sql("deferred", False), c.params(lo=lo, min_rows=float(r["min_rows"])))[1]
    return [
        c.server_finding(
            server,
            value,
            r["min_rows"],
            f"{server}: {value:.0f} recipients of the last {r['max_age_hours']} hours still deferred "
            f"(the oldest arrived in the hour of {oldest:%Y-%m-%d %H:00} UTC)",
            "defer",
            lo,
            "defer",
        )  # fmt: skip
        for server, value, oldest in rows
    ]


def _silent_server(c: Context) -> list[Finding]:
    r, at = c.rule, c.t["at"]
    out = []
    for server, last_seen, baseline in c.run(
        silent_sql(r), c.params(expected=float(r["expected"]), silent=int(r["silent_minutes"]))
    )[1]:
        last = as_utc(last_seen)
        minutes = (at - last).total_seconds() / 60
        out.append(Finding(
            r.name, r.kind, f"server={server}", round(minutes, 1), float(baseline), float(r["silent_minutes"]),
            f"{server}: no log event for {minutes:.0f} minutes (last {last:%Y-%m-%d %H:%M} UTC) while it "
            f"usually receives {baseline} messages in this hour ({baseline * minutes / 60:.0f} expected since)",
            server=server, link=_link(c.rules, {"server": server, "startdate": c.since_epoch}),
        ))  # fmt: skip
    return out


KIND_EVALUATORS = {
    "sender_burst": _sender_burst,
    "unique_recipients": _unique_recipients,
    "defer_fail_rate": _defer_fail_rate,
    "destination_deferrals": _destination_deferrals,
    "spam_score_jump": _spam_score_jump,
    "stuck_queue": _stuck_queue,
    "deferred_backlog": _deferred_backlog,
    "silent_server": _silent_server,
}


def evaluate_rule(run: Run, rules: Rules, rule: Rule, at: datetime) -> list[Finding]:
    """The findings of `rule` at `at` (timezone-aware)."""
    return KIND_EVALUATORS[rule.kind](Context(run, rules, rule, _times(at, rule)))


def evaluate(run: Run, rules: Rules, at: datetime) -> list[Finding]:
    """Every rule's findings at `at`."""
    return [f for rule in rules.rules for f in evaluate_rule(run, rules, rule, at)]


__all__ = ["Finding", "evaluate", "evaluate_rule", "hour_floor"]
