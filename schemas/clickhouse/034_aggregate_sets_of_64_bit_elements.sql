-- eximtrack ClickHouse schema, migration 034: the hourly aggregates' sets hold 64-bit elements, not 128-bit.
--
-- Why: the set states (uniqExact) of mail_hourly, activity_hourly, reasons_hourly and delays_hourly were 80 of
-- the 532 bytes per event of the 1e8 bench store (issue 11's disk limit is ~489). uniqExact keeps each
-- element of a set of strings as its 128-bit SipHash, 16 bytes that do not compress, and a row is in up to 11
-- sets of mail_hourly. A set is read only for its size, and a set holds the rows of one hour and one key (a
-- sender, a server, a reason): the chance that two of its n elements share their first 64 bits is n^2 / 2^65,
-- about 3e-10 for a set of 100,000 rows. So 64 bits keep every count as exact as the 128 did, in half the
-- bytes.
--
-- What: each set now holds UInt64 elements, the first 64 bits (little-endian) of the very hash uniqExact
-- computed for the same arguments: SipHash-128 of, per argument, its length + 1 as a UInt64, its bytes and a
-- zero byte (a UInt32 argument: its 4 bytes), or of a single string's bytes alone. The views compute it with
-- sipHash128(concat(...)) (once per row: `row_hash`, where uniqExact hashed the same row once per set). The
-- other aggregates (rejections_hourly, unclassified_hourly, spam_hourly) are small and keep their states; the
-- sums of mail_hourly.bytes and delays_hourly's quantiles are unchanged.
--
-- Upgrade in place, exact for every stored hour (also those whose events the retention has deleted): a state
-- is stored as its size and its 16-byte elements (CAST(state AS String)); each element's first 8 bytes are the
-- new element, so a row's later versions, hashed by the new views, fall on the elements its earlier versions
-- left. Per table: the new layout beside the old one (`t_next`, fed by its own view from the first step on),
-- the stored states converted into it, the two exchanged, the view's SELECT replaced, `t_next` dropped. An
-- insert while this runs (a server with its sink running) is counted by one view or both (sets: once); from
-- the exchange until the next two statements ran, an insert fails and the sink retries it. The insert counters are
-- copied, so the hourly snapshots stay valid. `--@when` lines make each step before the exchange run only
-- while the old layout is in place (a crash mid-way is resumed). The new tables get the aggregates' retention
-- from Store.open (like the data tables of 022). Time and disk: docs/BENCHMARKS.md, session (55).


-- mail_hourly: the new layout beside the old one, fed by its own view from now on
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'mail_hourly' AND name = 'rows_seen' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE TABLE IF NOT EXISTS mail_hourly_next
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    domain String,
    sender String,
    outbound UInt8,
    messages AggregateFunction(uniqExact, UInt64),
    bytes AggregateFunction(sumDistinct, UInt256),
    recipients AggregateFunction(uniqExact, UInt64),
    rcpt_addresses AggregateFunction(uniqExact, UInt64),
    rows_seen AggregateFunction(uniqExact, UInt64),
    rows_removed AggregateFunction(uniqExact, UInt64),
    rows_deferred_or_final AggregateFunction(uniqExact, UInt64),
    rows_final AggregateFunction(uniqExact, UInt64),
    rows_success AggregateFunction(uniqExact, UInt64),
    rows_filtered AggregateFunction(uniqExact, UInt64),
    rows_archive AggregateFunction(uniqExact, UInt64),
    rows_failure AggregateFunction(uniqExact, UInt64),
    rows_deferred_ever AggregateFunction(uniqExact, UInt64),
    rows_defer_or_fail_ever AggregateFunction(uniqExact, UInt64),
    defer_attempts AggregateFunction(uniqExact, UInt64),
    rejected AggregateFunction(uniqExact, UInt64),
    last_event SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    PROJECTION hour_inserts (SELECT hour, sum(inserts) GROUP BY hour)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, owner, user, domain, sender, outbound)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';

