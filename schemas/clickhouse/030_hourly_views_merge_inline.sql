-- eximtrack ClickHouse schema, migration 030: the dirty hours' states merged inside the views that read them.
--
-- Why: the Grafana panels and analysts read `mail_hourly_all` (008) and `reasons_hourly_all` (014). Each has a
-- branch for the hours whose snapshot is not current (dirty), which read the view `mail_hourly_v` (or
-- `reasons_hourly_v`) with the hours' condition outside it. Planning that view of a view costs chDB a few ms
-- on every read, even when no hour is dirty (the bench stores, and most reads of a live store, have none):
-- `SELECT * FROM mail_hourly_v WHERE 0` took 12-14 ms at 1e7 events, the same aggregation written out with
-- its condition inside 5-7 ms.
--
-- What: the same two views, with the dirty branch's aggregation written out (the SELECT of mail_hourly_v or
-- reasons_hourly_v, as the baseline has it) and the hours' condition inside it, before its GROUP BY. The
-- condition is on `hour`, a key of the GROUP BY, so each group is kept or dropped whole: the same rows as
-- before, whatever the hours. Every other branch, the columns and their types are unchanged, and so are the
-- views built on them (`abuse_senders_hourly`, `abuse_domains_hourly`). Speed: docs/BENCHMARKS.md, session (49).

CREATE OR REPLACE VIEW mail_hourly_all AS
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
    defer_attempts, last_event
FROM mail_hourly_snap
WHERE hour >= (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
    AND (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM mail_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT
    hour, server, owner, user, domain, sender, outbound, messages, bytes, recipients, rcpt_addresses, rows,
    inprogress, deferred, success, filtered, archive, failure, rejected, deferred_ever, defer_or_fail_ever,
    defer_attempts, toDateTime64(last_event, 3, 'UTC') AS last_event
FROM (
    SELECT
        hour, server, owner, user, domain, sender, outbound,
        uniqExactMerge(messages) AS messages,
        toUInt64(bitShiftRight(sumDistinctMerge(bytes), 192)) AS bytes,
        uniqExactMerge(recipients) AS recipients,
        uniqExactMerge(rcpt_addresses) AS rcpt_addresses,
        uniqExactMerge(rows_seen) - uniqExactMerge(rows_removed) AS rows,
        (uniqExactMerge(rows_seen) - uniqExactMerge(rows_deferred_or_final)) - uniqExactMerge(rows_removed) AS inprogress,
        uniqExactMerge(rows_deferred_or_final) - uniqExactMerge(rows_final) AS deferred,
        uniqExactMerge(rows_success) AS success,
        uniqExactMerge(rows_filtered) AS filtered,
        uniqExactMerge(rows_archive) AS archive,
        uniqExactMerge(rows_failure) AS failure,
        uniqExactMerge(rejected) AS rejected,
        uniqExactMerge(rows_deferred_ever) AS deferred_ever,
        uniqExactMerge(rows_defer_or_fail_ever) AS defer_or_fail_ever,
        uniqExactMerge(defer_attempts) AS defer_attempts,
        max(last_event) AS last_event
    FROM mail_hourly
    WHERE hour >= (SELECT max(horizon) FROM rollup_state WHERE name = 'mail_hourly')
        AND hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
            FROM (SELECT hour, sum(inserts) AS n FROM mail_hourly GROUP BY hour) AS c
            LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM mail_hourly_snap_hours GROUP BY hour, seen) AS r
            ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0)
    GROUP BY hour, server, owner, user, domain, sender, outbound);

CREATE OR REPLACE VIEW reasons_hourly_all AS
SELECT hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages, example
FROM reasons_hourly_snap
WHERE (hour, seen, writer) IN (SELECT x.1, x.2, x.3 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM reasons_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM reasons_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 != 0)
UNION ALL
SELECT hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages, example
FROM (
    SELECT
        hour, server, type, deliverydomain, host, ip, template,
        uniqExactMerge(attempts) AS attempts,
        uniqExactMerge(recipients) AS recipients,
        uniqExactMerge(messages) AS messages,
        any(example) AS example
    FROM reasons_hourly
    WHERE hour IN (SELECT x.1 FROM (SELECT arrayJoin((SELECT groupArray((c.hour, c.n, r.w))
        FROM (SELECT hour, sum(inserts) AS n FROM reasons_hourly GROUP BY hour) AS c
        LEFT JOIN (SELECT hour, seen, min(writer) AS w FROM reasons_hourly_snap_hours GROUP BY hour, seen) AS r
        ON c.hour = r.hour AND c.n = r.seen)) AS x) WHERE x.3 = 0)
    GROUP BY hour, server, type, deliverydomain, host, ip, template);
