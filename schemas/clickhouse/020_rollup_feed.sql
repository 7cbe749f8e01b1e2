-- eximtrack ClickHouse schema, migration 020: the hourly aggregates fed from their own insert.
--
-- Why: every insert into `events` ran the six hourly aggregates' views (mail, reasons, delays, rejections,
-- activity, spam: each an AggregatingMergeTree part and its projection) besides `latest` and its access
-- paths. Their cost is mostly fixed per insert, so the sink's small inserts under a steady stream paid it on
-- every batch of a fraction of a second: measured on a copy of a store with the busy cPanel server ingested,
-- inserts of 500 events took 244 ms (p50) with all views and 120 ms without the six, and the CPU per event
-- fell from 892 to 483 µs with the six fed by one insert of 5,000 events instead (docs/BENCHMARKS.md, session
-- 20). Freshness (an arrival searchable) needs `latest` and its access paths at once; the dashboards' hourly
-- counters can follow a few seconds later.
--
-- What: `events_rollup`, a Null table with the columns of `events` (it stores nothing: it only feeds views),
-- and the six views now read it instead of `events`, with the same SELECTs. Who inserts events inserts the
-- same rows into `events_rollup` as well (sinks/clickhouse/store.py `insert_events`, `insert_encoded`): the
-- sink gathers a few seconds of its batches into one such insert and commits its Kafka offsets only after it
-- (`eximtrack sink --rollup-seconds`, docs/GUARANTEES.md); `eximtrack ingest` inserts each batch into both.
-- A replay inserts an event into `events_rollup` again: the aggregates keep set states of ids (uniqExact), so
-- counts do not change, as before.
--
-- Upgrade in place: no data moves. A sink of an older version still running against an upgraded store would
-- insert into `events` only and the hourly counters would miss its events: upgrade every sink of a store
-- together (docs/OPERATIONS.md). Cost: nothing on disk.

CREATE TABLE IF NOT EXISTS events_rollup
(
    event_id String,
    type LowCardinality(String),
    server LowCardinality(String),
    msgid String,
    email String,
    sender String,
    user String,
    domain String,
    owner LowCardinality(String),
    senderhost String,
    senderip String,
    senderauth LowCardinality(String),
    spamscore Nullable(Float64),
    sendunixtime DateTime64(3, 'UTC'),
    size UInt64,
    subject String,
    message_id String,
    protocol LowCardinality(String),
    parent_msgid String,
    recipient String,
    deliveredto String,
    deliveryuser String,
    deliverydomain String,
    deliveryowner LowCardinality(String),
    router LowCardinality(String),
    transport LowCardinality(String),
    host String,
    ip String,
    message String,
    confirmation String,
    tls LowCardinality(String),
    queue_time Nullable(Float64),
    delivery_time Nullable(Float64),
    actionunixtime DateTime64(3, 'UTC'),
    attempts UInt32,
    frozen UInt8,
    transport_is_remote UInt8,
    version UInt64,
    is_deleted UInt8,
    schema_version UInt16
)
ENGINE = Null;

-- activity_hourly_mv: its SELECT as migration 014 left it, reading events_rollup
ALTER TABLE activity_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    uniqExactState(event_id) AS events,
    uniqExactState(server, msgid, recipient, deliveredto) AS rows,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events_rollup
WHERE is_deleted = 0
GROUP BY hour, server, type;

-- delays_hourly_mv: its SELECT as migration 019 left it, reading events_rollup
ALTER TABLE delays_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(server, msgid, recipient, deliveredto) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime))), 64) + cityHash64(server, msgid, recipient, deliveredto)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(queue_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(delivery_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events_rollup
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

-- mail_hourly_mv: its SELECT as migration 008 left it, reading events_rollup
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
FROM events_rollup
WHERE protocol != '' OR type = 'rejected'
GROUP BY hour, server, owner, user, domain, sender, outbound;

-- reasons_hourly_mv: its SELECT as migration 014 left it, reading events_rollup
ALTER TABLE reasons_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' ')), 200) AS template,
    uniqExactState(server, msgid, recipient, deliveredto, attempts) AS attempts,
    uniqExactState(server, msgid, recipient) AS recipients,
    uniqExactState(server, msgid) AS messages,
    any(message) AS example,
    count() AS inserts
FROM events_rollup
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

-- rejections_hourly_mv: its SELECT as migration 003 left it, reading events_rollup
ALTER TABLE rejections_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    senderip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' ')), 200) AS template,
    uniqExactState(event_id) AS rejections,
    uniqExactState(email) AS senders,
    uniqExactState(recipient) AS recipients,
    any(message) AS example
FROM events_rollup
WHERE type = 'rejected'
GROUP BY hour, server, senderip, template;

-- spam_hourly_mv: its SELECT as migration 016 left it, reading events_rollup
ALTER TABLE spam_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    lower(email) AS sender,
    uniqExactState(server, msgid) AS scored,
    sumDistinctState(bitShiftLeft(toUInt256(toUInt64(round((assumeNotNull(spamscore) + 1000) * 100))), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid)))) AS score_sum
FROM events_rollup
WHERE senderauth != '' AND protocol != '' AND spamscore IS NOT NULL AND type != 'rejected'
GROUP BY hour, server, owner, user, domain, sender;

