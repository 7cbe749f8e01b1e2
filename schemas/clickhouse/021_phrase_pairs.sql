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
--     The expression is regular expressions only (every token T written `first4(T)_last4(T)`, separators
--     made one space, so that the pairs are the pieces between '_'s, those with anything but letters
--     dropped): with lambdas (arrayMap over the tokens), ClickHouse 26.9 fails to read a part without the
--     index through the index ("direct read"), as every part written before this migration is.
--   * eximtrack/search_plan.py (`phrase_pairs`) computes the same pairs from a phrase searched in subject or
--     message and adds `hasAllTokens(<this expression>, pairs)` after the candidates' `text LIKE`: the
--     granules without every pair are skipped. A row whose column contains the phrase has those pairs, so
--     the candidates stay a superset, as every access path's must (007).
--
-- Upgrade in place: the index and the view change; no rows move. Rows written before have the old layout:
-- the expression takes their whole text (a superset again), and their parts are read without the index (the
-- expression evaluated on the rows their LIKE lets through) until merges or TTL replace them, or
-- `eximtrack rebuild-search-index --table search_time` lays them out anew.
-- Cost: about 8 B per event on the bench corpus (79 MB at 1e7 events; docs/BENCHMARKS.md, session 25).

ALTER TABLE search_time ADD INDEX IF NOT EXISTS tok_pairs replaceRegexpAll(replaceRegexpAll(concat('_', replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(substring(text, position(text, '\x1f') + 1), '[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+', ' '), '([^ ]+)', '\\1_\\1'), '([^ _]{4})[^ _]*_', '\\1_'), '_[^ _]*?([^ _]{1,4})( |$)', '_\\1\\2'), '_'), '_[^_]*[^a-z _][^_]*', ''), '_[^_ ]+(_)', '\\1') TYPE text(tokenizer = splitByString(['_']));

ALTER TABLE search_time_mv MODIFY QUERY
SELECT DISTINCT sendunixtime AS ts, server, msgid, msgtime, type,
    lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message_id, server, '\x1f', subject, message, confirmation)) AS text
FROM latest
WHERE is_deleted = 0;
