"""Track Delivery query latency at 1e7 / 1e8 stored events, over a store filled by a fast path.

    python -m bench.queries --scale 1e7 --store /work/bench-data/q1e7 [--runs 30]

THE FAST PATH (`fill`). Parsing and joining 1e8 events through the pipeline would take hours, so the events
are generated inside ClickHouse: `INSERT INTO events SELECT … FROM numbers(start, chunk) ARRAY JOIN …`, in
chunks of CHUNK_SLOTS recipient slots (~8M events per INSERT). Every insert goes through `events`, so
`latest_mv` and the aggregate views of 003 are fed exactly as the sink feeds them. It generates what the
joiner (stream/join.py) emits for a fleet:

  * messages: one per 4 "slots" of numbers(); 1..4 recipient rows each (60/20/10/10 %), arrival times
    spread evenly (in arrival order, like real ingest) over SPAN_DAYS = 35 days ending at `end` (default:
    now), with milliseconds;
  * servers: 1000 (`mx0000.fleet.example` …); a third run Exim >= 4.97 (new 6-11-4 message ids), the rest
    the old 6-6-2 format; every msgid starts with the base-62 of its arrival second (stream.clock.msgid_time
    decodes it back to sendunixtime's second);
  * accounts: 50 000 cPanel users, each with one domain (`<word>-<word>[n].<tld>`), 400 resellers + root as
    owners; senders skewed towards the big accounts (index ~ 50000·u², u uniform);
  * 60 % outbound (authenticated, `dovecot_login`, protocol esmtpsa) to ~5M distinct external recipients
    (skewed: index ~ 5e6·u²) at 8 mailbox providers; 40 % inbound (esmtps, a spam score) from ~1M external
    senders to local mailboxes of the accounts (deliveryuser / deliverydomain / deliveryowner set);
  * subjects: 3..6 words from WORDS; Message-ID headers `<16 hex>.<n>@<sender domain>` (stored without <>);
  * 3 % of messages are SMTP-time rejections: one `rejected` event under a synthetic `rej-<16 hex>` msgid;
  * per recipient row, the joiner's attempt history: an `inprogress` placeholder (deliveredto ""), its
    tombstone (`is_deleted = 1`) at the first result, then the attempts (deliveredto = recipient): 0..3
    `defer`s before the final state for 30 % of rows, with versions `ms·8 + rank·2 + 1` like the joiner's.
    Final states: success 86 %, filtered 2 %, archive 1 %, failure 5 %, still deferred 3 % (1..4 defers),
    still in progress 3 % (placeholder only);
  * so `events` holds ~3.3 events per `latest` row; `latest FINAL` holds one row per real recipient row.
Once filled, a store is brought to what a live one holds at its clock where wall-clock time matters: the ends
of the open rows' key tables, which their TTL deletes a day after they were written, are deleted when older
(`expire_ends`), and the stats snapshots are built as the sink builds them.

`run(quick, workdir)` builds (or reuses: a store whose `events` holds the asked number of events within 2 %
is used as it is) one store per scale, then times every query through the real builders (eximtrack/search.py,
eximtrack/web/query.py, eximtrack/stats.py), executed with Store.query(readonly=True) like the CLI and API.
Probe values (a recipient, a sender domain, a msgid, …) are picked from the store itself so that every query
returns rows; "now" is the newest arrival in the store, so a reused store measures the same windows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.timing import latencies

SPAN_DAYS = 35
CHUNK_SLOTS = 5_000_000  # numbers() per INSERT: ~7M events
SERVERS = 1000
ACCOUNTS = 50_000
RESELLERS = 400
RECIPIENTS = 5_000_000
EXT_SENDERS = 1_000_000
DEFAULT_RUNS = 30
SCALES = {"1e5": 100_000, "1e6": 1_000_000, "1e7": 10_000_000, "1e8": 100_000_000}

WORDS = [
    "invoice",
    "order",
    "account",
    "payment",
    "report",
    "meeting",
    "update",
    "project",
    "review",
    "team",
    "schedule",
    "delivery",
    "support",
    "ticket",
    "request",
    "offer",
    "sale",
    "discount",
    "summer",
    "winter",
    "spring",
    "autumn",
    "holiday",
    "family",
    "photo",
    "garden",
    "house",
    "office",
    "travel",
    "booking",
    "flight",
    "hotel",
    "dinner",
    "lunch",
    "party",
    "birthday",
    "wedding",
    "school",
    "course",
    "lesson",
    "exam",
    "result",
    "health",
    "doctor",
    "clinic",
    "insurance",
    "bank",
    "loan",
    "credit",
    "card",
    "statement",
    "receipt",
    "shipping",
    "package",
    "tracking",
    "status",
    "notice",
    "reminder",
    "alert",
    "warning",
    "security",
    "password",
    "login",
    "access",
    "server",
    "domain",
    "website",
    "hosting",
    "backup",
    "email",
    "newsletter",
    "weekly",
    "monthly",
    "daily",
    "annual",
    "quarterly",
    "budget",
    "plan",
    "strategy",
    "market",
    "product",
    "launch",
    "release",
    "version",
    "feature",
    "design",
    "draft",
    "final",
    "contract",
    "agreement",
    "proposal",
    "quote",
    "estimate",
    "price",
    "list",
    "catalog",
    "stock",
    "supply",
    "customer",
    "client",
    "partner",
    "vendor",
    "service",
    "repair",
    "maintenance",
    "install",
    "setup",
    "config",
    "network",
    "cloud",
    "storage",
    "file",
    "document",
    "image",
    "video",
    "music",
    "event",
    "concert",
    "ticket",
    "game",
    "match",
    "score",
    "player",
    "coach",
    "training",
    "fitness",
    "recipe",
    "kitchen",
    "coffee",
    "tea",
    "wine",
    "beer",
    "pizza",
    "market",
    "green",
    "blue",
    "red",
    "silver",
    "golden",
    "river",
    "mountain",
    "ocean",
    "forest",
    "city",
    "village",
    "north",
    "south",
    "east",
    "west",
    "central",
]
FIRST = [
    "john",
    "mary",
    "james",
    "linda",
    "robert",
    "susan",
    "michael",
    "sarah",
    "david",
    "karen",
    "william",
    "nancy",
    "richard",
    "lisa",
    "joseph",
    "betty",
    "thomas",
    "helen",
    "charles",
    "sandra",
    "daniel",
    "donna",
    "matthew",
    "carol",
    "anthony",
    "ruth",
    "mark",
    "sharon",
    "paul",
    "michelle",
    "steven",
    "laura",
    "andrew",
    "emily",
    "kevin",
    "kim",
    "brian",
    "deborah",
    "george",
    "jessica",
    "edward",
    "amy",
    "ronald",
    "anna",
    "timothy",
    "angela",
    "jason",
    "melissa",
    "jeffrey",
    "brenda",
    "ryan",
    "emma",
    "jacob",
    "olivia",
    "gary",
    "sophia",
    "nicholas",
    "ava",
    "eric",
    "mia",
    "jonathan",
    "ella",
    "stephen",
    "grace",
    "larry",
    "chloe",
    "justin",
    "zoe",
    "scott",
    "lily",
    "brandon",
    "hannah",
]
LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "gomez",
    "phillips",
    "evans",
    "turner",
    "diaz",
    "parker",
    "cruz",
    "edwards",
    "collins",
    "reyes",
    "stewart",
    "morris",
    "morales",
    "murphy",
    "cook",
    "rogers",
]
TLDS = ["com", "net", "org", "co.uk", "de", "com.br", "io", "info"]
PROVIDERS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "aol.com",
    "icloud.com",
    "gmx.de",
    "mail.ru",
]
LOCALS = [
    "info",
    "sales",
    "admin",
    "support",
    "contact",
    "office",
    "billing",
    "hello",
    "team",
    "jobs",
    "news",
    "orders",
]

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _arr(values) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _slot_sql(seed: int, start: int, count: int, total_slots: int, end_s: int) -> str:
    """The SELECT producing the events of slots [start, start+count) (see the module docstring)."""
    messages = max(1, math.ceil(total_slots / 4))
    span = SPAN_DAYS * 86400
    t0 = end_s - span
    wn = len(WORDS)
    # Everything derives from sipHash64 of (seed, message) / (seed, message, rcpt) / (…, event): stable.
    return f"""
