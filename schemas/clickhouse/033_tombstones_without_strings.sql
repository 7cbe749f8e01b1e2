-- eximtrack ClickHouse schema, migration 033: a tombstone's free strings emptied where it is stored.
--
-- Why: about half of the rows of `latest` and `latest_by_recipient` are tombstones (`is_deleted = 1`): each
-- "in progress" placeholder of a message's recipient is ended by one once the recipient's own row exists
-- (27.2 M of 55.8 M rows at 1e8 events). A tombstone is kept after the merges, so that a replayed placeholder
-- (an older version) stays removed, but no read shows one: FINAL drops it, and every read without FINAL asks
-- for `is_deleted = 0`. Yet each stored every free string of its placeholder: its event id, addresses,
-- accounts, hosts, IPs, subject, Message-ID, message and confirmation.
--
-- What: those columns get a column TTL that has expired for a tombstone, and never for any other row
-- (2106-01-01, the last year a DateTime holds). ClickHouse applies a column TTL where it writes a part out of
-- other parts (every merge of a part that holds an expired value, and a TTL merge at most every
-- merge_with_ttl_timeout per partition), not where an insert writes its block: a tombstone keeps its
-- identity (server, msgid, recipient, deliveredto), its version, times, type, numbers and LowCardinality
-- columns, and its free strings become ''. The views that read `latest` as it is inserted (the search keys,
-- their ends in search_inflight_keys and search_deferred_keys, search_time, latest_by_recipient) see the
-- inserted rows, strings and all (tests/integration/test_store.py: the placeholders' keys still end). The
-- rows and versions are unchanged, so FINAL, replays and every search give what they gave.
--
-- Upgrade in place: the TTL is set without touching the parts, then MATERIALIZE TTL rewrites the stored parts
-- in the background: a mutation per table, not waited for (`mutations_sync = 0`, which chDB does not default
-- to). It takes 9 minutes at 1e8 events (docs/BENCHMARKS.md, session (54)), during which the sink writes and
-- the searches read as before; `system.mutations` shows it, and a store closed meanwhile resumes it when
-- opened again. Not waiting also keeps the open from hanging where the merges, and so the mutations, are
-- stopped (SYSTEM STOP MERGES). Run again after a crash, both statements do the same again and change nothing
-- more.

-- latest: the free strings of its tombstones
ALTER TABLE latest MODIFY COLUMN event_id TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN email TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN sender TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN user TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN domain TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN senderhost TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN senderip TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN subject TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN message_id TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN parent_msgid TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN deliveryuser TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN deliverydomain TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN host TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN ip TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN message TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN confirmation TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'))
SETTINGS materialize_ttl_after_modify = 0;

-- latest_by_recipient: the free strings of its tombstones
ALTER TABLE latest_by_recipient MODIFY COLUMN event_id TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN email TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN sender TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN user TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN domain TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN senderhost TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN senderip TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN subject TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN message_id TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN parent_msgid TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN deliveryuser TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN deliverydomain TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN host TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN ip TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN message TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC')),
    MODIFY COLUMN confirmation TTL if(is_deleted = 1, toDateTime('2000-01-01 00:00:00', 'UTC'), toDateTime('2106-01-01 00:00:00', 'UTC'))
SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE latest MATERIALIZE TTL SETTINGS mutations_sync = 0;

ALTER TABLE latest_by_recipient MATERIALIZE TTL SETTINGS mutations_sync = 0;
