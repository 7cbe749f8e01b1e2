-- eximtrack ClickHouse schema, migration 001 (applied by sinks/clickhouse/migrations.py, tracked in
-- schema_migrations). Statements are separated by ";" at the end of a line; "--" lines are comments.
-- Columns mirror schemas/records.py exactly (tests/test_contracts.py fails if they drift apart).
--
-- Design (chosen by the lead):
--   events     every DeliveryEvent the joiner emits: the attempt history of each recipient.
--              ReplacingMergeTree(version) ORDER BY (server, msgid, event_id), monthly partitions on
--              actionunixtime. event_id is deterministic, so re-ingesting a log (or a retried insert) only
--              re-inserts rows that collapse under FINAL / merges. Tombstones (is_deleted = 1) are kept here.
--   latest     the latest state per (server, msgid, recipient, deliveredto) = one Track Delivery row.
--              ReplacingMergeTree(version, is_deleted), fed by the materialized view latest_mv FROM events
--              (one insert into events feeds both). NOT partitioned: ReplacingMergeTree only collapses rows
--              inside one partition, and the states of one recipient span days. Read it as `latest FINAL`,
--              which keeps the highest version per key and drops it when that version is a tombstone
--              (the joiner tombstones the message-level "inprogress" placeholder this way).
--   rejects    lines nothing could classify, ReplacingMergeTree ORDER BY (server, reject_id).
--   log_lines  raw lines of each message (its story), ReplacingMergeTree ORDER BY
--              (server, msgid, logunixtime, line_id).
-- Times are DateTime64(3, 'UTC') (the records hold epoch seconds as float; the encoder sends integer ms).
-- Skip indexes serve the searches of eximtrack/search.py, which compares lower(column) for the
-- case-insensitive address/subject/header filters: ngrambf_v1 on lower(...) serves =, LIKE 'x%' and
-- LIKE '%x%'; bloom_filter for exact ids/IPs/accounts; minmax on the times; set on type.
-- Retention: TTL 90 days by default (cPanel keeps 10); the store rewrites it with ALTER TABLE ... MODIFY TTL
-- when EXIMTRACK_RETENTION_DAYS / --retention-days asks for another value (0 = keep forever).
-- Rows without a readable time (rejects with logunixtime = 0) never expire rather than expire at once.

CREATE TABLE IF NOT EXISTS events
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
    INDEX idx_msgid msgid TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_parent_msgid parent_msgid TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_recipient lower(recipient) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_email lower(email) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_actionunixtime actionunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_type type TYPE set(16) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(actionunixtime)
ORDER BY (server, msgid, event_id)
TTL toDateTime(actionunixtime) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS latest
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
    INDEX idx_msgid msgid TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_parent_msgid parent_msgid TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_recipient lower(recipient) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_email lower(email) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_deliveredto lower(deliveredto) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_subject lower(subject) TYPE ngrambf_v1(3, 16384, 3, 0) GRANULARITY 2,
    INDEX idx_message_id lower(message_id) TYPE ngrambf_v1(3, 8192, 3, 0) GRANULARITY 2,
    INDEX idx_senderip senderip TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_domain lower(domain) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_user lower(user) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_sendunixtime sendunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_actionunixtime actionunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_type type TYPE set(16) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (server, msgid, recipient, deliveredto)
TTL toDateTime(actionunixtime) + toIntervalDay(90);

CREATE MATERIALIZED VIEW IF NOT EXISTS latest_mv TO latest AS
SELECT
    event_id, type, server, msgid, email, sender, user, domain, owner, senderhost, senderip, senderauth,
    spamscore, sendunixtime, size, subject, message_id, protocol, parent_msgid, recipient, deliveredto,
    deliveryuser, deliverydomain, deliveryowner, router, transport, host, ip, message, confirmation, tls,
    queue_time, delivery_time, actionunixtime, attempts, frozen, transport_is_remote, version, is_deleted,
    schema_version
FROM events;

CREATE TABLE IF NOT EXISTS rejects
(
    reject_id String,
    server LowCardinality(String),
    line String,
    reason LowCardinality(String),
    file_id String,
    offset Int64,
    logunixtime DateTime64(3, 'UTC'),
    schema_version UInt16,
    INDEX idx_logunixtime logunixtime TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (server, reject_id)
TTL toDateTime(if(logunixtime = 0, toDateTime64('2100-01-01 00:00:00', 3, 'UTC'), logunixtime)) + toIntervalDay(90);

CREATE TABLE IF NOT EXISTS log_lines
(
    line_id String,
    server LowCardinality(String),
    msgid String,
    logunixtime DateTime64(3, 'UTC'),
    line String,
    schema_version UInt16,
    INDEX idx_msgid msgid TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(logunixtime)
ORDER BY (server, msgid, logunixtime, line_id)
TTL toDateTime(logunixtime) + toIntervalDay(90);
