-- eximtrack ClickHouse schema, migration 007: read paths whose cost depends on what a search returns.
--
-- Before: every search read `latest FINAL` sorted by (server, msgid) with skip indexes; FINAL's exact mode
-- widened every selected granule to all overlapping ones, so a search read most of the table (seconds at
-- 1e8 events). Now a search is two steps (eximtrack/search_plan.py; docs/ARCHITECTURE.md "Read path"):
--
--   1. CANDIDATES from a narrow, append-only access-path table, read newest first with an early exit:
--        search_keys  (field, value, ts, server, msgid)  one row per distinct searchable value of a message
--                     or recipient row: recipient, deliveredto, email, sender, domain, user, owner,
--                     deliveryuser, deliveryowner, message_id, senderip, parent_msgid (lower-case values;
--                     empty values skipped; deliveredto only when it differs from the recipient, sender
--                     only when it differs from email: the planner reads those fields together).
--        search_time  (ts, server, msgid, type, text)  one row per distinct (version time, type, text) of a
--                     row, in time order, with a text index on `text` = lower(all searchable columns).
--      `ts` is the version's sendunixtime (the sort column). Every version of a row that is not a tombstone
--      gets its rows, so the index holds a row for every state a filter can match: a SUPERSET.
--      The views keep one row per distinct index row of each inserted block (DISTINCT): the versions and
--      recipients of a message in one insert write their message-level values once.
--   2. FETCH the latest state of those messages from `latest FINAL` by primary key and apply every filter
--      again there: the verdict always comes from the latest row, so stale index rows cost a little
--      reading and never change a result. Only rows up to the last candidate in sort order are final;
--      the planner pages on (see search_plan.py for why that is exact).
--
-- `latest` is re-laid out for step 2: ORDER BY (msgtime, server, msgid, recipient, deliveredto), monthly
-- partitions on msgtime, 256-row granules in compact parts (all columns of a granule stored together: a
-- point fetch of one message reads one small region instead of one compressed block per column; measured on
-- 78 scattered messages: 1.0 s with wide 1,024-row parts, 0.4 s with wide 256-row parts and small blocks,
-- 0.19 s compact, for +21 % disk on this table). msgtime is the arrival second Exim encodes in the first six
-- base-62 digits of every message id (the same decoding as stream.clock.msgid_time; synthetic `rej-…` ids of
-- SMTP-time rejections, which have one event, use sendunixtime). It never changes for a row, so versions of
-- a row always meet in one partition (FINAL stays exact with do_not_merge_across_partitions_select_final),
-- and a message's rows sit together in a small time slice: a point fetch reads a few small granules.
-- Nothing relies on CLEANUP merges (a replayed old version can never come back), nor on skip indexes under
-- FINAL.
--
-- Upgrade in place: the new layout is built beside the old table and filled from it (every stored version,
-- so FINAL shows exactly what it showed), both fed by events while that runs; then the tables are
-- exchanged (latest_mv inserts by name, so it feeds the new layout from then on) and the old layout is
-- dropped. `--@when` lines make each step run only when it is still needed (a crash mid-way is resumed).
-- The access-path tables are then backfilled from the stored rows. `eximtrack rebuild-search-index`
-- (eximtrack/search_index.py) truncates and refills them.
-- Cost (bench/queries.py at 1e7 events, docs/BENCHMARKS.md): search_keys 44.9 and search_time 55.5 bytes per
-- event, `latest` 116.0 -> 88.9 (total 324.8 -> 398.0); inserts are slower (ingest ~9 %). The skip
-- indexes of 002 and 006 are not rebuilt on the new layout (the access paths replace them).

--@when SELECT count() = 0 FROM system.columns WHERE database = currentDatabase() AND table = 'latest' AND name = 'msgtime'
CREATE TABLE IF NOT EXISTS latest_next
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
    schema_version UInt16,
    msgtime DateTime('UTC') MATERIALIZED if(match(msgid, '^[0-9A-Za-z]{6}-'), toDateTime(least(((((((position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 1, 1)) - 1) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 2, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 3, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 4, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 5, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 6, 1)) - 1)), 4294967295), 'UTC'), toDateTime(sendunixtime, 'UTC')),
    INDEX idx_parent_msgid parent_msgid TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_sendunixtime sendunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_actionunixtime actionunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_type type TYPE set(16) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(msgtime)
ORDER BY (msgtime, server, msgid, recipient, deliveredto)
TTL toDateTime(actionunixtime) + toIntervalDay(90)
SETTINGS index_granularity = 256, min_bytes_for_wide_part = 1099511627776, min_rows_for_wide_part = 1099511627776;

--@when SELECT count() = 1 FROM system.tables WHERE database = currentDatabase() AND name = 'latest_next'
CREATE MATERIALIZED VIEW IF NOT EXISTS latest_next_mv TO latest_next AS
SELECT * FROM events;

--@when SELECT count() = 0 FROM system.columns WHERE database = currentDatabase() AND table = 'latest' AND name = 'msgtime'
INSERT INTO latest_next SELECT * FROM latest;

--@when SELECT count() = 0 FROM system.columns WHERE database = currentDatabase() AND table = 'latest' AND name = 'msgtime'
EXCHANGE TABLES latest AND latest_next;

DROP VIEW IF EXISTS latest_next_mv;

DROP TABLE IF EXISTS latest_next;

CREATE TABLE IF NOT EXISTS search_keys
(
    field LowCardinality(String),
    value String,
    ts DateTime64(3, 'UTC'),
    server LowCardinality(String),
    msgid String,
    msgtime DateTime('UTC'),
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(msgtime)
ORDER BY (field, value, ts, server, msgid, msgtime)
TTL addDays(toDateTime(ts), 31) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS search_time
(
    ts DateTime64(3, 'UTC'),
    server LowCardinality(String),
    msgid String,
    msgtime DateTime('UTC'),
    type LowCardinality(String),
    text String CODEC(ZSTD(3)),
    INDEX tok_text text TYPE text(tokenizer = splitByNonAlpha)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(msgtime)
PRIMARY KEY (ts, server, msgid)
ORDER BY (ts, server, msgid, msgtime, type, text)
TTL addDays(toDateTime(ts), 31) + toIntervalDay(90);

CREATE MATERIALIZED VIEW IF NOT EXISTS search_keys_mv TO search_keys AS
SELECT DISTINCT kv.1 AS field, kv.2 AS value, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid)]) AS kv
WHERE is_deleted = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_time_mv TO search_time AS
SELECT DISTINCT sendunixtime AS ts, server, msgid, msgtime, type,
    lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message, confirmation, subject, message_id, server)) AS text
FROM latest
WHERE is_deleted = 0;

--@when SELECT count() = 0 FROM search_keys
INSERT INTO search_keys SELECT kv.1 AS field, kv.2 AS value, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid)]) AS kv
WHERE is_deleted = 0;

--@when SELECT count() = 0 FROM search_time
INSERT INTO search_time SELECT sendunixtime AS ts, server, msgid, msgtime, type,
    lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message, confirmation, subject, message_id, server)) AS text
FROM latest
WHERE is_deleted = 0;