--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'mail_hourly' AND name = 'rows_seen' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE MATERIALIZED VIEW IF NOT EXISTS mail_hourly_next_mv TO mail_hourly_next AS
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    if(senderauth != '', lower(email), '') AS sender,
    toUInt8(senderauth != '') AS outbound,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0'))), type != 'rejected') AS messages,
    sumDistinctIfState(bitShiftLeft(toUInt256(size), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid))), type != 'rejected') AS bytes,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0'))), type != 'rejected' AND recipient != '') AS recipients,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(recipient)), type != 'rejected' AND recipient != '') AS rcpt_addresses,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0'))) AS row_hash, type != 'rejected') AS rows_seen,
    uniqExactIfState(row_hash, is_deleted = 1) AS rows_removed,
    uniqExactIfState(row_hash, type IN ('defer', 'success', 'filtered', 'archive', 'failure')) AS rows_deferred_or_final,
    uniqExactIfState(row_hash, type IN ('success', 'filtered', 'archive', 'failure')) AS rows_final,
    uniqExactIfState(row_hash, type = 'success') AS rows_success,
    uniqExactIfState(row_hash, type = 'filtered') AS rows_filtered,
    uniqExactIfState(row_hash, type = 'archive') AS rows_archive,
    uniqExactIfState(row_hash, type = 'failure') AS rows_failure,
    uniqExactIfState(row_hash, type = 'defer') AS rows_deferred_ever,
    uniqExactIfState(row_hash, type IN ('defer', 'failure')) AS rows_defer_or_fail_ever,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0', reinterpretAsFixedString(attempts)))), type = 'defer') AS defer_attempts,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(event_id)), type = 'rejected') AS rejected,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events_rollup
WHERE protocol != '' OR type = 'rejected'
GROUP BY hour, server, owner, user, domain, sender, outbound;

-- mail_hourly: its stored states, each element cut to its first 64 bits
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'mail_hourly' AND name = 'rows_seen' AND type != 'AggregateFunction(uniqExact, UInt64)'
INSERT INTO mail_hourly_next (hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows_seen, rows_removed, rows_deferred_or_final, rows_final, rows_success, rows_filtered, rows_archive, rows_failure, rows_deferred_ever, rows_defer_or_fail_ever, defer_attempts, rejected, last_event, inserts)
SELECT
    hour,
    server,
    owner,
    user,
    domain,
    sender,
    outbound,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(messages AS String), length(CAST(messages AS String)) - 16 * finalizeAggregation(messages) + 16 * i + 1, 8)), range(finalizeAggregation(messages)))) AS messages,
    bytes,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(recipients AS String), length(CAST(recipients AS String)) - 16 * finalizeAggregation(recipients) + 16 * i + 1, 8)), range(finalizeAggregation(recipients)))) AS recipients,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rcpt_addresses AS String), length(CAST(rcpt_addresses AS String)) - 16 * finalizeAggregation(rcpt_addresses) + 16 * i + 1, 8)), range(finalizeAggregation(rcpt_addresses)))) AS rcpt_addresses,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_seen AS String), length(CAST(rows_seen AS String)) - 16 * finalizeAggregation(rows_seen) + 16 * i + 1, 8)), range(finalizeAggregation(rows_seen)))) AS rows_seen,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_removed AS String), length(CAST(rows_removed AS String)) - 16 * finalizeAggregation(rows_removed) + 16 * i + 1, 8)), range(finalizeAggregation(rows_removed)))) AS rows_removed,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_deferred_or_final AS String), length(CAST(rows_deferred_or_final AS String)) - 16 * finalizeAggregation(rows_deferred_or_final) + 16 * i + 1, 8)), range(finalizeAggregation(rows_deferred_or_final)))) AS rows_deferred_or_final,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_final AS String), length(CAST(rows_final AS String)) - 16 * finalizeAggregation(rows_final) + 16 * i + 1, 8)), range(finalizeAggregation(rows_final)))) AS rows_final,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_success AS String), length(CAST(rows_success AS String)) - 16 * finalizeAggregation(rows_success) + 16 * i + 1, 8)), range(finalizeAggregation(rows_success)))) AS rows_success,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_filtered AS String), length(CAST(rows_filtered AS String)) - 16 * finalizeAggregation(rows_filtered) + 16 * i + 1, 8)), range(finalizeAggregation(rows_filtered)))) AS rows_filtered,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_archive AS String), length(CAST(rows_archive AS String)) - 16 * finalizeAggregation(rows_archive) + 16 * i + 1, 8)), range(finalizeAggregation(rows_archive)))) AS rows_archive,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_failure AS String), length(CAST(rows_failure AS String)) - 16 * finalizeAggregation(rows_failure) + 16 * i + 1, 8)), range(finalizeAggregation(rows_failure)))) AS rows_failure,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_deferred_ever AS String), length(CAST(rows_deferred_ever AS String)) - 16 * finalizeAggregation(rows_deferred_ever) + 16 * i + 1, 8)), range(finalizeAggregation(rows_deferred_ever)))) AS rows_deferred_ever,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows_defer_or_fail_ever AS String), length(CAST(rows_defer_or_fail_ever AS String)) - 16 * finalizeAggregation(rows_defer_or_fail_ever) + 16 * i + 1, 8)), range(finalizeAggregation(rows_defer_or_fail_ever)))) AS rows_defer_or_fail_ever,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(defer_attempts AS String), length(CAST(defer_attempts AS String)) - 16 * finalizeAggregation(defer_attempts) + 16 * i + 1, 8)), range(finalizeAggregation(defer_attempts)))) AS defer_attempts,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rejected AS String), length(CAST(rejected AS String)) - 16 * finalizeAggregation(rejected) + 16 * i + 1, 8)), range(finalizeAggregation(rejected)))) AS rejected,
    last_event,
    inserts
