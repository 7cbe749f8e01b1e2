"""How a Track Delivery search reads the store: choose an access path, then fetch and re-check (pure SQL building
plus one orchestration loop over an injected `run(sql, params)`; no I/O of its own).

The tables are those of schemas/clickhouse/007_read_paths.sql:

    search_keys (field, value, ts, server, msgid, msgtime)   one row per searchable value of a message/row
                                                              (+ its server: migration 009)
    search_time (ts, server, msgid, msgtime, row_key, version, type, text)
                                                              one row per row (its newest version: 022),
                                                              in time order
    latest FINAL ORDER BY (msgtime, server, msgid, …)         the latest state, fetched by primary key
    latest_by_recipient FINAL ORDER BY (recipient_lower, msgtime, server, msgid, …)
                                                              the same rows, one recipient's together (011)
    search_outcome_keys (field, value, type, ts, server, msgid, msgtime)
                                                              search_keys' rows of the versions whose outcome
                                                              is a failure, a rejection, filtered or archived
                                                              (026; deferrals until 029)
    search_inflight_keys (field, value, ts, server, msgid, recipient, deliveredto, version, is_deleted)
                                                              search_keys' rows of the rows in progress, and
                                                              the tombstones that end them (027)
    search_deferred_keys (the same columns)                   search_keys' rows of the rows deferred, and the
                                                              later versions that end them (029)

A search is a list of AND-ed conditions on `latest` (eximtrack/search.py builds them) plus, for each text
filter, a `TextFilter` saying which columns it tests, how, and with which value. `plan()` picks:

  * KEYS: an eq/begins filter on indexed columns (recipient, sender, domain, Message-ID, account, …), or else
    the tenant's scope: candidates are the (ts, server, msgid) of search_keys rows with that value, or, when
    every outcome asked has a table of its own, the newest of those tables' rows with that value:
    search_outcome_keys' of the outcome (a failure, a rejection, …: the value's rows of that outcome, not
    every message of the value), search_deferred_keys' for deferrals (the value's rows deferred now, not
    every one deferred once and delivered since), search_inflight_keys' for rows in progress (mail not
    delivered, for instance: deferred, failed or in progress, from all three);
  * TIME: anything else under a sendunixtime sort: candidates are search_time rows read newest first, narrowed
    by what the index rows can say (time window, type, server, msgid, and for each text filter a
    `text LIKE '%value%'` served by its text index);
  * none (another sort order): the conditions run on `latest FINAL` alone, as before 007.

The rows are then read from `latest`, or from `latest_by_recipient` when the access path is a recipient filter
(`recipient_filter`): there the rows of one recipient (or prefix) are one range, so a page fetches a few
granules instead of one per message, and a read of every row (`read_all`: the CLI, totals) needs no candidates.

WHY IT IS EXACT. Every version of a row writes its index rows, and search_time's merges drop a version only
for a newer one of the same row (022), so the latest version of every row has them: the candidates of a
filter are a superset of the rows it matches, in the search's own order (sendunixtime). The fetch applies
every condition again to the latest row. Candidates are read K at a time in time order; if K came back, only
rows strictly before the last candidate's time T are certain (a row at or beyond T may have candidates not
read yet), so the fetch stops there and the next round starts at T. Stale index rows (an old state not merged
away yet, a value from before the arrival line) only cost reading. `msgtime` is a function of the msgid, so
fetching by (msgtime, server, msgid) is a primary-key read.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sinks.clickhouse.retry import error_code
from stream.clock import msgid_time

# Columns whose values search_keys holds (lower-case), and the fields to read for a filter on one of them:
# deliveredto is stored only when it differs from the recipient, sender only when it differs from email.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "recipient": ("recipient",),
    "deliveredto": ("deliveredto", "recipient"),
    "email": ("email",),
    "sender": ("sender", "email"),
    "domain": ("domain",),
    "user": ("user",),
    "owner": ("owner",),
    "deliveryuser": ("deliveryuser",),
    "deliveryowner": ("deliveryowner",),
    "message_id": ("message_id",),
    "senderip": ("senderip",),
    "parent_msgid": ("parent_msgid",),
    "server": ("server",),  # as is, not lower-case (migration 009): server filters are case-sensitive
}
# Filters tried as the access path, most selective first.
KEY_PREFERENCE = (
    "message_id",
    "recipient",
    "deliveredto",
    "email",
    "sender",
    "senderip",
    "parent_msgid",
    "user",
    "deliveryuser",
    "domain",
    "owner",
    "deliveryowner",
)
# Keys that select many messages (a whole server): used only when neither a key above nor a scope applies.
BROAD_KEYS = ("server",)
# The columns joined into search_time.text (lower-case), in the order migration 021 writes them: the free-text
# columns (PAIR_COLUMNS) last, after a '\x1f' (rows written before 021 hold the same columns in 007's order).
TEXT_COLUMNS = (
    "email",
    "sender",
    "user",
    "domain",
    "senderhost",
    "senderip",
    "senderauth",
    "recipient",
    "deliveredto",
    "deliveryuser",
    "deliverydomain",
    "msgid",
    "router",
    "transport",
    "host",
    "ip",
    "message_id",
    "server",
    "subject",
    "message",
    "confirmation",
)
# The columns after the '\x1f' of search_time.text, whose adjacent words tok_pairs indexes (migration 021).
PAIR_COLUMNS = frozenset({"subject", "message", "confirmation"})
GRAMS_INDEX = "grams_text"  # search_time.text's index of character trigrams (migration 024)
PAIR_CHARS = 4  # a pair keeps the last PAIR_CHARS characters of its first word and the first of its second
# search_time's column of word pairs that tok_pairs indexes (migration 025; before it, 021's expression of seven
# regular-expression rewrites, six times the cost per row, computed again by every merge). A phrase asks
# `hasAllTokens(text_pairs, pairs)`: ClickHouse splits the column with the index's tokenizer ('_'); without a
# tok_pairs index on the table it would split it with its default one and find no pair.
PAIRS_COLUMN = "text_pairs"
# The column's expression, character for character as migration 025 declares it. Its 4s are PAIR_CHARS
# (tests/integration/test_store.py checks phrase_pairs against it, and it against 021's, on random texts).
PAIRS_EXPR = (
    r"arrayStringConcat(arrayFilter(p -> match(p, '^[a-z]+ [a-z]+$'), arrayMap((a, b) -> concat(right(a, 4"
    r"), ' ', left(b, 4)), arrayPopBack(extractAll(substring(text, position(text, '\x1f') + 1), '[^\x00-\x"
    r"2f\x3a-\x40\x5b-\x60\x7b-\x7f]+')), arrayPopFront(extractAll(substring(text, position(text, '\x1f') "
    r"+ 1), '[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+')))), '_')"
)
_PAIR_HALF = re.compile(r"^[a-z]+$")
# A word as text_pairs (and 021's expression) cuts the text: a run of ASCII letters/digits or bytes >= 0x80 (not
# quite splitByNonAlpha's: that one keeps control characters inside a word).
_TOKEN = re.compile(r"[^\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+")
_EXIM_ID = re.compile(r"^[0-9A-Za-z]{6}-")
# Every outcome's counter of the rows that have it now (mail_hourly_snap): on a broad key's path (a whole
# server) the candidates are every message of the key, so an outcome filter keeps the share of its rows
# (sum of these ÷ its rows: `rows` counts every outcome but SMTP-time rejections, `rejected` those).
OUTCOME_COUNTERS = {
    "success": "success", "filtered": "filtered", "archive": "archive", "failure": "failure",
    "defer": "deferred", "inprogress": "inprogress", "rejected": "rejected",
}  # fmt: skip
YIELD_SAMPLE_HOURS = 24  # a broad key's outcome share is read from its last day (yield_sql)
BROAD_YIELD_MARGIN = 1.25  # ... and its first round fetches a quarter more messages than that share says
# A text filter's share is sampled from the newest rows of search_time: a number of rows, not a time span, so
# that its cost stays the same whatever the fleet's rate (the newest 10 minutes were 11k rows at the bench's 1e8
# store, and would be 50 times that for a fleet 50 times as busy)
TEXT_SAMPLE_ROWS = 4096
# ... and read without the text index when k candidates are within this many rows at that share
MAX_UNINDEXED_ROWS = 500_000
# Through the trigram index, a value's trigrams found in more than this share of the sampled rows are left out
# of what the index is asked (index_grams): their postings are long, and the value's rarer trigrams already
# narrow the rows to those holding it. At least MIN_INDEX_GRAMS of the rarest are always asked: with two, a rare
# address read 30x the rows (docs/BENCHMARKS.md, session 36).
COMMON_GRAM_SHARE = 0.05
MIN_INDEX_GRAMS = 4
# ... and at most MAX_INDEX_GRAMS of the rare ones: every trigram asked is a posting list read over the whole
# table, and past a few rare ones they no longer narrow the rows (an address of 26 characters at 1e8: 19 rare
# trigrams 26 ms of postings for 118 rows, 6 of them 8 ms for 119; docs/BENCHMARKS.md, session 43). They are
# taken rarest first and, among those, not overlapping one taken already (three or more apart in the value's
# trigrams): overlapping trigrams mostly come together (`th0` and `h0@`), distant ones narrow independently
MAX_INDEX_GRAMS = 8
MAX_SAMPLED_GRAMS = 64  # a longer value keeps its LIKE (multiSearchAllPositions takes at most 255 needles)
MIN_YIELD = 1 / 40  # the first round fetches at most 40x the page's messages (and MAX_ROUND_MESSAGES)
GROWTH = 4  # candidates read per round grow 4x
# search_time rows read per message in a first round: a message's recipients, and versions not merged away yet
# (tombstones excluded). Measured 1.0-1.7 at 1e7 and 1e8 events (outcomes 1.0, a word 1.6, no filter 1.7);
# every candidate costs reading its row, and 4 (set while search_time kept every version, before 022) read
# twice the rows a page needed: a rare part of a word, 170 -> 118 ms at 1e8 (docs/BENCHMARKS.md, session 30)
TIME_ROWS_PER_MESSAGE = 2
# Where every candidate names one row of the answer (names_rows), a page reads this many candidates per row it
# needs (+50): a few are other versions of one row not merged away yet, or rows that have moved on since
ROW_MARGIN = 1.25
MAX_ROUND_MESSAGES = 4096  # messages fetched in one round at most
# A round through a text index reads its candidates unordered (optimize_read_in_order = 0) while the index leaves
# at most UNORDERED_GRANULES_PER_CANDIDATE granules of search_time per candidate asked. Read in order, ClickHouse
# merges the parts' reverse reads into one stream: the slower way to read granules that are all needed anyway (a
# rare address at 1e8 events: 59 against 38-43 ms; docs/BENCHMARKS.md, session 43). The bound is max_rows_to_read,
# which ClickHouse checks once the index has chosen the granules and before it reads them: a value with more
# candidates fails there (~10 ms) and its rounds are read in order from then on (run_pages). A round returns its
# first k in sort order either way, or an error, never a part of them (read_overflow_mode = 'throw').
UNORDERED_GRANULES_PER_CANDIDATE = 3
SEARCH_TIME_GRANULE_ROWS = 256  # search_time's index_granularity (migration 023)
TOO_MANY_ROWS = 158  # ClickHouse's error code for a read past max_rows_to_read
# A search whose conditions test columns search_time does not hold (a size, a spam score, the delivery type)
# re-checks them on the rows it fetches: its rounds read candidates that fail them. Once the rounds so far
# (at least SCAN_AFTER_ROUNDS) say that filling the page would take more than SCAN_ROUNDS more of them, its
# candidates are read from `latest` itself, every version, with the search's own conditions (`scan_latest`),
# in slices of time (below): at 1e8 events a slice costs less than a round (~50-110 ms: the fetch of up to
# 4,096 messages), and rounds of search_time's newest rows took seconds to minutes for a rare condition (a
# size no message has: over 10 minutes). After 1 round and more than 4: a spam score in 0.2 % of the rows
# 0.67 -> 0.10 s, after 3 and 16 it did not switch; a size in 7 % 70 -> 44 ms (docs/BENCHMARKS.md).
SCAN_AFTER_ROUNDS = 1
SCAN_ROUNDS = 4
# Newest first, the scan reads a slice of time before the rounds' bound (`latest`'s minmax index on sendunixtime
# and its monthly partitions skip the rest), 4x longer each time the slice did not fill the page, from 4x the
# span the rounds covered (at least an hour); past SCAN_MAX_SPAN_MS, or the search's own start, it reads the
# rest at once. Matches spread over the whole store (a size over 4.99 MB at 1e8: 1.8 s for one pass) are
# found in the newest slices.
SCAN_FIRST_SPAN_MS = 3_600_000
SCAN_MAX_SPAN_MS = 4 * 366 * 86_400_000
# A read of every row (another sort order, an export, a total) with such conditions reads `latest FINAL` for the
# messages the scan names when it names at most this many rows (every version; `decide_scan` counts them
# first), instead of all of `latest FINAL` (~12 s at 1e8 events): a common size would name most of the store.
SCAN_MAX_ROWS = 100_000
KEY = "(msgtime, server, msgid)"
RECIPIENT_TABLE = "latest_by_recipient"
RECIPIENT_KEY = "(recipient_lower, msgtime, server, msgid)"
# latest_outcomes (migration 018): every version of every row of `latest`, narrowed to its identity and these
# columns (wide parts): a count whose conditions test nothing else reads a few bytes per row there
OUTCOME_TABLE = "latest_outcomes"
OUTCOME_COLUMNS = frozenset({"type", "server", "msgid", "msgtime", "sendunixtime", "actionunixtime"})
# search_outcome_keys (migration 026): search_keys' rows again with the outcome, for the versions whose outcome
# is one of these (not a success, most rows; not in progress, every placeholder; deferrals since migration 029
# in a table of their own, below). A key filter or a scope with outcomes among them only reads its candidates
# there: the value's rows of those outcomes, one range, instead of every message of the value (most of them
# delivered) fetched to be re-checked.
OUTCOME_KEYS_TABLE = "search_outcome_keys"
KEYED_OUTCOMES = frozenset({"archive", "defer", "failure", "filtered", "rejected"})
# search_deferred_keys (migration 029): search_keys' rows of the rows deferred, with their identity and version,
# and the later versions that end them (ReplacingMergeTree: merged, a pair folds), as search_inflight_keys for
# placeholders. Deferrals are read there, not in search_outcome_keys (whose view no longer writes them): most
# rows deferred once were delivered since, and each of those was a candidate fetched to be dropped.
DEFERRED_KEYS_TABLE = "search_deferred_keys"
DEFERRED_OUTCOMES = frozenset({"defer"})
# search_inflight_keys (migration 027): search_keys' rows of the rows in progress (placeholders), with their
# identity and version, and the tombstones that end them (ReplacingMergeTree: merged, a pair folds). A key
# filter or a scope asking for rows in progress only reads its candidates there: the value's placeholders not
# ended yet, instead of every message of the value fetched to find it delivered.
INFLIGHT_KEYS_TABLE = "search_inflight_keys"
INFLIGHT_OUTCOMES = frozenset({"inprogress"})
# (table, the outcomes whose rows it names) of the key path's outcome tables, in the order their branches read
OUTCOME_KEY_TABLES = (
    (OUTCOME_KEYS_TABLE, KEYED_OUTCOMES - DEFERRED_OUTCOMES),
    (DEFERRED_KEYS_TABLE, DEFERRED_OUTCOMES),
    (INFLIGHT_KEYS_TABLE, INFLIGHT_OUTCOMES),
)


def token_edges(value: str, match: str) -> list[tuple[str, bool, bool]]:
    """The tokens of `value` (splitByNonAlpha's) in order, each with whether it starts and whether it ends
    where the word of a column value the match accepts does: inside `value` a separator on that side says
    so; at the edges of `value`, `eq` fixes both ends, `begins` the start only, `contains` neither (the
    token may be the end or the start of a longer word)."""
    n = len(value)
    return [
        (m.group(), m.start() > 0 or match in ("eq", "begins"), m.end() < n or match == "eq")
        for m in _TOKEN.finditer(value)
    ]


def phrase_pairs(value: str, match: str) -> list[str]:
    """The tok_pairs terms (migration 021) that every text holding `value` under `match` has: for two
    adjacent tokens of `value` (splitByNonAlpha's), the last PAIR_CHARS characters of the first and the first
    PAIR_CHARS of the second, joined by a space, when both halves are ASCII letters. A token at an edge of a
    `contains` value may be the end (first token) or the start (last token) of a longer word of the text: its
    half is known only when it has PAIR_CHARS characters or more (`begins` fixes the first token's start,
    `eq` both ends). `value` is lower-case, as search_time.text is."""
    tokens = token_edges(value, match)
    out = set()
    for (a, a_starts, _), (b, _, b_ends) in zip(tokens, tokens[1:], strict=False):
        if (len(a) < PAIR_CHARS and not a_starts) or (len(b) < PAIR_CHARS and not b_ends):
            continue
        first, second = a[-PAIR_CHARS:], b[:PAIR_CHARS]
        if _PAIR_HALF.match(first) and _PAIR_HALF.match(second):
            out.add(f"{first} {second}")
    return sorted(out)


def msgid_second(msgid: str) -> int | None:
    """The msgtime of a message id (migration 007's expression), or None for ids that do not encode it."""
    return int(msgid_time(msgid)) if _EXIM_ID.match(msgid) else None


def ph(name: str, ch_type: str) -> str:
    return "{" + name + ":" + ch_type + "}"


def like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def value_grams(value: str) -> list[str] | None:
    """The distinct character trigrams of `value` in order of first appearance, as grams_text (ngrams(3))
    indexes them; None where leaving some out could not help (MIN_INDEX_GRAMS or fewer, more than
    MAX_SAMPLED_GRAMS) or where bytes and characters differ (non-ASCII)."""
    if not value.isascii():
        return None
    grams = list(dict.fromkeys(value[i : i + 3] for i in range(len(value) - 2)))
    return grams if MIN_INDEX_GRAMS < len(grams) <= MAX_SAMPLED_GRAMS else None


def index_grams(grams: Sequence[str], rows_with: Sequence[int], sampled: int) -> tuple[str, ...] | None:
    """The trigrams of a value to ask the trigram index for, given how many of `sampled` newest rows hold each
    (`rows_with`, aligned with `grams`): those in at most COMMON_GRAM_SHARE of them (at most MAX_INDEX_GRAMS:
    spread_rarest), or the MIN_INDEX_GRAMS rarest when fewer are; None when every trigram is kept (the LIKE asks
    the index for the same). Any subset is exact: every row holding the value holds all of its trigrams, and
    the value itself is checked on every row the index lets through; the subset only changes what is read."""
    if sampled <= 0 or len(grams) != len(rows_with) or len(grams) <= MIN_INDEX_GRAMS:
        return None
    rare = [i for i, n in enumerate(rows_with) if n <= COMMON_GRAM_SHARE * sampled]
    if len(rare) < MIN_INDEX_GRAMS:
        rare = sorted(range(len(grams)), key=lambda i: (rows_with[i], i))[:MIN_INDEX_GRAMS]
    elif len(rare) > MAX_INDEX_GRAMS:
        rare = spread_rarest(rare, rows_with, MAX_INDEX_GRAMS)
    if len(rare) == len(grams):
        return None
    return tuple(grams[i] for i in sorted(rare))


def spread_rarest(candidates: Sequence[int], rows_with: Sequence[int], n: int) -> list[int]:
    """`n` of the trigram positions `candidates`: rarest first (fewest `rows_with`, then the earlier), skipping
    one within two positions of a position taken already, then the rarest of those skipped if fewer than `n`
    were taken."""
    order = sorted(candidates, key=lambda i: (rows_with[i], i))
    taken: list[int] = []
    for i in order:
        if len(taken) < n and all(abs(i - j) >= 3 for j in taken):
            taken.append(i)
    taken += [i for i in order if i not in taken][: n - len(taken)]
    return taken


@dataclass(frozen=True)
class TextFilter:
    """One text condition: `value` matched (eq | begins | contains) against any of `columns`; `value` is
    already lower-case unless case_sensitive."""

    columns: tuple[str, ...]
    match: str
    value: str
    case_sensitive: bool = False
    # where `columns` are expressions (a domain taken from an address): the columns of search_time.text whose
    # text holds every value the filter matches, so that its candidates can be found there (a superset the
    # fetch narrows with the filter itself)
    found_in: tuple[str, ...] = ()

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns whose text holds what the filter matches: `found_in`, or the columns themselves."""
        return self.found_in or self.columns


@dataclass
class SearchPlan:
    """The conditions of a search on `latest` and what the access-path tables can say about them."""

    conds: list[str]
    params: dict
    filters: list[TextFilter] = field(default_factory=list)
    scope_filter: TextFilter | None = None
    types: list[str] | None = None  # None: any outcome
    since_ms: int | None = None
    until_ms: int | None = None
    expected_yield: float | None = None  # rows per candidate message, when known (yield_sql)
    # the conditions fix the arrival second (an exact msgid: msgid_hint): the rows are a primary-key read
    msgtime_fixed: bool = False
    # whether the candidates' read may use search_time's text index (None: not decided; common_text_sql)
    text_index: bool | None = None
    # per text filter (its index in `filters`), the trigrams the index is asked for instead of all of the LIKE's
    # (index_grams, from the sample of common_text_sql); a filter not named keeps its LIKE
    text_grams: dict[int, tuple[str, ...]] = field(default_factory=dict)
    tested: frozenset[str] = frozenset()  # the columns (or expressions) of `latest` the conditions test
    # the candidates are read from `latest` with the search's own conditions (may_scan_latest; run_pages)
    scan_latest: bool = False
    # rounds through a text index are read in order: a round read unordered found more granules than its bound
    # (UNORDERED_GRANULES_PER_CANDIDATE; run_pages)
    index_in_order: bool = False
    # the candidates of search_inflight_keys / search_deferred_keys are read with FINAL, which folds each end
    # not merged yet with the key rows it ends: a round named candidates whose rows had ended (run_pages)
    fold_ends: bool = False

    # -- the access path ------------------------------------------------------------------------------

    def key_filter(self) -> TextFilter | None:
        """The filter (or the scope) search_keys answers best, if any."""
        usable = [
            f
            for f in self.filters
            if f.match in ("eq", "begins") and f.value and all(c in KEY_FIELDS for c in f.columns)
        ]
        for names in (KEY_PREFERENCE, () if self.scope_filter else BROAD_KEYS):
            for name in names:
                for f in usable:
                    if name in f.columns:
                        return f
        return self.scope_filter

    def recipient_filter(self) -> TextFilter | None:
        """The access path's filter when it is one on the recipient (eq or begins): its rows are read from
        latest_by_recipient (migration 011), where they lie together."""
        f = self.key_filter()
        return f if f is not None and f.columns == ("recipient",) and not f.case_sensitive else None

    def fetch_table(self) -> str:
        """The table the rows are read from (with FINAL): latest_by_recipient for a recipient access path,
        else latest. Both hold every version of every row; FINAL gives the same latest state in either."""
        return RECIPIENT_TABLE if self.recipient_filter() is not None else "latest"

    def fetch_keys(self, candidates: Iterable[Sequence]) -> list[tuple]:
        """The distinct primary-key prefixes of fetch_table() naming the candidate rows of `candidates()`,
        sorted (the access path is decided once per round, not per candidate)."""
        if self.recipient_filter() is not None:
            return sorted({(c[4], int(c[3]), c[1], c[2]) for c in candidates})
        return sorted({(int(c[3]), c[1], c[2]) for c in candidates})

    def fetch_keys_condition(self) -> str:
        """fetch_table()'s rows of the keys bound as `f_keys` (fetch_keys of the candidates)."""
        if self.recipient_filter() is not None:
            return f"{RECIPIENT_KEY} IN {{f_keys:Array(Tuple(String, UInt32, String, String))}}"
        return f"{KEY} IN {{f_keys:Array(Tuple(UInt32, String, String))}}"

    def msgid_hint(self) -> str | None:
        """`msgtime = …` when an exact msgid filter fixes it (a primary-key read of `latest`)."""
        for f in self.filters:
            if f.columns == ("msgid",) and f.match == "eq" and f.case_sensitive:
                second = msgid_second(f.value)
                if second is not None:
                    name = f"mt{len(self.params)}"
                    self.params[name] = second
                    return f"msgtime = toDateTime({ph(name, 'UInt32')}, 'UTC')"
        return None

    def _window(self, params: dict, col: str = "ts") -> list[str]:
        out = []
        if self.since_ms is not None:
            params["c_since"] = self.since_ms
            out.append(f"({col} >= fromUnixTimestamp64Milli({{c_since:Int64}}, 'UTC') OR {col} = 0)")
        if self.until_ms is not None:
            params["c_until"] = self.until_ms
            out.append(f"({col} <= fromUnixTimestamp64Milli({{c_until:Int64}}, 'UTC') OR {col} = 0)")
        return out

    def _key_conditions(self, f: TextFilter, params: dict) -> list[str]:
        fields = sorted({name for c in f.columns for name in KEY_FIELDS[c]})
        params["c_fields"] = fields
        params["c_value"] = f.value
        out = [
            "field = {c_fields:Array(String)}[1]" if len(fields) == 1 else "field IN {c_fields:Array(String)}"
        ]
        if f.match == "eq":
            out.append("value = {c_value:String}")
        else:
            params["c_prefix"] = like_escape(f.value) + "%"
            out.append("value LIKE {c_prefix:String}")
        return out

    def _time_conditions(self, params: dict, pairs: bool = True) -> TimeConditions:
        """Conditions on search_time's rows. A text filter is `text LIKE '%value%'` (grams_text, migration
        024, skips the rows without all of its character trigrams: whole words or parts of them); with
        `pairs`, a phrase in the free-text columns adds `hasAllTokens(text_pairs, its pairs)` after it:
        tok_pairs (migrations 021, 025) skips the granules without its adjacent words. The LIKE stays first:
        in a part without tok_pairs the column is read and split for the rows the LIKE let through only (and
        in a part written before 025, until its mutation wrote the column, computed for them: 021's regular
        expressions on every row had cost 60x the LIKE, 67 s against 1.1 s for search_time at 1e7 events)."""
        out = []
        text = liked = paired = False
        if self.types is not None:
            params["c_types"] = sorted(self.types)
            out.append("type IN {c_types:Array(String)}")
        for n, f in enumerate(self.filters):
            if not f.value or not all(c in TEXT_COLUMNS for c in f.text_columns):
                continue
            value = self._text_value(f)
            if value is None:
                params[f"c_eq{n}"] = f.value
                out.append(f"{f.columns[0]} = {{c_eq{n}:String}}")
                continue
            # the trigram index serves the LIKE (rows without the pattern's trigrams are skipped); a
            # hasAllTokens on text would take its needles as trigrams (the index's tokenizer), not words
            found = phrase_pairs(value, f.match) if pairs and set(f.columns) <= PAIR_COLUMNS else []
            text = True
            if n in self.text_grams and not found and self.text_index:
                # the index asked for the value's rarer trigrams only (index_grams); `position` (which the
                # index does not analyse) checks the value itself, as the LIKE would
                params[f"c_grams{n}"] = list(self.text_grams[n])
                params[f"c_text{n}"] = value
                out.append(f"hasAllTokens(text, {{c_grams{n}:Array(String)}})")
                out.append(f"position(text, {{c_text{n}:String}}) > 0")
                continue
            params[f"c_like{n}"] = "%" + like_escape(value) + "%"
            out.append(f"text LIKE {{c_like{n}:String}}")
            liked = True
            if found:  # a phrase: its adjacent words are rare even when each word is common (migration 021)
                params[f"c_pairs{n}"] = found
                out.append(f"hasAllTokens({PAIRS_COLUMN}, {{c_pairs{n}:Array(String)}})")
                paired = True
        # a tombstone's row (migration 022) names no live row; its text is empty, so a text condition (of a
        # non-empty value) already skips it, without reading `type`
        if self.types is None and not text:
            out.append("type != ''")
        return TimeConditions(out, text=text, like=liked, pairs=paired)

    @staticmethod
    def _text_value(f: TextFilter) -> str | None:
        """What a filter on search_time.text's columns looks for in `text` (lower-case, as `text` is), or None
        for an exact server or msgid, which search_time has as columns of its own."""
        if f.case_sensitive and f.match == "eq" and f.columns in (("server",), ("msgid",)):
            return None
        return f.value.lower() if f.case_sensitive else f.value

    def candidate_source(self, params: dict) -> CandidateSource:
        """The table, conditions and settings of the candidates: search_keys for a key filter (with only
        outcomes that have tables of their own asked: those tables, `outcome_tables`), else
        search_time (a phrase also by its word pairs, unless it is read without the text indexes: text_index
        False; a text filter with `candidate_settings`); `latest` with the search's own conditions once
        run_pages chose to scan it (scan_latest)."""
        if self.scan_latest:
            params.update(self.params)
            return CandidateSource("latest", list(self.conds), time_column="sendunixtime")
        f = self.key_filter()
        if f is not None:
            conds = self._key_conditions(f, params) + self._window(params)
            branches = []
            for table in self.outcome_tables():
                if table == OUTCOME_KEYS_TABLE:
                    params["c_types"] = sorted(set(self.types or ()) & dict(OUTCOME_KEY_TABLES)[table])
                    branches.append((table, [*conds, "type IN {c_types:Array(String)}"]))
                else:
                    final = " FINAL" if self.fold_ends else ""
                    branches.append((table + final, [*conds, "is_deleted = 0"]))
            if branches:
                (table, first), *more = branches
                return CandidateSource(table, first, more=tuple(more))
            return CandidateSource("search_keys", conds)
        conds = self._time_conditions(params, pairs=self.text_index is not False)
        indexed = conds.text and self.text_index is not False
        settings = candidate_settings(self.text_index is not False, conds.pairs) if conds.text else ""
        return CandidateSource(
            "search_time", conds.sql + self._window(params), settings, text_indexed=indexed
        )

    def reads_unordered(self, source: CandidateSource | None = None) -> bool:
        """Whether a round's candidates are read unordered, within UNORDERED_GRANULES_PER_CANDIDATE granules per
        candidate: through a text index, until a round found more (index_in_order). `source`: this plan's
        candidate_source when the caller has built it already."""
        if self.index_in_order:
            return False
        source = source or self.candidate_source({})
        return source.text_indexed and not source.more

    def outcome_tables(self) -> tuple[str, ...]:
        """The tables a key path's candidates come from when every outcome asked for has rows of its own
        (an outcome filter; the fetch re-checks it), or () for search_keys (a success asked, or no outcome):
        search_outcome_keys for those among KEYED_OUTCOMES but deferrals, whose versions write rows there;
        search_deferred_keys for deferrals (DEFERRED_OUTCOMES), whose latest version is a deferral not ended
        there, and search_inflight_keys for rows in progress (INFLIGHT_OUTCOMES), whose latest version is a
        placeholder not ended there. Their ends not merged yet are left out by `is_deleted = 0`, not by FINAL:
        a row ended since is a stale candidate, and the read stays a plain range read newest first, until a
        round finds stale candidates (run_pages: then FINAL folds them, `fold_ends`). Several
        when several are asked (a customer's mail not delivered: deferred, failed or in progress): each holds
        a superset of its outcomes' rows, so together they hold one of the answer, and the candidates are the
        newest of them all (`candidates`)."""
        types = set(self.types or ())
        if not types or not types <= KEYED_OUTCOMES | INFLIGHT_OUTCOMES:
            return ()
        return tuple(table for table, outcomes in OUTCOME_KEY_TABLES if types & outcomes)

    def ends_unfolded(self) -> bool:
        """Whether the candidates come from a table that holds ends (search_inflight_keys,
        search_deferred_keys), read without folding them (fold_ends)."""
        if self.fold_ends or self.key_filter() is None:
            return False
        return bool({INFLIGHT_KEYS_TABLE, DEFERRED_KEYS_TABLE} & set(self.outcome_tables()))

    def may_scan_latest(self) -> bool:
        """Whether the candidates may be read from `latest` itself (scan_latest): on the time path without a
        text filter (search_time narrows neither by value), with conditions on columns search_time does not
        hold, which only the fetch's re-check would test. Every version of `latest` is read, so the rows
        found are a superset of the answer (each row's newest version among them); the fetch, FINAL, keeps
        the rows whose latest state matches, as for every other candidate."""
        return self.key_filter() is None and not self.has_text_filter() and not self.tested <= OUTCOME_COLUMNS

    def has_text_filter(self) -> bool:
        """A case-insensitive filter on columns of search_time.text (its text index narrows the candidates)."""
        return any(
            f.value and not f.case_sensitive and all(c in TEXT_COLUMNS for c in f.text_columns)
            for f in self.filters
        )

    def selective(self) -> bool:
        """Whether all candidates together are few enough for one `IN (candidates)` statement (an indexed
        value or a text filter); otherwise a plain read of `latest FINAL` is the better full answer."""
        return self.key_filter() is not None or self.has_text_filter()

    def outcome_count(self) -> bool:
        """Whether the search's total is counted on latest_outcomes: a search on the time path (no indexed
        value, no tenant scope) whose every condition tests its columns only (outcome, arrival and action
        time, server, msgid). Its FINAL gives each row's latest version as `latest FINAL` does (same
        identity, versions, tombstones, partitions), so the count is the same; it reads a few narrow columns
        of the search's time range instead of every column of `latest`. A search by server alone keeps
        counting the messages search_keys names (without a time range the narrow copy is read whole)."""
        return self.key_filter() is None and self.tested <= OUTCOME_COLUMNS

    # -- SQL --------------------------------------------------------------------------------------------

    def read_all(self, by_outcome: bool = False) -> tuple[str, list[str], dict]:
        """How ONE statement reads every row the search can match (a CLI search, a total, a stats request):
        (the table to read with FINAL, conditions naming the access path's rows, their parameters).

        A recipient access path reads latest_by_recipient's range of that recipient or prefix (its rows
        exactly: the cost is the size of the answer); another indexed value or a text filter (or, with
        `by_outcome`, an outcome filter; or conditions `decide_scan` found rare in `latest`: scan_latest)
        reads `latest` for `(msgtime, server, msgid) IN (all candidates)`; anything else reads `latest` with
        the search's own conditions only."""
        params: dict = {}
        f = self.recipient_filter()
        if f is not None:
            params["c_value"] = f.value
            if f.match == "eq":
                return RECIPIENT_TABLE, ["recipient_lower = {c_value:String}"], params
            params["c_prefix"] = like_escape(f.value) + "%"
            return RECIPIENT_TABLE, ["recipient_lower LIKE {c_prefix:String}"], params
        if not (self.selective() or self.scan_latest or (by_outcome and self.types is not None)):
            return "latest", [], params
        named = " UNION ALL ".join(
            f"SELECT msgtime, server, msgid FROM {table}{where_clause(conds)}"
            for table, conds in self.candidate_source(params).branches()
        )
        return "latest", [f"{KEY} IN ({named})"], params

    def candidates(
        self, direction: str, bound_ms: int | None, k: int, edge_ms: int | None = None
    ) -> tuple[str, dict]:
        """The first `k` candidates in sort order from `bound_ms` (inclusive) on, and (newest first) not
        before `edge_ms` if given: (ts ms, server, msgid, msgtime[, the recipient's value on a recipient
        path]). Ordered by `ts` alone, so that the access path is read in its own order and stops early."""
        params: dict = {"c_k": k}
        source = self.candidate_source(params)
        ts = source.time_column
        near = []
        if bound_ms is not None:
            params["c_bound"] = bound_ms
            op = "<=" if direction == "DESC" else ">="
            near.append(f"{ts} {op} fromUnixTimestamp64Milli({{c_bound:Int64}}, 'UTC')")
        if edge_ms is not None:
            params["c_edge"] = edge_ms
            near.append(f"{ts} >= fromUnixTimestamp64Milli({{c_edge:Int64}}, 'UTC')")
        value = ", value" if self.recipient_filter() is not None else ""  # search_keys' lower(recipient)
        order = f"ORDER BY {ts} {direction} LIMIT {{c_k:UInt64}}"
        settings = source.settings
        if self.reads_unordered(source):
            # at least 1: max_rows_to_read = 0 is no limit
            bound = max(1, int(k * UNORDERED_GRANULES_PER_CANDIDATE * SEARCH_TIME_GRANULE_ROWS))
            settings += (", " if settings else " SETTINGS ") + (
                f"optimize_read_in_order = 0, max_rows_to_read = {bound}, read_overflow_mode = 'throw'"
            )
        branches = source.branches()
        if len(branches) == 1:
            table = f"{source.table}{where_clause(source.conditions + near)}"
        else:  # the first k of each, each read in its own order; the first k of them all are among those
            table = (
                "("
                + " UNION ALL ".join(
                    f"(SELECT {ts}, server, msgid, msgtime{value} FROM {t}{where_clause(conds + near)} {order})"
                    for t, conds in branches
                )
                + ")"
            )
        sql = (
            f"SELECT toUnixTimestamp64Milli({ts}), server, msgid, toUInt32(msgtime){value} FROM {table} "
            f"{order}{settings}"
        )
        return sql, params

    def common_text_sql(self) -> tuple[str, dict] | None:
        """For a time-path search with text filters: the SQL of (rows matching its candidates' conditions,
        rows) among the newest TEXT_SAMPLE_ROWS index rows, read without the text index. A term found in many rows
        (a common word) is cheaper to find by reading search_time newest first without the index: with it,
        ClickHouse reads the term's postings over the whole table first (300 ms at 1e8 events for `invoice`
        against 12 ms without; docs/BENCHMARKS.md), a cost that grows with the store; for a rare term the
        index is what avoids reading every row. Skip indexes never change a result, only what is read."""
        if self.key_filter() is not None:
            return None
        params: dict = {}
        # the outcome and exact filters too (the candidates' share); phrases by their LIKE: cheap on every row
        time_conds = self._time_conditions(params, pairs=False)
        if not time_conds.like:
            return None
        conds = time_conds.sql
        # and for each value whose trigrams the index may be asked a subset of (gram_filters), how many of the
        # rows hold each: one pass of multiSearchAllPositions, ~3 ms at 1e8 events
        shares = ""
        for n, grams in self.gram_filters():
            params[f"s_grams{n}"] = grams
            shares += (
                f", sumForEach(arrayMap(p -> toUInt64(p > 0), multiSearchAllPositions(text, "
                f"{{s_grams{n}:Array(String)}})))"
            )
        return (
            f"SELECT countIf({' AND '.join(conds)}), count(){shares} FROM (SELECT server, msgid, type, text "
            f"FROM search_time ORDER BY ts DESC LIMIT {TEXT_SAMPLE_ROWS}) "
            "SETTINGS use_skip_indexes = 0, optimize_move_to_prewhere = 0",
            params,
        )

    def gram_filters(self) -> list[tuple[int, list[str]]]:
        """(index in `filters`, value_grams) of each text filter whose candidates may ask the trigram index
        for a subset of its trigrams: one read through the index (not a phrase's word pairs, which ask
        tok_pairs instead), with more trigrams than MIN_INDEX_GRAMS."""
        out = []
        for n, f in enumerate(self.filters):
            if not f.value or not all(c in TEXT_COLUMNS for c in f.text_columns):
                continue
            value = self._text_value(f)
            if value is None or (set(f.columns) <= PAIR_COLUMNS and phrase_pairs(value, f.match)):
                continue
            grams = value_grams(value)
            if grams is not None:
                out.append((n, grams))
        return out

    def sampled_grams(self, shares: Sequence[Sequence[int]], sampled: int) -> dict[int, tuple[str, ...]]:
        """text_grams from the sample's per-trigram row counts (common_text_sql's columns after the first
        two, in gram_filters' order)."""
        out = {}
        for (n, grams), rows_with in zip(self.gram_filters(), shares, strict=False):
            chosen = index_grams(grams, list(rows_with or ()), sampled)
            if chosen is not None:
                out[n] = chosen
        return out

    def uses_text_index(self, matching: int, sampled: int, k: int) -> bool:
        """Whether a read of `k` candidates should use the text index, `matching` of `sampled` newest index
        rows matching its text filters: without it, the read goes through about k ÷ their share rows in time
        order, and stays cheaper than the index while that is at most MAX_UNINDEXED_ROWS."""
        return not (matching > 0 and sampled > 0 and k * sampled / matching <= MAX_UNINDEXED_ROWS)

    def first_round(self, rows: int) -> int:
        """Candidates read in a page's first round: search_keys holds about one row per message and value,
        search_time one per row (recipient) and version not merged away yet: a few per message."""
        if self.key_filter() is not None:
            return self.first_messages(rows) + 50
        if self.names_rows():
            return math.ceil(ROW_MARGIN * rows) + 50
        return TIME_ROWS_PER_MESSAGE * self.first_messages(rows) + 50

    def names_rows(self) -> bool:
        """Whether each candidate names one row of the answer: on the time path (a row of search_time is a
        recipient row's newest version, and its text holds every column), with no filter on some columns
        only and no yield hint. A round then fetches the messages of the page's rows, not a message per
        row: at 1e8 events a page of 101 rows by part of a sender's domain is 76 messages (1e7: the newest
        page is 50)."""
        if self.key_filter() is not None or self.expected_yield is not None or self.scan_latest:
            return False
        return not self.filters_some_columns()

    def filters_some_columns(self) -> bool:
        """Whether a filter tests fewer columns than search_time.text holds (a subject word, a recipient)."""
        return any(set(f.columns) != set(TEXT_COLUMNS) for f in self.filters)

    def first_messages(self, rows: int) -> int:
        """Messages fetched in a page's first round. With an `expected_yield` (an outcome search on a broad key:
        yield_sql), the page's rows divided by it. On the time path a filter on some columns is matched
        against the text of all of them (search_time.text), so many candidates fail the re-check (a subject
        word also found in a domain or a reason): fetching twice the page's messages at once costs less than
        the second round it usually saves (docs/BENCHMARKS.md). Elsewhere the page's messages."""
        if self.expected_yield is not None:
            return min(MAX_ROUND_MESSAGES, math.ceil(rows / max(self.expected_yield, MIN_YIELD)))
        return 2 * rows if self.filters_some_columns() and self.key_filter() is None else rows

    def broad_key(self) -> TextFilter | None:
        """The access path's filter when it is a broad key (BROAD_KEYS: a whole server), matched exactly."""
        f = self.key_filter()
        if f is None or f is self.scope_filter or f.match != "eq" or not set(f.columns) <= set(BROAD_KEYS):
            return None
        return f

    def yield_sql(self) -> tuple[str, dict] | None:
        """The SQL of the expected yield of an outcome search's candidates on a broad key's path (one server),
        from the server's hourly snapshots (their projections answer it in a few ms), as (rows with those
        outcomes now, all rows of that server): the candidates are every message of the server, the outcome
        keeps its share. A sizing hint for the first round, never a condition: it sums every snapshot row
        (superseded ones too) and ignores hours not snapshotted yet. None for every other search: on the
        time path the candidates of an outcome are the rows whose newest version has it (search_time keeps
        no other once merged: migration 022), so most of them still have it; with only outcomes that have
        tables of their own the candidates are the server's rows that had them (search_outcome_keys), its
        deferrals and placeholders not ended (search_deferred_keys, search_inflight_keys), or the newest of
        several of those."""
        types = sorted(self.types or ())
        if not types or self.outcome_tables():
            return None
        params: dict = {}
        conds = []
        broad = self.broad_key()
        if broad is not None and set(types) <= set(OUTCOME_COUNTERS):
            now = " + ".join(f"sum({OUTCOME_COUNTERS[t]})" for t in types)
            ever = "sum(rows) + sum(rejected)"
            params["y_server"] = broad.value
            conds.append("server = {y_server:String}")
            # the page comes from the newest rows: the share in the last day before the range's end says
            # enough, and reads a day of the server's snapshot rows instead of all of them (14 ms at 1e7)
            end = "now()" if self.until_ms is None else "fromUnixTimestamp64Milli({y_until:Int64}, 'UTC')"
            conds.append(f"hour >= toStartOfHour({end}) - INTERVAL {YIELD_SAMPLE_HOURS} HOUR")
        else:
            return None
        for name, op, ms in (("y_since", ">=", self.since_ms), ("y_until", "<=", self.until_ms)):
            if ms is not None:
                params[name] = ms
                conds.append(f"hour {op} toStartOfHour(fromUnixTimestamp64Milli({ph(name, 'Int64')}, 'UTC'))")
        where = where_clause(conds)
        return f"SELECT {now}, {ever} FROM mail_hourly_snap{where}", params


@dataclass(frozen=True)
class TimeConditions:
    """Conditions on search_time's rows (`SearchPlan._time_conditions`), and what they ask of its indexes."""

    sql: list[str]
    text: bool = False  # a text filter: a LIKE, or the value's rarer trigrams and `position`
    like: bool = False  # among them a LIKE (the value read whole)
    pairs: bool = False  # a phrase's word pairs (tok_pairs)


class CandidateSource(NamedTuple):
    """Where a search's candidates are read (`SearchPlan.candidate_source`)."""

    table: str  # search_keys, an outcome table (OUTCOME_KEY_TABLES), search_time or (scan_latest) latest
    conditions: list[str]
    settings: str = ""  # the statement's SETTINGS clause (`candidate_settings`), or ""
    time_column: str = "ts"  # the arrival time the candidates are ordered by
    text_indexed: bool = False  # search_time read through a text index (reads_unordered)
    more: tuple[
        tuple[str, list[str]], ...
    ] = ()  # further (table, conditions) read beside it (`outcome_tables`)

    def branches(self) -> list[tuple[str, list[str]]]:
        """Every (table, conditions) whose rows together are the candidates."""
        return [(self.table, self.conditions), *self.more]


def where_clause(conditions: Sequence[str]) -> str:
    """` WHERE c1 AND c2 …`, or "" for no condition."""
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def candidate_settings(indexed: bool, pairs: bool) -> str:
    """The SETTINGS of a candidates read with a text filter: through the text indexes (`indexed`), with or
    without a phrase's word pairs (`pairs`), or newest first without them (common_text_sql).

    Through the indexes, a LIKE alone is left to ClickHouse's PREWHERE: the LIKE and the index's row filter
    run first and the key columns are read lazily for the rows that pass. A rare address (a recipient's
    address as `all` free text) read 649 granules at 1e8 events for 18 rows: 222 ms p50 with the key
    columns of every granule, 115 with PREWHERE (docs/BENCHMARKS.md, session 27). With word pairs PREWHERE
    ran 021's pairs expression beside the LIKE and cost 9 ms more (before 025 stored the pairs), so those
    conditions stay in WHERE, where
    the LIKE goes first; and only tok_pairs is asked: the trigram index (GRAMS_INDEX) would read the
    postings of every trigram of the phrase, most of them common, for rows its pairs have already narrowed
    to a few (the bench's subject phrase at 1e8: 80 ms p50 with both indexes, 40 with the pairs alone;
    docs/BENCHMARKS.md, session 28). Read newest first without the indexes, every granule matches, there is
    nothing to read lazily, and it stays as it was measured (WHERE)."""
    if indexed and not pairs:
        return ""
    if indexed:
        return f" SETTINGS optimize_move_to_prewhere = 0, ignore_data_skipping_indices = '{GRAMS_INDEX}'"
    return " SETTINGS optimize_move_to_prewhere = 0, use_skip_indexes = 0"


def time_side(direction: str, ms: int, params: dict, name: str, before: bool) -> str:
    """Rows whose sendunixtime comes strictly before `ms` in sort order (before) or at/after it."""
    params[name] = ms
    t = f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')"
    if direction == "DESC":
        return f"sendunixtime {'>' if before else '<='} {t}"
    return f"sendunixtime {'<' if before else '>='} {t}"


def first_messages(cands: list, n: int) -> tuple[list, bool]:
    """The candidates up to and including the first one of the (n+1)-th distinct message (so that its time
    is the round's boundary), and whether anything was cut: a page never fetches more messages than it can
    return rows."""
    seen: set = set()
    for i, c in enumerate(cands):
        seen.add((c[1], c[2]))
        if len(seen) > n:
            return cands[: i + 1], True
    return cands, False


def first_rows(cands: list, n: int) -> tuple[list, bool]:
    """The candidates up to and including the first one of a message not named by the first `n` (its time is
    the round's boundary), and whether anything was cut: first_messages for candidates that name rows."""
    seen: set = set()
    for i, c in enumerate(cands):
        key = (c[1], c[2])
        if i >= n and key not in seen:
            return cands[: i + 1], True
        seen.add(key)
    return cands, False


def decide_text_read(
    run: Callable[[str, dict], tuple[list[str], list[tuple]]], plan: SearchPlan, rows: int
) -> SearchPlan:
    """`plan` with how its text filters read search_time decided (text_index, text_grams) by the sample of
    common_text_sql (one statement), for a first round sized for `rows`; `plan` itself when that is decided
    already or it has no text filter on the time path. A new plan: the caller's is not changed."""
    sample = text_sample(run, plan)
    if sample is None:
        return plan
    matching, sampled, shares = sample
    indexed = plan.uses_text_index(matching, sampled, plan.first_round(rows))
    grams = plan.sampled_grams(shares, sampled) if indexed else {}
    return dataclasses.replace(plan, text_index=indexed, text_grams=grams)


def decide_text_grams(
    run: Callable[[str, dict], tuple[list[str], list[tuple]]], plan: SearchPlan
) -> SearchPlan:
    """`plan` for a read of every row it matches (`read_all`: `eximtrack search`, an export), with the
    trigram index asked for its text values' rarer trigrams only when the sample (common_text_sql) finds
    common ones among them; `plan` itself otherwise. Such a read has no first round to find newest first:
    it always reads through the index, so only the trigrams are decided here (no sample when no value has
    trigrams to leave out: a phrase, a short value)."""
    if not plan.gram_filters():
        return plan
    sample = text_sample(run, plan)
    if sample is None:
        return plan
    _, sampled, shares = sample
    grams = plan.sampled_grams(shares, sampled)
    return dataclasses.replace(plan, text_index=True, text_grams=grams) if grams else plan


def decide_scan(run: Callable[[str, dict], tuple[list[str], list[tuple]]], plan: SearchPlan) -> SearchPlan:
    """`plan` for a read of every row it matches, with its candidates from a scan of `latest` (scan_latest)
    when it may (may_scan_latest) and the scan names at most SCAN_MAX_ROWS rows (one count statement, which
    stops there); `plan` itself otherwise. A new plan: the caller's is not changed."""
    if plan.scan_latest or not plan.may_scan_latest():
        return plan
    scan = dataclasses.replace(plan, scan_latest=True)
    params: dict = {}
    source = scan.candidate_source(params)  # the rows the scan reads, counted
    sql = f"SELECT count() FROM (SELECT 1 FROM {source.table}{where_clause(source.conditions)} LIMIT {SCAN_MAX_ROWS + 1})"
    got = run(sql, params)[1]
    return scan if got and got[0][0] <= SCAN_MAX_ROWS else plan


def decide_read_all(
    run: Callable[[str, dict], tuple[list[str], list[tuple]]], plan: SearchPlan
) -> SearchPlan:
    """`plan` for a read of every row it matches (`eximtrack search`, another order, an export): its text
    values' trigrams (`decide_text_grams`) and whether its candidates come from a scan of `latest`
    (`decide_scan`) decided."""
    return decide_scan(run, decide_text_grams(run, plan))


def text_sample(
    run: Callable[[str, dict], tuple[list[str], list[tuple]]], plan: SearchPlan
) -> tuple[int, int, tuple] | None:
    """(rows matching the candidates' conditions, rows sampled, per text value how many hold each of its
    trigrams) among the newest index rows (`common_text_sql`, one statement), or None when `plan` has no
    text filter on the time path or decided how to read it already."""
    common = plan.common_text_sql() if plan.text_index is None else None
    if common is None:
        return None
    got = run(*common)[1]
    sample = tuple(got[0]) if got else (0, 0)
    return sample[0] or 0, sample[1] or 0, sample[2:]


def run_pages(
    run: Callable[[str, dict], tuple[list[str], list[tuple]]],
    plan: SearchPlan,
    direction: str,
    cursor: Sequence | None,
    rows: int,
    fetch_sql: Callable[[list[str], dict, int], tuple[str, dict]],
) -> tuple[list[str], list[tuple]]:
    """The first `rows` rows after `cursor` (API keys: sendunixtime ms, server, msgid, …) through the access
    path (and, for conditions search_time does not hold and few rows passing them, through slices of a scan
    of `latest`: scans_instead, next_slice). `fetch_sql(extra conditions, extra params, limit)` builds the
    fetch from `plan.fetch_table()` (with the cursor's own keyset condition); `run(sql, params)` executes and
    returns (column names, rows). A server's search by outcome first reads its expected yield (`yield_sql`)
    to size the first round.

    Each round reads up to k candidates from `bound` on. If k came back, the last one's time T may be shared
    by candidates not read yet, so the round returns only rows strictly before T in sort order and the next
    round starts at T (inclusive); rows at T are then returned by a later round, never twice."""
    out: list[tuple] = []
    names: list[str] = []
    bound = int(cursor[0]) if cursor is not None else None
    hint = plan.yield_sql() if plan.expected_yield is None else None
    if hint is not None:  # read on every call (a page is a new request); the caller's plan is not changed
        got = run(*hint)[1]
        now, ever = got[0] if got else (0, 0)
        share = min(1.0, (now or 0) / ever) if ever else None
        if share is not None and plan.broad_key() is not None:
            share /= BROAD_YIELD_MARGIN  # a day's share, not the page's: a second round costs more
        plan = dataclasses.replace(plan, expected_yield=share)
    k = plan.first_round(rows)
    plan = decide_text_read(run, plan, rows)
    widen = 1  # grows when many messages share one time
    fetched = 0  # messages (candidate rows, by_rows) named so far: with len(out), how many rows each yields
    per_message = 1.0  # candidates read per distinct message (versions, recipients)
    by_rows = plan.names_rows()  # rounds count candidate rows (first_rows), not messages
    read = rounds = 0  # candidates read and rounds run so far (scan_latest)
    first_ms = None  # the first candidate's time: with `bound`, the span the rounds covered
    span = edge = None  # scan_latest, newest first: the slice of time read, and its oldest end
    while len(out) < rows:
        missing = rows - len(out)
        want = missing if by_rows else plan.first_messages(missing)
        if fetched:
            # candidates that failed the re-check (stale ones; an outcome's or a common word's): name as many
            # rows (by_rows) or messages as the rounds so far say are needed (+50 %), and read enough
            # candidates to name them (one per row, by_rows)
            want = min(math.ceil(missing * fetched / max(len(out), 1) * 1.5), MAX_ROUND_MESSAGES)
            k = max(k, math.ceil((want * widen + 1) * (1.0 if by_rows else per_message)))
        try:
            _, cands = run(*plan.candidates(direction, bound, k, edge))
        except Exception as exc:
            # more granules than an unordered round's bound: this round and the next ones in order
            if not plan.reads_unordered() or error_code(exc) != TOO_MANY_ROWS:
                raise
            plan = dataclasses.replace(plan, index_in_order=True)
            _, cands = run(*plan.candidates(direction, bound, k, edge))
        if not cands and edge is None:
            break
        if not cands:  # nothing in this slice: the next one, older and longer
            bound, edge, span = next_slice(plan, edge, span)
            continue
        read += len(cands)
        rounds += 1
        first_ms = int(cands[0][0]) if first_ms is None else first_ms
        exhausted_k = len(cands) >= k
        per_message = len(cands) / len({(c[1], c[2]) for c in cands})
        if by_rows:
            cands, cut = first_rows(cands, want * widen)
        else:
            cands, cut = first_messages(cands, want * widen + 1)
        full = exhausted_k or cut
        last = int(cands[-1][0])
        if full and last == bound:  # every candidate taken shares the bound's time: take more of them
            if cut:
                widen *= GROWTH
            else:
                k *= GROWTH
            continue
        named = [c for c in cands if not full or int(c[0]) != last]
        keys = plan.fetch_keys(named)
        if not keys:  # the whole round shares the time T: the next round starts at T with more candidates
            bound = last
            if cut:
                widen *= GROWTH
            else:
                k *= GROWTH
            continue
        extra: dict = {"f_keys": keys}
        conds = [plan.fetch_keys_condition()]
        if bound is not None:
            conds.append(time_side(direction, bound, extra, "f_from", before=False))
        if full:
            conds.append(time_side(direction, last, extra, "f_to", before=True))
        elif edge is not None:  # the whole slice was read: its rows, not older ones
            conds.append(time_side(direction, edge - 1, extra, "f_to", before=True))
        limit = rows - len(out)
        sql, params = fetch_sql(conds, extra, limit)
        round_names, got = run(sql, params)
        names = round_names or names  # an empty result names no columns (chDB): keep an earlier round's
        out.extend(got)
        if len(got) < min(len(keys), limit) and plan.ends_unfolded():
            # fewer rows than messages named: some had ended, their ends not merged yet with their key rows
            # (a live store's merges may take days to fold them): the next rounds fold them as they read
            plan = dataclasses.replace(plan, fold_ends=True)
        fetched += len(named) if by_rows else len(keys)
        if not full and edge is not None:
            bound, edge, span = next_slice(plan, edge, span)
            continue
        if not full:
            break
        bound = last
        if exhausted_k and not cut:  # every candidate read was used: read more per round
            k *= GROWTH
        if scans_instead(plan, rounds, read, len(out), rows, k):
            plan = dataclasses.replace(plan, scan_latest=True)
            by_rows = False
            fetched = len(out)  # the scan's candidates pass the conditions: no failed ones to make up for
            if direction == "DESC":
                span = max(SCAN_FIRST_SPAN_MS, GROWTH * abs(first_ms - bound)) // GROWTH
                bound, edge, span = next_slice(plan, bound + 1, span)
    return names, out


def next_slice(plan: SearchPlan, edge: int, span: int) -> tuple[int, int | None, int]:
    """The slice of a newest-first scan (scan_latest) after the one that began at `edge` (ms, inclusive):
    (its bound: just before `edge`, its own oldest end or None for all the rest, its span: GROWTH times
    `span`). The rest at once past SCAN_MAX_SPAN_MS or the search's start."""
    span *= GROWTH
    start = edge - 1 - span
    if span > SCAN_MAX_SPAN_MS or start <= (plan.since_ms or 0):
        return edge - 1, None, span
    return edge - 1, start, span


def scans_instead(plan: SearchPlan, rounds: int, read: int, found: int, rows: int, k: int) -> bool:
    """Whether run_pages' next rounds read `latest` itself (scan_latest): the plan allows it (may_scan_latest),
    SCAN_AFTER_ROUNDS rounds ran, and at the yield so far (`found` rows of `read` candidates) the page's
    other rows would take more than SCAN_ROUNDS more rounds of `k` candidates."""
    if plan.scan_latest or rounds < SCAN_AFTER_ROUNDS or not plan.may_scan_latest():
        return False
    needed = (rows - found) * read / found if found else math.inf
    return needed > SCAN_ROUNDS * k


__all__ = [
    "DEFERRED_KEYS_TABLE",
    "DEFERRED_OUTCOMES",
    "GRAMS_INDEX",
    "INFLIGHT_KEYS_TABLE",
    "INFLIGHT_OUTCOMES",
    "KEY_FIELDS",
    "KEYED_OUTCOMES",
    "OUTCOME_KEYS_TABLE",
    "OUTCOME_KEY_TABLES",
    "OUTCOME_TABLE",
    "PAIR_COLUMNS",
    "PAIRS_COLUMN",
    "PAIRS_EXPR",
    "TEXT_COLUMNS",
    "CandidateSource",
    "SearchPlan",
    "TextFilter",
    "TimeConditions",
    "candidate_settings",
    "decide_read_all",
    "decide_scan",
    "decide_text_grams",
    "decide_text_read",
    "msgid_second",
    "next_slice",
    "index_grams",
    "phrase_pairs",
    "token_edges",
    "run_pages",
    "scans_instead",
    "spread_rarest",
    "text_sample",
    "time_side",
    "where_clause",
]
