"""Each aggregated view next to a direct aggregation over `latest FINAL` / `events FINAL` (the oracle).

`mismatches(store)` runs every pair and returns the differences (empty = the views agree exactly).
The oracles do not read the aggregate tables; where they can, they use the current state of each row
(`latest FINAL`), which is what the views must reproduce from monotone sets of events.
"""

from __future__ import annotations

from eximtrack.reasons import sql_expression

TEMPLATE = sql_expression("message", "deliverydomain")  # a deferral's or failure's (migration 028)
REJECTION_TEMPLATE = sql_expression("message")  # a rejection has no delivery domain
HOUR_ARRIVAL = "toStartOfHour(toDateTime(sendunixtime, 'UTC'))"
HOUR_ACTION = "toStartOfHour(toDateTime(actionunixtime, 'UTC'))"
MAIL_KEY = "hour, server, owner, user, domain, sender, outbound"
MAIL_DIMS = f"""{HOUR_ARRIVAL} AS hour, server, owner, user, domain,
    if(senderauth != '', lower(email), '') AS sender, toUInt8(senderauth != '') AS outbound"""
ROW = "(server, msgid, recipient, deliveredto)"

PAIRS: dict[str, tuple[str, str]] = {
    # current state per row, bucketed by arrival hour and sender: latest FINAL
    "mail_hourly.state": (
        f"""SELECT {MAIL_KEY}, messages, bytes, recipients, rcpt_addresses, rows, inprogress, deferred,
               success, filtered, archive, failure, rejected
            FROM mail_hourly_v""",
        f"""SELECT {MAIL_DIMS},
               uniqExactIf((server, msgid), type != 'rejected') AS messages,
               toUInt64(arraySum(arrayMap(x -> x.3, groupUniqArrayIf((server, msgid, size), type != 'rejected'))))
                   AS bytes,
               uniqExactIf((server, msgid, recipient), type != 'rejected' AND recipient != '') AS recipients,
               uniqExactIf(recipient, type != 'rejected' AND recipient != '') AS rcpt_addresses,
               countIf(type != 'rejected') AS rows,
               countIf(type = 'inprogress') AS inprogress, countIf(type = 'defer') AS deferred,
               countIf(type = 'success') AS success, countIf(type = 'filtered') AS filtered,
               countIf(type = 'archive') AS archive, countIf(type = 'failure') AS failure,
               countIf(type = 'rejected') AS rejected
            FROM latest FINAL
            WHERE protocol != '' OR type = 'rejected'
            GROUP BY {MAIL_KEY}""",
    ),
    # history counters: events FINAL (each event id once, highest version)
    "mail_hourly.history": (
        f"SELECT {MAIL_KEY}, deferred_ever, defer_or_fail_ever, defer_attempts, last_event FROM mail_hourly_v",
        f"""SELECT {MAIL_DIMS},
               uniqExactIf({ROW}, type = 'defer') AS deferred_ever,
               uniqExactIf({ROW}, type IN ('defer', 'failure')) AS defer_or_fail_ever,
               uniqExactIf((server, msgid, recipient, deliveredto, attempts), type = 'defer') AS defer_attempts,
               max(actionunixtime) AS last_event
            FROM events FINAL
            WHERE protocol != '' OR type = 'rejected'
            GROUP BY {MAIL_KEY}""",
    ),
    # the union of rolled-up totals and recent states that stats, panels and abuse views read
    "mail_hourly_all.state": (
        f"""SELECT {MAIL_KEY}, messages, bytes, recipients, rcpt_addresses, rows, inprogress, deferred,
               success, filtered, archive, failure, rejected
            FROM mail_hourly_all""",
        None,  # same oracle as mail_hourly.state
    ),
    "mail_hourly_all.history": (
        f"SELECT {MAIL_KEY}, deferred_ever, defer_or_fail_ever, defer_attempts, last_event FROM mail_hourly_all",
        None,  # same oracle as mail_hourly.history
    ),
    "reasons_hourly": (
        """SELECT hour, server, type, deliverydomain, host, ip, template, uniqExactMerge(attempts),
               uniqExactMerge(recipients), uniqExactMerge(messages)
            FROM reasons_hourly GROUP BY hour, server, type, deliverydomain, host, ip, template""",
        f"""SELECT {HOUR_ACTION} AS hour, server, type, deliverydomain, host, ip, {TEMPLATE} AS template,
               uniqExact(server, msgid, recipient, deliveredto, attempts), uniqExact(server, msgid, recipient),
               uniqExact(server, msgid)
            FROM events FINAL WHERE type IN ('defer', 'failure') AND is_deleted = 0
            GROUP BY hour, server, type, deliverydomain, host, ip, template""",
    ),
    # quantiles of each final row's delay, straight from latest FINAL (quantileExact on plain milliseconds)
    "delays_hourly": (
        """SELECT hour, server, deliverydomain, type, transport_is_remote, uniqExactMerge(rows),
               arrayMap(v -> toInt64(bitShiftRight(v, 32)), quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delay_ms)),
               arrayMap(v -> toInt64(bitShiftRight(v, 32)),
                        quantilesExactDistinctMerge(0.5, 0.9, 0.99)(queue_time_ms)),
               arrayMap(v -> toInt64(bitShiftRight(v, 32)),
                        quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delivery_time_ms)),
               max(max_delay_ms)
            FROM delays_hourly GROUP BY hour, server, deliverydomain, type, transport_is_remote""",
        f"""SELECT {HOUR_ACTION} AS hour, server, deliverydomain, type, transport_is_remote, count(),
               arrayMap(v -> toInt64(v), quantilesExact(0.5, 0.9, 0.99)(
                   greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime)))),
               arrayMap(v -> toInt64(v), quantilesExactIf(0.5, 0.9, 0.99)(
                   greatest(0, round(ifNull(queue_time, 0) * 1000)), isNotNull(queue_time))),
               arrayMap(v -> toInt64(v), quantilesExactIf(0.5, 0.9, 0.99)(
                   greatest(0, round(ifNull(delivery_time, 0) * 1000)), isNotNull(delivery_time))),
               max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime)))
            FROM latest FINAL WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != ''
            GROUP BY hour, server, deliverydomain, type, transport_is_remote""",
    ),
    "rejections_hourly": (
        """SELECT hour, server, senderip, template, uniqExactMerge(rejections), uniqExactMerge(senders),
               uniqExactMerge(recipients)
            FROM rejections_hourly GROUP BY hour, server, senderip, template""",
        f"""SELECT {HOUR_ACTION} AS hour, server, senderip, {REJECTION_TEMPLATE} AS template, count(), uniqExact(email),
               uniqExact(recipient)
            FROM latest FINAL WHERE type = 'rejected' GROUP BY hour, server, senderip, template""",
    ),
    "activity_hourly": (
        """SELECT hour, server, type, uniqExactMerge(events), uniqExactMerge(rows), max(last_event)
            FROM activity_hourly GROUP BY hour, server, type""",
        f"""SELECT {HOUR_ACTION} AS hour, server, type, uniqExact(event_id), uniqExact{ROW},
               max(actionunixtime)
            FROM events FINAL WHERE is_deleted = 0 GROUP BY hour, server, type""",
    ),
    "unclassified_hourly": (
        "SELECT hour, server, reason, uniqExactMerge(lines) FROM unclassified_hourly GROUP BY ALL",
        """SELECT toStartOfHour(toDateTime(logunixtime, 'UTC')) AS hour, server, reason, count()
            FROM rejects FINAL GROUP BY ALL""",
    ),
}