WITH
    {_arr(WORDS)} AS W, {_arr(FIRST)} AS FN, {_arr(LAST)} AS LN, {_arr(TLDS)} AS TLD,
    {_arr(PROVIDERS)} AS PROV, {_arr(LOCALS)} AS LOC, '{BASE62}' AS B62,
    (a -> concat(W[1 + a % {wn}], '-', W[1 + intDiv(a, {wn}) % {wn}],
                 if(a >= {wn * wn}, toString(intDiv(a, {wn * wn})), ''), '.', TLD[1 + intDiv(a, 7) % 8])) AS dom_of,
    (a -> concat(substring(W[1 + a % {wn}], 1, 6), toString(a))) AS user_of,
    (a -> if(a % 20 = 0, 'root', concat('res', toString(a % {RESELLERS})))) AS owner_of
SELECT
    lower(hex(sipHash128({seed}, m, k, j))) AS event_id,
    multiIf(rejected, 'rejected', j = 0 OR j = 1, 'inprogress',
            j - 1 < natt OR final = 'defer', 'defer', final) AS type,
    server,
    msgid,
    email, sender, user, domain, owner, senderhost, senderip, senderauth, spamscore,
    fromUnixTimestamp64Milli(ts_ms, 'UTC') AS sendunixtime,
    size, subject, message_id, protocol, '' AS parent_msgid,
    rcpt AS recipient,
    if(j >= 2 OR rejected, rcpt, '') AS deliveredto,
    duser AS deliveryuser, ddomain AS deliverydomain, downer AS deliveryowner,
    multiIf(rejected, 'reject', j < 2, '', outbound, 'dkim_lookuphost',
            final = 'filtered', 'virtual_user_filter', final = 'archive', 'archive_router', 'virtual_user') AS router,
    multiIf(rejected, '**rejected**', j < 2, '', outbound, 'remote_smtp',
            final = 'filtered', '**bypassed**', final = 'archive', 'archive_transport',
            'dovecot_virtual_delivery') AS transport,
    if(j >= 2 AND outbound, concat('mx', toString(hr % 4 + 1), '.', ddomain), '') AS host,
    if(j >= 2 AND outbound, IPv4NumToString(toUInt32(bitShiftRight(hr, 32))), '') AS ip,
    multiIf(rejected, concat('550 5.7.1 <', rcpt, '>: Recipient address rejected: blocked by policy (',
                             senderip, ')'),
            j < 2, '',
            type = 'defer', concat('451 4.7.', toString(hr % 10), ' ', W[1 + j % {wn}],
                                   ' temporarily deferred, try again later (', ddomain, ')'),
            type = 'failure', concat('550 5.1.1 <', rcpt, '>: user unknown in ', ddomain),
            '') AS message,
    if(type = 'success' AND outbound, concat('250 2.0.0 OK ', toString(ts_s), ' ', lower(hex(hr))), '')
        AS confirmation,
    if(j >= 2 AND outbound, 'TLS1.3:TLS_AES_256_GCM_SHA384:256', '') AS tls,
    if(j >= 2, toNullable((act_ms - ts_ms) / 1000), NULL) AS queue_time,
    if(j >= 2, toNullable(toFloat64(hr % 3000) / 1000), NULL) AS delivery_time,
    fromUnixTimestamp64Milli(act_ms, 'UTC') AS actionunixtime,
    toUInt32(if(rejected, 1, greatest(j - 1, 0))) AS attempts,
    toUInt8(0) AS frozen,
    toUInt8(j >= 2 AND outbound) AS transport_is_remote,
    toUInt64(act_ms * 8 + multiIf(rejected, 4, j < 2, 0, type = 'defer', 2, 4)
             + if(rejected, 0, 1)) AS version,
    toUInt8(j = 1 AND NOT rejected) AS is_deleted,
    toUInt16(1) AS schema_version
