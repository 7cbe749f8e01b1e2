-- eximtrack ClickHouse schema, migration 021: an index of adjacent word pairs for phrase searches.
--
-- Why: a phrase of common words ("subject contains Player config product") is rare while each of its words
-- is in one row of twenty. tok_text (007) finds every row holding the words, in every granule, so the
-- candidates' read scanned search_time whole: 7.5 s at 1e8 events, 0.9-2.8 s at 1e7 (docs/BENCHMARKS.md,
-- session 24). Two adjacent words are rare even when each word is common.
--
-- What:
--   * search_time.text keeps every searchable column, but the free-text ones (subject, message, confirmation)
--     now come last, after a '\x1f' (a separator to splitByNonAlpha, so tok_text and `text LIKE` see the same
--     tokens and every column's text as before).
--   * tok_pairs indexes, for each two adjacent tokens of the text after the first '\x1f' (all of it on rows
--     written before this migration, which have none), the last 4 characters of the first and the first 4 of
--     the second: 'player config product' gives 'ayer conf', 'nfig prod'. Only pairs whose two halves are
--     ASCII letters are kept (ids, addresses' digits and hex are where most distinct pairs are). Cutting the
--     words keeps the index small and lets the first and last words of a `contains` phrase count, though
--     they may be the end or the start of longer words: 'player' is the end of whatever word it is part of.
--   * eximtrack/search_plan.py (`phrase_pairs`) computes the same pairs from a phrase searched in subject or
--     message and adds `hasAllTokens(<this expression>, pairs)` to the candidates' `text LIKE`: the granules
--     without every pair are skipped. A row whose column contains the phrase has those pairs, so the
--     candidates stay a superset, as every access path's must (007).
--
-- Upgrade in place: the index and the view change; no rows move. Rows written before have the old layout:
-- the expression takes their whole text (a superset again), and their parts are read without the index until
-- merges or TTL replace them, or `eximtrack rebuild-search-index --table search_time` lays them out anew.
-- Searches read with query_plan_direct_read_from_text_index = 0 (sinks/clickhouse/store.py): ClickHouse 26.9
-- fails on this expression's lambdas when it reads a part without the index directly.
-- Cost: 11-12 B per event at 1e7 on the bench corpus (docs/BENCHMARKS.md).

ALTER TABLE search_time ADD INDEX IF NOT EXISTS tok_pairs arrayFilter(p -> match(p, '^[a-z]+ [a-z]+$'), arrayMap((a, b) -> concat(substring(a, -4), ' ', substring(b, 1, 4)), arrayPopBack(splitByNonAlpha(substring(text, position(text, '\x1f') + 1))), arrayPopFront(splitByNonAlpha(substring(text, position(text, '\x1f') + 1))))) TYPE text(tokenizer = array);

ALTER TABLE search_time_mv MODIFY QUERY
SELECT DISTINCT sendunixtime AS ts, server, msgid, msgtime, type,
    lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation)) AS text
FROM latest
WHERE is_deleted = 0;
