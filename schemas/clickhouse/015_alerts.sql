-- eximtrack ClickHouse schema, migration 015: fleet alerts (eximtrack/alerts/), one row per version of an
-- alert.
--
-- An alert is one rule's finding about one key (an account, a sender, a server, a server's destination)
-- from the time it fired until it resolved. `eximtrack alerts run` writes a new version of the row at each
-- change: firing (with the numbers that made it fire), updated numbers while it fires, resolved. The current
-- state of every alert is `alerts FINAL` (ReplacingMergeTree by `version`); the page and the API read it
-- scoped like every other row (`owner` and `user` are the account's, empty for server-wide alerts).
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    rule LowCardinality(String),
    kind LowCardinality(String),
    key String,
    server LowCardinality(String),
    owner LowCardinality(String),
    user String,
    email String,
    deliverydomain String,
    state LowCardinality(String),
    started_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    value Float64,
    baseline Float64,
    threshold Float64,
    summary String,
    reasons Array(String),
    examples Array(String),
    link String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (rule, key, alert_id)
TTL toDateTime(started_at) + toIntervalDay(730);