FROM
(
    SELECT
        number AS n, intDiv(n, 4) AS m, n % 4 AS k,
        sipHash64({seed}, m) AS hm, sipHash64({seed}, m, k) AS hr,
        hm % 100 AS pr,
        if(bitShiftRight(hm, 16) % 100 < 3, 1, 1 + (pr >= 60) + (pr >= 80) + (pr >= 90)) AS nrcpt,
        bitShiftRight(hm, 16) % 100 < 3 AS rejected,
        bitShiftRight(hm, 8) % 100 < 60 AS outbound,
        hm % {SERVERS} AS srv,
        concat('mx', leftPad(toString(srv), 4, '0'), '.fleet.example') AS server,
        toInt64({t0}) + intDiv(m * {span}, {messages}) AS ts_s,
        ts_s * 1000 + toInt64(bitShiftRight(hm, 20) % 1000) AS ts_ms,
        arrayStringConcat(arrayMap(p -> substring(B62, 1 + intDiv(toUInt64(ts_s), p) % 62, 1),
                                   [916132832, 14776336, 238328, 3844, 62, 1])) AS t62,
        arrayStringConcat(arrayMap(i -> substring(B62, 1 + bitShiftRight(hm, i * 5) % 62, 1), range(11))) AS r62,
        if(rejected, concat('rej-', substring(lower(hex(hm)), 1, 16)),
           if(srv % 3 = 0, concat(t62, '-', substring(r62, 1, 11), '-', substring(r62, 7, 4)),
              concat(t62, '-', substring(r62, 1, 6), '-', substring(r62, 8, 2)))) AS msgid,
        toUInt32({ACCOUNTS} * pow((bitShiftRight(hm, 24) % 1000003) / 1000003, 2)) AS acct,
        dom_of(acct) AS adomain,
        toUInt32(bitShiftRight(hm, 28) % {EXT_SENDERS}) AS xs,
        concat(LOC[1 + xs % {len(LOCALS)}], toString(intDiv(xs, {len(LOCALS)}) % 1000), '@',
               dom_of({ACCOUNTS} + xs % 200000)) AS xsender,
        if(outbound, concat(FN[1 + bitShiftRight(hm, 40) % {len(FIRST)}], '@', adomain), xsender) AS email,
        if(outbound, email, '') AS sender,
        if(outbound, user_of(acct), '') AS user,
        if(outbound, adomain, substring(xsender, position(xsender, '@') + 1)) AS domain,
        if(outbound, owner_of(acct), '') AS owner,
        if(outbound, concat('client', toString(bitShiftRight(hm, 44) % 4096), '.isp.example'),
           concat('mail.', domain)) AS senderhost,
        IPv4NumToString(toUInt32(bitShiftRight(hm, 30))) AS senderip,
        if(rejected, '', if(outbound, 'dovecot_login', '')) AS senderauth,
        if(outbound OR rejected, NULL, toNullable(round((bitShiftRight(hm, 40) % 200) / 10 - 5, 1))) AS spamscore,
        toUInt64(400 + pow((bitShiftRight(hm, 12) % 10007) / 10007, 3) * 5000000) AS size,
        arrayStringConcat(arrayMap(i -> W[1 + bitShiftRight(sipHash64(hm, i), 7) % {wn}],
                                   range(3 + bitShiftRight(hm, 48) % 4)), ' ') AS subject0,
        concat(upper(substring(subject0, 1, 1)), substring(subject0, 2)) AS subject,
        if(rejected, '', concat(lower(hex(sipHash64(hm, 'mid'))), '.', toString(bitShiftRight(hm, 50)),
                                '@', domain)) AS message_id,
        if(rejected, '', if(outbound, 'esmtpsa', 'esmtps')) AS protocol,
        toUInt32(bitShiftRight(hr, 8) % {ACCOUNTS}) AS racct,
        toUInt64({RECIPIENTS} * pow((bitShiftRight(hr, 20) % 1000003) / 1000003, 2)) AS rid,
        if(outbound OR rejected,
           concat(FN[1 + rid % {len(FIRST)}], '.', LN[1 + intDiv(rid, {len(FIRST)}) % {len(LAST)}],
                  toString(intDiv(rid, {len(FIRST) * len(LAST)})), '@', PROV[1 + intDiv(rid, 3) % 8]),
           concat(FN[1 + bitShiftRight(hr, 40) % {len(FIRST)}], '@', dom_of(racct))) AS rcpt,
        substring(rcpt, position(rcpt, '@') + 1) AS ddomain,
        if(outbound OR rejected, '', user_of(racct)) AS duser,
        if(outbound OR rejected, '', owner_of(racct)) AS downer,
        hr % 1000 AS fr,
        multiIf(fr < 860, 'success', fr < 880, if(outbound, 'success', 'filtered'),
                fr < 890, if(outbound, 'success', 'archive'), fr < 940, 'failure',
                fr < 970, 'defer', 'inprogress') AS final,
        multiIf(final = 'inprogress', 0,
                final = 'defer', 1 + bitShiftRight(hr, 14) % 4,
                bitShiftRight(hr, 10) % 10 < 7, 1,
                2 + bitShiftRight(hr, 14) % 3) AS natt,
        if(rejected, 1, if(final = 'inprogress', 1, 2 + natt)) AS nev
    FROM numbers({start}, {count})
    WHERE k < nrcpt
)
ARRAY JOIN range(nev) AS j
-- per event: its time (placeholder at arrival, tombstone at the first attempt, attempts 30 min apart)
SETTINGS max_block_size = 65536
""".replace(
        "act_ms",
        "(if(j = 0 OR rejected, ts_ms, ts_ms + 1000 + toInt64(hr % 30000) "
        "+ toInt64(greatest(j - 2, 0)) * (1800000 + toInt64(hr % 600000))))",
    )


def _insert_sql(select: str) -> list[str]:
    """Into `events` and the hourly aggregates' feed, as the sink stores events (the SELECT is deterministic)."""
    from sinks.clickhouse.store import events_insert_statements

    return events_insert_statements(select)


