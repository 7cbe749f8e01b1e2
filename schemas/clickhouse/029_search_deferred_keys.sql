-- eximtrack ClickHouse schema, migration 029: the key rows of the rows deferred now, apart from the other outcomes.
--
-- Why: a search by an indexed value or a tenant's scope for deferred mail ("what of server X is deferred?",
-- a customer's deferrals) read search_outcome_keys' `defer` rows of the value (026): every message of the
-- value that was ever deferred, most of them delivered since. At 1e7 events 79 % of that table's rows were
-- deferrals (6.05M of 7.74M) for 84k rows deferred now; one server's page of 100 deferrals named 1,267 messages
-- for 188 still deferred, and fetched ~800 of them from `latest FINAL` in two rounds: 140-200 ms.
--
-- What: `search_deferred_keys` holds, per deferred row (a row identity whose outcome is `defer`), the
-- searchable values of search_keys with the row's identity, version and `is_deleted` (ReplacingMergeTree, as
-- search_inflight_keys does for placeholders, 027): the deferral's key rows, and the end its row gets from a
-- later version, written with `is_deleted = 1`: a result after a deferral (a version of another outcome with
-- more than one attempt: only a deferral counts an attempt and leaves the row open), or the tombstone of a
-- deferral superseded by its recipient's delivery. The view folds each insert by row identity, keeping its
-- newest version's fields, and writes the key rows of that newest version: a deferral's, or an end. Unlike a
-- placeholder (027), a row has many deferrals, one per attempt, and an earlier insert may have written one:
-- so an end is written even when a deferral of its row came in the same insert (the busy cPanel server's log,
-- ingested, left 1,046 of 1,533 ends unwritten with 027's rule). So the table holds the rows deferred at the
-- end of an insert, and the ends that cancel them, and its merges fold each pair (the end wins). An end is
-- deleted a day after it was written (TTL on `written`, by then merged with its deferral); one deleted earlier
-- only lets its deferral's key rows come back as a candidate.
--
-- Exact like search_keys: every version whose outcome is `defer` is written (or folded into a newer one of its
-- insert), and nothing but a newer version of the same row removes it, so the latest version of every row
-- deferred now has its key rows here. A stale one (a deferral whose end is not merged with it yet, or was
-- deleted first, or one ended without a second attempt: a message removed by an administrator) only costs its
-- fetch: the fetch re-checks every condition on `latest FINAL`.
--
-- search_outcome_keys keeps the other outcomes (failure, rejected, filtered, archive): its view no longer writes
-- deferrals, and its deferral rows are deleted (a mutation of that table, in place).
--
-- Upgrade in place: the view first, then the rows deferred now (`latest FINAL`), so that no insert falls between
-- the two; a row both write, or a backfill repeated after a crash, is a duplicate that the table folds. Then
-- search_outcome_keys' view without deferrals, and its deferral rows deleted. `eximtrack rebuild-search-index`
-- empties and refills the new table the same way. Cost and speed: docs/BENCHMARKS.md, session (48).

CREATE TABLE IF NOT EXISTS search_deferred_keys
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

CREATE MATERIALIZED VIEW IF NOT EXISTS search_deferred_keys_mv TO search_deferred_keys AS
SELECT kv.1 AS field, kv.2 AS value, ts, server, msgid, recipient, deliveredto, msgtime, version, is_deleted
FROM
(
    SELECT server, msgid, recipient, deliveredto, msgtime, newest_version AS version, newest_ended AS is_deleted,
        newest.1 AS ts, newest.2 AS email, newest.3 AS sender, newest.4 AS domain, newest.5 AS user,
        newest.6 AS owner, newest.7 AS deliveryuser, newest.8 AS deliveryowner, newest.9 AS message_id,
        newest.10 AS senderip, newest.11 AS parent_msgid
    FROM
    (
        SELECT server, msgid, recipient, deliveredto, any(msgtime) AS msgtime, max(version) AS newest_version,
            argMax(toUInt8(is_deleted = 1 OR type != 'defer'), version) AS newest_ended,
            argMax((sendunixtime, email, sender, domain, user, owner, deliveryuser, deliveryowner, message_id,
                senderip, parent_msgid), version) AS newest
        FROM latest
        WHERE type = 'defer' OR (attempts > 1 AND type IN ('success', 'failure', 'filtered', 'archive'))
        GROUP BY server, msgid, recipient, deliveredto
    )
)
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv;

INSERT INTO search_deferred_keys (field, value, ts, server, msgid, recipient, deliveredto, msgtime, version, is_deleted)
SELECT kv.1, kv.2, sendunixtime, server, msgid, recipient, deliveredto, msgtime, version, is_deleted
FROM latest FINAL
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE type = 'defer';

ALTER TABLE search_outcome_keys_mv MODIFY QUERY
SELECT DISTINCT kv.1 AS field, kv.2 AS value, type, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE is_deleted = 0 AND type IN ('archive', 'failure', 'filtered', 'rejected');

ALTER TABLE search_outcome_keys DELETE WHERE type = 'defer' SETTINGS mutations_sync = 1;
