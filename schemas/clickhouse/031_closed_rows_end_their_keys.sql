-- eximtrack ClickHouse schema, migration 031: the rows an administrator (or a filter) closed end their keys of
-- rows in progress and deferred.
--
-- Why: the joiner closes a recipient's open row without a delivery attempt when the log says so: `removed by`
-- and `cancelled by` (an administrator: `exim -Mrm`, a queue cleared of spam), `error ignored` (a bounce's
-- failure ignored) give `failure`, `original recipients ignored` (the system filter) `filtered`
-- (native/src/join.rs fail_open_rows, error_ignored). Such a version keeps the row's identity and its
-- attempts, and writes no tombstone. So:
-- - search_inflight_keys (027) wrote an end only for a placeholder's tombstone: a placeholder removed by an
--   administrator kept its key rows, a candidate of every "in progress" search of its server, sender, account
--   and recipient until the 31-day TTL. A queue of spam cleared by hand left thousands.
-- - search_deferred_keys (029) wrote an end for a result with more than one attempt: a row deferred once and
--   then removed (attempts = 1) kept its deferral's key rows the same way.
-- Searches stayed exact (the fetch re-checks every candidate on `latest FINAL`), only slower.
--
-- What: both views write the end of those versions too, as they write the others' (the newest version of the
-- row in its insert, its keys with `is_deleted = 1`, folded with the open row's keys by the merges):
-- - search_inflight_keys: a version of a placeholder's identity (no `deliveredto`: only placeholders have
--   none) whose outcome is `failure` or `filtered` ends it;
-- - search_deferred_keys: a `failure` or `filtered` version with one attempt ends the row when its message is
--   one of the joiner's closing texts above (a first attempt's own failure has one attempt too, and writes
--   nothing here, as before).
-- A closed row that had no such open row writes an end that meets nothing; it is deleted a day after it was
-- written (the tables' TTL). Key rows already stale in a store before this migration stay until their TTL, or
-- until `eximtrack rebuild-search-index`, which refills both tables from the rows open now.

-- search_inflight_keys_mv: 027's, with the ends of placeholders closed without a tombstone
ALTER TABLE search_inflight_keys_mv MODIFY QUERY
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
            argMax(toUInt8(is_deleted = 1 OR type != 'inprogress'), version) AS newest_ended,
            countIf(type = 'inprogress' AND is_deleted = 0) AS placeholders,
            argMax((sendunixtime, email, sender, domain, user, owner, deliveryuser, deliveryowner, message_id,
                senderip, parent_msgid), version) AS newest
        FROM latest
        WHERE type = 'inprogress' OR is_deleted = 1 OR (deliveredto = '' AND type IN ('failure', 'filtered'))
        GROUP BY server, msgid, recipient, deliveredto
        HAVING newest_ended = 0 OR placeholders = 0
    )
)
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv;

-- search_deferred_keys_mv: 029's, with the ends of deferrals closed by an administrator, a bounce's ignored error
-- or the system filter
ALTER TABLE search_deferred_keys_mv MODIFY QUERY
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
            OR (attempts = 1 AND type IN ('failure', 'filtered') AND (startsWith(message, 'removed by')
                OR startsWith(message, 'cancelled by') OR message = 'error ignored'
                OR startsWith(message, 'original recipients ignored')))
        GROUP BY server, msgid, recipient, deliveredto
    )
)
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv;