def slots_per_event(client, seed: int = 1, sample: int = 400_000) -> float:
    """Events generated per numbers() slot, measured on a sample (the distributions are fixed)."""
    sql = f"SELECT count() FROM ({_slot_sql(seed, 0, sample, sample, 2_000_000_000)})"
    events = int(client.query(sql).result_rows[0][0])
    return events / sample


def fill(
    client,
    n_events: int,
    seed: int = 1,
    *,
    end: float | None = None,
    chunk_slots: int = CHUNK_SLOTS,
    progress: Callable[[str], None] | None = None,
    state_path: Path | None = None,
) -> dict:
    """Generate ~n_events events into `events` (see the module docstring for what), in chunks.

    With `state_path`, the fill records its plan (`end`, slots) and the chunks done after each INSERT, and a
    fill stopped half-way (a session ends at 1e8) resumes from the first chunk not recorded: a chunk
    inserted again is harmless (deterministic event ids and versions: `latest FINAL`, the access paths
    and the set-based aggregates see each event once, exactly as after a replay of the sink), and the
    event count is then taken with FINAL. Returns {"events", "seconds", "rate", "slots", "end", "resumed"}."""
    state = json.loads(state_path.read_text()) if state_path and state_path.exists() else None
    if state and (state["n_events"], state["seed"], state["chunk_slots"]) != (n_events, seed, chunk_slots):
        raise SystemExit(f"{state_path} describes another fill ({state}): use another --store")
    if state is None:
        end_s = int(end if end is not None else time.time())
        per_slot = slots_per_event(client, seed)
        state = {"n_events": n_events, "seed": seed, "chunk_slots": chunk_slots, "end": end_s,
                 "slots": max(4, round(n_events / per_slot)), "done": 0, "seconds": 0.0, "resumed": 0}  # fmt: skip
    elif state["done"]:
        state["resumed"] += 1
    total_slots, end_s = state["slots"], state["end"]
    t0 = time.perf_counter() - state["seconds"]
    for start in range(state["done"], total_slots, chunk_slots):
        count = min(chunk_slots, total_slots - start)
        for statement in _insert_sql(_slot_sql(seed, start, count, total_slots, end_s)):
            client.command(statement)
        state["done"], state["seconds"] = start + count, time.perf_counter() - t0
        if state_path:
            state_path.write_text(json.dumps(state))
        if progress:
            progress(f"fill: {state['done']}/{total_slots} slots, {state['seconds']:.0f} s")
    seconds = time.perf_counter() - t0
    final = " FINAL" if state["resumed"] else ""
    events = int(client.query(f"SELECT count() FROM events{final}").result_rows[0][0])
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds if seconds else 0.0,
        "slots": total_slots,
        "end": end_s,
        "resumed": state["resumed"],
    }


