-- eximtrack ClickHouse schema, migration 027: the key rows of the rows still in progress.
--
-- Why: a search by an indexed value or a tenant's scope for mail in progress only ("what of account X is
-- still in flight?", cPanel's In Progress filter) read search_keys' rows of that value newest first: every
-- message of the value, each fetched from `latest FINAL` to find that it has been delivered long ago. A page
-- of 100 took ~0.5 s at 1e7 events for the busiest account, where 3 % of its rows stay in progress; on a
-- live fleet almost none do, so the search went through every message of the account to prove it.
-- search_outcome_keys (026) leaves `inprogress` out: every row starts as a placeholder.
--
-- What: `search_inflight_keys` holds, per placeholder (a row identity whose outcome is `inprogress`), the
-- searchable values of search_keys with the row's identity, version and `is_deleted` (ReplacingMergeTree):
-- the placeholder's key rows, and the tombstone its first result writes (`is_deleted = 1`). Sorted by
-- (field, value, ts), a value's rows in progress are one range read newest first. The view folds each insert
-- by row identity, keeping its newest version's fields, and builds the key rows after the fold, for the rows
-- it writes only: a placeholder that got its tombstone in the same insert writes nothing; a tombstone writes
-- its key rows only when its placeholder came in an earlier insert. So the table holds the rows in progress
-- at the end of an insert, and the tombstones that cancel them, and its merges fold each pair (the tombstone
-- wins). A tombstone is deleted a day after it was written (TTL on `written`, by then merged with its
-- placeholder); one deleted earlier only lets its placeholder's key rows come back as a candidate.
--
-- Exact like search_keys: every version whose outcome is `inprogress` is written (or folded into a newer one
-- of its insert), and nothing but a newer version of the same row removes it, so the latest version of every
-- row in progress has its key rows here. A stale one (a placeholder whose tombstone is not merged with it
-- yet, or was deleted first) only costs its fetch: the fetch re-checks every condition on `latest FINAL`.
--
-- Upgrade in place: the view first, then the rows in progress now (`latest FINAL`), so that no insert falls
-- between the two; a row both write, or a backfill repeated after a crash, is a duplicate that the table
-- folds. `eximtrack rebuild-search-index` empties and refills it the same way. Cost: 2.7-2.8 bytes per event
-- in the bench stores, where 3 % of the rows stay in progress for good (a minute to backfill at 1e8 events),
-- 1.2 after `ingest` of a busy server's day with its tombstones not deleted yet; speed: docs/BENCHMARKS.md,
-- session (41).

CREATE TABLE IF NOT EXISTS search_inflight_keys
(
    field LowCardinality(String),
    value String CODEC(ZSTD(1)),
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    server LowCardinality(String),
    msgid String CODEC(ZSTD(1)),
    recipient String CODEC(ZSTD(1)),
    deliveredto String CODEC(ZSTD(1)),
    msgtime DateTime('UTC') CODEC(Delta, ZSTD(1)),
    version UInt64 CODEC(ZSTD(1)),
    is_deleted UInt8,
    written DateTime('UTC') DEFAULT now()
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(msgtime)
ORDER BY (field, value, ts, server, msgid, recipient, deliveredto)
TTL addDays(toDateTime(if(ts = 0, msgtime, ts)), 31) + toIntervalDay(90),
    written + toIntervalHour(24) DELETE WHERE is_deleted = 1
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_inflight_keys_mv TO search_inflight_keys AS
SELECT kv.1 AS field, kv.2 AS value, ts, server, msgid, recipient, deliveredto, msgtime, version, is_deleted
FROM
(
    SELECT server, msgid, recipient, deliveredto, msgtime, newest_version AS version, newest_deleted AS is_deleted,
        newest.1 AS ts, newest.2 AS email, newest.3 AS sender, newest.4 AS domain, newest.5 AS user,
        newest.6 AS owner, newest.7 AS deliveryuser, newest.8 AS deliveryowner, newest.9 AS message_id,
        newest.10 AS senderip, newest.11 AS parent_msgid
    FROM
    (
        SELECT server, msgid, recipient, deliveredto, any(msgtime) AS msgtime, max(version) AS newest_version,
            argMax(is_deleted, version) AS newest_deleted, countIf(is_deleted = 0) AS placeholders,
            argMax((sendunixtime, email, sender, domain, user, owner, deliveryuser, deliveryowner, message_id,
                senderip, parent_msgid), version) AS newest
        FROM latest
        WHERE type = 'inprogress' OR is_deleted = 1
        GROUP BY server, msgid, recipient, deliveredto
        HAVING newest_deleted = 0 OR placeholders = 0
    )
)
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv;

INSERT INTO search_inflight_keys (field, value, ts, server, msgid, recipient, deliveredto, msgtime, version, is_deleted)
SELECT kv.1, kv.2, sendunixtime, server, msgid, recipient, deliveredto, msgtime, version, is_deleted
FROM latest FINAL
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE type = 'inprogress';
