-- eximtrack ClickHouse schema, migration 016: the spam scores of outbound mail per sender and arrival hour,
-- for the fleet alert `spam_score_jump` (eximtrack/alerts/): a mailbox whose mail starts to score as spam.
--
-- Set-based like every aggregate of 003 (duplicates and replays change nothing): `scored` is the set of
-- scored messages, `score_sum` sums each message's score once, (score + 1000) x 100 rounded, shifted above a
-- 128-bit hash of the message (the `bytes` trick of 003: the hash keeps equal scores of two messages
-- distinct, a duplicate identical). Mean score = (sumDistinctMerge(score_sum) >> 192) / 100 /
-- uniqExactMerge(scored) - 1000. Only authenticated (outbound) mail with a score (a SpamAssassin X= on its
-- arrival) is kept: most outbound mail is not scanned, and the alert needs only the scanned.
CREATE TABLE IF NOT EXISTS spam_hourly
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    domain String,
    sender String,
    scored AggregateFunction(uniqExact, String, String),
    score_sum AggregateFunction(sumDistinct, UInt256)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, owner, user, domain, sender)
TTL hour + toIntervalDay(730);

CREATE MATERIALIZED VIEW IF NOT EXISTS spam_hourly_mv TO spam_hourly AS
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    lower(email) AS sender,
    uniqExactState(server, msgid) AS scored,
    sumDistinctState(bitShiftLeft(toUInt256(toUInt64(round((assumeNotNull(spamscore) + 1000) * 100))), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid)))) AS score_sum
FROM events
WHERE senderauth != '' AND protocol != '' AND spamscore IS NOT NULL AND type != 'rejected'
GROUP BY hour, server, owner, user, domain, sender;

-- the same SELECT over what is stored already (a store older than this migration)
INSERT INTO spam_hourly
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    lower(email) AS sender,
    uniqExactState(server, msgid) AS scored,
    sumDistinctState(bitShiftLeft(toUInt256(toUInt64(round((assumeNotNull(spamscore) + 1000) * 100))), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid)))) AS score_sum
FROM events
WHERE senderauth != '' AND protocol != '' AND spamscore IS NOT NULL AND type != 'rejected'
GROUP BY hour, server, owner, user, domain, sender;
