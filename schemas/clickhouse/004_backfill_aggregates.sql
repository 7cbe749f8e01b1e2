-- eximtrack ClickHouse schema, migration 004: backfill the aggregates of 003 from what is already stored.
--
-- A materialized view only sees inserts made after it exists: a store that had events before 003 would show
-- empty dashboards for its history. Each statement below is the SELECT of one materialized view of 003 run
-- once over the existing table (generated from 003 by tests/views/test_rebuild.py, which fails when they
-- differ). Safe to run while the sink is inserting, and safe to run twice: every aggregate is a set, so an
-- event counted both by the backfill and by the view counts once. On a large store this takes a while
-- (it reads `events` once per view). `eximtrack rebuild-aggregates` runs the same statements after
-- truncating the aggregates (e.g. after re-ingesting old logs with a different account map).

INSERT INTO mail_hourly
SELECT
    toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS hour,
    server,
    owner,
    user,
    domain,
    if(senderauth != '', lower(email), '') AS sender,
    toUInt8(senderauth != '') AS outbound,
    uniqExactIfState(server, msgid, type != 'rejected') AS messages,
    sumDistinctIfState(bitShiftLeft(toUInt256(size), 192) + toUInt256(reinterpretAsUInt128(sipHash128(server, msgid))), type != 'rejected') AS bytes,
    uniqExactIfState(server, msgid, recipient, type != 'rejected' AND recipient != '') AS recipients,
    uniqExactIfState(recipient, type != 'rejected' AND recipient != '') AS rcpt_addresses,
    uniqExactIfState(server, msgid, recipient, deliveredto, type != 'rejected') AS rows_seen,
    uniqExactIfState(server, msgid, recipient, deliveredto, is_deleted = 1) AS rows_removed,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('defer', 'success', 'filtered', 'archive', 'failure')) AS rows_deferred_or_final,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('success', 'filtered', 'archive', 'failure')) AS rows_final,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'success') AS rows_success,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'filtered') AS rows_filtered,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'archive') AS rows_archive,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'failure') AS rows_failure,
    uniqExactIfState(server, msgid, recipient, deliveredto, type = 'defer') AS rows_deferred_ever,
    uniqExactIfState(server, msgid, recipient, deliveredto, type IN ('defer', 'failure')) AS rows_defer_or_fail_ever,
    uniqExactIfState(server, msgid, recipient, deliveredto, attempts, type = 'defer') AS defer_attempts,
    uniqExactIfState(event_id, type = 'rejected') AS rejected,
    max(actionunixtime) AS last_event
FROM events
WHERE protocol != '' OR type = 'rejected'
GROUP BY hour, server, owner, user, domain, sender, outbound;

INSERT INTO reasons_hourly
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
    any(message) AS example
FROM events
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

INSERT INTO delays_hourly
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
    max(greatest(toInt64(0), dateDiff('millisecond', sendunixtime, actionunixtime))) AS max_delay_ms
FROM events
WHERE type IN ('success', 'filtered', 'archive', 'failure') AND protocol != '' AND is_deleted = 0
GROUP BY hour, server, deliverydomain, type, transport_is_remote;

INSERT INTO rejections_hourly
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    senderip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' ')), 200) AS template,
    uniqExactState(event_id) AS rejections,
    uniqExactState(email) AS senders,
    uniqExactState(recipient) AS recipients,
    any(message) AS example
FROM events
WHERE type = 'rejected'
GROUP BY hour, server, senderip, template;

INSERT INTO activity_hourly
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    uniqExactState(event_id) AS events,
    uniqExactState(server, msgid, recipient, deliveredto) AS rows,
    max(actionunixtime) AS last_event
FROM events
WHERE is_deleted = 0
GROUP BY hour, server, type;

INSERT INTO unclassified_hourly
SELECT
    toStartOfHour(toDateTime(logunixtime, 'UTC')) AS hour,
    server,
    reason,
    uniqExactState(reject_id) AS lines
FROM rejects
GROUP BY hour, server, reason;
