-- eximtrack ClickHouse schema, migration 011: the latest rows again, ordered by recipient.
--
-- Why: "what happened to mail for this address?" is the search support staff run most, and its rows are
-- scattered over the whole of `latest` (ordered by message time): a page of 100 fetched one 256-row granule
-- per message (60-120 ms at 1e8 events), and `eximtrack search --recipient` returning every row of a busy
-- mailbox (6,614 rows at 1e8) read one granule per row: 3.3 s. Here the same rows are ordered by the
-- lower-case recipient first, so the rows of one recipient (or of a recipient prefix) lie together and are
-- read as one range: the cost of that search is the size of its answer.
--
-- What: `latest_by_recipient` holds every version `latest` receives (its view reads the inserts into
-- `latest`), with the same engine, version, tombstones, partitions and TTL, and the row identity
-- (msgtime, server, msgid, recipient, deliveredto) behind `recipient_lower` (= lower(recipient), a function
-- of the identity): FINAL on it gives exactly the latest state of each row, as on `latest`, for any set of
-- recipients. The planner (eximtrack/search_plan.py) reads it when a search's access path is a recipient
-- filter (eq or begins); every condition is re-checked on the rows read there as on `latest`.
--
-- Upgrade in place: the view first, then the copy of every stored version of `latest`, so that no insert
-- falls between the two; a version both write, or a copy repeated after a crash, is a duplicate of an identical
-- version that FINAL and the merges fold. `eximtrack rebuild-search-index` empties and refills it like the other access paths.
-- Cost: every column is compressed with ZSTD(1) instead of LZ4: ordered by recipient, similar rows lie apart
-- and LZ4 kept 226 bytes per stored version (measured on a fifth of the 1e7 bench store), ZSTD(1) 156, ZSTD(3)
-- 143; a read here is a few granules, so the slower decompression does not show (docs/BENCHMARKS.md).

CREATE TABLE IF NOT EXISTS latest_by_recipient
(
    event_id String CODEC(ZSTD(1)),
    type LowCardinality(String) CODEC(ZSTD(1)),
    server LowCardinality(String) CODEC(ZSTD(1)),
    msgid String CODEC(ZSTD(1)),
    email String CODEC(ZSTD(1)),
    sender String CODEC(ZSTD(1)),
    user String CODEC(ZSTD(1)),
    domain String CODEC(ZSTD(1)),
    owner LowCardinality(String) CODEC(ZSTD(1)),
    senderhost String CODEC(ZSTD(1)),
    senderip String CODEC(ZSTD(1)),
    senderauth LowCardinality(String) CODEC(ZSTD(1)),
    spamscore Nullable(Float64) CODEC(ZSTD(1)),
    sendunixtime DateTime64(3, 'UTC') CODEC(ZSTD(1)),
    size UInt64 CODEC(ZSTD(1)),
    subject String CODEC(ZSTD(1)),
    message_id String CODEC(ZSTD(1)),
    protocol LowCardinality(String) CODEC(ZSTD(1)),
    parent_msgid String CODEC(ZSTD(1)),
    recipient String CODEC(ZSTD(1)),
    deliveredto String CODEC(ZSTD(1)),
    deliveryuser String CODEC(ZSTD(1)),
    deliverydomain String CODEC(ZSTD(1)),
    deliveryowner LowCardinality(String) CODEC(ZSTD(1)),
    router LowCardinality(String) CODEC(ZSTD(1)),
    transport LowCardinality(String) CODEC(ZSTD(1)),
    host String CODEC(ZSTD(1)),
    ip String CODEC(ZSTD(1)),
    message String CODEC(ZSTD(1)),
    confirmation String CODEC(ZSTD(1)),
    tls LowCardinality(String) CODEC(ZSTD(1)),
    queue_time Nullable(Float64) CODEC(ZSTD(1)),
    delivery_time Nullable(Float64) CODEC(ZSTD(1)),
    actionunixtime DateTime64(3, 'UTC') CODEC(ZSTD(1)),
    attempts UInt32 CODEC(ZSTD(1)),
    frozen UInt8 CODEC(ZSTD(1)),
    transport_is_remote UInt8 CODEC(ZSTD(1)),
    version UInt64 CODEC(ZSTD(1)),
    is_deleted UInt8 CODEC(ZSTD(1)),
    schema_version UInt16 CODEC(ZSTD(1)),
    msgtime DateTime('UTC') MATERIALIZED if(match(msgid, '^[0-9A-Za-z]{6}-'), toDateTime(least(((((((position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 1, 1)) - 1) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 2, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 3, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 4, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 5, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 6, 1)) - 1)), 4294967295), 'UTC'), toDateTime(sendunixtime, 'UTC')) CODEC(ZSTD(1)),
    recipient_lower String MATERIALIZED lower(recipient) CODEC(ZSTD(1))
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(msgtime)
ORDER BY (recipient_lower, msgtime, server, msgid, recipient, deliveredto)
TTL toDateTime(actionunixtime) + toIntervalDay(90)
SETTINGS index_granularity = 256, min_bytes_for_wide_part = 1099511627776, min_rows_for_wide_part = 1099511627776;

CREATE MATERIALIZED VIEW IF NOT EXISTS latest_by_recipient_mv TO latest_by_recipient AS
SELECT * FROM latest;

INSERT INTO latest_by_recipient SELECT * FROM latest;