FROM mail_hourly;

-- mail_hourly: the layouts exchanged, its view writing the new states, the old layout dropped
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'mail_hourly' AND name = 'rows_seen' AND type != 'AggregateFunction(uniqExact, UInt64)'
EXCHANGE TABLES mail_hourly AND mail_hourly_next;

ALTER TABLE mail_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    if(senderauth != '', lower(email), '') AS sender,
    toUInt8(senderauth != '') AS outbound,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0'))), type != 'rejected') AS messages,
    sumDistinctIfState(bitShiftLeft(toUInt256(size), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid))), type != 'rejected') AS bytes,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0'))), type != 'rejected' AND recipient != '') AS recipients,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(recipient)), type != 'rejected' AND recipient != '') AS rcpt_addresses,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0'))) AS row_hash, type != 'rejected') AS rows_seen,
    uniqExactIfState(row_hash, is_deleted = 1) AS rows_removed,
    uniqExactIfState(row_hash, type IN ('defer', 'success', 'filtered', 'archive', 'failure')) AS rows_deferred_or_final,
    uniqExactIfState(row_hash, type IN ('success', 'filtered', 'archive', 'failure')) AS rows_final,
    uniqExactIfState(row_hash, type = 'success') AS rows_success,
    uniqExactIfState(row_hash, type = 'filtered') AS rows_filtered,
    uniqExactIfState(row_hash, type = 'archive') AS rows_archive,
    uniqExactIfState(row_hash, type = 'failure') AS rows_failure,
    uniqExactIfState(row_hash, type = 'defer') AS rows_deferred_ever,
    uniqExactIfState(row_hash, type IN ('defer', 'failure')) AS rows_defer_or_fail_ever,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0', reinterpretAsFixedString(attempts)))), type = 'defer') AS defer_attempts,
    uniqExactIfState(reinterpretAsUInt64(sipHash128(event_id)), type = 'rejected') AS rejected,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events_rollup
WHERE protocol != '' OR type = 'rejected'
GROUP BY hour, server, owner, user, domain, sender, outbound;

DROP VIEW IF EXISTS mail_hourly_next_mv;

DROP TABLE IF EXISTS mail_hourly_next;

-- activity_hourly: the new layout beside the old one, fed by its own view from now on
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'activity_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE TABLE IF NOT EXISTS activity_hourly_next
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    type LowCardinality(String),
    events AggregateFunction(uniqExact, UInt64),
    rows AggregateFunction(uniqExact, UInt64),
    last_event SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    PROJECTION hour_inserts (SELECT hour, sum(inserts) GROUP BY hour)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, type)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';

--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'activity_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE MATERIALIZED VIEW IF NOT EXISTS activity_hourly_next_mv TO activity_hourly_next AS
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    uniqExactState(reinterpretAsUInt64(sipHash128(event_id))) AS events,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events_rollup
WHERE is_deleted = 0
GROUP BY hour, server, type;

-- activity_hourly: its stored states, each element cut to its first 64 bits
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'activity_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
INSERT INTO activity_hourly_next (hour, server, type, events, rows, last_event, inserts)
SELECT
    hour,
    server,
    type,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(events AS String), length(CAST(events AS String)) - 16 * finalizeAggregation(events) + 16 * i + 1, 8)), range(finalizeAggregation(events)))) AS events,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows AS String), length(CAST(rows AS String)) - 16 * finalizeAggregation(rows) + 16 * i + 1, 8)), range(finalizeAggregation(rows)))) AS rows,
    last_event,
    inserts
FROM activity_hourly;

-- activity_hourly: the layouts exchanged, its view writing the new states, the old layout dropped
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'activity_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
EXCHANGE TABLES activity_hourly AND activity_hourly_next;

ALTER TABLE activity_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    uniqExactState(reinterpretAsUInt64(sipHash128(event_id))) AS events,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events_rollup
WHERE is_deleted = 0
GROUP BY hour, server, type;

DROP VIEW IF EXISTS activity_hourly_next_mv;

DROP TABLE IF EXISTS activity_hourly_next;

