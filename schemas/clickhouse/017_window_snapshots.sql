-- eximtrack ClickHouse schema, migration 017: window snapshots of the mail counters of the last 30 days, so
-- that stats over 30 days grouped by server, owner, user or domain read one row per key instead of one per
-- (day, key) and per (hour, key).
--
-- Why: with the daily snapshots (migration 013) stats over 30 days still read every (day, key) row of the
-- range and merge them in a hash table of all keys: at 1e7 events 1.41M rows into 237k domains, 300-550 ms
-- (the table alone is 130 ms; the cost is the number of rows put into the hash table, not the reading). A
-- window is the sum of one set of days and hours per key, so the same answer merges one row per key.
--
-- How (eximtrack/window_snapshots.py, called by stats_snapshots.refresh after the daily snapshots):
--   * each hour, per grouping (`by`: server, owner, user, domain), a window sums the 30 days before the
--     current hour [start, end): the CURRENT daily snapshot of each whole day (pinned by (day, seen,
--     writer)) and the clean hourly snapshot of each other hour (pinned by (hour, seen, writer)), per key.
--     Hours before the rollup horizon (migration 005: final, never changed again) are summed from
--     `mail_hourly_totals` as the read takes them, the window recording the horizon it was built at.
--     Days and hours whose snapshot changed after a window pinned them are left out of the next one until
--     they are quiet again (live mail keeps changing the recent ones). The rows are written first, then the
--     pins are recorded in `mail_window_snap_windows`.
--   * a read (eximtrack/hourly_read.py) uses a window only while every day and hour it pinned is still the
--     current snapshot and lies in the range (whole days for days), and the horizon is the one it was built
--     at with its rolled hours in the range; the other days and hours of the range
--     are read as before (the edge), and a key's numbers are its window row plus its edge rows: exact.
--   * a read of the first N groups by an unsigned counter (SENDCOUNT, SUCCESSCOUNT, FAILCOUNT, TOTALSIZE)
--     takes only the window rows of the keys in the edge and of the first N + 1 keys of the window by that
--     counter: the edge only adds to a key, so a key with no edge row ahead of them never overtakes them.
--     `rank` (1 = most messages, ties by key) orders the rows, so the first N + 1 by SENDCOUNT (the default
--     sort) are a range of the primary key; `key_hash` (cityHash64(key)) finds the edge's keys by a set of
--     numbers (a colliding key only adds an exact row of another key).
-- Cost: one row per (window, by, key) of the last 30 days, a new window an hour (or when a pinned day or
-- hour changed, at most every 5 minutes), superseded ones deleted after the grace of the other snapshots.

CREATE TABLE IF NOT EXISTS mail_window_snap
(
    writer UInt64,
    by LowCardinality(String),
    rank UInt64,
    key_hash UInt64,
    key String,
    last Date,
    messages UInt64,
    bytes UInt64,
    success UInt64,
    filtered UInt64,
    archive UInt64,
    failure UInt64,
    rejected UInt64,
    deferred Int64,
    inprogress Int64
)
ENGINE = MergeTree
ORDER BY (writer, by, rank)
TTL last + toIntervalDay(730);

CREATE TABLE IF NOT EXISTS mail_window_snap_windows
(
    writer UInt64,
    by LowCardinality(String),
    start DateTime('UTC'),
    end DateTime('UTC'),
    horizon DateTime('UTC'),
    last Date,
    days Array(Tuple(Date, UInt64, UInt64)),
    hours Array(Tuple(DateTime('UTC'), UInt64, UInt64)),
    excluded_days Array(Date),
    excluded_hours Array(DateTime('UTC')),
    keys UInt64,
    taken_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (by, writer)
TTL last + toIntervalDay(730);
