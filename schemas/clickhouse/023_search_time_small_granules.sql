-- eximtrack ClickHouse schema, migration 023: search_time in granules of 256 rows, compressed one by one.
--
-- Why: a search through the text index (an address or a name as `all` free text, a phrase's word pairs)
-- reads the text of every granule holding one of its matching rows, and its cost is those granules, not
-- the rows: at 1e8 events a recipient's address found 18 rows in 649 granules of 1,024 rows, 0.66 M rows'
-- text decompressed and matched. A text block was at least 64 KiB (min_compress_block_size), about one
-- 1,024-row granule.
--
-- What: the same table (022's columns, key, indexes, TTL) with granules of 256 rows and compressed blocks
-- of 16-64 KiB, so that a granule of text (~18 KiB) is its own block and a matching row costs a quarter of
-- the reading. Measured at 1e7 events on copies of search_time holding the same rows (docs/BENCHMARKS.md,
-- session 27): a name found in 1,717 rows 216 -> 90 ms, `Invoice order` 152 -> 90 ms, an address found in
-- 33 rows 56 -> 46 ms; the time-path searches (failures, deferred, newest, a server) unchanged; the text
-- 4 % bigger (245.6 -> 256.3 MB). At 1e8 the bench's address as `all` free text went from 110 / 134 to
-- 80 / 105 ms p50 / p95; the store from 460.1 to 461.4 B per event.
--
-- Upgrade in place, as 022: the new layout is built beside the old one (search_time_next, fed by its own
-- view), filled with a copy of search_time's rows, and the two are exchanged. The copy's blocks are folded
-- as a merge folds them (optimize_on_insert): an older version or a placeholder that meets its newer version
-- or its tombstone in one block is not copied. A row the sink writes while the copy runs may be stored
-- twice; both copies have the same key and version, so a merge keeps one, and a search's re-check on
-- `latest FINAL` reads each message once before that. `--@when` lines make each step run only while the old
-- layout is in place (a crash mid-way is resumed). A store older than 022 runs both re-layouts, one after
-- the other.
--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND engine_full LIKE '%index_granularity = 256,%'
CREATE TABLE IF NOT EXISTS search_time_next
(
    ts DateTime64(3, 'UTC'),
    server LowCardinality(String),
    msgid String,
    msgtime DateTime('UTC'),
    row_key UInt64,
    version UInt64,
    type LowCardinality(String),
    text String CODEC(ZSTD(3)),
    INDEX tok_text text TYPE text(tokenizer = splitByNonAlpha),
    INDEX tok_pairs replaceRegexpAll(replaceRegexpAll(concat('_', replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(substring(text, position(text, '\x1f') + 1), '[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' '), '([^ ]+)', '\\1_\\1'), '([^ _]{4})[^ _]*_', '\\1_'), '_[^ _]*?([^ _]{1,4})( |$)', '_\\1\\2'), '_'), '_[^_]*[^a-z _][^_]*', ''), '_[^_ ]+(_)', '\\1') TYPE text(tokenizer = splitByString(['_']))
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(msgtime)
PRIMARY KEY (ts, server, msgid)
ORDER BY (ts, server, msgid, msgtime, row_key)
TTL addDays(toDateTime(if(ts = 0, msgtime, ts)), 31) + toIntervalDay(90)
SETTINGS index_granularity = 256, min_compress_block_size = 16384, max_compress_block_size = 65536;
--@when SELECT count() = 1 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time_next'
CREATE MATERIALIZED VIEW IF NOT EXISTS search_time_next_mv TO search_time_next AS
SELECT sendunixtime AS ts, server, msgid, msgtime, sipHash64(recipient, deliveredto) AS row_key, version,
    if(is_deleted = 1, '', type) AS type,
    if(is_deleted = 1, '', lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation))) AS text
FROM latest;
--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND engine_full LIKE '%index_granularity = 256,%'
INSERT INTO search_time_next SELECT ts, server, msgid, msgtime, row_key, version, type, text FROM search_time;
--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND engine_full LIKE '%index_granularity = 256,%'
EXCHANGE TABLES search_time AND search_time_next;
DROP VIEW IF EXISTS search_time_next_mv;
DROP TABLE IF EXISTS search_time_next;
