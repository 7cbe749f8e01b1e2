-- eximtrack ClickHouse schema, migration 010: aggregate projections of the stats snapshots, per hour and
-- per hour and server.
--
-- Why: a snapshot row is one (hour, server, owner, user, domain, sender, outbound) key, so a fleet-wide
-- chart per hour or `eximtrack stats --by server` over 30 days summed every sender's row of every hour
-- (about one row per message sent at the generator's shape; 1.7M rows at 1e7 events, ~14M at 1e8). The
-- projections keep the same sums per (hour, seen, writer[, server], outbound): a few thousand rows per day.
-- ClickHouse answers a GROUP BY of the snapshot table from a projection when every column the query reads
-- is a key of the projection or an aggregate of it; eximtrack/hourly_read.py writes the reads that way
-- (per-column sums, pre-aggregated inside the snapshot branch). `seen` and `writer` are keys, so a read of
-- the recorded snapshot of an hour stays exact.
--
-- The table is plain MergeTree, written by INSERT … SELECT and trimmed by lightweight DELETEs of unread
-- snapshots (eximtrack/stats_snapshots.py): a DELETE rebuilds the projections of the parts it touches.
-- Cost at 1e8 events (docs/BENCHMARKS.md): by_server 38.8 MB beside the table's 569 MB (+6.8 %), by_hour 87 KB;
-- materialising both on that store took 9.3 s. Reading them is slower per row than a plain table (sum states),
-- but 30 days by server read 1.7M projection rows instead of 17M snapshot rows: 810-930 -> 233 ms.

ALTER TABLE mail_hourly_snap MODIFY SETTING lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE mail_hourly_snap ADD PROJECTION IF NOT EXISTS by_hour (SELECT hour, seen, writer, outbound, sum(messages), sum(bytes), sum(recipients), sum(rcpt_addresses), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY hour, seen, writer, outbound);

ALTER TABLE mail_hourly_snap ADD PROJECTION IF NOT EXISTS by_server (SELECT hour, seen, writer, server, outbound, sum(messages), sum(bytes), sum(recipients), sum(rcpt_addresses), sum(rows), sum(inprogress), sum(deferred), sum(success), sum(filtered), sum(archive), sum(failure), sum(rejected), sum(deferred_ever), sum(defer_or_fail_ever), sum(defer_attempts), max(last_event) GROUP BY hour, seen, writer, server, outbound);

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'mail_hourly_snap' AND active
ALTER TABLE mail_hourly_snap MATERIALIZE PROJECTION by_hour SETTINGS mutations_sync = 1;

--@when SELECT count() > 0 FROM system.parts WHERE database = currentDatabase() AND table = 'mail_hourly_snap' AND active
ALTER TABLE mail_hourly_snap MATERIALIZE PROJECTION by_server SETTINGS mutations_sync = 1;
