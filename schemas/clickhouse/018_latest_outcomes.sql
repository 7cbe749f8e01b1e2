-- eximtrack ClickHouse schema, migration 018: the latest rows narrowed to their identity, outcome and times.
--
-- Why: an exact total of a search by outcome and time (`with_total=1` on "failures in the last 24 hours",
-- fleet-wide or on one server) counts the latest state of every row of its hours. `latest` keeps all 40
-- columns of a 256-row granule together (compact parts, for the fetch of a page's messages), so that count
-- decompressed every column of ~1.6M row versions at 1e8 events: 285-435 ms. Here the same versions keep
-- only what such a count tests, in wide parts: 38 ms for the same count, measured on the 1e8 bench store.
--
-- What: `latest_outcomes` holds every version `latest` receives (its view reads the inserts into
-- `latest`) with the row identity (msgtime, server, msgid, recipient, deliveredto), the same engine, version,
-- tombstones, partitions and TTL, and the columns an outcome/time/server/msgid search tests: FINAL on it gives
-- exactly the latest state of each row (as on `latest`) restricted to those columns, so a count whose every
-- condition is on them (eximtrack/search_plan.py `SearchPlan.outcome_count`) equals the count on `latest`.
--
-- Upgrade in place: the view first, then the copy of every stored version of `latest`, so that no insert
-- falls between the two; a version both write, or a copy repeated after a crash, is a duplicate of an
-- identical version that FINAL and the merges fold. `eximtrack rebuild-search-index` empties and refills it
-- like the other access paths. Cost: ~12 bytes per event at 1e8 (docs/BENCHMARKS.md); the copy of a 1e8 store
-- takes about a minute.

CREATE TABLE IF NOT EXISTS latest_outcomes
(
    type LowCardinality(String),
    server LowCardinality(String),
    msgid String CODEC(ZSTD(1)),
    recipient String CODEC(ZSTD(1)),
    deliveredto String CODEC(ZSTD(1)),
    sendunixtime DateTime64(3, 'UTC') CODEC(ZSTD(1)),
    actionunixtime DateTime64(3, 'UTC') CODEC(ZSTD(1)),
    version UInt64 CODEC(ZSTD(1)),
    is_deleted UInt8,
    msgtime DateTime('UTC') MATERIALIZED if(match(msgid, '^[0-9A-Za-z]{6}-'), toDateTime(least(((((((position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 1, 1)) - 1) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 2, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 3, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 4, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 5, 1)) - 1)) * 62 + (position('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substring(msgid, 6, 1)) - 1)), 4294967295), 'UTC'), toDateTime(sendunixtime, 'UTC')) CODEC(Delta, ZSTD(1)),
    INDEX idx_sendunixtime sendunixtime TYPE minmax GRANULARITY 1,
    INDEX idx_actionunixtime actionunixtime TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(msgtime)
ORDER BY (msgtime, server, msgid, recipient, deliveredto)
TTL toDateTime(actionunixtime) + toIntervalDay(90)
SETTINGS index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS latest_outcomes_mv TO latest_outcomes AS
SELECT type, server, msgid, recipient, deliveredto, sendunixtime, actionunixtime, version, is_deleted FROM latest;

INSERT INTO latest_outcomes (type, server, msgid, recipient, deliveredto, sendunixtime, actionunixtime, version, is_deleted)
SELECT type, server, msgid, recipient, deliveredto, sendunixtime, actionunixtime, version, is_deleted FROM latest;
