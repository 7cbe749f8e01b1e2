-- eximtrack ClickHouse schema, migration 028: a reason's template without its row's delivery domain.
--
-- Why: "top deferral reasons" groups the texts of deferrals and failures by template (eximtrack/reasons.py),
-- but Exim's own texts ("retry time not reached for any host for 'example.com'") and many remote servers'
-- ("550 5.1.1 <addr>: user unknown in example.com") name the recipient's domain, so each destination made a
-- template of its own: one reason was split over thousands of rows of the panel, and the panels read one
-- template per destination (at 1e8 events the bench store had 105k templates a day, and the top deferral
-- reasons panel took 73 ms p50). The domain is `reasons_hourly`'s `deliverydomain` dimension already.
--
-- What: the template replaces the row's delivery domain with <domain> where the text names it as a whole
-- name or as the end of a host's name (`reasons.sql_expression("message", "deliverydomain")`; the Python
-- `reasons.template(text, domain)` gives the same, tests/views/test_reasons.py). Rejections have no delivery
-- domain: `rejections_hourly` keeps its template.
--
-- Upgrade in place: the view first, then the stored rows whose template changes are copied with the new
-- template, computed from `example` (one of the texts of the group: every text of an old group has its
-- template, so the new one is the same for all of them unless the text was cut at 200 characters), and the
-- old rows are deleted (a mutation). The states are sets, so a copy made twice after a crash between the two
-- steps counts nothing twice; only the hour's insert counter grows, which makes its snapshot be taken again.
-- The hourly snapshots of reasons_hourly hold the old templates: they are dropped, and the sink's snapshot
-- refresh (or `eximtrack rollup`) takes them again; until then reasons_hourly_all merges the states (exact,
-- slower). Rows are not fewer where the host or the IP differ per row, so the disk stays; speed:
-- docs/BENCHMARKS.md, session (45).

-- reasons_hourly_mv: its SELECT as migration 020 left it, the template with the row's delivery domain
ALTER TABLE reasons_hourly_mv MODIFY QUERY
SELECT
    toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
    server,
    type,
    deliverydomain,
    host,
    ip,
    leftUTF8(trimBoth(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' '), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', '')), 200) AS template,
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
SELECT hour, server, type, deliverydomain, host, ip, leftUTF8(trimBoth(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' '), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', '')), 200) AS retemplated, attempts, recipients, messages,
    example, inserts
FROM reasons_hourly
WHERE template != leftUTF8(trimBoth(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' '), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', '')), 200);

-- and deleted
--@when SELECT count() > 0 FROM reasons_hourly WHERE template != leftUTF8(trimBoth(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' '), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', '')), 200)
ALTER TABLE reasons_hourly DELETE WHERE template != leftUTF8(trimBoth(replaceAll(replaceAll(replaceAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(example, '<?[^\\t\\n\\f\\r <>@\\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?', '<addr>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\\b', '<id>'), '\\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\\b', '<id>'), '\\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\\]', '[<ip>]'), '\\b[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]+)?\\b', '<ip>'), '(^|[\\t\\n\\f\\r =(])/[^\\t\\n\\f\\r :;,)]+', '\\1<path>'), '\\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\\b', '<id>'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\\.[^0-9]|\\.$|$)', '\\1<n>\\3'), '[\\t\\n\\f\\r ]+', ' '), '[0-9A-Za-z_.-]*[0-9A-Za-z_-]', concat('\n', '\\0', '\n')), concat('\n', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('\n', '<domain>', '\n')), concat('.', if(position(deliverydomain, '.') > 0, deliverydomain, ''), '\n'), concat('.<domain>', '\n')), '\n', '')), 200) SETTINGS mutations_sync = 1;

-- the hourly snapshots, taken again by the next refresh
TRUNCATE TABLE IF EXISTS reasons_hourly_snap_hours;
TRUNCATE TABLE IF EXISTS reasons_hourly_snap;
