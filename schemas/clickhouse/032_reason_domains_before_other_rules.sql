-- eximtrack ClickHouse schema, migration 032: a reason's delivery domain replaced before the other rules.
--
-- Why: migration 028 replaced the row's delivery domain in a reason's template with <domain>, but after the
-- other rules, which cut a domain with a digit apart first: "(video-player1.de)" had become
-- "(video-<id>.de)" and no longer named the domain, "mx1.shop24.de" "<id>.<id>.de". Each such destination kept
-- a template of its own: at 1e8 events the bench store had 31,304 distinct deferral templates a day, 31,264 of
-- them such a domain (the bench's deferral texts have 40), so "top deferral reasons" still ranked one row per
-- destination.
--
-- What: the template replaces the domain right after the white space and the addresses, then applies the
-- other rules (`reasons.sql_expression("message", "deliverydomain")`; the Python `reasons.template(text,
-- domain)` gives the same, tests/views/test_reasons.py). Rejections have no delivery domain: unchanged.
--
-- Upgrade in place, as 028: the view first, then the stored rows whose template changes are copied with the
-- new template, computed from `example` (one text of the group), and the old rows are deleted (a mutation).
-- The states are sets, so a copy made twice after a crash between the two steps counts nothing twice; only
-- the hour's insert counter grows, which makes its snapshot be taken again. The reasons snapshots hold the
-- old templates: they are dropped, and the sink's snapshot refresh (or `eximtrack rollup`) takes them again;
-- until then reasons_hourly_all merges the states (exact, slower). Time and speed: docs/BENCHMARKS.md,
-- session (51).

-- reasons_hourly_mv: its SELECT as migration 028 left it, the domain replaced before the other rules
ALTER TABLE reasons_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200) AS template,
    uniqExactState(server, msgid, recipient, deliveredto, attempts) AS attempts,
    uniqExactState(server, msgid, recipient) AS recipients,
    uniqExactState(server, msgid) AS messages,
    any(message) AS example,
    count() AS inserts
FROM events_rollup
WHERE type IN ('defer', 'failure') AND is_deleted = 0
GROUP BY hour, server, type, deliverydomain, host, ip, template;

-- the stored rows whose template changes, copied with the new one
INSERT INTO reasons_hourly (hour, server, type, deliverydomain, host, ip, template, attempts, recipients, messages,
    example, inserts)
SELECT hour, server, type, deliverydomain, host, ip, leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200) AS retemplated, attempts, recipients, messages,
    example, inserts
FROM reasons_hourly
WHERE template != leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200);

-- and deleted
--@when SELECT count() > 0 FROM reasons_hourly WHERE template != leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200)
ALTER TABLE reasons_hourly DELETE WHERE template != leftUTF8(trimBoth(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '[\\t\\n\\f\\r ]+', ' '), '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', ''), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3')), 200) SETTINGS mutations_sync = 1;

-- the hourly snapshots, taken again by the next refresh
TRUNCATE TABLE IF EXISTS reasons_hourly_snap_hours;
TRUNCATE TABLE IF EXISTS reasons_hourly_snap;