# The ends (is_deleted = 1) of the key tables of open rows (migrations 027, 029) are deleted by the tables'
# TTL a day after they were written (`written + INTERVAL 24 HOUR WHERE is_deleted = 1`, at a TTL merge, which
# ClickHouse runs at most every merge_with_ttl_timeout per partition). `written` is the insert's wall clock, so
# a live store keeps about a day of them, but the fill writes five weeks of ends within its hour or two: left
# as they are, the store would hold ~35 days of them (at 1e8 63 M rows, 28 bytes per event) where a live
# store at the same clock holds ~1 day. expire_ends() deletes what the TTL would have deleted by the store's
# clock. An end's version is that of the event that wrote it (`ms·8 + rank·2 + 1`, the joiner's and the
# fill's rule), so its milliseconds are when a live sink would have written it, within the pipeline's second.
ENDS_TABLES = ("search_deferred_keys", "search_inflight_keys")
ENDS_TTL_HOURS = 24  # the tables' TTL on `written` (tests/bench/test_queries.py checks it against the schema)


def expire_ends(store, clock: float) -> dict:
    """Delete the ends of ENDS_TABLES that a live store would no longer hold at `clock` (epoch seconds): those
    written more than ENDS_TTL_HOURS plus one TTL-merge interval before it. Waits for the deletion; a second
    call with the same clock deletes nothing. Returns {table: rows deleted} and "seconds"."""
    timeout = int(
        _one(store, "SELECT value FROM system.merge_tree_settings WHERE name = 'merge_with_ttl_timeout'")[0]
    )
    cut_ms = int((clock - ENDS_TTL_HOURS * 3600 - timeout) * 1000)
    old = f"is_deleted = 1 AND intDiv(version, 8) < {cut_ms}"
    out: dict = {}
    t0 = time.perf_counter()
    for table in ENDS_TABLES:
        n = int(_one(store, f"SELECT count() FROM {table} WHERE {old}")[0])
        if n:
            store.command(f"ALTER TABLE {table} DELETE WHERE {old} SETTINGS mutations_sync = 2")
        out[table] = n
    out["seconds"] = time.perf_counter() - t0
    return out


# -- probes and queries ---------------------------------------------------------------------------------


def _one(store, sql: str, params: dict | None = None):
    rows = store.query(sql, params or {}).result_rows
    return rows[0] if rows else None


def pick_probes(store) -> dict:
    """Probe values taken from the store (deterministic: the smallest hash among candidates)."""
    now = float(_one(store, "SELECT toUnixTimestamp64Milli(max(sendunixtime)) / 1000 FROM latest")[0])
    week = {"t": int((now - 7 * 86400) * 1000)}
    # a message delivered in the last week, with a typical (not huge) recipient
    server, msgid, recipient, message_id, subject, sender = _one(
        store,
        "SELECT server, msgid, recipient, message_id, subject, email FROM latest "
        "WHERE type = 'success' AND senderauth != '' AND deliveredto != '' "
        "AND sendunixtime >= fromUnixTimestamp64Milli({t:Int64}, 'UTC') "
        "ORDER BY cityHash64(msgid, recipient) LIMIT 1",
        week,
    )
    domain = _one(
        store,
        "SELECT domain FROM latest WHERE senderauth != '' AND sendunixtime >= "
        "fromUnixTimestamp64Milli({t:Int64}, 'UTC') ORDER BY cityHash64(msgid, recipient) DESC LIMIT 1",
        week,
    )[0]
    # the sender domain with the most mail in the last week (a "common value")
    big_domain = _one(
        store,
        "SELECT domain FROM latest WHERE senderauth != '' AND sendunixtime >= "
        "fromUnixTimestamp64Milli({t:Int64}, 'UTC') GROUP BY domain ORDER BY count() DESC, domain LIMIT 1",
        week,
    )[0]
    # the recipient with the most rows (hundreds at 1e8): `eximtrack search` returns all of them
    busy = _one(
        store,
        "SELECT recipient FROM latest WHERE sendunixtime >= fromUnixTimestamp64Milli({t:Int64}, 'UTC') "
        "AND senderauth != '' GROUP BY recipient ORDER BY count() DESC, recipient LIMIT 1",
        week,
    )[0]
    return {
        "now": now,
        "server": server,
        "msgid": msgid,
        "recipient": recipient,
        "busy_recipient": busy,
        "sender": sender,
        "message_id": message_id,
        "subject": subject,
        "subject_word": "invoice",
        "domain": domain,
        "big_domain": big_domain,
    }


Run = Callable[[str, dict], tuple[list[str], list[tuple]]]


def word_part(address: str) -> str:
    """The first label of an address's domain (`quote-launch1` of `james@quote-launch1.co.uk`): what a user
    types to find mail of a domain in any field. Searched `contains`, its two end words may be parts of longer
    words: a word index has no whole word of it to look up; search_time's trigram index (migration 024) has
    its trigrams."""
    return address.rpartition("@")[2].split(".")[0]


