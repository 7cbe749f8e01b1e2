-- eximtrack ClickHouse schema, migration 025: tok_pairs indexes a stored column of word pairs (text_pairs)
-- instead of an expression of seven regular-expression rewrites.
--
-- Why: migration 021's tok_pairs indexed an expression (for every two adjacent words after the '\x1f' of
-- search_time.text, the last 4 characters of the first and the first 4 of the second, when both halves are
-- ASCII letters) built with seven nested replaceRegexpAll. ClickHouse computes an index's expression for
-- every row of every insert and again for every row of every merge (session 29): the expression took 30 ms
-- per 4.4k rows (an events insert of the sink is ~200 ms), and a merge of 98k rows of search_time took
-- 1.55-1.79 s with it against 0.88-0.93 s without a pairs index. Now the pairs are a MATERIALIZED column,
-- computed once per row when it is inserted, by array functions (5 ms per 4.4k rows); merges copy it
-- (0.93-0.96 s).
--
-- The expression: extractAll of the runs of word characters (021's class: ASCII letters, digits, bytes
-- >= 0x80), each word's last 4 bytes paired with the next word's first 4 (`right`, `left`), kept when both
-- halves are ASCII letters (bytes, not characters: a half holding a byte >= 0x80 is left out either way).
-- A column, not an index expression: ClickHouse 26.9 cannot read a part that lacks an index whose expression
-- has a lambda (it evaluates the expression with its lambdas already folded: "First argument for function
-- arrayMap must be a function"), and with a column the index and the planner name the same thing.
--
-- Same pairs: every term a search asks for ("xxxx yyyy", eximtrack/search_plan.py phrase_pairs) is in the
-- column's tokens exactly when it was in 021's expression's, on 120k real texts and 50k random ones
-- (tests/integration/test_store.py compares them on random texts with digits, punctuation, control
-- characters and non-ASCII). 021's expression also left one-word tokens (the first word's head, the last
-- word's tail) that no search asks for; the column has none, so the index is a quarter smaller.
-- Cost: the column ~7 B per search_time row compressed, the index 25 % smaller (~1.5 B per row less).
--
-- Upgrade in place: the column is added (new rows have it at once; for old parts ClickHouse computes it when
-- read), the index on 021's expression is dropped (only while it still has that expression: a store closed
-- half-way does not drop the new one again) and added on the column, then one mutation writes the column
-- and one builds the index for the parts already written (waited for). Until a part has the index, a phrase
-- search reads its rows' column with the index's tokenizer (ClickHouse knows it from the table): slower,
-- never different.
ALTER TABLE search_time ADD COLUMN IF NOT EXISTS text_pairs String MATERIALIZED arrayStringConcat(arrayFilter(p -> match(p, '^[a-z]+ [a-z]+$'), arrayMap((a, b) -> concat(right(a, 4), ' ', left(b, 4)), arrayPopBack(extractAll(substring(text, position(text, '\x1f') + 1), '[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+')), arrayPopFront(extractAll(substring(text, position(text, '\x1f') + 1), '[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+')))), '_');

--@when SELECT count() > 0 FROM system.data_skipping_indices WHERE database = currentDatabase() AND table = 'search_time' AND name = 'tok_pairs' AND expr != 'text_pairs'
ALTER TABLE search_time DROP INDEX tok_pairs;

ALTER TABLE search_time ADD INDEX IF NOT EXISTS tok_pairs text_pairs TYPE text(tokenizer = splitByString(['_']));

--@when SELECT count() = 0 FROM system.mutations WHERE database = currentDatabase() AND table = 'search_time' AND command LIKE '%MATERIALIZE COLUMN text_pairs%'
ALTER TABLE search_time MATERIALIZE COLUMN text_pairs SETTINGS mutations_sync = 2;

--@when SELECT count() = 0 FROM system.mutations WHERE database = currentDatabase() AND table = 'search_time' AND command LIKE '%MATERIALIZE INDEX tok_pairs%'
ALTER TABLE search_time MATERIALIZE INDEX tok_pairs SETTINGS mutations_sync = 2;