-- reasons_hourly: the new layout beside the old one, fed by its own view from now on
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'reasons_hourly' AND name = 'attempts' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE TABLE IF NOT EXISTS reasons_hourly_next
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    type LowCardinality(String),
    deliverydomain String,
    host String,
    ip String,
    template String,
    attempts AggregateFunction(uniqExact, UInt64),
    recipients AggregateFunction(uniqExact, UInt64),
    messages AggregateFunction(uniqExact, UInt64),
    example SimpleAggregateFunction(any, String),
    inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    PROJECTION hour_inserts (SELECT hour, sum(inserts) GROUP BY hour)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, type, deliverydomain, host, ip, template)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';

--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'reasons_hourly' AND name = 'attempts' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE MATERIALIZED VIEW IF NOT EXISTS reasons_hourly_next_mv TO reasons_hourly_next AS
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200) AS template,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0', reinterpretAsFixedString(attempts))))) AS attempts,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0')))) AS recipients,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0')))) AS messages,
    any(message) AS example,
    count() AS inserts
FROM events_rollup
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

-- reasons_hourly: its stored states, each element cut to its first 64 bits
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'reasons_hourly' AND name = 'attempts' AND type != 'AggregateFunction(uniqExact, UInt64)'
INSERT INTO reasons_hourly_next (hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages, example, inserts)
SELECT
    hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    template,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(attempts AS String), length(CAST(attempts AS String)) - 16 * finalizeAggregation(attempts) + 16 * i + 1, 8)), range(finalizeAggregation(attempts)))) AS attempts,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(recipients AS String), length(CAST(recipients AS String)) - 16 * finalizeAggregation(recipients) + 16 * i + 1, 8)), range(finalizeAggregation(recipients)))) AS recipients,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(messages AS String), length(CAST(messages AS String)) - 16 * finalizeAggregation(messages) + 16 * i + 1, 8)), range(finalizeAggregation(messages)))) AS messages,
    example,
    inserts
FROM reasons_hourly;

-- reasons_hourly: the layouts exchanged, its view writing the new states, the old layout dropped
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'reasons_hourly' AND name = 'attempts' AND type != 'AggregateFunction(uniqExact, UInt64)'
EXCHANGE TABLES reasons_hourly AND reasons_hourly_next;

ALTER TABLE reasons_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200) AS template,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0', reinterpretAsFixedString(attempts))))) AS attempts,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0')))) AS recipients,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0')))) AS messages,
    any(message) AS example,
    count() AS inserts
FROM events_rollup
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

DROP VIEW IF EXISTS reasons_hourly_next_mv;

DROP TABLE IF EXISTS reasons_hourly_next;

-- delays_hourly: the new layout beside the old one, fed by its own view from now on
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE TABLE IF NOT EXISTS delays_hourly_next
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    deliverydomain String,
    type LowCardinality(String),
    transport_is_remote UInt8,
    rows AggregateFunction(uniqExact, UInt64),
    delay_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt128),
    queue_time_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt128),
    delivery_time_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt128),
    max_delay_ms SimpleAggregateFunction(max, Int64),
    inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    PROJECTION hour_inserts (SELECT hour, sum(inserts) GROUP BY hour)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, deliverydomain, type, transport_is_remote)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';

--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
CREATE MATERIALIZED VIEW IF NOT EXISTS delays_hourly_next_mv TO delays_hourly_next AS
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime))), 64) + cityHash64(server, msgid, recipient, deliveredto)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(queue_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(delivery_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events_rollup
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

-- delays_hourly: its stored states, each element cut to its first 64 bits
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
INSERT INTO delays_hourly_next (hour, server, deliverydomain, type, transport_is_remote, rows, delay_ms, queue_time_ms, delivery_time_ms, max_delay_ms, inserts)
SELECT
    hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    arrayReduce('uniqExactState', arrayMap(i -> reinterpretAsUInt64(substring(CAST(rows AS String), length(CAST(rows AS String)) - 16 * finalizeAggregation(rows) + 16 * i + 1, 8)), range(finalizeAggregation(rows)))) AS rows,
    delay_ms,
    queue_time_ms,
    delivery_time_ms,
    max_delay_ms,
    inserts
FROM delays_hourly;

-- delays_hourly: the layouts exchanged, its view writing the new states, the old layout dropped
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'rows' AND type != 'AggregateFunction(uniqExact, UInt64)'
EXCHANGE TABLES delays_hourly AND delays_hourly_next;

ALTER TABLE delays_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime))), 64) + cityHash64(server, msgid, recipient, deliveredto)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(queue_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(delivery_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events_rollup
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

DROP VIEW IF EXISTS delays_hourly_next_mv;

DROP TABLE IF EXISTS delays_hourly_next;