def api_requests(p: dict) -> dict[str, tuple[str, dict, int]]:
    """{query name: (API path, query parameters, page)} for every query the HTTP API answers: the searches
    (page of 100, newest first; `page` > 1 follows the cursor that many pages), the exact totals
    (`with_total=1`) and `/api/v1/stats`. `build_queries` times them through the builders, bench/api_latency.py
    over HTTP against a real `eximtrack serve`."""
    now = p["now"]
    d30, d1 = str(now - 30 * 86400), str(now - 86400)
    failures = {"failure": "1", "startdate": d1}
    searches = {
        "recipient_30d": {"recipient": p["recipient"], "startdate": d30, "enddate": str(now)},
        "recipient_begins": {
            "recipient": p["recipient"][:-4], "recipient_searchmatch": "begins", "startdate": d30
        },
        "sender": {"email": p["sender"]},
        "sender_domain": {"domain": p["big_domain"]},
        "msgid": {"msgid": p["msgid"]},
        "message_id": {"message_id": p["message_id"]},
        "subject_contains": {"subject": p["subject"], "subject_searchmatch": "contains"},
        "subject_word": {"subject": p["subject_word"], "subject_searchmatch": "contains"},
        "all_free_text": {"all": p["recipient"]},
        "all_word_part": {"all": word_part(p["sender"])},
        "failures_24h": failures,
        "deferred_24h": {"defer": "1", "startdate": d1},
        "server_type": {"server": p["server"], "type": "success"},
        # a value with outcomes other than a success (search_outcome_keys, migration 026), deferred only
        # (search_deferred_keys, migration 029)
        "domain_failures": {"domain": p["big_domain"], "failure": "1"},
        "server_deferred": {"server": p["server"], "defer": "1"},
        # a value's rows in progress only (search_inflight_keys, migration 027)
        "domain_in_flight": {"domain": p["big_domain"], "inprogress": "1"},
        # ... and its rows not delivered: deferred, failed or in progress (all three tables)
        "domain_not_delivered": {"domain": p["big_domain"], "defer": "1", "failure": "1", "inprogress": "1"},
        "newest": {},
    }  # fmt: skip
    out = {name: ("/api/v1/search", params, 1) for name, params in searches.items()}
    out["failures_page10"] = ("/api/v1/search", {"failure": "1"}, 10)
    out["total_recipient"] = (
        "/api/v1/search",
        {"recipient": p["recipient"], "startdate": d30, "with_total": "1"},
        1,
    )
    out["total_failures"] = ("/api/v1/search", {**failures, "with_total": "1"}, 1)
    for span, since in (("24h", d1), ("30d", d30)):
        for by in ("server", "user", "domain"):
            out[f"stats_api_{span}_{by}"] = ("/api/v1/stats", {"groupby": by, "startdate": since}, 1)
    return out


def build_queries(p: dict, run: Run, search_run: Run | None = None) -> dict[str, Callable[[], int]]:
    """{name: call returning the rows it got} — each through the code paths the CLI / API use: an API search
    is `SearchQuery.fetch` of a page of 100 (+ 1 to know whether there is a next page), as the web app runs
    it; the CLI runs `build_search`'s one statement; stats and panels their builders' SQL. The searches and
    the timeline run through `search_run` when given (the benchmark's: without the engine's cache of
    decompressed blocks, since each is timed again on the same rows, where real searches read other ones)."""
    from eximtrack import report, search, stats
    from eximtrack.web import query as q

    now = p["now"]
    d30 = str(now - 30 * 86400)
    stats_run, run = run, search_run or run

    def sql(parts: list[tuple[str, dict]]) -> Callable[[], int]:
        return lambda: sum(len(run(s, b)[1]) for s, b in parts)

    def api(params: dict, keys: list | None = None) -> Callable[[], int]:
        sq = q.build_search_query(params, None)
        return lambda: len(sq.fetch(run, keys, sq.limit + 1)[1])

    def cursor_of_page(params: dict, page: int) -> list:
        sq = q.build_search_query(params, None)
        keys = None
        for _ in range(page - 1):
            names, rows = sq.fetch(run, keys, sq.limit + 1)
            keys = sq.cursor_keys(dict(zip(names, rows[sq.limit - 1], strict=True)))
        return keys

    def total(params: dict) -> Callable[[], int]:
        """The page and its exact count (`with_total=1`), as the web app answers it."""
        sq = q.build_search_query(params, None)

        def call() -> int:
            rows = sq.fetch(run, None, sq.limit + 1)[1]
            return len(rows) + int(run(*sq.count())[1][0][0] > 0)

        return call

    def stats_api(params: dict) -> Callable[[], int]:
        request, _ = q.build_stats_query(params, None)
        return lambda: len(request.run(stats_run)[1])

    def through_builders(path: str, params: dict, page: int) -> Callable[[], int]:
        if path == "/api/v1/stats":
            return stats_api(params)
        if params.get("with_total"):
            return total({k: v for k, v in params.items() if k != "with_total"})
        return api(params, cursor_of_page(params, page) if page > 1 else None)

    requests = api_requests(p)
    out: dict[str, Callable[[], int]] = {}
    for name, request in requests.items():
        if name == "sender":  # the CLI's every-row read sits after the recipient searches
            out["recipient_cli"] = sql(
                [search.build_search({"recipient": p["busy_recipient"], "since": d30, "until": now})]
            )
        if name.startswith("stats_api_"):
            continue
        out[name] = through_builders(*request)
    out["timeline"] = lambda: sum(
        len(rows)
        for _, rows in search.run_show(q.build_message_queries(p["server"], p["msgid"], None), run).values()
    )
    for span, since in (("24h", now - 86400), ("30d", now - 30 * 86400)):
        for by in ("server", "user", "domain"):
            out[f"stats_api_{span}_{by}"] = through_builders(*requests[f"stats_api_{span}_{by}"])
            # as `eximtrack stats --by …` runs by default: the first stats.DEFAULT_LIMIT groups
            cli_request = stats.build_stats(by, since=float(since), until=now, top=stats.Top())
            out[f"stats_cli_{span}_{by}"] = lambda r=cli_request: len(r.run(stats_run)[1])
    t_to = datetime.fromtimestamp(now, UTC)
    t_from = t_to - timedelta(hours=24)

    class _Store:  # report.run_panel takes a store; give it this run
        def query(self, s, b=None, **_):
            names, rows = stats_run(s, b or {})
            return _Result(names, rows)

    values = report.pick_variables(_Store(), t_from, t_to, {})
    for d in report.DASHBOARDS:
        for n, panel in enumerate(d.panels):
            out[f"panel_{d.uid}_{n}"] = lambda panel=panel: len(
                report.run_panel(_Store(), panel, t_from, t_to, values)[1]
            )
    return out


