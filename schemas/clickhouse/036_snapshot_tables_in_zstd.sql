-- eximtrack ClickHouse schema, migration 036: the snapshot tables compressed with ZSTD(3).
--
-- Why: issue 11 allows ~489 bytes per stored event; the 1e8 bench store held 490.7 after migration 035. The
-- snapshot tables (the finalised numbers of the hourly aggregates per hour, day and 30-day window: 008, 013,
-- 014, 017, 019) had no codec of their own, so every part the refresher writes and every small merge is LZ4;
-- chDB writes only merged parts of over ~100 MB with ZSTD(3) (its own rule), and a ClickHouse server writes
-- LZ4 unless its `<compression>` configuration says otherwise. At 1e8 their LZ4 parts held 1.7-2.4 times the
-- bytes per row of their ZSTD(3) parts (mail_daily_snap: 69 against 29 bytes per row, its projections
-- included); at 1e7, where every part was LZ4, the snapshot tables held 36 bytes per event, 18 with ZSTD(3).
--
-- What: the table setting default_compression_codec = 'ZSTD(3)' (every column, projection parts included,
-- in new parts and every merge). The snapshot tables are written by the refresher (every 30 s in the sink,
-- at the end of `ingest`), never by the inserts of the sink's batches (session (32) measured ZSTD on the
-- tables every batch writes: the freshness tail doubled); a refresh compresses its rows once. The
-- bookkeeping tables (`*_snap_hours`, `_days`, `_windows`) hold a row per hour or day and keep LZ4.
--
-- Upgrade in place: ALTER TABLE ... REWRITE PARTS rewrites each stored part with the new setting (a mutation
-- per table, part for part: the parts and rows stay as they were), not waited for (`mutations_sync = 0`, as
-- in 033): 12 s at 1e7 events, 29 s at 1e8 (docs/BENCHMARKS.md, session (56)), during which the refresher
-- writes and the reads read as before. Each runs only while a part of its table is not ZSTD(3) and no such
-- mutation is pending, so the steps run again after a crash start no second rewrite.

-- mail_hourly_snap
ALTER TABLE mail_hourly_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'mail_hourly_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'mail_hourly_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE mail_hourly_snap REWRITE PARTS SETTINGS mutations_sync = 0;

-- mail_daily_snap
ALTER TABLE mail_daily_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'mail_daily_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'mail_daily_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE mail_daily_snap REWRITE PARTS SETTINGS mutations_sync = 0;

-- mail_window_snap
ALTER TABLE mail_window_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'mail_window_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'mail_window_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE mail_window_snap REWRITE PARTS SETTINGS mutations_sync = 0;

-- activity_hourly_snap
ALTER TABLE activity_hourly_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'activity_hourly_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'activity_hourly_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE activity_hourly_snap REWRITE PARTS SETTINGS mutations_sync = 0;

-- reasons_hourly_snap
ALTER TABLE reasons_hourly_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'reasons_hourly_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'reasons_hourly_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE reasons_hourly_snap REWRITE PARTS SETTINGS mutations_sync = 0;

-- delays_fleet_snap
ALTER TABLE delays_fleet_snap MODIFY SETTING default_compression_codec = 'ZSTD(3)';
--@when SELECT (SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'delays_fleet_snap' AND active AND default_compression_codec != 'ZSTD(3)') > 0 AND (SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'delays_fleet_snap' AND NOT is_done AND command LIKE '%REWRITE PARTS%') = 0
ALTER TABLE delays_fleet_snap REWRITE PARTS SETTINGS mutations_sync = 0;
