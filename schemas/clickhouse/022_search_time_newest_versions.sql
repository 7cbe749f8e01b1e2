-- eximtrack ClickHouse schema, migration 022: search_time keeps the newest version of each row only.
--
-- Why: search_time (007) kept one row per distinct (version time, type, text) of every row version until its
-- TTL. Most versions are superseded within minutes: an "in progress" placeholder (recipient known, no
-- deliveredto yet) is removed when the delivery's row arrives, a deferral is followed by the delivery. At
-- 1e7 events search_time held 7.29 M rows for 2.86 M live rows: 2.81 M placeholders, 1.79 M deferrals
-- (84 k of them still deferred). Those rows cost disk (their text and its two text indexes) and reading: a
-- search by outcome or text reads their candidates and fetches their messages.
--
-- What:
--   * Each row of search_time now names its row: `row_key` = sipHash64(recipient, deliveredto) (with ts,
--     server, msgid, msgtime: the row identity of `latest`) and its `version`. The table is a
--     ReplacingMergeTree(version) ordered by (ts, server, msgid, msgtime, row_key): a merge keeps the newest
--     version of each row and drops the others.
--   * Granules of 1,024 rows (8,192 before): a phrase whose word pair is in one row of a few thousand (the
--     pairs index of 021 then keeps most 8,192-row granules) has its text read from a fifth of the table:
--     777 -> 331 ms at 1e7 events for `Invoice order`, the other searches unchanged, +1.4 % disk.
--   * The view writes every version, tombstones included, as a row with an empty type and text: a
--     placeholder's tombstone replaces its text on the next merge. Searches never match an empty type
--     (eximtrack/search_plan.py adds `type != ''` where no outcome filter is given).
--
-- Why it stays exact (007's superset): the newest version of a row is always stored (a merge keeps the
-- highest version of a key and nothing else removes rows before the TTL), so the latest state of every live
-- row has its search_time row; superseded versions not merged yet, replays and out-of-order versions only
-- add rows the re-check on `latest FINAL` ignores. A version whose arrival time (ts) differs from a later
-- one's (a delivery seen before its arrival line: ts 0) has its own key and stays, stale and harmless.
-- Two rows of one message are folded wrongly only if their recipients' 64-bit hashes collide (about 1 in
-- 10^19 per pair). Nothing relies on CLEANUP (the tombstones stay, as rows that match nothing).
--
-- Upgrade in place: the new layout is built beside the old one (search_time_next, fed by its own view and
-- backfilled from every version in `latest`), then the two are exchanged. Both views write the same
-- columns into tables that both have them (the old layout gets row_key and version as plain columns first),
-- so an insert during the exchange lands in the new layout by either view. `--@when` lines make each step
-- run only while the old layout is in place (a crash mid-way is resumed).
-- Cost (docs/BENCHMARKS.md, session 26): row_key and version take ~7 B per event (69 MB at 1e7 events);
-- search_time went from 895 to 723 MB at 1e7 (89 -> 72 B per event) and from 8.17 to 6.57 GB at 1e8
-- (82 -> 66), the text indexes with it.

ALTER TABLE search_time ADD COLUMN IF NOT EXISTS row_key UInt64 AFTER msgtime, ADD COLUMN IF NOT EXISTS version UInt64 AFTER row_key;

ALTER TABLE search_time_mv MODIFY QUERY
SELECT sendunixtime AS ts, server, msgid, msgtime, sipHash64(recipient, deliveredto) AS row_key, version,
    if(is_deleted = 1, '', type) AS type,
    if(is_deleted = 1, '', lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation))) AS text
FROM latest;

--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND sorting_key LIKE '%row_key%'
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
SETTINGS index_granularity = 1024;

--@when SELECT count() = 1 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time_next'
CREATE MATERIALIZED VIEW IF NOT EXISTS search_time_next_mv TO search_time_next AS
SELECT sendunixtime AS ts, server, msgid, msgtime, sipHash64(recipient, deliveredto) AS row_key, version,
    if(is_deleted = 1, '', type) AS type,
    if(is_deleted = 1, '', lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation))) AS text
FROM latest;

--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND sorting_key LIKE '%row_key%'
INSERT INTO search_time_next SELECT sendunixtime AS ts, server, msgid, msgtime, sipHash64(recipient, deliveredto) AS row_key, version,
    if(is_deleted = 1, '', type) AS type,
    if(is_deleted = 1, '', lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation))) AS text
FROM latest;

--@when SELECT count() = 0 FROM system.tables WHERE database = currentDatabase() AND name = 'search_time' AND sorting_key LIKE '%row_key%'
EXCHANGE TABLES search_time AND search_time_next;

DROP VIEW IF EXISTS search_time_next_mv;

DROP TABLE IF EXISTS search_time_next;