@dataclass
class _Result:
    column_names: list
    result_rows: list


def disk_usage(store) -> dict:
    """Bytes on disk of the active parts: per table, and the groups events / latest / aggregates / search
    (the access paths: search_keys, search_time, latest_by_recipient, latest_outcomes)."""
    rows = store.query(
        "SELECT table, sum(bytes_on_disk), sum(rows) FROM system.parts "
        "WHERE active AND database = currentDatabase() GROUP BY table"
    ).result_rows
    tables = {t: {"bytes": int(b), "rows": int(r)} for t, b, r in rows}
    paths = {
        t for t in tables if t.startswith("search_") or t in ("latest_by_recipient", "latest_outcomes")
    }  # access paths
    search = sum(tables[t]["bytes"] for t in paths)
    agg = sum(
        v["bytes"]
        for t, v in tables.items()
        if t not in ("events", "latest", "rejects", "log_lines") and t not in paths
    )
    return {
        "tables": tables,
        "events": tables.get("events", {}).get("bytes", 0),
        "latest": tables.get("latest", {}).get("bytes", 0),
        "aggregates": agg,
        "search": search,
        "total": sum(v["bytes"] for v in tables.values()),
    }


def measure_store(
    store_path: str,
    n_events: int,
    runs: int,
    seed: int = 1,
    log=print,
    budget_s: float = 60.0,
    only: tuple[str, ...] = (),
) -> dict:
    """Fill (unless a store of that size exists at `store_path`) and time every query. One chDB path per
    process: call this once per process (run() uses a subprocess per scale)."""
    from sinks.clickhouse.store import Store, store_run

    store = Store.open(f"chdb://{store_path}", retention_days=0)
    have = int(_one(store, "SELECT count() FROM events")[0])
    meta_path = Path(store_path) / "bench-fill.json"
    state_path = Path(store_path) / "bench-fill-progress.json"
    if meta_path.exists() and (abs(have - n_events) <= 0.02 * n_events or state_path.exists()):
        filled = json.loads(meta_path.read_text())
        log(f"reusing {store_path}: {filled['events']} events")
    else:
        if have and not state_path.exists():
            raise SystemExit(f"{store_path} holds {have} events, not ~{n_events}: use another --store")
        if state_path.exists():
            log(f"resuming the fill of {store_path}")
        filled = fill(store.client, n_events, seed, progress=log, state_path=state_path)
        meta_path.write_text(json.dumps(filled))
        log(f"filled {filled['events']} events in {filled['seconds']:.1f} s ({filled['rate']:.0f}/s)")
    probes_path = Path(store_path) / "bench-probes.json"
    if probes_path.exists():
        probes = json.loads(probes_path.read_text())
    else:
        probes = pick_probes(store)
        probes_path.write_text(json.dumps(probes))
    ends = expire_ends(store, probes["now"])
    if any(ends[t] for t in ENDS_TABLES):
        deleted = ", ".join(f"{t} {ends[t]:,}" for t in ENDS_TABLES)
        log(f"ends past their TTL at the store's clock deleted ({deleted}) in {ends['seconds']:.1f} s")
    # what the sink does every 30 s: snapshot the hours written (the first time: every hour of the fill), and
    # build the window snapshots for the hour of the store's clock (its newest arrival, the "now" of every
    # probe), as a live sink builds them for the wall clock: a store filled days ago is measured as it was
    # (windows built for another clock, e.g. an earlier run's wall clock, are cleared first: their pins would
    # make the next window leave those hours out for an hour, which a live sink never sees)
    from eximtrack import stats_snapshots, window_snapshots

    t0 = time.perf_counter()
    clock = datetime.fromtimestamp(probes["now"], UTC)
    if any(
        w.end != window_snapshots.span_of(clock)[1] for w in window_snapshots.newest_windows(store).values()
    ):
        window_snapshots.clear(store)
    snapshots = stats_snapshots.refresh(store, now=clock)
    snapshots["seconds"] = time.perf_counter() - t0
    log(
        f"stats snapshots: {snapshots['hours']} hours, {snapshots['windows']} windows in {snapshots['seconds']:.1f} s"
    )
    latest_rows = int(_one(store, "SELECT count() FROM latest FINAL")[0])
    parts = dict(
        store.query(
            "SELECT table, count() FROM system.parts WHERE active AND database = currentDatabase() "
            "AND table IN ('events', 'latest') GROUP BY table"
        ).result_rows
    )
    disk = disk_usage(store)
    events = filled["events"]
    result: dict = {
        "events": events,
        "latest_rows": latest_rows,
        "parts": parts,
        "fill_rate": filled["rate"],
        "fill_seconds": filled["seconds"],
        "bytes_per_event": {
            k: disk[k] / events for k in ("total", "events", "latest", "aggregates", "search")
        },
        "disk": disk,
        "probes": probes,
        "snapshots": snapshots,
        "ends_expired": ends,
        "queries": {},
    }

    def cold_run(sql: str, params: dict) -> tuple[list[str], list]:
        # nor with the query condition cache: it remembers which granules matched this very condition, so a
        # rare text term searched 30 times is found without reading after the first (6.5 s, then 30 ms)
        result = store.query(
            sql,
            params or {},
            readonly=True,
            settings={"use_uncompressed_cache": 0, "use_query_condition_cache": 0},
        )
        return list(result.column_names), result.result_rows

    for name, call in build_queries(probes, store_run(store), cold_run).items():
        if only and not name.startswith(only):
            continue
        t0 = time.perf_counter()
        n = call()  # also the first warm-up
        first = time.perf_counter() - t0
        # a slow query gets fewer runs (at least 5): at most ~budget_s seconds per query
        k = max(5, min(runs, int(budget_s / max(first, 1e-3))))
        lat = latencies(call, k, warmup=1)
        lat["rows"] = n
        result["queries"][name] = lat
        log(f"{name:18} p50 {lat['p50']:8.1f} ms  p95 {lat['p95']:8.1f} ms  rows {n}  runs {k}")
    return result


