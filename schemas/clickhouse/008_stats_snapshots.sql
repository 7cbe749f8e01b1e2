-- eximtrack ClickHouse schema, migration 008: hourly snapshots of mail_hourly, so that stats, dashboards and
-- abuse views read plain numbers instead of merging set states.
--
-- Why: `mail_hourly_all` read the set states of every hour after the rollup horizon (16 days by default)
-- and merged them at query time: `eximtrack stats` over 30 days took 6-17 s at 1e7 events (merging
-- uniqExact states costs as much as scanning latest FINAL). The states are needed only to stay exact while
-- an hour can still change; the finalised numbers of an hour can be kept as long as nothing new arrived
-- for it.
--
-- How:
--   * `mail_hourly.inserts` counts the events every insert added to a key (count() in the view), so
--     sum(inserts) of an hour GROWS WITH EVERY INSERT that touches the hour, duplicates and replays
--     included, and never shrinks on merges. The projection `hour_inserts` keeps that sum per hour small
--     enough to read for all hours in a few milliseconds; it lives in the same parts as the states, so a
--     read of it is consistent with a read of the states.
--   * `eximtrack/stats_snapshots.py` (run by the sink every 30 s, by `ingest` at its end and by
--     `eximtrack rollup`) finds the hours whose sum(inserts) has no recorded snapshot and writes, for each,
--     the finalised numbers of mail_hourly_v together with the sum they were computed at (`seen`, a window
--     over the SAME read, so numbers and sum describe one set of parts) and a random `writer` id into
--     `mail_hourly_snap`, then records (hour, seen, writer, keys) in `mail_hourly_snap_hours` (rows first,
--     so a recorded snapshot is complete).
--   * `mail_hourly_all` reads, for each hour from the horizon on, the recorded snapshot whose `seen` equals
--     the hour's current sum(inserts) ("clean"; of several writers of that snapshot, the smallest id, so
--     concurrent refreshers never double a key), and merges the states of the other hours ("dirty":
--     something arrived after the last snapshot) as before. Clean and dirty are decided once per query, by
--     one scalar subquery that both branches use (ClickHouse evaluates a scalar subquery once per query),
--     so an hour is read from exactly one branch. Any insert after a snapshot makes its hour dirty: exact,
--     as before. Rows never recorded (a refresh stopped half-way) are never read.
--   * Snapshots other than the one read (superseded, duplicate writers, unrecorded) stay until the refresh
--     deletes them, 10 minutes after the one read was recorded (a running query may still use them).
-- Rows keep the meaning of mail_hourly_v; the rollup (005) still serves the hours before its horizon.
-- Cost: mail_hourly_snap holds ~100 bytes per (hour, key) like mail_hourly_totals; see docs/BENCHMARKS.md.

ALTER TABLE mail_hourly ADD COLUMN IF NOT EXISTS inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0;

ALTER TABLE mail_hourly MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE mail_hourly ADD PROJECTION IF NOT EXISTS hour_inserts (SELECT hour, sum(inserts) GROUP BY hour);

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'mail_hourly' AND active
ALTER TABLE mail_hourly MATERIALIZE PROJECTION hour_inserts SETTINGS mutations_sync = 1;

ALTER TABLE mail_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    if(senderauth != '', lower(email), '') AS sender,
    toUInt8(senderauth != '') AS outbound,
    uniqExactIfState(server, msgid, type != 'rejected') AS messages,
    sumDistinctIfState(bitShiftLeft(toUInt256(size), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid))), type != 'rejected') AS bytes,
    uniqExactIfState(server, msgid, recipient, type != 'rejected' AND recipient != '') AS recipients,
    uniqExactIfState(recipient, type != 'rejected' AND recipient != '') AS rcpt_addresses,
    uniqExactIfState(server, msgid, recipient, deliveredto, type != 'rejected') AS rows_seen,
    uniqExactIfState(server, msgid, recipient, deliveredto, is_deleted = 1) AS rows_removed,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('defer', 'success', 'filtered', 'archive', 'failure')) AS rows_deferred_or_final,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('success', 'filtered', 'archive', 'failure')) AS rows_final,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'success') AS rows_success,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'filtered') AS rows_filtered,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'archive') AS rows_archive,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'failure') AS rows_failure,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'defer') AS rows_deferred_ever,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('defer', 'failure')) AS rows_defer_or_fail_ever,
    uniqExactIfState(server, msgid, recipient, deliveredto, attempts, type = 'defer') AS defer_attempts,
    uniqExactIfState(event_id, type = 'rejected') AS rejected,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events
WHERE protocol != '' OR type = 'rejected'
GROUP BY hour, server, owner, user, domain, sender, outbound;

CREATE OR REPLACE VIEW mail_hourly_v AS
SELECT
    hour, server, owner, user, domain, sender, outbound,
    uniqExactMerge(messages) AS messages,
    toUInt64(bitShiftRight(sumDistinctMerge(bytes), 192)) AS bytes,
    uniqExactMerge(recipients) AS recipients,
    uniqExactMerge(rcpt_addresses) AS rcpt_addresses,
    uniqExactMerge(rows_seen) - uniqExactMerge(rows_removed) AS rows,
    uniqExactMerge(rows_seen) - uniqExactMerge(rows_deferred_or_final) - uniqExactMerge(rows_removed) AS inprogress,
    uniqExactMerge(rows_deferred_or_final) - uniqExactMerge(rows_final) AS deferred,
    uniqExactMerge(rows_success) AS success,
    uniqExactMerge(rows_filtered) AS filtered,
    uniqExactMerge(rows_archive) AS archive,
    uniqExactMerge(rows_failure) AS failure,
    uniqExactMerge(rejected) AS rejected,
    uniqExactMerge(rows_deferred_ever) AS deferred_ever,
    uniqExactMerge(rows_defer_or_fail_ever) AS defer_or_fail_ever,
    uniqExactMerge(defer_attempts) AS defer_attempts,
    max(last_event) AS last_event,
    sum(inserts) AS inserts
FROM mail_hourly
GROUP BY hour, server, owner, user, domain, sender, outbound;

CREATE TABLE IF NOT EXISTS mail_hourly_snap
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    domain String,
    sender String,
    outbound UInt8,
    messages UInt64,
    bytes UInt64,
    recipients UInt64,
    rcpt_addresses UInt64,
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
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, seen, writer, server, owner, user, domain, sender, outbound)
TTL hour + toIntervalDay(730);

CREATE TABLE IF NOT EXISTS mail_hourly_snap_hours
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    keys UInt64,
    taken_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (hour, seen, writer)
TTL hour + toIntervalDay(730);

CREATE OR REPLACE VIEW mail_hourly_all AS
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, last_event
FROM mail_hourly_totals FINAL
WHERE hour < (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
UNION ALL
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, last_event
FROM mail_hourly_snap
WHERE hour >= (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
    AND (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM mail_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, toDateTime64(last_event, 3, 'UTC') AS last_event
FROM mail_hourly_v
WHERE hour >= (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
    AND hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM mail_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0);
