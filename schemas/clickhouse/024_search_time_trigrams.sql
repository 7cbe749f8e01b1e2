-- eximtrack ClickHouse schema, migration 024: search_time's text index on character trigrams.
--
-- Why: tok_text (007) indexed whole words (splitByNonAlpha). A search `contains` a part of a word (the first
-- label of a domain, `quote-launch1`; a piece of a name, `hite52`) has no whole word to look up: both end
-- words may be parts of longer ones. It read search_time whole, newest first: 6.4-6.6 s at 1e8 events,
-- 0.64-0.69 s at 1e7, a cost that grows with the store (docs/BENCHMARKS.md, sessions 27 and 28).
--
-- What: the text index of search_time.text is now one of its character trigrams (`ngrams(3)`): ClickHouse
-- looks up the trigrams of a `text LIKE '%value%'` (any value of 3 characters or more, whole words or not,
-- across separators too) and reads only the rows holding all of them. A column has one text index at most,
-- so tok_text goes. tok_pairs (021) stays: for a phrase of common words its word pairs skip more granules
-- than the trigrams do. The LIKE itself, the view and the rows are unchanged: a skip index only changes
-- what is read, never a result.
--
-- Measured at 1e7 events on a copy of search_time with the same rows (session 28, API page, p50): the
-- domain label as `all` 675 -> 80 ms, a piece of a name 269 -> 90 ms, a string found nowhere 207 -> 15 ms,
-- `der acc` in subjects 612 -> 157 ms; whole words, addresses and the time-path searches unchanged; a phrase
-- of common words (`invoice order`) 94 -> 107 ms.
-- Cost: the trigram index is about 3.7 times the word index (~1.0 GiB at 1e7 events against 274 MiB): the
-- store 461 -> 542 B per event at 1e8, 551 -> 632 at 1e7, 536 -> 608 at ingest size (docs/BENCHMARKS.md,
-- session 28). `eximtrack ingest` leaves it to the merges and builds it at its end (Store.text_index_deferred):
-- built by each of its inserts it cost 9-10 % of ingest's speed.
--
-- Upgrade in place: the index is dropped and added (new parts have it at once), then built for the parts
-- already written by a mutation (`MATERIALIZE INDEX`, waited for). Until a part has it, its rows are read
-- without an index: slower, never different. The `--@when` line issues the mutation once: a store closed
-- while it runs resumes it when opened again (ClickHouse keeps its mutations).
ALTER TABLE search_time DROP INDEX IF EXISTS tok_text;

ALTER TABLE search_time ADD INDEX IF NOT EXISTS grams_text text TYPE text(tokenizer = ngrams(3));

--@when SELECT count() = 0 FROM system.mutations WHERE database = currentDatabase() AND table = 'search_time' AND command LIKE '%MATERIALIZE INDEX grams_text%'
ALTER TABLE search_time MATERIALIZE INDEX grams_text SETTINGS mutations_sync = 2;
