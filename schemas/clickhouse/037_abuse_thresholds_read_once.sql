-- eximtrack ClickHouse schema, migration 037: abuse_senders_hourly reads its three thresholds in one
-- subquery.
--
-- Why: the view of migration 012 read each threshold of `abuse_thresholds` with a scalar subquery of its
-- own, and chDB plans and runs every scalar subquery of a statement before its data (2-6 ms each on 2
-- cores: docs/BENCHMARKS.md). At 1e8 events the flagged-senders panel took 49.6 ms p50 with the three, 43.8
-- with one (docs/BENCHMARKS.md, session (56)).
--
-- Why it is the same: one subquery over `abuse_thresholds FINAL` (one row per name) takes each threshold
-- as `anyIf(toNullable(value), name = ...)`: the value of that name's row, or NULL when there is none, as
-- the scalar subquery of an absent name was. The columns, their names, order and types are unchanged
-- (tests/views/test_report.py compares the flags with the thresholds).

CREATE OR REPLACE VIEW abuse_senders_hourly AS
WITH (
    SELECT (
        anyIf(toNullable(value), name = 'sender_unique_recipients_per_hour'),
        anyIf(toNullable(value), name = 'sender_defer_fail_percent'),
        anyIf(toNullable(value), name = 'sender_defer_fail_min_rows'))
    FROM abuse_thresholds FINAL
) AS thresholds
SELECT
    hour, server, owner, user, sender,
    messages,
    rcpt_addresses AS unique_recipients,
    rows,
    defer_or_fail_ever AS defer_fail_rows,
    round(100 * defer_fail_rows / greatest(rows, 1), 1) AS defer_fail_percent,
    thresholds.1 AS max_unique_recipients,
    thresholds.2 AS max_defer_fail_percent,
    thresholds.3 AS min_defer_fail_rows,
    toUInt8(unique_recipients >= max_unique_recipients) AS over_recipients,
    toUInt8(defer_fail_rows >= min_defer_fail_rows AND defer_fail_percent >= max_defer_fail_percent) AS over_defer_fail
FROM mail_hourly_all
WHERE outbound = 1;
