-- eximtrack ClickHouse schema, migration 006: a text index for the `all` free-text search of the API.
--
-- `all` (eximtrack/web/query.py) matches a value in ANY of 21 text columns (an OR of lower(col) LIKE ...); no
-- per-column index can prune an OR, so it read every granule of `latest FINAL`. `tok_all` is a text index
-- (tokenizer splitByNonAlpha, preprocessor lower) on those columns joined by ' ' (query.ALL_TEXT, the same
-- expression character for character; tests/bench/test_queries.py checks it). A value one column matches
-- contains only whole tokens of that column, hence of the joined text, so
-- `hasAllTokens(<expr>, [complete tokens of the value]) AND (<the OR>)` selects exactly the rows of the OR
-- alone while the index prunes granules. Values without a complete token (a fragment) are unchanged.
-- Measured by bench/queries.py (chDB 26.9, 2 cores, `all` = a recipient address, 1e7 events, same rows):
-- 2.3 s -> 0.8 s just after the fill, 2.3 s -> 0.26 s with `latest` merged. Cost: the index is ~120 bytes
-- per `latest` row (~35 bytes per stored event), the largest index of the table.

ALTER TABLE latest ADD INDEX IF NOT EXISTS tok_all concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message, confirmation, subject, message_id, server) TYPE text(tokenizer = splitByNonAlpha, preprocessor = lower(concatWithSeparator(' ', email, sender, user, domain, senderhost, senderip, senderauth, recipient, deliveredto, deliveryuser, deliverydomain, msgid, router, transport, host, ip, message, confirmation, subject, message_id, server)));

ALTER TABLE latest MATERIALIZE INDEX tok_all;
