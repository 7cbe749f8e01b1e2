-- eximtrack ClickHouse schema, migration 035: the delay quantiles of delays_hourly hold 64-bit elements.
--
-- Why: after migration 034 the three quantile states of delays_hourly (delay_ms, queue_time_ms,
-- delivery_time_ms) were 9.2 of the 493 bytes per event of the 1e8 bench store (issue 11's disk limit is
-- ~489). Each element was the row's delay in ms above its row's 64-bit hash (`ms << 64 | cityHash64(row)`,
-- a UInt128: 16 bytes), so that the distinct quantile counts each row once however often it is inserted.
--
-- What: an element is now `least(ms, 2^32 - 1) << 32 | (cityHash64(row) & (2^32 - 1))`, a UInt64. A delay is
-- read as `bitShiftRight(v, 32)` (was 64: the view delays_fleet_v, `eximtrack report`, the Grafana panel and
-- the SQL cookbook read it so; an analyst's own query must change too). Delays of 2^32 ms (49.7 days) or more
-- are counted at 49.7 days in the quantiles (Exim gives up on a message after days; max_delay_ms stays
-- exact). Two rows of one (hour, server, domain, type) count as one only if their delays are equal to the ms
-- and their 32-bit hashes too: about 1 in 4·10⁹ per pair of equal delays, and a quantile barely moves.
--
-- Upgrade in place as 034 does: the new layout beside the old one (`delays_hourly_next`, fed by its own view
-- from the first step on), each stored element rewritten from its 16 bytes (CAST(state AS String): the size,
-- a varint shorter than 16 bytes, then the elements, the hash in the low 8 bytes and the delay in the high
-- 8), the two exchanged, the view's SELECT replaced, the old layout dropped. The insert counters are copied
-- (the snapshots stay valid: they hold seconds); Store.open gives the table the aggregates' retention.
-- Time and disk: docs/BENCHMARKS.md, session (55).


-- the new layout beside the old one, fed by its own view from now on
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'delay_ms' AND type != 'AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64)'
CREATE TABLE IF NOT EXISTS delays_hourly_next
(
    hour DateTime('UTC'),
    server LowCardinality(String),
    deliverydomain String,
    type LowCardinality(String),
    transport_is_remote UInt8,
    rows AggregateFunction(uniqExact, UInt64),
    delay_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64),
    queue_time_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64),
    delivery_time_ms AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64),
    max_delay_ms SimpleAggregateFunction(max, Int64),
    inserts SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    PROJECTION hour_inserts (SELECT hour, sum(inserts) GROUP BY hour)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, server, deliverydomain, type, transport_is_remote)
TTL hour + toIntervalDay(730)
SETTINGS deduplicate_merge_projection_mode = 'rebuild';

--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'delay_ms' AND type != 'AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64)'
CREATE MATERIALIZED VIEW IF NOT EXISTS delays_hourly_next_mv TO delays_hourly_next AS
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, round(ifNull(queue_time, 0) * 1000)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, round(ifNull(delivery_time, 0) * 1000)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events_rollup
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

-- the stored states, each element rewritten
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'delay_ms' AND type != 'AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64)'
INSERT INTO delays_hourly_next (hour, server, deliverydomain, type, transport_is_remote, rows, delay_ms, queue_time_ms, delivery_time_ms, max_delay_ms, inserts)
SELECT
    hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    rows,
    arrayReduce('quantilesExactDistinctState(0.5, 0.9, 0.99)', arrayMap(i -> bitShiftLeft(least(reinterpretAsUInt64(substring(CAST(delay_ms AS String), length(CAST(delay_ms AS String)) % 16 + 16 * i + 1 + 8, 8)), 4294967295), 32) + bitAnd(reinterpretAsUInt64(substring(CAST(delay_ms AS String), length(CAST(delay_ms AS String)) % 16 + 16 * i + 1, 8)), 4294967295), range(intDiv(length(CAST(delay_ms AS String)), 16)))) AS delay_ms,
    arrayReduce('quantilesExactDistinctState(0.5, 0.9, 0.99)', arrayMap(i -> bitShiftLeft(least(reinterpretAsUInt64(substring(CAST(queue_time_ms AS String), length(CAST(queue_time_ms AS String)) % 16 + 16 * i + 1 + 8, 8)), 4294967295), 32) + bitAnd(reinterpretAsUInt64(substring(CAST(queue_time_ms AS String), length(CAST(queue_time_ms AS String)) % 16 + 16 * i + 1, 8)), 4294967295), range(intDiv(length(CAST(queue_time_ms AS String)), 16)))) AS queue_time_ms,
    arrayReduce('quantilesExactDistinctState(0.5, 0.9, 0.99)', arrayMap(i -> bitShiftLeft(least(reinterpretAsUInt64(substring(CAST(delivery_time_ms AS String), length(CAST(delivery_time_ms AS String)) % 16 + 16 * i + 1 + 8, 8)), 4294967295), 32) + bitAnd(reinterpretAsUInt64(substring(CAST(delivery_time_ms AS String), length(CAST(delivery_time_ms AS String)) % 16 + 16 * i + 1, 8)), 4294967295), range(intDiv(length(CAST(delivery_time_ms AS String)), 16)))) AS delivery_time_ms,
    max_delay_ms,
    inserts
FROM delays_hourly;

-- the layouts exchanged, the views reading and writing the new elements, the old layout dropped
--@when SELECT count() > 0 FROM system.columns WHERE database = currentDatabase() AND table = 'delays_hourly' AND name = 'delay_ms' AND type != 'AggregateFunction(quantilesExactDistinct(0.5, 0.9, 0.99), UInt64)'
EXCHANGE TABLES delays_hourly AND delays_hourly_next;

ALTER TABLE delays_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    deliverydomain,
    type,
    transport_is_remote,
    uniqExactState(reinterpretAsUInt64(sipHash128(concat(reinterpretAsFixedString(toUInt64(length(server) + 1)), server, '\0', reinterpretAsFixedString(toUInt64(length(msgid) + 1)), msgid, '\0', reinterpretAsFixedString(toUInt64(length(recipient) + 1)), recipient, '\0', reinterpretAsFixedString(toUInt64(length(deliveredto) + 1)), deliveredto, '\0')))) AS rows,
    quantilesExactDistinctState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295)) AS delay_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, round(ifNull(queue_time, 0) * 1000)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295), isNotNull(queue_time)) AS queue_time_ms,
    quantilesExactDistinctIfState(0.5, 0.9, 0.99)(bitShiftLeft(toUInt64(least(greatest(0, round(ifNull(delivery_time, 0) * 1000)), 4294967295)), 32) + bitAnd(cityHash64(server, msgid, recipient, deliveredto), 4294967295), isNotNull(delivery_time)) AS delivery_time_ms,
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms,
    count() AS inserts
FROM events_rollup
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

CREATE OR REPLACE VIEW delays_fleet_v AS
SELECT
    hour, type, transport_is_remote,
    uniqExactMerge(rows) AS rows,
    arrayMap(v -> toFloat64(bitShiftRight(v, 32)) / 1000, quantilesExactDistinctMerge(0.5, 0.9, 0.99)(delay_ms)) AS delay_seconds,
    max(max_delay_ms) AS max_delay_ms,
    sum(inserts) AS inserts
FROM delays_hourly
GROUP BY hour, type, transport_is_remote;

DROP VIEW IF EXISTS delays_hourly_next_mv;

DROP TABLE IF EXISTS delays_hourly_next;