def run(quick: bool, workdir: Path, runs: int = DEFAULT_RUNS) -> dict:
    """{scale: {query: {p50, p95, p99, min, max, runs, unit, rows}}, "_fill": {scale: {...}}}; one subprocess
    per scale (chDB: one store path per process); stores are kept in workdir/q<scale> for reuse."""
    import subprocess

    scales = ["1e5"] if quick else ["1e7", "1e8"]
    out: dict = {"_meta": {}}
    root = Path(__file__).resolve().parents[1]
    for scale in scales:
        store = Path(workdir) / f"q{scale}"
        js = Path(workdir) / f"q{scale}.json"
        cmd = [sys.executable, "-m", "bench.queries", "--scale", scale, "--store", str(store)]
        cmd += ["--runs", str(runs if not quick else 5), "--json", str(js)]
        subprocess.run(cmd, check=True, cwd=root)
        res = json.loads(js.read_text())
        out[scale] = res["queries"]
        out["_meta"][scale] = {k: v for k, v in res.items() if k != "queries"}
    return out


def _table(res: dict) -> str:
    lines = [f"{'query':18} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9} {'rows':>6} {'runs':>5}"]
    for name, r in res["queries"].items():
        lines.append(
            f"{name:18} {r['p50']:9.1f} {r['p95']:9.1f} {r['p99']:9.1f} {r['max']:9.1f} {r['rows']:6d} "
            f"{r['runs']:5d}"
        )
    b = res["bytes_per_event"]
    lines.append(
        f"events {res['events']}  latest rows {res['latest_rows']}  fill {res['fill_rate']:.0f} events/s  "
        f"bytes/event total {b['total']:.1f} (events {b['events']:.1f}, latest {b['latest']:.1f}, "
        f"aggregates {b['aggregates']:.1f}, search access paths {b.get('search', 0):.1f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="1e6", help="events: 1e5, 1e6, 1e7, 1e8 or a number")
    ap.add_argument("--store", required=True, help="chDB directory (reused when it holds that many events)")
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument(
        "--budget", type=float, default=60.0, help="seconds of runs per query at most (>= 5 runs)"
    )
    ap.add_argument("--only", default="", help="comma list of query-name prefixes to time (default: all)")
    args = ap.parse_args(argv)
    n = SCALES.get(args.scale) or int(float(args.scale))
    os.environ.setdefault("EXIMTRACK_RETENTION_DAYS", "0")
    res = measure_store(
        args.store,
        n,
        args.runs,
        args.seed,
        log=lambda m: print(m, file=sys.stderr),
        budget_s=args.budget,
        only=tuple(p for p in args.only.split(",") if p),
    )
    res["scale"] = args.scale
    res["at"] = datetime.now(UTC).isoformat()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
