-- eximtrack ClickHouse schema, migration 013: daily snapshots of the hourly mail counters, so that stats
-- over weeks read one row per (day, key) instead of one per (hour, sender).
--
-- Why: `eximtrack stats` and `/api/v1/stats` over 30 days read every hourly snapshot row of the range
-- (migration 008): at 1e8 events 14.6M rows, one per (hour, server, owner, user, domain, sender), and took
-- 1.5-3 s grouped by user or domain. A day of a key is one row here; at the generator's shape most keys
-- mail about once a day (inbound sender domains above all), so the table itself is hardly smaller than the
-- hourly one: its projections per (day, server), (day, user) and (day, domain) are what the reads use
-- (30 days at 1e8: 30 x servers, 2.1M and 6.2M rows instead of 14.6M).
--
-- How (eximtrack/stats_snapshots.py `refresh`, after the hourly snapshots):
--   * a day is snapshotted when EVERY hour of it that has mail has a recorded hourly snapshot at the hour's
--     current insert counter (sum(mail_hourly.inserts)), from the rollup horizon on. The day's rows are the
--     sums of exactly those hourly snapshots (pinned by (hour, seen, writer)) per (day, server, owner, user,
--     domain, outbound); `seen` is the sum of the hours' counters and `writer` a random id; the rows are
--     written first, then (day, seen, writer, keys) is recorded in `mail_daily_snap_days`.
--   * a read (eximtrack/hourly_read.py) uses the day's snapshot only while its `seen` equals the current
--     sum of the day's hour counters. Counters never shrink, so equal sums mean every hour is still at the
--     counter its hourly snapshot was taken at: the day's numbers are the sums of the hours' current
--     numbers. Any insert touching the day makes it read hour by hour again, as before: exact.
--   * the day grain drops `sender` and the hour: a request grouped or filtered by either, or asking for
--     `rcpt_addresses` (distinct addresses, not summable over hours), reads the hours as before.
-- Cost: one row per (day, key) and one per (day, writer); see docs/BENCHMARKS.md.

CREATE TABLE IF NOT EXISTS mail_daily_snap
(
    day Date,
    seen UInt64,
    writer UInt64,
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    domain String,
    outbound UInt8,
    messages UInt64,
    bytes UInt64,
    recipients UInt64,
    rows Int64,
    inprogress Int64,
    deferred Int64,
    success UInt64,
    filtered UInt64,
    archive UInt64,
    failure UInt64,
    rejected UInt64,
    deferred_ever UInt64,
    defer_or_fail_ever UInt64,
    defer_attempts UInt64,
    last_event DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, seen, writer, server, owner, user, domain, outbound)
TTL day + toIntervalDay(730)
SETTINGS lightweight_mutation_projection_mode = 'rebuild';

CREATE TABLE IF NOT EXISTS mail_daily_snap_days
(
    day Date,
    seen UInt64,
    writer UInt64,
    keys UInt64,
    taken_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (day, seen, writer)
TTL day + toIntervalDay(730);

ALTER TABLE mail_daily_snap ADD PROJECTION IF NOT EXISTS by_day (SELECT day, seen, writer, outbound, sum(messages), sum(bytes), sum(recipients), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY day, seen, writer, outbound);

ALTER TABLE mail_daily_snap ADD PROJECTION IF NOT EXISTS by_server (SELECT day, seen, writer, server, outbound, sum(messages), sum(bytes), sum(recipients), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY day, seen, writer, server, outbound);

ALTER TABLE mail_daily_snap ADD PROJECTION IF NOT EXISTS by_user (SELECT day, seen, writer, user, outbound, sum(messages), sum(bytes), sum(recipients), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY day, seen, writer, user, outbound);

ALTER TABLE mail_daily_snap ADD PROJECTION IF NOT EXISTS by_domain (SELECT day, seen, writer, domain, outbound, sum(messages), sum(bytes), sum(recipients), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY day, seen, writer, domain, outbound);