# abuse_senders_hourly (migration 012: one outbound key per sender, no GROUP BY), grouped here WITHOUT the
# domain, so a sender spread over two keys would show up as a difference
ABUSE_KEY = "hour, server, owner, user, sender"
ABUSE_DIMS = f"{HOUR_ARRIVAL} AS hour, server, owner, user, lower(email) AS sender"
PAIRS["abuse_senders_hourly.state"] = (
    f"SELECT {ABUSE_KEY}, messages, unique_recipients, rows FROM abuse_senders_hourly",
    f"""SELECT {ABUSE_KEY}, messages, unique_recipients, rows FROM (
        SELECT {ABUSE_DIMS},
               uniqExact((server, msgid)) AS messages,
               uniqExactIf(recipient, recipient != '') AS unique_recipients,
               count() AS rows
        FROM latest FINAL
        WHERE protocol != '' AND type != 'rejected' AND senderauth != ''
        GROUP BY {ABUSE_KEY})""",
)
PAIRS["abuse_senders_hourly.history"] = (
    f"""SELECT {ABUSE_KEY}, defer_fail_rows FROM abuse_senders_hourly""",
    f"""SELECT {ABUSE_KEY}, defer_fail_rows FROM (
        SELECT {ABUSE_DIMS}, uniqExactIf({ROW}, type IN ('defer', 'failure')) AS defer_fail_rows
        FROM events FINAL
        WHERE protocol != '' AND type != 'rejected' AND senderauth != ''
        GROUP BY {ABUSE_KEY})""",
)
PAIRS["mail_hourly_all.state"] = (PAIRS["mail_hourly_all.state"][0], PAIRS["mail_hourly.state"][1])
PAIRS["mail_hourly_all.history"] = (PAIRS["mail_hourly_all.history"][0], PAIRS["mail_hourly.history"][1])
ROLLUP_PAIRS = (
    "mail_hourly_all.state",
    "mail_hourly_all.history",
    "abuse_senders_hourly.state",
    "abuse_senders_hourly.history",
)

