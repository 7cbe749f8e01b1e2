-- eximtrack ClickHouse schema, migration 019: hourly snapshots of the fleet's delivery delays.
--
-- Why: the fleet dashboard's "remote delivery delay" panel merged, for every hour of its range, the
-- quantile states of every (server, destination domain) key of `delays_hourly`: each holds one value per
-- delivered row, so 24 hours at 1e8 events merged and sorted about a million values (85-105 ms, the panel
-- target is 50; docs/BENCHMARKS.md). Quantiles do not add up over keys, so the snapshot is taken at the
-- panel's own grain: per (hour, type, transport_is_remote) over the whole fleet.
--
-- How: the scheme of migrations 008 and 014 (eximtrack/stats_snapshots.py, `DELAYS`; the sink refreshes every
-- 30 s): `inserts` counts the events each insert added to a key of `delays_hourly`, its sum per hour
-- (projection `hour_inserts`) grows with every insert touching the hour; the refresh writes the finalised
-- numbers of `delays_fleet_v` for each hour without a recorded snapshot at its current counter into
-- `delays_fleet_snap` and records (hour, seen, writer) in `delays_fleet_snap_hours`; `delays_fleet_all`
-- reads the recorded snapshot of each hour whose `seen` equals the hour's current counter, and the merged
-- states of every other hour: exact whatever state the snapshots are in.
-- Cost: one row per (hour, type, transport_is_remote), a few per hour.

ALTER TABLE delays_hourly ADD COLUMN IF NOT EXISTS inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0;

ALTER TABLE delays_hourly MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE delays_hourly ADD PROJECTION IF NOT EXISTS hour_inserts (SELECT hour, sum(inserts) GROUP BY hour);

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'delays_hourly' AND active
ALTER TABLE delays_hourly MATERIALIZE PROJECTION hour_inserts SETTINGS mutations_sync = 1;

ALTER TABLE delays_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(server, msgid, recipient, deliveredto) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime))), 64) + cityHash64(server, msgid, recipient, deliveredto)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(queue_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt128(greatest(0, round(ifNull(delivery_time, 0) * 1000))), 64) + cityHash64(server, msgid, recipient, deliveredto), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

CREATE OR REPLACE VIEW delays_fleet_v AS
SELECT
    hour, type, transport_is_remote,
    uniqExactMerge(rows) AS rows,
    arrayMap(v -> toFloat64(bitShiftRight(v, 64)) / 1000, quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delay_ms)) AS delay_seconds,
    max(max_delay_ms) AS max_delay_ms,
    sum(inserts) AS inserts
FROM delays_hourly
GROUP BY hour, type, transport_is_remote;

CREATE TABLE IF NOT EXISTS delays_fleet_snap
(
    hour DateTime('UTC'),
    seen UInt64,
    writer UInt64,
    type LowCardinality(String),
    transport_is_remote UInt8,
    rows UInt64,
    delay_seconds Array(Float64),
    max_delay_ms Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, seen, writer, type, transport_is_remote)
TTL hour + toIntervalDay(730);

CREATE TABLE IF NOT EXISTS delays_fleet_snap_hours
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

CREATE OR REPLACE VIEW delays_fleet_all AS
SELECT hour, type, transport_is_remote, rows, delay_seconds, max_delay_ms
FROM delays_fleet_snap
WHERE (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM delays_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM delays_fleet_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT hour, type, transport_is_remote, rows, delay_seconds, max_delay_ms
FROM delays_fleet_v
WHERE hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM delays_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM delays_fleet_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0);
