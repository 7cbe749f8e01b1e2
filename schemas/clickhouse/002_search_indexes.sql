-- eximtrack ClickHouse schema, migration 002: skip indexes for the searches, as measured in chDB 26.9.
--
-- Replaces the ngrambf_v1 indexes of 001. Measured on 3M distinct addresses (8192-row granules):
-- an ngrambf_v1(3, 8192, 3, 0) filter per granule is saturated (every bit set: 145 KiB for the whole
-- column) and prunes nothing: lower(recipient) = … 34 ms vs 31 ms without an index, LIKE '%…%' 28 vs 28 ms.
-- What prunes:
--   * bloom_filter on lower(col): the eq searches (lower(recipient) = 'x': 4 ms vs 31 ms);
--   * a text index (tokenizer splitByNonAlpha, preprocessor lower(col)): token searches, used by
--     eximtrack/search.py as a prefilter `hasAllTokens(col, [complete lower-case tokens of the value])`
--     in front of the exact eq / begins / contains test (recipient contains with one whole token:
--     7 ms vs 374 ms on `latest FINAL`, 2M rows). Cheaper to build than the ngram filters (200k events:
--     2.1 s with these vs 2.6 s with 001's).
-- Searches read only `latest`; `events` keeps only what `eximtrack show` needs (msgid, parent_msgid, time).
-- In chDB 26.9 hasAllTokens applies the index's preprocessor only in WHERE (in a SELECT list it is
-- case-sensitive), and hasAllTokens(col, []) is false: search.py passes tokens lower-cased, never empty.

ALTER TABLE events DROP INDEX IF EXISTS idx_recipient;
ALTER TABLE events DROP INDEX IF EXISTS idx_email;

ALTER TABLE latest DROP INDEX IF EXISTS idx_recipient;
ALTER TABLE latest DROP INDEX IF EXISTS idx_email;
ALTER TABLE latest DROP INDEX IF EXISTS idx_deliveredto;
ALTER TABLE latest DROP INDEX IF EXISTS idx_subject;
ALTER TABLE latest DROP INDEX IF EXISTS idx_message_id;

ALTER TABLE latest ADD INDEX IF NOT EXISTS eq_recipient lower(recipient) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE latest ADD INDEX IF NOT EXISTS eq_email lower(email) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE latest ADD INDEX IF NOT EXISTS eq_message_id lower(message_id) TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE latest ADD INDEX IF NOT EXISTS tok_recipient recipient TYPE text(tokenizer = splitByNonAlpha, preprocessor = lower(recipient));
ALTER TABLE latest ADD INDEX IF NOT EXISTS tok_email email TYPE text(tokenizer = splitByNonAlpha, preprocessor = lower(email));
ALTER TABLE latest ADD INDEX IF NOT EXISTS tok_subject subject TYPE text(tokenizer = splitByNonAlpha, preprocessor = lower(subject));

ALTER TABLE latest MATERIALIZE INDEX eq_recipient;
ALTER TABLE latest MATERIALIZE INDEX eq_email;
ALTER TABLE latest MATERIALIZE INDEX eq_message_id;
ALTER TABLE latest MATERIALIZE INDEX tok_recipient;
ALTER TABLE latest MATERIALIZE INDEX tok_email;
ALTER TABLE latest MATERIALIZE INDEX tok_subject;
