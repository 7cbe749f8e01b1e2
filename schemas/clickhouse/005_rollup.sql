-- eximtrack ClickHouse schema, migration 005: closed hours of mail_hourly rolled up into plain numbers.
--
-- Why: the exact set states of mail_hourly (003) hold one 128-bit hash per message / row / recipient; they
-- cost about as much disk as the compressed events (measured 49 bytes per stored event) and merging them
-- takes as long as scanning `latest FINAL`. Exactness under duplicates needs the sets only while an hour can
-- still change. Once an hour is CLOSED (older than the joiner's 8-day expiry plus the 7-day Kafka replay
-- window: `eximtrack rollup` defaults to 16 days) its finalised numbers (mail_hourly_v) are copied into
-- `mail_hourly_totals` (~100 bytes per key instead of ~16 bytes per element) and the horizon in
-- `rollup_state` moves forward; `eximtrack rollup --drop-states` then drops the months of set states that
-- lie wholly before the horizon.
--
-- Read `mail_hourly_all`: totals for the hours before the horizon, finalised states from the horizon on.
-- Its counters are plain numbers with the meaning of mail_hourly_v, and SUMMING them over keys is exact
-- (each message and each row belongs to exactly one key), except `rcpt_addresses` (distinct addresses of
-- one key). Events inserted later for a rolled hour (re-ingest of old logs, a replay) change the states
-- only, which the view no longer reads for that hour: the rolled numbers stay as they were. Re-running a
-- rollup rewrites the same rows (ReplacingMergeTree by key, latest `rolled_at` wins).

CREATE TABLE IF NOT EXISTS mail_hourly_totals
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    domain String,
    sender String,
    outbound UInt8,
    messages UInt64,
    bytes UInt64,
    recipients UInt64,
    rcpt_addresses UInt64,
    rows Int64,
    inprogress Int64,
    deferred Int64,
    success UInt64,
    filtered UInt64,
    archive UInt64,
    failure UInt64,
    rejected UInt64,
    deferred_ever UInt64,
    defer_or_fail_ever UInt64,
    defer_attempts UInt64,
    last_event DateTime64(3, 'UTC'),
    rolled_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(rolled_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, owner, user, domain, sender, outbound)
TTL hour + toIntervalDay(730);

CREATE TABLE IF NOT EXISTS rollup_state
(
    name String,
    horizon DateTime('UTC'),
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

CREATE VIEW IF NOT EXISTS mail_hourly_all AS
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, last_event
FROM mail_hourly_totals FINAL
WHERE hour < (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
UNION ALL
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, toDateTime64(last_event, 3, 'UTC') AS last_event
FROM mail_hourly_v
WHERE hour >= (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly');

DROP VIEW IF EXISTS abuse_senders_hourly;

CREATE VIEW IF NOT EXISTS abuse_senders_hourly AS
SELECT
    hour, server, owner, user, sender,
    sum(messages) AS messages,
    sum(rcpt_addresses) AS unique_recipients,
    sum(rows) AS rows,
    sum(defer_or_fail_ever) AS defer_fail_rows,
    round(100 * defer_fail_rows / greatest(rows, 1), 1) AS defer_fail_percent,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_unique_recipients_per_hour') AS max_unique_recipients,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_defer_fail_percent') AS max_defer_fail_percent,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'sender_defer_fail_min_rows') AS min_defer_fail_rows,
    toUInt8(unique_recipients >= max_unique_recipients) AS over_recipients,
    toUInt8(defer_fail_rows >= min_defer_fail_rows AND defer_fail_percent >= max_defer_fail_percent) AS over_defer_fail
FROM mail_hourly_all
WHERE outbound = 1
GROUP BY hour, server, owner, user, sender;

DROP VIEW IF EXISTS abuse_domains_hourly;

CREATE VIEW IF NOT EXISTS abuse_domains_hourly AS
SELECT
    hour, domain,
    sum(messages) AS messages,
    (SELECT any(value) FROM abuse_thresholds FINAL WHERE name = 'domain_messages_per_hour') AS max_messages,
    toUInt8(messages >= max_messages) AS over_messages
FROM mail_hourly_all
WHERE outbound = 1
GROUP BY hour, domain;
