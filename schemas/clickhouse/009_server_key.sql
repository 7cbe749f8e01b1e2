-- eximtrack ClickHouse schema, migration 009: the server as an access path of search_keys.
--
-- Why: a search by server (with or without an outcome: "failures of mx12 today", the page's server filter)
-- had no key of its own, so its candidates were search_time rows read newest first keeping one row in about
-- as many as there are servers (~450k rows read for a page of 100 over 1,000 servers: 170-220 ms at 1e7
-- events). Now search_keys also holds (field 'server', the server name AS IS — server filters are
-- case-sensitive —, ts, server, msgid, msgtime): one row per message and version time, read newest first with
-- an early exit like every other key. The planner (eximtrack/search_plan.py) uses it after every other key
-- and after the tenant's scope (both select fewer messages); the outcome is re-checked on the fetched rows.
-- Cost: one search_keys row per message (about +10 % of search_keys, docs/BENCHMARKS.md).
--
-- Upgrade in place: the view first, then the backfill from every stored version of `latest`, so that no
-- insert falls between the two; a backfill repeated after a crash only adds duplicates that search_keys
-- (ReplacingMergeTree) folds. `eximtrack rebuild-search-index` runs this backfill after 007's.

ALTER TABLE search_keys_mv MODIFY QUERY
SELECT DISTINCT kv.1 AS field, kv.2 AS value, sendunixtime AS ts, server, msgid, msgtime
FROM latest
ARRAY JOIN arrayFilter(kv -> kv.2 != '', [('recipient', lower(recipient)), ('deliveredto', if(lower(deliveredto) = lower(recipient), '', lower(deliveredto))), ('email', lower(email)), ('sender', if(lower(sender) = lower(email), '', lower(sender))), ('domain', lower(domain)), ('user', lower(user)), ('owner', lower(owner)), ('deliveryuser', lower(deliveryuser)), ('deliveryowner', lower(deliveryowner)), ('message_id', lower(message_id)), ('senderip', lower(senderip)), ('parent_msgid', parent_msgid), ('server', toString(server))]) AS kv
WHERE is_deleted = 0;

INSERT INTO search_keys SELECT DISTINCT 'server' AS field, toString(server) AS value, sendunixtime AS ts, server, msgid, msgtime
FROM latest
WHERE is_deleted = 0;