# the event-hour tables read through their snapshots (migration 014): per key as their states, and the
# numbers the panels add up over keys and hours equal to one distinct count over the whole range
ACTIVITY_KEY = "hour, server, type"
REASONS_KEY = "hour, server, type, deliverydomain, host, ip, template"
PAIRS["activity_hourly_all"] = (
    f"SELECT {ACTIVITY_KEY}, events, rows, last_event FROM activity_hourly_all",
    PAIRS["activity_hourly"][1],
)
PAIRS["reasons_hourly_all"] = (
    f"SELECT {REASONS_KEY}, attempts, recipients, messages FROM reasons_hourly_all",
    PAIRS["reasons_hourly"][1],
)
PAIRS["activity_hourly_all.events_summed"] = (
    "SELECT type, sum(events) FROM activity_hourly_all GROUP BY type",
    "SELECT type, uniqExact(event_id) FROM events FINAL WHERE is_deleted = 0 GROUP BY type",
)
ATTEMPT = "(server, msgid, recipient, deliveredto, attempts)"
for column, expr in (("template", TEMPLATE), ("deliverydomain", "deliverydomain")):
    PAIRS[f"reasons_hourly_all.attempts_summed_by_{column}"] = (
        f"SELECT type, {column}, sum(attempts) FROM reasons_hourly_all GROUP BY type, {column}",
        f"""SELECT type, {expr} AS {column}, uniqExact{ATTEMPT} FROM events FINAL
            WHERE type IN ('defer', 'failure') AND is_deleted = 0 GROUP BY type, {column}""",
    )
# the fleet's delivery delays read through their snapshots (migration 019), at their own grain
PAIRS["delays_fleet_all"] = (
    """SELECT hour, type, transport_is_remote, rows, arrayMap(s -> toInt64(round(s * 1000)), delay_seconds),
           max_delay_ms FROM delays_fleet_all""",
    f"""SELECT {HOUR_ACTION} AS hour, type, transport_is_remote, count(),
           arrayMap(v -> toInt64(v), quantilesExact(0.5, 0.9, 0.99)(
               greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime)))),
           max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime)))
        FROM latest FINAL WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != ''
        GROUP BY hour, type, transport_is_remote""",
)
SNAPSHOT_PAIRS = ROLLUP_PAIRS + tuple(
    n for n in PAIRS if n.startswith(("activity_hourly_all", "reasons_hourly_all", "delays_fleet_all"))
)


def rows(store, sql: str) -> list[tuple]:
    return sorted(tuple(_plain(v) for v in r) for r in store.query(sql).result_rows)


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def mismatches(store, only=None) -> dict[str, dict]:
    """{pair name: {"view_only": […], "direct_only": […]}} for every pair (or those in `only`) that differs."""
    out = {}
    for name, (view_sql, direct_sql) in PAIRS.items():
        if only is not None and name not in only:
            continue
        got, want = rows(store, view_sql), rows(store, direct_sql)
        if got != want:
            got_set, want_set = set(got), set(want)
            out[name] = {
                "view_only": sorted(got_set - want_set)[:5],
                "direct_only": sorted(want_set - got_set)[:5],
            }
    return out


def totals(store) -> dict:
    """A few fleet totals (to show that a duplicate insert changed nothing)."""
    r = store.query_dicts(
        """SELECT sum(messages) AS messages, sum(bytes) AS bytes, sum(rows) AS rows, sum(success) AS success,
                  sum(failure) AS failure, sum(deferred) AS deferred, sum(inprogress) AS inprogress,
                  sum(rejected) AS rejected, sum(defer_attempts) AS defer_attempts
           FROM mail_hourly_all"""
    )
    return r[0]
