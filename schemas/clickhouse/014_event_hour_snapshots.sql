-- eximtrack ClickHouse schema, migration 014: hourly snapshots of `activity_hourly` and `reasons_hourly`,
-- the set-state tables keyed by the hour of each event, so that the pipeline and reasons dashboards read
-- plain numbers instead of merging uniqExact states.
--
-- Why: their panels merged every state of the range, so a 24-hour panel cost about as much as the events
-- of 24 hours (at 1e8 events the top deferral reasons took ~220 ms and "events stored per hour" ~150 ms,
-- 5-7x their cost at 1e7; docs/BENCHMARKS.md). An hour's numbers change only while events of that hour
-- still arrive, so they can be kept finalised, as migration 008 does for `mail_hourly`.
--
-- How: the scheme of 008 (eximtrack/stats_snapshots.py; the sink refreshes every 30 s):
--   * `inserts` counts the events each insert added to a key; sum(inserts) of an hour (projection
--     `hour_inserts`, in the same parts as the states) grows with every insert touching the hour,
--     duplicates and replays included;
--   * the refresh writes the finalised numbers of `<table>_v` for each hour without a recorded snapshot at
--     its current counter into `<table>_snap`, with that counter (`seen`) and a random `writer`, then
--     records (hour, seen, writer) in `<table>_snap_hours`;
--   * `<table>_all` reads the recorded snapshot of each hour whose `seen` equals the hour's current counter
--     (of several writers, the smallest), and the merged states of every other hour: exact whatever state
--     the snapshots are in. No rollup here: every stored hour is either clean or dirty.
--
-- Summing over keys: `activity_hourly.events` (distinct event ids) and, within one type,
-- `reasons_hourly.attempts` (distinct attempts of a row) count things that belong to exactly one
-- (hour, key), so their snapshot numbers add up over servers, hosts and hours. `rows`, `recipients` and
-- `messages` count things that recur over hours and keys: right per (hour, key) only, so the panels that
-- rank them over a range keep merging the states. Projections per (hour, type, template) and (hour, type,
-- deliverydomain) answer the deferral panels from a few rows per hour.
-- Cost: one row per (hour, key) in each snapshot table; see docs/BENCHMARKS.md.

ALTER TABLE activity_hourly ADD COLUMN IF NOT EXISTS inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0;

ALTER TABLE activity_hourly MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE activity_hourly ADD PROJECTION IF NOT EXISTS hour_inserts (SELECT hour, sum(inserts) GROUP BY hour);

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'activity_hourly' AND active
ALTER TABLE activity_hourly MATERIALIZE PROJECTION hour_inserts SETTINGS mutations_sync = 1;

ALTER TABLE activity_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    uniqExactState(event_id) AS events,
    uniqExactState(server, msgid, recipient, deliveredto) AS rows,
    max(actionunixtime) AS last_event,
    count() AS inserts
FROM events
WHERE is_deleted = 0
GROUP BY hour, server, type;

CREATE OR REPLACE VIEW activity_hourly_v AS
SELECT
    hour, server, type,
    uniqExactMerge(events) AS events,
    uniqExactMerge(rows) AS rows,
    max(last_event) AS last_event,
    sum(inserts) AS inserts
FROM activity_hourly
GROUP BY hour, server, type;

CREATE TABLE IF NOT EXISTS activity_hourly_snap
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    server LowCardinality(String),
    type LowCardinality(String),
    events UInt64,
    rows UInt64,
    last_event DateTime64(3, 'UTC'),
    PROJECTION by_type (SELECT hour, seen, writer, type, sum(events), max(last_event) GROUP BY hour, seen, writer, type)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, seen, writer, server, type)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild', lightweight_mutation_projection_mode = 'rebuild';

CREATE TABLE IF NOT EXISTS activity_hourly_snap_hours
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    keys UInt64,
    taken_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (hour, seen, writer)
TTL hour + toIntervalDay(730);

CREATE OR REPLACE VIEW activity_hourly_all AS
SELECT hour, server, type, events, rows, last_event
FROM activity_hourly_snap
WHERE (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM activity_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM activity_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT hour, server, type, events, rows, last_event
FROM activity_hourly_v
WHERE hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM activity_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM activity_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0);

ALTER TABLE reasons_hourly ADD COLUMN IF NOT EXISTS inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0;

ALTER TABLE reasons_hourly MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE reasons_hourly ADD PROJECTION IF NOT EXISTS hour_inserts (SELECT hour, sum(inserts) GROUP BY hour);

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'reasons_hourly' AND active
ALTER TABLE reasons_hourly MATERIALIZE PROJECTION hour_inserts SETTINGS mutations_sync = 1;

ALTER TABLE reasons_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' ')), 200) AS template,
    uniqExactState(server, msgid, recipient, deliveredto, attempts) AS attempts,
    uniqExactState(server, msgid, recipient) AS recipients,
    uniqExactState(server, msgid) AS messages,
    any(message) AS example,
    count() AS inserts
FROM events
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

CREATE OR REPLACE VIEW reasons_hourly_v AS
SELECT
    hour, server, type, deliverydomain, host, ip, template,
    uniqExactMerge(attempts) AS attempts,
    uniqExactMerge(recipients) AS recipients,
    uniqExactMerge(messages) AS messages,
    any(example) AS example,
    sum(inserts) AS inserts
FROM reasons_hourly
GROUP BY hour, server, type, deliverydomain, host, ip, template;

CREATE TABLE IF NOT EXISTS reasons_hourly_snap
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    server LowCardinality(String),
    type LowCardinality(String),
    deliverydomain String,
    host String,
    ip String,
    template String,
    attempts UInt64,
    recipients UInt64,
    messages UInt64,
    example String,
    PROJECTION by_template (SELECT hour, seen, writer, type, template, sum(attempts) GROUP BY hour, seen, writer, type, template),
    PROJECTION by_domain (SELECT hour, seen, writer, type, deliverydomain, sum(attempts) GROUP BY hour, seen, writer, type, deliverydomain)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, seen, writer, type, server, deliverydomain, host, ip, template)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild', lightweight_mutation_projection_mode = 'rebuild';

CREATE TABLE IF NOT EXISTS reasons_hourly_snap_hours
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    keys UInt64,
    taken_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (hour, seen, writer)
TTL hour + toIntervalDay(730);

CREATE OR REPLACE VIEW reasons_hourly_all AS
SELECT hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages, example
FROM reasons_hourly_snap
WHERE (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM reasons_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM reasons_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages, example
FROM reasons_hourly_v
WHERE hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM reasons_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM reasons_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0);
