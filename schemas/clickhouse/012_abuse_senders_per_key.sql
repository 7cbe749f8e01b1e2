-- eximtrack ClickHouse schema, migration 012: abuse_senders_hourly without a GROUP BY.
--
-- Why: the view of migration 005 summed `mail_hourly_all` per (hour, server, owner, user, sender). At 1e8
-- events the last 24 hours hold ~290k outbound keys, nearly one per sender, and grouping them again cost
-- 150-200 ms of the abuse panels' 190-270 ms; the flagged-senders panel filters them and keeps a few.
--
-- Why it is the same: an outbound key of mail_hourly is (hour, server, owner, user, domain, sender, 1) with
-- sender = lower(email) and domain = the lower-cased part of the address after its last '@' (the joiner,
-- stream/join.py); addresses that lower() makes equal differ in ASCII case only, so their domains are
-- equal, and the domain is a function of the sender. Every (hour, server, owner, user, sender) group of
-- outbound rows is therefore exactly one key, and `mail_hourly_all` has one row per key (one source per
-- hour: rolled-up totals FINAL, one recorded snapshot, or the states grouped by key). The sums over one row
-- were that row: same columns, same types, same numbers. tests/views/checks.py compares the view with a
-- direct aggregation of `latest FINAL` / `events FINAL` grouped without the domain.
-- abuse_domains_hourly keeps its GROUP BY (a domain has many senders).

CREATE OR REPLACE VIEW abuse_senders_hourly AS
SELECT
    hour, server, owner, user, sender,
    messages,
    rcpt_addresses AS unique_recipients,
    rows,
    defer_or_fail_ever AS defer_fail_rows,
    round(100 * defer_fail_rows / greatest(rows, 1), 1) AS defer_fail_percent,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_unique_recipients_per_hour') AS max_unique_recipients,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_defer_fail_percent') AS max_defer_fail_percent,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_defer_fail_min_rows') AS min_defer_fail_rows,
    toUInt8(unique_recipients >= max_unique_recipients) AS over_recipients,
    toUInt8(defer_fail_rows >= min_defer_fail_rows AND defer_fail_percent >= max_defer_fail_percent) AS over_defer_fail
FROM mail_hourly_all
WHERE outbound = 1;
