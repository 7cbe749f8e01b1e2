-- eximtrack ClickHouse schema, migration 026: the key rows of the rows whose outcome is not a success.
--
-- Why: a search by an indexed value or a tenant's scope AND an outcome other than a success ("failures of
-- account X", "deferrals to the domain with most mail", a reseller's bounces) read search_keys' rows of that
-- value newest first: every message of the value, most of them delivered, each fetched from `latest FINAL` to
-- find that its rows are not failures. For the busiest account of the 1e7 bench store a page of 100 failures
-- took ~590 ms, the biggest sender domain's ~460 ms, and it grows with the value's mail, not with the page.
--
-- What: `search_outcome_keys` holds what search_keys holds (one row per searchable value of a message: the
-- same fields, values and times), plus the outcome, for every version of a row whose outcome is one of
-- eximtrack/search_plan.py's KEYED_OUTCOMES (not `success`, which is most rows, nor `inprogress`, which is
-- every placeholder). Sorted by (field, value, type, ts), a value's rows of one outcome are one range read
-- newest first. Exact like search_keys: every version with such an outcome writes its rows, so the latest
-- version of every row the search matches has them; a stale one (a deferral delivered since) only costs its
-- fetch, which re-checks every condition on the latest row.
--
-- Upgrade in place: the view first, then the backfill from every stored version of `latest`, so that no
-- insert falls between the two; a version both write, or a backfill repeated after a crash, only adds
-- duplicates that the table (ReplacingMergeTree) folds. `eximtrack rebuild-search-index` empties and refills it
-- like the other access paths. Written once and read a range at a time, its columns are ZSTD(1), and its times
-- deltas (sorted within a value): 9.5 -> 6.7 bytes per event at 1e7 (the msgid is half of it). Cost and
-- speed: docs/BENCHMARKS.md, session (40).

CREATE TABLE IF NOT EXISTS search_outcome_keys
(
    field LowCardinality(String),
    value String CODEC(ZSTD(1)),
    type LowCardinality(String),
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    server LowCardinality(String),
    msgid String CODEC(ZSTD(1)),
    msgtime DateTime('UTC') CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(msgtime)
ORDER BY (field, value, type, ts, server, msgid, msgtime)
TTL addDays(toDateTime(if(ts = 0, msgtime, ts)), 31) + toIntervalDay(90)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_outcome_keys_mv TO search_outcome_keys AS
SELECT DISTINCT kv.1 AS field, kv.2 AS value, type, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE is_deleted = 0 AND type IN ('archive', 'defer', 'failure', 'filtered', 'rejected');

INSERT INTO search_outcome_keys
SELECT kv.1 AS field, kv.2 AS value, type, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE is_deleted = 0 AND type IN ('archive', 'defer', 'failure', 'filtered', 'rejected');
