"""build_search / build_show are pure: check the SQL shape and, above all, that values are bound."""

from __future__ import annotations

import re

import pytest

from eximtrack.search import (
    ARRIVAL_FIELDS,
    RESULT_SETTINGS,
    Scope,
    SearchError,
    SearchFilters,
    arrival_from_attempts,
    build_search,
    build_show,
    parse_sort,
    parse_time,
)
from schemas.records import EVENT_FIELDS, OUTCOMES


def _placeholders(sql: str) -> set[str]:
    return set(re.findall(r"\{(\w+):[^}]+\}", sql))


def test_no_filters_reads_latest_final_all_rows():
    sql, params = build_search({})
    assert "FROM latest FINAL" in sql
    assert "WHERE" not in sql
    assert "LIMIT" not in sql
    assert "ORDER BY sendunixtime DESC" in sql
    assert params == {}


def test_result_columns_are_event_fields():
    sql, _ = build_search(None)
    select = sql.split(" FROM ", 1)[0]
    names = [part.rsplit(" AS ", 1)[-1].strip() for part in select[len("SELECT ") :].split(", ")]
    assert tuple(names) == EVENT_FIELDS


def test_result_rows_are_read_filtered_and_converted_by_one_select():
    """The times are converted in the SELECT that filters and sorts on them: prefer_column_name_to_alias keeps
    the aliases named like the columns from shadowing them in WHERE and ORDER BY (without it, `sendunixtime >
    …` would compare the converted number)."""
    sql, _ = build_search(SearchFilters(since="2026-11-01", until="2026-11-02"))
    assert sql.count("SELECT") == 1 and sql.endswith(RESULT_SETTINGS)
    assert "toUnixTimestamp64Milli(sendunixtime) / 1000 AS sendunixtime" in sql and "WHERE" in sql
    shows = build_show("1abcD0-000000-AA", "s1")
    assert shows["attempts"][0].endswith(RESULT_SETTINGS) and shows["children"][0].endswith(RESULT_SETTINGS)


def test_values_are_bound_never_inlined():
    evil = "' OR 1=1 --"
    sql, params = build_search(SearchFilters(recipient=evil, subject=evil, match="contains"))
    assert evil not in sql and "1=1" not in sql
    assert _placeholders(sql) == set(params)
    assert any("1=1" in str(v) for v in params.values())


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("recipient", "Bob@X.org", "lower(recipient) = "),
        ("sender", "a@b.c", "lower(email) = "),
        ("subject", "Hi", "lower(subject) = "),
        ("message_id", "<x@y>", "lower(message_id) = "),
        ("senderip", "10.0.0.1", "lower(senderip) = "),
        ("user", "bob", "lower(user) = "),
        ("msgid", "1AbC", "msgid = "),
        ("server", "web1", "server = "),
    ],
)
def test_single_filters(key, value, fragment):
    sql, params = build_search({key: value})
    assert fragment in sql
    expected = value if key in ("msgid", "server") else value.lower()
    assert expected in params.values()


def test_address_and_domain_cover_both_sides():
    sql, params = build_search({"address": "x@y.z"})
    assert "lower(email) = {p0:String}" in sql and "lower(recipient) = {p0:String}" in sql
    sql, params = build_search({"domain": "Example.COM"})
    assert params == {"p0": "example.com", "c_like0": "%example.com%"}
    assert "lower(domain)" in sql and "lower(deliverydomain)" in sql and sql.count("position(") >= 4
    # its candidates: the rows whose text (which holds the addresses) holds the domain
    assert "IN (SELECT msgtime, server, msgid FROM search_time WHERE text LIKE {c_like0:String}" in sql


def test_match_modes_escape_like():
    _, params = build_search({"recipient": "a_b%c", "match": "begins"})
    assert params["p0"] == "a\\_b\\%c%"
    sql, params = build_search({"recipient": "a_b", "match": "contains"})
    assert params["p0"] == "%a\\_b%" and "LIKE" in sql
    with pytest.raises(SearchError):
        build_search({"recipient": "x", "match": "regex"})


def test_types_and_show_groups():
    sql, params = build_search({"type": ["defer", "failure"]})
    assert "type IN {types0:Array(String)}" in sql and params["types0"] == ["defer", "failure"]
    _, params = build_search({"show": ["successes", "failures"]})
    assert params["types0"] == ["archive", "failure", "filtered", "rejected", "success"]
    _, params = build_search({"show": "deferred,inprogress"})
    assert params["types0"] == ["defer", "inprogress"]
    _, params = build_search({"show": "deferred,failures", "type": "failure,success"})  # both apply
    assert params["types1"] == ["failure"]
    with pytest.raises(SearchError):
        build_search({"type": ["bounced"]})
    with pytest.raises(SearchError):
        build_search({"show": ["everything"]})


def test_since_until():
    sql, params = build_search({"since": "2026-11-01", "until": 1795000000})
    assert params["since0"] == 1793491200000 and params["until1"] == 1795000000000
    assert "(sendunixtime >= fromUnixTimestamp64Milli({since0:Int64}, 'UTC') OR (sendunixtime = 0 AND" in sql
    assert parse_time("2026-11-01T10:00:00+01:00") == 1793523600.0
    assert parse_time("2026-11-01T09:00:00Z") == 1793523600.0
    with pytest.raises(SearchError):
        parse_time("last tuesday")


def test_sort_is_whitelisted():
    assert parse_sort(None) == ("sendunixtime", "DESC")
    assert parse_sort("recipient") == ("recipient", "ASC")
    assert parse_sort("-size") == ("size", "DESC")
    assert parse_sort("actionunixtime:asc") == ("actionunixtime", "ASC")
    for bad in ("recipient; DROP TABLE events", "1", "size:sideways", "nosuchcolumn"):
        with pytest.raises(SearchError):
            parse_sort(bad)
    sql, _ = build_search({"sort": "recipient:desc"})
    assert "ORDER BY recipient DESC, server ASC, msgid ASC, deliveredto ASC" in sql


def test_limit():
    sql, params = build_search({"limit": 5})
    assert "LIMIT {limit0:UInt64}" in sql and params["limit0"] == 5
    with pytest.raises(SearchError):
        build_search({"limit": -1})
    with pytest.raises(SearchError):
        build_search({"limit": "many"})


def test_unknown_filter_rejected():
    with pytest.raises(SearchError):
        build_search({"recipeint": "x"})


def test_build_show():
    q = build_show("1abc-def-GH", server="web1")
    # the arrival is derived from the attempts
    assert set(q) == {"attempts", "has_children", "children", "lines"}
    assert set(build_show("m", scope=Scope(user="bob"))) == {"arrival", *q}
    for sql, params in q.values():
        assert "1abc" not in sql
        assert params == {"msgid": "1abc-def-GH", "server": "web1"}
        assert _placeholders(sql) == set(params)
    assert build_show("m", scope=Scope(user="bob"))["has_children"][1] == {"msgid": "m"}
    assert "FROM events FINAL" in q["attempts"][0] and "is_deleted = 0" in q["attempts"][0]
    assert "parent_msgid = {msgid:String}" in q["children"][0]
    assert "FROM log_lines FINAL" in q["lines"][0]
    assert build_show("m")["lines"][1] == {"msgid": "m"}
    with pytest.raises(SearchError):
        build_show("  ")
    # PREWHERE (before FINAL) holds only the message's key, which every version of its rows shares; the
    # scope (a pre-arrival version has no sender fields) is decided after FINAL, in WHERE
    for sql, _ in build_show("m", server="web1", scope=Scope(user="bob")).values():
        for clause in re.findall(r"PREWHERE (.*?) WHERE", sql):
            assert clause == "msgid = {msgid:String} AND server = {server:String}", clause
    assert "PREWHERE" in q["attempts"][0] and "PREWHERE" in q["lines"][0]


def test_run_show_reads_children_only_when_search_keys_names_one():
    from eximtrack.search import run_show

    queries = build_show("m", server="web1")
    for found in ([], [(1,)]):
        ran = []

        def run(sql, params, found=found, ran=ran):
            ran.append(sql)
            return (["x"], found if sql == queries["has_children"][0] else [])

        out = run_show(queries, run)
        assert set(out) == {"arrival", "attempts", "children", "lines"}
        assert (queries["children"][0] in ran) == bool(found)
        if not found:
            assert out["children"] == (list(EVENT_FIELDS), [])


def test_arrival_from_attempts_takes_the_newest_known_arrival_per_server():
    cols = ["server", "event_id", "version", *[c for c in ARRIVAL_FIELDS if c != "server"]]

    def row(server, version, sent, email):
        d = dict.fromkeys(ARRIVAL_FIELDS, "")
        d.update(server=server, sendunixtime=sent, email=email)
        return tuple({"event_id": f"e{version}", "version": version, **d}[c] for c in cols)

    rows = [
        row("web2", 9, 0.0, "pre@arrival"),  # newest, but before the arrival line: loses
        row("web2", 5, 100.5, "old@x"),
        row("web2", 7, 100.5, "new@x"),
        row("web1", 3, 0.0, "only@pre"),  # no arrival known on web1: its newest row anyway
        row("web1", 2, 0.0, "older@pre"),
    ]
    names, got = arrival_from_attempts(cols, rows)
    assert names == list(ARRIVAL_FIELDS)
    by_server = [dict(zip(names, r, strict=True)) for r in got]
    assert [(r["server"], r["email"]) for r in by_server] == [("web1", "only@pre"), ("web2", "new@x")]
    assert arrival_from_attempts(cols, []) == (list(ARRIVAL_FIELDS), [])


def test_ascii_lower_matches_clickhouse_lower():
    from eximtrack.search import ascii_lower

    assert ascii_lower("Bob@Example.COM") == "bob@example.com"
    assert ascii_lower("GRÜẞE Ärger") == "grÜẞe Ärger"  # ClickHouse lower() leaves non-ASCII alone


def test_complete_tokens():
    from eximtrack.search import complete_tokens

    assert complete_tokens("bob@example.com", "eq") == ["bob", "com", "example"]
    assert complete_tokens("bob@exam", "begins") == ["bob"]
    assert complete_tokens("bob@", "begins") == ["bob"]
    assert complete_tokens("bob", "begins") == []
    assert complete_tokens("ob@example.co", "contains") == ["example"]
    assert complete_tokens("@example.", "contains") == ["example"]
    assert complete_tokens("example", "contains") == []
    assert complete_tokens("grüße@x", "eq") == ["grüße", "x"]  # non-ASCII characters are token characters
    assert complete_tokens("a_b-c", "eq") == ["a", "b", "c"]


def test_phrase_pairs_are_the_pairs_every_matching_text_holds():
    """tok_pairs' terms of a phrase (migration 021): two adjacent words, the last 4 characters of the first
    and the first 4 of the second; an edge word of `contains` counts only from 4 characters on (it may be
    the end or the start of a longer word), `begins` fixes the first word's start and `eq` both ends."""
    from eximtrack.search_plan import phrase_pairs

    assert phrase_pairs("player config product", "contains") == ["ayer conf", "nfig prod"]
    assert phrase_pairs("re: my order", "contains") == ["my orde"]  # 're' may end a longer word
    assert phrase_pairs("re: my order", "eq") == ["my orde", "re my"]
    assert phrase_pairs("re: my order", "begins") == ["my orde", "re my"]
    assert phrase_pairs("ab cd", "begins") == []  # 'cd' may start a longer word
    assert phrase_pairs("ab cd", "eq") == ["ab cd"]
    assert phrase_pairs("invoice", "contains") == []  # one word: no pair
    assert phrase_pairs("order 12345 shipped", "contains") == []  # digits: not indexed
    assert phrase_pairs("the user-unknown, the user-unknown", "contains") == [
        "nown the",
        "the user",
        "user unkn",
    ]
    assert phrase_pairs("grüße aus berlin", "eq") == ["aus berl"]  # non-ASCII halves are not indexed


def test_a_phrase_in_subject_or_message_also_asks_its_word_pairs():
    """The candidates of a subject or message phrase add hasAllTokens on tok_pairs' column (text_pairs) after
    their LIKE (first, so that parts without tok_pairs read it for the LIKE's rows only); a filter that
    also tests other columns (`all`, a domain) cannot: their text is not paired. A phrase common enough to be
    read in time order without the indexes (text_index False), and the sample deciding it, use the LIKE."""
    import dataclasses

    from eximtrack.search_plan import PAIRS_COLUMN
    from eximtrack.web.query import build_search_query

    plan = build_search_query({"subject": "Player Config Product"}, None).plan
    sql, params = plan.candidates("DESC", None, 101)
    pairs = f"hasAllTokens({PAIRS_COLUMN}, {{c_pairs0:Array(String)}})"
    assert f" WHERE text LIKE {{c_like0:String}} AND {pairs} ORDER BY ts DESC" in sql
    assert params["c_pairs0"] == ["ayer conf", "nfig prod"] and params["c_like0"] == "%player config product%"
    table, access, params = plan.read_all()
    assert pairs in access[0] and params["c_pairs0"] == ["ayer conf", "nfig prod"]
    sample, params = plan.common_text_sql()
    assert "countIf(text LIKE {c_like0:String})" in sample and params == {
        "c_like0": "%player config product%"
    }
    common = dataclasses.replace(plan, text_index=False).candidates("DESC", None, 101)[0]
    assert "text LIKE {c_like0:String}" in common and "hasAllTokens" not in common
    assert common.endswith("use_skip_indexes = 0")
    message = build_search_query({"message": "mailbox is full"}, None).plan.candidates("DESC", None, 101)
    assert message[1]["c_pairs0"] == ["is full", "lbox is"]
    for other in (
        {"all": "player config product"},
        {"domain": "player config product", "domain_searchmatch": "contains"},
        {"subject": "invoice"},  # one word: no pair
    ):
        sql, params = build_search_query(other, None).plan.candidates("DESC", None, 101)
        assert "hasAllTokens" not in sql and "text LIKE" in sql, other


def test_a_recipient_path_reads_the_recipient_ordered_copy():
    """An eq/begins recipient filter that is the access path reads its rows from latest_by_recipient
    (migration 011): a page fetches (recipient, msgtime, server, msgid) keys named by the candidates' values,
    a read of every row names the recipient's range directly. Other paths, a recipient filter that is not the
    path (contains), or a more selective key keep reading `latest`."""

    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    plan = build_search_query({"recipient": "Bob@Example.com", "failure": "1"}, None).plan
    assert plan.fetch_table() == "latest_by_recipient"
    assert plan.read_all() == (
        "latest_by_recipient",
        ["recipient_lower = {c_value:String}"],
        {"c_value": "bob@example.com"},
    )
    sql, _ = plan.candidates("DESC", None, 10)
    assert "toUInt32(msgtime), value FROM search_outcome_keys" in sql  # failures: migration 026's rows
    assert plan.fetch_keys([(1000, "mx1", "1abc00-000001-AA", 77, "bob@example.com")] * 2) == [
        ("bob@example.com", 77, "mx1", "1abc00-000001-AA")
    ]
    assert plan.fetch_keys_condition().startswith("(recipient_lower, msgtime, server, msgid) IN {f_keys:")
    plan = build_search_query({"recipient": "b_b%", "recipient_searchmatch": "begins"}, Scope(user="u")).plan
    assert plan.read_all() == (
        "latest_by_recipient",
        ["recipient_lower LIKE {c_prefix:String}"],
        {"c_value": "b_b%", "c_prefix": "b\\_b\\%%"},
    )
    for params, scope in (
        ({"recipient": "bob", "recipient_searchmatch": "contains"}, None),
        ({"recipient": "bob@x.org", "message_id": "<a@b>"}, None),
        ({"sender": "bob@x.org"}, None),
        ({"failure": "1"}, Scope(user="bob")),
    ):
        plan = build_search_query(params, scope).plan
        assert plan.fetch_table() == "latest" and plan.read_all()[0] == "latest", params
        assert plan.fetch_keys([(1000, "mx1", "m", 77)]) == [(77, "mx1", "m")]
    # nothing selective: every row of `latest` with the search's own conditions, unless an outcome is asked
    plan = build_search_query({"failure": "1"}, None).plan
    assert plan.read_all() == ("latest", [], {})
    table, conds, _ = plan.read_all(by_outcome=True)
    assert table == "latest" and conds[0].startswith("(msgtime, server, msgid) IN (SELECT")


def test_access_path_choice():
    """An indexed eq/begins value reads search_keys (search_outcome_keys for outcomes other than a success:
    test_a_key_path_with_outcomes_other_than_a_success_reads_the_outcome_keys), anything else search_time, and
    the choice is only a
    narrowing: every condition stays in the statement that reads `latest`."""
    import dataclasses

    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    def source(params, scope=None):
        plan = build_search_query(params, scope).plan
        bound: dict = {}
        table, conds, *_ = plan.candidate_source(bound)
        return table, conds, bound, plan

    table, conds, bound, plan = source({"recipient": "Bob@Example.com", "success": "1"})
    assert (
        table == "search_keys"
        and bound["c_fields"] == ["recipient"]
        and bound["c_value"] == "bob@example.com"
    )
    assert "value = {c_value:String}" in conds
    assert any("lower(recipient) =" in c for c in plan.conds) and any("type IN" in c for c in plan.conds)
    table, conds, bound, _ = source({"sender": "a@b.c", "sender_searchmatch": "begins"})
    assert (
        table == "search_keys" and bound["c_fields"] == ["email", "sender"] and bound["c_prefix"] == "a@b.c%"
    )
    # the more selective filter wins: Message-ID over domain
    _, _, bound, _ = source({"domain": "b.c", "message_id": "<X.1@b.c>"})
    assert bound["c_fields"] == ["message_id"] and bound["c_value"] == "x.1@b.c"
    # contains is not a key read; the scope is, when no filter is
    table, conds, bound, _ = source({"recipient": "bob", "recipient_searchmatch": "contains"})
    assert table == "search_time" and bound["c_like0"] == "%bob%" and "c_tok0" not in bound
    _, _, bound, _ = source({"failure": "1"}, Scope(user="Bob"))
    assert bound["c_fields"] == ["deliveryuser", "user"] and bound["c_value"] == "bob"
    # the server (migration 009), as is: only when no other key and no scope narrows more
    table, conds, bound, _ = source({"server": "MX1.example", "success": "1"})
    assert table == "search_keys" and bound["c_fields"] == ["server"] and bound["c_value"] == "MX1.example"
    table, conds, bound, _ = source({"server": "MX1.example", "failure": "1"})  # its failures' rows (026)
    assert table == "search_outcome_keys" and bound["c_value"] == "MX1.example"
    _, _, bound, _ = source({"server": "mx1", "domain": "b.c"})
    assert bound["c_fields"] == ["domain"]
    _, _, bound, _ = source({"server": "mx1"}, Scope(user="Bob"))
    assert bound["c_fields"] == ["deliveryuser", "user"]
    table, _, bound, _ = source({"server": "mx", "server_searchmatch": "contains"})
    assert table == "search_time"
    # text filters: LIKE on the joined text (served by its text index); the type narrows too
    table, conds, bound, _ = source(
        {"subject": "Invoice 2026 %x", "subject_searchmatch": "contains", "defer": "1"}
    )
    assert table == "search_time" and bound["c_types"] == ["defer"]
    assert bound["c_like0"] == "%invoice 2026 \\%x%"
    # through the text index: a LIKE alone is left to PREWHERE (the key columns read lazily for the rows it
    # keeps) and to the trigram index; a phrase's word pairs keep every condition in WHERE, where the LIKE
    # goes first, and are the only index asked (the phrase's trigrams would cost more than they skip)
    # (a round read in order: index_in_order; unordered ones: test_a_rare_text_value_is_read_unordered_…)
    plan = dataclasses.replace(
        build_search_query({"all": "ann.lee@mail.example"}, None).plan, index_in_order=True
    )
    sql = plan.candidates("DESC", None, 10)[0]
    assert "text LIKE" in sql and "SETTINGS" not in sql
    plan = build_search_query({"subject": "order invoice", "subject_searchmatch": "contains"}, None).plan
    sql = dataclasses.replace(plan, index_in_order=True).candidates("DESC", None, 10)[0]
    assert "hasAllTokens(" in sql and sql.endswith(
        "SETTINGS optimize_move_to_prewhere = 0, ignore_data_skipping_indices = 'grams_text'"
    )
    # msgid: exact, case-sensitive, a primary-key read through msgtime (no candidates table needed)
    plan = build_search_query({"msgid": "1xWksW-0004pV-1a"}, None).plan
    assert any(c.startswith("msgtime = toDateTime(") for c in plan.conds)
    assert not plan.selective()
    assert not build_search_query({"msgid": "rej-0123456789abcdef"}, None).plan.msgid_hint()


def test_msgid_second_is_the_decoder_of_migration_007():
    from eximtrack.search_plan import msgid_second
    from stream.clock import msgid_time

    assert msgid_second("1xWksW-0004pV-1a") == int(msgid_time("1xWksW-0004pV-1a")) > 1_500_000_000
    assert msgid_second("rej-0123456789abcdef") is None and msgid_second("short") is None


@pytest.mark.parametrize("seed", range(40))
def test_page_loop_is_exact_against_a_model(seed):
    """run_pages over a model of the store: rows whose latest time differs from some of their index rows
    (stale versions, moved rows), many rows per time (ties), duplicates in the index. Paging through with
    the API's cursors in both directions returns exactly the rows sorted by (time, server, msgid, rcpt)."""
    import random

    from eximtrack.search_plan import SearchPlan, TextFilter, run_pages

    rng = random.Random(seed)
    latest = {}  # (server, msgid, rcpt) -> (ts, matches)
    index = []  # (ts, server, msgid, msgtime): every version of every row, some stale, some twice
    for m in range(rng.randint(0, 60)):
        server, msgid = f"s{rng.randint(0, 3)}", f"m{m:03d}"
        for r in range(rng.randint(1, 3)):
            versions = [
                (rng.choice([rng.randint(0, 50), 1000 + m]), rng.random() < 0.6)
                for _ in range(rng.randint(1, 3))
            ]
            latest[(server, msgid, f"r{r}")] = versions[-1]
            for ts, ok in versions:
                index += [(ts, server, msgid, 7)] * rng.randint(1, 2) if ok or rng.random() < 0.5 else []
    index = [c for c in index if c[1:3] in {k[:2] for k, v in latest.items()}]
    for direction in ("DESC", "ASC"):
        want = sorted(((v[0], *k) for k, v in latest.items() if v[1]), key=lambda r: r[1:])
        want.sort(key=lambda r: r[0], reverse=direction == "DESC")

        def run(sql, params, direction=direction):
            if sql.startswith("SELECT countIf("):  # the text filter's share (common_text_sql): rare
                return ["matching", "sampled"], [(0, 1000)]
            if "c_k" in params:
                b = params.get("c_bound")
                rows = [c for c in index if b is None or (c[0] <= b if direction == "DESC" else c[0] >= b)]
                rows.sort(key=lambda c: c[0], reverse=direction == "DESC")
                rows = rows[: params["c_k"]]
                rng.shuffle(rows)  # ties come back in any order
                rows.sort(key=lambda c: c[0], reverse=direction == "DESC")
                return ["ts", "server", "msgid", "msgtime"], rows
            keys = {(s, m) for _, s, m in params["f_keys"]}
            got = [(v[0], *k) for k, v in latest.items() if v[1] and k[:2] in keys]
            for name, before in (("f_from", False), ("f_to", True)):
                if name in params:
                    t = params[name]
                    earlier = (lambda x, t=t: x > t) if direction == "DESC" else (lambda x, t=t: x < t)
                    got = [g for g in got if earlier(g[0]) == before]  # before t, or at/after it
            cur = params.get("cursor")
            if cur is not None:
                after = (
                    (lambda g: (-g[0], g[1:]) > (-cur[0], tuple(cur[1:])))
                    if direction == "DESC"
                    else (lambda g: (g[0], g[1:]) > (cur[0], tuple(cur[1:])))
                )
                got = [g for g in got if after(g)]
            got.sort(key=lambda r: r[1:])
            got.sort(key=lambda r: r[0], reverse=direction == "DESC")
            got = got[: params["lim"]]
            return (["ts", "server", "msgid", "rcpt"] if got else []), got  # chDB names no column of no rows

        size = rng.randint(1, 7)
        pages, cursor = [], None
        while True:

            def fetch_sql(conds, extra, n, cursor=cursor):
                return "fetch", {**extra, "lim": n, "cursor": cursor}

            # odd seeds: a filter on one column, whose first round fetches twice the page's messages
            filters = [TextFilter(("subject",), "contains", "x")] if seed % 2 else []
            plan = SearchPlan([], {}, filters=filters)
            plan.first_round = lambda rows: 1 + seed % 3  # tiny rounds: many boundaries, ties cut
            if seed % 3 == 0:  # a yield hint (a server's outcome share): bigger first rounds, same pages
                plan.expected_yield = 0.3
            names, rows = run_pages(run, plan, direction, cursor, size + 1, fetch_sql)
            assert not rows or names == ["ts", "server", "msgid", "rcpt"], (
                seed,
                names,
            )  # even if a later round was empty
            pages += rows[:size]
            if len(rows) <= size:
                break
            cursor = list(rows[size - 1])
        assert pages == want, (seed, direction)


def test_first_round_fetches_twice_the_page_when_the_index_text_is_wider_than_the_filter():
    """A subject word is matched in search_time.text (all columns), so about half the candidates of the
    bench's `subject_word` fail the re-check: the first round fetches twice the page's messages and the
    page needs one round, not two (candidates + fetch each time). Key paths and `all` fetch the page."""
    from eximtrack.search_plan import TEXT_COLUMNS, SearchPlan, TextFilter, run_pages

    subject = SearchPlan([], {}, filters=[TextFilter(("subject",), "contains", "invoice")])
    everything = SearchPlan([], {}, filters=[TextFilter(TEXT_COLUMNS, "contains", "invoice")])
    recipient = SearchPlan([], {}, filters=[TextFilter(("recipient",), "eq", "a@b.c")])
    assert subject.first_messages(101) == 202
    assert everything.first_messages(101) == 101 and recipient.first_messages(101) == 101
    assert SearchPlan([], {}).first_messages(101) == 101
    # a model: 400 messages, one row each, newest first; every other one matches the filter
    index = [(1000 - m, "s", f"m{m:03d}", 7) for m in range(400)]
    rows = {(s, m): ts for ts, s, m, _ in index if int(m[1:]) % 2 == 0}

    def pages(plan):
        fetches = []

        def run(sql, params):
            if sql.startswith("SELECT countIf("):  # the text filter's share (common_text_sql)
                return ["matching", "sampled"], [(0, 1000)]
            if "c_k" in params:
                bound = params.get("c_bound", 10**9)
                return ["ts", "server", "msgid", "msgtime"], [c for c in index if c[0] <= bound][
                    : params["c_k"]
                ]
            fetches.append(len(params["f_keys"]))
            got = sorted(
                ((rows[(s, m)], s, m) for _, s, m in params["f_keys"] if (s, m) in rows), reverse=True
            )
            got = [g for g in got if g[0] <= params.get("f_from", 10**9) and g[0] > params.get("f_to", -1)]
            return ["ts", "server", "msgid"], got[: params["lim"]]

        _, got = run_pages(
            run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n})
        )
        return got, fetches

    got, fetches = pages(subject)
    assert got == sorted(((ts, s, m) for (s, m), ts in rows.items()), reverse=True)[:101]
    assert len(fetches) == 1, fetches
    got_before, fetches_before = pages(SearchPlan([], {}))  # the page's messages only: a second round
    assert got_before == got and len(fetches_before) == 2


def test_a_round_on_the_time_path_fetches_the_messages_of_the_pages_rows():
    """search_time holds one row per recipient row, and its text every column: where each candidate names a
    row of the answer (no filter, `all` columns, an outcome), a page of 101 rows from messages of 3
    recipients fetches the 34 messages holding them in one round (not 101 messages, one per row), and its
    first round reads 1.25 candidates per row; a filter on some columns, a key path or a yield hint keep
    counting messages."""
    from eximtrack.search_plan import TEXT_COLUMNS, SearchPlan, TextFilter, run_pages

    everything = SearchPlan([], {}, filters=[TextFilter(TEXT_COLUMNS, "contains", "launch")])
    newest, failures = SearchPlan([], {}), SearchPlan([], {}, types={"failure"})
    assert everything.names_rows() and newest.names_rows() and failures.names_rows()
    assert newest.first_round(101) == 177  # ceil(1.25 * 101) + 50
    assert not SearchPlan([], {}, filters=[TextFilter(("subject",), "contains", "x")]).names_rows()
    assert not SearchPlan([], {}, filters=[TextFilter(("recipient",), "eq", "a@b.c")]).names_rows()
    assert not SearchPlan([], {}, expected_yield=0.5).names_rows()
    # a model: 300 messages of 3 rows each, newest first, every row matching
    index = [(10_000 - m, "s", f"m{m:03d}", 7) for m in range(300) for _ in range(3)]
    fetches, candidates = [], []

    def run(sql, params):
        if sql.startswith("SELECT countIf("):  # the text filter's share (common_text_sql)
            return ["matching", "sampled"], [(0, 1000)]
        if "c_k" in params:
            candidates.append(params["c_k"])
            bound = params.get("c_bound", 10**9)
            return ["ts", "server", "msgid", "msgtime"], [c for c in index if c[0] <= bound][: params["c_k"]]
        fetches.append(len(params["f_keys"]))
        got = [
            (ts, s, m, r)
            for ts, s, m in sorted(
                ((10_000 - int(m[1:]), s, m) for _, s, m in params["f_keys"]), reverse=True
            )
            for r in range(3)
            if ts > params.get("f_to", -1)
        ]
        return ["ts", "server", "msgid", "rcpt"], got[: params["lim"]]

    for plan in (everything, newest, failures):
        fetches.clear()
        candidates.clear()
        _, got = run_pages(
            run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n})
        )
        assert len(got) == 101 and got[0][:3] == (10_000, "s", "m000") and got[-1][:3] == (9_967, "s", "m033")
        assert fetches == [34] and candidates == [177], (fetches, candidates)


def test_a_search_by_outcome_on_the_time_path_reads_no_yield_hint():
    """On the time path the candidates of an outcome are the search_time rows whose newest version has it
    (migration 022 keeps no other once merged), so a deferred / in-progress search fetches the page's
    messages first, as any other, and grows its rounds by the yield it meets; without a snapshot read."""
    from eximtrack.search_plan import SearchPlan, run_pages
    from eximtrack.web.query import build_search_query

    for params in (
        {"defer": "1", "startdate": "1780000000"},
        {"defer": "1", "inprogress": "1"},
        {"failure": "1"},
        {"defer": "1", "recipient": "a@b.c"},
        {},
    ):
        assert build_search_query(params, None).plan.yield_sql() is None, params
    plan = build_search_query({"defer": "1"}, None).plan
    asked = []

    def run(sql, params):
        assert "mail_hourly_snap" not in sql
        if "c_k" in params:
            n = min(params["c_k"], 20000)  # distinct times, newest first
            return ["ts", "server", "msgid", "msgtime"], [(10**6 - i, "s", f"m{i}", 1) for i in range(n)]
        asked.append(len(params["f_keys"]))
        return ["x"], [()] * params["lim"]

    run_pages(run, plan, "DESC", None, 100, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
    assert asked == [100]  # the messages of the page's rows (a candidate names a row: names_rows)
    assert SearchPlan([], {}, expected_yield=0.5).first_messages(100) == 200


def test_scope_is_bound_and_anded():
    from eximtrack.search import Scope

    sql, params = build_search({"recipient": "a@b.c", "scope": {"user": "Bob' OR 1=1"}})
    assert "Bob" not in sql and "bob' or 1=1" in params.values()
    assert "(lower(user) = {scope1:String} OR lower(deliveryuser) = {scope1:String})" in sql
    sql, _ = build_search({"scope": Scope(reseller="res1")})
    assert "lower(owner)" in sql and "lower(deliveryowner)" in sql
    sql, _ = build_search({"scope": Scope(address="x@y.z")})
    assert "lower(email)" in sql and "lower(recipient)" in sql and "lower(deliveredto)" in sql
    with pytest.raises(SearchError):
        Scope()
    with pytest.raises(SearchError):
        Scope(user="a", address="b@c")
    q = build_show("m1", scope=Scope(user="bob"))
    for sql, params in q.values():
        assert _placeholders(sql) <= set(params) and "bob" not in sql
    assert "lower(deliveryuser)" not in q["lines"][0].split("log_lines FINAL", 1)[1].split("sender")[1]


def test_a_total_by_outcome_time_server_or_msgid_is_counted_on_the_narrow_copy():
    """A search on the time path whose every condition tests outcome, arrival/action time, server or msgid (no
    tenant scope, no indexed value) counts its total on latest_outcomes (migration 018), with the search's own
    conditions; any other column, a text filter on other columns, a scope, or a server filter without another
    one (search_keys names its messages) keeps counting on `latest` (FINAL, access path and all)."""
    from eximtrack.search import Scope
    from eximtrack.web.query import build_search_query

    for params in (
        {"failure": "1", "startdate": "2026-11-01", "enddate": "2026-11-02"},
        {"msgid": "1abc00-000001-AA", "defer": "1"},
        {"server": "mx", "server_searchmatch": "contains", "startdate": "2026-11-01"},
        {},
    ):
        sq = build_search_query(params, None)
        assert sq.plan.outcome_count(), params
        sql, bound = sq.count()
        assert sql.startswith("SELECT count() AS total FROM latest_outcomes FINAL"), params
        assert "search_time" not in sql and bound == sq.params
    assert "msgtime = toDateTime(" in build_search_query({"msgid": "1abc00-000001-AA"}, None).count()[0]
    for params, scope in (
        ({"failure": "1"}, Scope(user="bob")),
        ({"failure": "1", "minsize": "10"}, None),
        ({"deliverytype": "remote"}, None),
        ({"server": "mx1", "type": "success"}, None),
        ({"server": "mx", "server_searchmatch": "begins"}, None),
        ({"server": "mx1", "recipient": "bob@x.org"}, None),
        ({"subject": "hello", "subject_searchmatch": "contains"}, None),
        ({"all": "mx1"}, None),
    ):
        sq = build_search_query(params, scope)
        assert not sq.plan.outcome_count(), params
        assert "latest_outcomes" not in sq.count()[0], params


def test_a_server_search_by_outcome_sizes_its_first_round_by_the_outcome_share_of_its_last_day():
    """On a broad key's path (one whole server) the candidates are every message of the server, so an
    outcome filter keeps the outcome's share of its rows: run_pages reads that share from the server's
    snapshot rows of the last day before the range's end and fetches page / share messages (a quarter more,
    BROAD_YIELD_MARGIN) in its first round, instead of a second round for the rows the filter dropped."""
    import math

    from eximtrack.search_plan import BROAD_YIELD_MARGIN, YIELD_SAMPLE_HOURS, run_pages
    from eximtrack.web.query import build_search_query

    plan = build_search_query({"server": "web01", "type": "success"}, None).plan
    sql, params = plan.yield_sql()
    assert sql.startswith("SELECT sum(success), sum(rows) + sum(rejected) FROM mail_hourly_snap WHERE ")
    assert "server = {y_server:String}" in sql and params == {"y_server": "web01"}
    assert f"hour >= toStartOfHour(now()) - INTERVAL {YIELD_SAMPLE_HOURS} HOUR" in sql
    sql, params = build_search_query(
        {"server": "web01", "success": "1", "defer": "1", "enddate": "1780000000"}, None
    ).plan.yield_sql()
    assert "sum(archive) + sum(deferred) + sum(filtered) + sum(success), sum(rows) + sum(rejected)" in sql
    assert "fromUnixTimestamp64Milli({y_until:Int64}, 'UTC')) - INTERVAL" in sql
    assert params == {"y_server": "web01", "y_until": 1780000000000}
    for params in (
        {"server": "web01"},  # no outcome filter: every candidate yields
        {"server": "web01", "type": "success", "recipient": "a@b.c"},  # the recipient is the path
        {"server": "web0", "server_searchmatch": "begins", "type": "success"},
        {"server": "web01", "failure": "1"},  # search_outcome_keys names the server's failures only (026)
        {"server": "web01", "inprogress": "1", "defer": "1"},  # and with 027 its rows in progress too
    ):
        assert build_search_query(params, None).plan.yield_sql() is None, params
    for found, first in (([(80, 100)], math.ceil(101 / 0.8 * BROAD_YIELD_MARGIN)), ([(0, 0)], 101)):
        plan = build_search_query({"server": "web01", "type": "success"}, None).plan
        asked = []

        def run(sql, params, found=found, asked=asked):
            if "mail_hourly_snap" in sql:
                return ["now", "ever"], found
            if "c_k" in params:
                n = min(params["c_k"], 20000)
                return ["ts", "server", "msgid", "msgtime"], [
                    (10**6 - i, "web01", f"m{i}", 1) for i in range(n)
                ]
            asked.append(len(params["f_keys"]))
            return ["x"], [()] * params["lim"]

        run_pages(run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
        assert asked == [first + 1], (found, asked)  # + the boundary's message


def test_a_common_text_term_is_read_in_time_order_without_the_text_index():
    """With the text index, ClickHouse reads a term's postings over the whole table before the first row,
    which for a common word costs more the bigger the store (300 ms at 1e8 events for `invoice`, 12 ms
    without the index). run_pages first samples the term's share among the newest index rows (without the
    index) and reads the candidates without the index when k of them lie within MAX_UNINDEXED_ROWS rows;
    a rare term (not in the sample) keeps the index. Only on the time path, only with a text filter."""
    from eximtrack.search_plan import TEXT_SAMPLE_ROWS, run_pages
    from eximtrack.web.query import build_search_query

    plan = build_search_query({"subject": "Invoice", "subject_searchmatch": "contains"}, None).plan
    sql, params = plan.common_text_sql()
    assert sql.startswith("SELECT countIf(text LIKE {c_like0:String}), count(), sumForEach(")
    assert (
        f"FROM search_time ORDER BY ts DESC LIMIT {TEXT_SAMPLE_ROWS})" in sql
        and "use_skip_indexes = 0" in sql
    )
    assert params == {"c_like0": "%invoice%", "s_grams0": ["inv", "nvo", "voi", "oic", "ice"]}
    sql, params = build_search_query({"all": "invoice", "failure": "1"}, None).plan.common_text_sql()
    assert "countIf(type IN {c_types:Array(String)} AND text LIKE {c_like0:String})" in sql
    assert params["c_types"] == ["failure", "rejected"] and params["c_like0"] == "%invoice%"
    sql, params = build_search_query({"all": "bill"}, None).plan.common_text_sql()  # 2 trigrams: no shares
    assert "sumForEach" not in sql and params == {"c_like0": "%bill%"}
    assert plan.uses_text_index(0, 10_000, 858) and plan.uses_text_index(5, 0, 858)
    assert not plan.uses_text_index(800, 10_000, 858)  # ~11k rows for 858 candidates
    assert plan.uses_text_index(1, 10_000, 858)  # 8.6M rows for 858 candidates: the index
    for params in (
        {"recipient": "a@b.c", "subject": "x", "subject_searchmatch": "contains"},
        {"failure": "1"},
    ):
        assert build_search_query(params, None).plan.common_text_sql() is None, params
    for share, settings in (
        ((800, 10_000), " SETTINGS optimize_move_to_prewhere = 0, use_skip_indexes = 0"),
        (
            (0, 10_000),
            "optimize_read_in_order = 0, max_rows_to_read = 135936, read_overflow_mode = 'throw'",
        ),  # the index
    ):
        plan = build_search_query({"all": "invoice"}, None).plan
        reads = []

        def run(sql, params, share=share, reads=reads):
            if sql.startswith("SELECT countIf("):
                return ["matching", "sampled"], [share]
            if "c_k" in params:
                reads.append(sql)
                return ["ts", "server", "msgid", "msgtime"], [(10**6 - i, "s", f"m{i}", 1) for i in range(50)]
            return ["x"], [()] * 50

        run_pages(run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
        assert reads and all(r.endswith(settings) for r in reads), reads
        assert plan.text_index is None  # decided again by the next page (a new request)


def test_a_search_by_an_exact_msgid_reads_latest_by_its_arrival_second_without_candidates():
    """An exact Exim msgid fixes msgtime, the first column of latest's primary key: the page is one
    statement on `latest` (no candidates from search_time, which has no order on msgid and was read whole
    for them: 0.8 s at 1e8 events). A msgid the time cannot be read from keeps the access paths."""
    from eximtrack.web.query import build_search_query

    q = build_search_query({"msgid": "1uVxyz-000ABC-12"}, None)
    assert q.plan.msgtime_fixed
    asked = []

    def run(sql, params):
        asked.append((sql, params))
        return ["x"], []

    q.fetch(run, None, 101)
    assert len(asked) == 1, asked
    sql, params = asked[0]
    assert "FROM latest FINAL WHERE" in sql and "search_time" not in sql and "search_keys" not in sql
    assert "msgtime = toDateTime(" in sql and "1uVxyz-000ABC-12" in params.values()
    other = build_search_query({"msgid": "not-an-exim-id"}, None)
    assert not other.plan.msgtime_fixed
    asked.clear()
    other.fetch(run, None, 101)
    assert any("search_time" in s for s, _ in asked), asked


def test_a_rare_text_value_is_read_unordered_within_a_bound_and_in_order_past_it():
    """A round through a text index reads unordered with max_rows_to_read at UNORDERED_GRANULES_PER_CANDIDATE
    granules per candidate and read_overflow_mode 'throw' (a result is whole or an error); when ClickHouse
    refuses it (TOO_MANY_ROWS), the same round and every later one are read in order, with no bound. Another
    error, or a refusal of a round that had no bound, is not taken for that. Key paths and reads without the
    text index never get the bound."""
    import dataclasses

    from eximtrack.search_plan import SEARCH_TIME_GRANULE_ROWS, UNORDERED_GRANULES_PER_CANDIDATE, run_pages
    from eximtrack.web.query import build_search_query

    plan = build_search_query({"all": "ann.lee@mail.example"}, None).plan
    assert plan.reads_unordered()
    sql = plan.candidates("DESC", None, 10)[0]
    bound = 10 * UNORDERED_GRANULES_PER_CANDIDATE * SEARCH_TIME_GRANULE_ROWS
    assert sql.endswith(
        f"SETTINGS optimize_read_in_order = 0, max_rows_to_read = {bound}, read_overflow_mode = 'throw'"
    )
    phrase = build_search_query({"subject": "order invoice", "subject_searchmatch": "contains"}, None).plan
    assert phrase.candidates("DESC", None, 10)[0].endswith(
        "ignore_data_skipping_indices = 'grams_text', optimize_read_in_order = 0, "
        f"max_rows_to_read = {bound}, read_overflow_mode = 'throw'"
    )
    assert not dataclasses.replace(plan, text_index=False).reads_unordered()  # newest first, no index
    for params in ({"recipient": "ann@x.example"}, {"failure": "1"}, {}):
        other = build_search_query(params, None).plan
        assert not other.reads_unordered() and "max_rows_to_read" not in other.candidates("DESC", None, 10)[0]

    class TooManyRows(Exception):
        pass

    def pages(refuse: str):
        reads = []

        def run(sql, params):
            if "c_k" not in params:
                return ["n"], [(0, 4096)] if sql.startswith("SELECT countIf(") else []
            reads.append(sql)
            if "max_rows_to_read" in sql and refuse:
                raise TooManyRows(refuse)
            return ["ts", "server", "msgid", "msgtime"], []

        run_pages(run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
        return reads

    unordered = pages("")
    assert len(unordered) == 1 and "optimize_read_in_order = 0" in unordered[0]
    refused = pages(
        "Code: 158. DB::Exception: Limit for rows (controlled by 'max_rows_to_read' setting) exceeded"
    )
    assert len(refused) == 2 and "max_rows_to_read" in refused[0] and "SETTINGS" not in refused[1]
    assert refused[1].split(" SETTINGS")[0] == refused[0].split(" SETTINGS")[0]  # the same round
    with pytest.raises(TooManyRows):
        pages("Code: 159. DB::Exception: Timeout exceeded")


def test_a_text_value_asks_the_trigram_index_for_its_rarer_trigrams():
    """The sample that decides the text index also counts, per trigram of the value, the sampled rows holding
    it; a trigram in more than COMMON_GRAM_SHARE of them is left out of what the index is asked (its postings
    are long), keeping at least MIN_INDEX_GRAMS of the rarest and at most MAX_INDEX_GRAMS of them, spread over
    the value; the value itself is then checked by
    `position`, which the index does not analyse. Phrases (word pairs), values with few trigrams, non-ASCII
    values and reads without the index keep their LIKE."""
    import dataclasses

    from eximtrack.search_plan import (
        MAX_INDEX_GRAMS,
        MIN_INDEX_GRAMS,
        index_grams,
        run_pages,
        spread_rarest,
        value_grams,
    )
    from eximtrack.web.query import build_search_query

    assert value_grams("mia@hotmail.com") == [
        "mia", "ia@", "a@h", "@ho", "hot", "otm", "tma", "mai", "ail", "il.", "l.c", ".co", "com"
    ]  # fmt: skip
    assert value_grams("aaaaaaa") is None  # one distinct trigram
    assert value_grams("abcdef") is None  # MIN_INDEX_GRAMS of them: nothing to leave out
    assert value_grams("grüße-aus-berlin") is None
    assert value_grams("x" + "".join(chr(33 + i) for i in range(90))) is None  # too many to count
    grams = ["k-f", "nk-", "al1", "-fi", "ank", "ban", "com", ".co"]
    assert index_grams(grams, [13, 73, 94, 140, 242, 242, 4000, 4300], 11_155) == (
        "k-f", "nk-", "al1", "-fi", "ank", "ban"
    )  # fmt: skip
    # fewer than MIN_INDEX_GRAMS rare ones: the rarest MIN_INDEX_GRAMS, in the value's order
    assert index_grams(grams, [900, 10, 800, 20, 700, 30, 4000, 4300], 11_155) == ("nk-", "-fi", "ank", "ban")
    assert len(index_grams(grams, [5000] * 8, 11_155)) == MIN_INDEX_GRAMS
    assert index_grams(grams, [1] * 8, 11_155) is None  # all rare: the LIKE asks for the same
    assert index_grams(grams, [0] * 8, 0) is None  # nothing sampled
    assert index_grams(grams, [1, 2], 100) is None  # counts that do not line up
    # more than MAX_INDEX_GRAMS rare ones (an address): that many, rarest first, none within two positions of
    # one taken already while such are left, then the rarest of the others
    long = value_grams("sophia.thomas0@outlook.com")
    counts = [
        55,
        55,
        65,
        55,
        47,
        27,
        39,
        130,
        93,
        169,
        80,
        1,
        9,
        23,
        161,
        270,
        161,
        161,
        1196,
        1257,
        161,
        174,
    ]
    counts += [1612, 1403]
    chosen = index_grams(long, counts, 4096)
    assert len(chosen) == MAX_INDEX_GRAMS == 8
    assert chosen == ("sop", "a.t", "hom", "as0", "s0@", "@ou", "tlo", "ok.")  # s0@ the rarest skipped
    assert spread_rarest([0, 1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1, 1], 3) == [0, 3, 6]
    assert spread_rarest([0, 1, 2, 3], [5, 1, 2, 9], 3) == [1, 2, 0]  # none apart enough: the rarest

    plan = build_search_query({"all": "Mia@Hotmail.com"}, None).plan
    assert plan.gram_filters() == [(0, value_grams("mia@hotmail.com"))]
    like = plan.candidates("DESC", None, 101)[0]
    chosen = dataclasses.replace(plan, text_index=True, text_grams={0: ("mia", "ia@", "a@h", "@ho")})
    sql, params = chosen.candidates("DESC", None, 101)
    assert (
        "WHERE hasAllTokens(text, {c_grams0:Array(String)}) AND position(text, {c_text0:String}) > 0 " in sql
    )
    assert params["c_grams0"] == ["mia", "ia@", "a@h", "@ho"] and params["c_text0"] == "mia@hotmail.com"
    assert "text LIKE" in like and "c_like0" not in params
    assert sql.endswith(
        "LIMIT {c_k:UInt64} SETTINGS optimize_read_in_order = 0, max_rows_to_read = 77568, read_overflow_mode = 'throw'"
    )
    unindexed = dataclasses.replace(chosen, text_index=False).candidates("DESC", None, 101)[0]
    assert "text LIKE" in unindexed and "hasAllTokens" not in unindexed
    phrase = build_search_query({"subject": "Player Config Product"}, None).plan
    assert phrase.gram_filters() == []
    assert build_search_query({"msgid": "1abcde-000001-AB"}, None).plan.gram_filters() == []

    for counts, want in (
        (
            [900, 900, 900, 900, 10, 10, 10, 10, 10, 4000, 4000, 4000, 4000],
            ["hot", "otm", "tma", "mai", "ail"],
        ),
        # every trigram rare, more than MAX_INDEX_GRAMS: those spread over the value
        ([10] * 13, ["mia", "ia@", "a@h", "@ho", "hot", "tma", "il.", "com"]),
    ):
        reads = []

        def run(sql, params, counts=counts, reads=reads):
            if sql.startswith("SELECT countIf("):
                return ["matching", "sampled", "grams"], [(0, 11_155, counts)]
            if "c_k" in params:
                reads.append((sql, params))
            return ["ts", "server", "msgid", "msgtime"], []

        run_pages(run, plan, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
        assert reads and "hasAllTokens(text," in reads[0][0], reads
        assert reads[0][1]["c_grams0"] == want
        assert "ignore_data_skipping_indices" not in reads[0][0]
        assert plan.text_grams == {}  # decided again by the next page


def test_a_searchs_total_reads_text_as_its_page_did():
    """SearchQuery.fetch decides once how the text filters read search_time (decide_text_read: the sample), and
    the same request's count() reads the candidates that way when the sample chose a value's rarer trigrams; a
    common term sent past the index by the sample leaves the count as it was (its phrase pairs kept)."""
    from eximtrack.web.query import build_search_query

    def sampled(counts):
        def run(sql, params):
            if sql.startswith("SELECT countIf("):
                return ["matching", "sampled", "grams"], [counts]
            return ["ts", "server", "msgid", "msgtime"], []

        return run

    sq = build_search_query({"all": "mia@hotmail.com"}, None)
    before = sq.count()
    assert "text LIKE" in before[0] and sq.fetched_plan is None
    rare = [10] * 7 + [4000] * 6  # mia ia@ a@h @ho hot otm tma: rare; mai ail il. l.c .co com: common
    sq.fetch(sampled((0, 11_155, rare)), None, 101)
    sql, params = sq.count()
    assert "hasAllTokens(text, {c_grams0:Array(String)})" in sql and "text LIKE" not in sql
    assert params["c_grams0"] == ["mia", "ia@", "a@h", "@ho", "hot", "otm", "tma"]
    assert sq.plan.text_grams == {}  # the request's plan itself is not changed
    phrase = build_search_query({"subject": "Player Config Product"}, None)
    before = phrase.count()
    phrase.fetch(sampled((5_000, 11_155)), None, 101)  # common: read without the index
    assert phrase.fetched_plan.text_index is False and phrase.count() == before


def test_a_filter_search_time_cannot_test_switches_its_candidates_to_a_scan_of_latest():
    """A size, a spam score or the delivery type is only re-checked on the fetched rows. When the rounds of
    search_time's newest rows find few rows that pass it, run_pages reads the candidates from `latest` with the
    search's own conditions instead (scan_latest): after SCAN_AFTER_ROUNDS rounds, once the yield so far says
    the page needs more than SCAN_ROUNDS more rounds. A search that search_time narrows (a text filter, an
    indexed value, outcomes and times only) never does."""
    import math

    from eximtrack.search_plan import SCAN_AFTER_ROUNDS, SCAN_ROUNDS, run_pages, scans_instead
    from eximtrack.web.query import build_search_query

    def plan(params):
        return build_search_query(params, None).plan

    for params in ({"minsize": "10000000"}, {"spamscore": "7.5"}, {"deliverytype": "remote", "failure": "1"}):
        assert plan(params).may_scan_latest(), params
    for params in (
        {"failure": "1", "startdate": "1780000000"},  # search_time tests outcomes and times itself
        {"all": "invoice", "minsize": "1000"},  # its text narrows the candidates
        {"recipient": "a@b.c", "minsize": "1000"},  # an indexed value is the path
        {},
    ):
        assert not plan(params).may_scan_latest(), params
    p = plan({"minsize": "10000000"})
    assert not scans_instead(p, SCAN_AFTER_ROUNDS - 1, 10**6, 0, 101, 1000)  # not before its rounds
    assert scans_instead(p, SCAN_AFTER_ROUNDS, 10_000, 0, 101, 1000)  # nothing found: no yield to wait for
    at = math.floor(SCAN_ROUNDS * 1000 * 10 / 100)  # 10 rows found: 91 more need 9.1x the candidates read
    assert not scans_instead(p, SCAN_AFTER_ROUNDS, at, 10, 101, 1000)
    assert scans_instead(p, SCAN_AFTER_ROUNDS, at + 200, 10, 101, 1000)
    assert not scans_instead(plan({"all": "x", "minsize": "1"}), 9, 10**6, 0, 101, 1000)

    # through run_pages: rounds of search_time that name rows failing the size, then one scan of latest
    statements = []

    def run(sql, params):
        statements.append(sql)
        if "c_k" in params:
            if "FROM latest" in sql:  # the scan: every candidate passes; 150 messages
                return ["ts", "server", "msgid", "msgtime"], [
                    (10**5 - i, "w", f"s{i}", 1) for i in range(150)
                ]
            n = params["c_k"]
            start = params.get("c_bound", 10**6)
            return ["ts", "server", "msgid", "msgtime"], [
                (start - i, "w", f"m{start - i}", 1) for i in range(n)
            ]
        keys = params["f_keys"]
        return ["k"], [(k,) for k in keys if k[2].startswith("s")][: params["lim"]]

    names, rows = run_pages(run, p, "DESC", None, 101, lambda conds, extra, n: ("fetch", {**extra, "lim": n}))
    scans = [
        s for s in statements if "FROM latest WHERE size >= {" in s and "ORDER BY sendunixtime DESC" in s
    ]
    rounds = [s for s in statements if "FROM search_time" in s]
    assert len(rows) == 101 and len(scans) == 1 and len(rounds) == SCAN_AFTER_ROUNDS
    assert statements.index(scans[0]) > statements.index(rounds[-1])


def test_a_read_of_every_row_scans_latest_only_for_conditions_a_count_finds_rare():
    """A total, an export or another order reads every row at once: conditions search_time does not hold read
    `latest FINAL` for the messages a scan of `latest` names when it names at most SCAN_MAX_ROWS rows (one
    count statement, LIMIT SCAN_MAX_ROWS + 1), else all of `latest FINAL` as before; others never count."""
    from eximtrack.search_plan import SCAN_MAX_ROWS, decide_scan
    from eximtrack.web.query import build_search_query

    for found, scans in ((0, True), (SCAN_MAX_ROWS, True), (SCAN_MAX_ROWS + 1, False)):
        asked = []

        def run(sql, params, found=found, asked=asked):
            asked.append((sql, params))
            return ["c"], [(found,)]

        sq = build_search_query({"minsize": "5000000", "type": "failure"}, None)
        plan = decide_scan(run, sq.plan)
        assert plan.scan_latest is scans and not sq.plan.scan_latest
        ((sql, params),) = asked
        assert sql.startswith("SELECT count() FROM (SELECT 1 FROM latest WHERE ") and "size >= {" in sql
        assert sql.endswith(f"LIMIT {SCAN_MAX_ROWS + 1})") and 5000000 in params.values()
        table, access, _ = plan.read_all()
        assert table == "latest" and bool(access) is scans
        if scans:
            assert access[0].startswith(
                "(msgtime, server, msgid) IN (SELECT msgtime, server, msgid FROM latest"
            )
        csql, _ = sq.count(run)
        assert ("IN (SELECT msgtime, server, msgid FROM latest WHERE" in csql) is scans
    for params in ({"failure": "1"}, {"all": "x", "minsize": "1"}, {"recipient": "a@b.c", "minsize": "1"}):

        def never(sql, params):
            raise AssertionError(sql)

        sq = build_search_query(params, None)
        assert decide_scan(never, sq.plan) is sq.plan


def test_a_key_path_with_outcomes_other_than_a_success_reads_the_outcome_keys():
    """A key filter or a tenant's scope with every outcome asked among KEYED_OUTCOMES reads its candidates from
    search_outcome_keys (migration 026) for failures, rejections, filtered and archived rows, narrowed to
    those outcomes, and from search_deferred_keys (029, without the ends of its deferrals) for deferrals, for
    a page, a read of every row and a total; with a success, in progress or no outcome asked, or on the time
    path, it reads what it read before. A server's outcome search then needs no yield hint."""
    from eximtrack.search import Scope
    from eximtrack.search_plan import DEFERRED_KEYS_TABLE, KEYED_OUTCOMES, OUTCOME_KEYS_TABLE
    from eximtrack.web.query import build_search_query

    assert set(OUTCOMES) - {"success", "inprogress"} == KEYED_OUTCOMES
    cases = [
        ({"failure": "1"}, Scope(user="Acct"), ["failure", "rejected"]),
        ({"defer": "1"}, Scope(reseller="res"), None),
        ({"server": "mx1", "defer": "1"}, None, None),
        ({"sender": "a@b.example", "type": "filtered"}, None, ["filtered"]),
        ({"server": "mx1", "failure": "1"}, None, ["failure", "rejected"]),
    ]
    for params, scope, types in cases:
        plan = build_search_query(params, scope).plan
        table = OUTCOME_KEYS_TABLE if types else DEFERRED_KEYS_TABLE
        assert plan.outcome_tables() == (table,), params
        sql, bound = plan.candidates("DESC", None, 10)
        only = "type IN {c_types:Array(String)}" if types else "is_deleted = 0"
        assert f"FROM {table} WHERE field" in sql and only in sql, params
        assert bound.get("c_types") == types, params
        read, access, bound = plan.read_all(by_outcome=True)
        assert read == "latest" and f"FROM {table} WHERE" in access[0], params
        assert bound.get("c_types") == types
        assert plan.yield_sql() is None, params
    for params, scope in [
        ({"success": "1"}, Scope(user="acct")),
        ({"failure": "1", "success": "1"}, Scope(user="acct")),
        ({"inprogress": "1", "domain": "big.example"}, None),
        ({"domain": "big.example"}, None),
        ({"failure": "1"}, None),  # the time path: search_time has the outcome of each row
        ({"subject": "invoice", "failure": "1"}, None),
        ({"defer": "1"}, None),
    ]:
        plan = build_search_query(params, scope).plan
        tables = {OUTCOME_KEYS_TABLE, DEFERRED_KEYS_TABLE} & set(plan.outcome_tables())
        assert not tables or plan.key_filter() is None, params
        sql, _ = plan.candidates("DESC", None, 10)
        assert OUTCOME_KEYS_TABLE not in sql and DEFERRED_KEYS_TABLE not in sql, params
    assert build_search_query({"server": "mx1", "success": "1"}, None).plan.yield_sql() is not None


def test_the_outcome_keys_views_write_the_outcomes_the_planner_reads_there():
    """search_outcome_keys' view (the newest one the migrations define, which a rebuild also runs) writes the
    versions of exactly the outcomes the planner reads there (OUTCOME_KEY_TABLES), and search_deferred_keys'
    view every deferral: one outcome the planner sends to a table that its view does not write would lose
    rows; one more written only costs disk. Every outcome of KEYED_OUTCOMES has one table."""
    from eximtrack.search_index import backfill_statements
    from eximtrack.search_plan import (
        DEFERRED_KEYS_TABLE,
        DEFERRED_OUTCOMES,
        KEYED_OUTCOMES,
        OUTCOME_KEY_TABLES,
        OUTCOME_KEYS_TABLE,
    )
    from sinks.clickhouse.migrations import load_migrations

    tables = dict(OUTCOME_KEY_TABLES)
    assert tables[OUTCOME_KEYS_TABLE] | tables[DEFERRED_KEYS_TABLE] == KEYED_OUTCOMES
    assert not tables[OUTCOME_KEYS_TABLE] & tables[DEFERRED_KEYS_TABLE]
    sql = dict(backfill_statements())[OUTCOME_KEYS_TABLE]
    listed = re.search(r"WHERE is_deleted = 0 AND type IN \(([^)]*)\)\s*$", sql)
    assert listed, sql
    assert {t.strip().strip("'") for t in listed.group(1).split(",")} == tables[OUTCOME_KEYS_TABLE]
    # the deferrals' view reads every deferral (and the versions that end one); its rebuild the rows
    # deferred now; both write the keys search_keys' view writes
    assert {"defer"} == DEFERRED_OUTCOMES
    view = [
        s
        for m in load_migrations()
        for s in m.statements()
        if s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DEFERRED_KEYS_TABLE}_mv ")
    ]
    assert len(view) == 1
    assert (
        "WHERE type = 'defer' OR (attempts > 1 AND type IN ('success', 'failure', 'filtered', 'archive'))"
        in view[0]
    )
    assert "GROUP BY server, msgid, recipient, deliveredto" in view[0]
    assert "HAVING" not in view[0]  # an end even with a deferral of its row in its insert: an earlier one
    rebuild = dict(backfill_statements())[DEFERRED_KEYS_TABLE]
    assert "FROM latest FINAL" in rebuild and rebuild.rstrip(";").endswith("WHERE type = 'defer'")
    keys = re.compile(r"ARRAY JOIN (arrayFilter\(.*?\)\]\)) AS kv", re.S)
    search_keys = dict(backfill_statements())["search_keys"]
    assert keys.search(view[0]).group(1) == keys.search(rebuild).group(1) == keys.search(search_keys).group(1)


def test_a_key_path_for_rows_in_progress_only_reads_the_inflight_keys():
    """A key filter or a tenant's scope asking for rows in progress only reads its candidates from
    search_inflight_keys (migration 027), without its tombstones, for a page, a read of every row and a
    total, and needs no yield hint; with a success besides, no outcome, or on the time path, it reads what it
    read before."""
    from eximtrack.search import Scope
    from eximtrack.search_plan import INFLIGHT_KEYS_TABLE, INFLIGHT_OUTCOMES
    from eximtrack.web.query import build_search_query

    assert {"inprogress"} == INFLIGHT_OUTCOMES and set(OUTCOMES) >= INFLIGHT_OUTCOMES
    for params, scope in [
        ({"inprogress": "1"}, Scope(user="Acct")),
        ({"inprogress": "1"}, Scope(reseller="res")),
        ({"domain": "big.example", "type": "inprogress"}, None),
        ({"server": "mx1", "inprogress": "1"}, None),
        ({"recipient": "a@b.example", "inprogress": "1"}, None),
    ]:
        plan = build_search_query(params, scope).plan
        assert plan.outcome_tables() == (INFLIGHT_KEYS_TABLE,), params
        sql, _ = plan.candidates("DESC", None, 10)
        assert f"FROM {INFLIGHT_KEYS_TABLE} WHERE field" in sql and sql.count("is_deleted = 0") == 1, params
        table, access, _ = plan.read_all(by_outcome=True)
        if plan.recipient_filter() is None:  # a recipient's rows are read whole from latest_by_recipient
            assert table == "latest" and f"FROM {INFLIGHT_KEYS_TABLE} WHERE" in access[0], params
        assert plan.yield_sql() is None, params
    for params, scope in [
        ({"inprogress": "1", "success": "1"}, Scope(user="acct")),
        ({"success": "1"}, Scope(user="acct")),
        ({"domain": "big.example"}, None),
        ({"inprogress": "1"}, None),  # the time path: search_time has the outcome of each row
    ]:
        plan = build_search_query(params, scope).plan
        sql, _ = plan.candidates("DESC", None, 10)
        assert INFLIGHT_KEYS_TABLE not in sql, params


def test_a_key_path_for_rows_not_delivered_reads_the_newest_of_its_outcome_tables():
    """A key filter or a tenant's scope asking for several outcomes that have tables of their own (a
    customer's mail not delivered: deferred, failed or in progress) reads its candidates from each:
    search_outcome_keys (its outcomes), search_deferred_keys and search_inflight_keys (without their ends):
    the first k of each, newest first, and the first k of them all; a read of every row and a total name the
    rows of all. No yield hint."""
    from eximtrack.search import Scope
    from eximtrack.search_plan import DEFERRED_KEYS_TABLE, INFLIGHT_KEYS_TABLE, OUTCOME_KEYS_TABLE
    from eximtrack.web.query import build_search_query

    keyed, deferred, inflight = (
        (OUTCOME_KEYS_TABLE, "type IN {c_types:Array(String)}"),
        (DEFERRED_KEYS_TABLE, "is_deleted = 0"),
        (INFLIGHT_KEYS_TABLE, "is_deleted = 0"),
    )
    for params, scope, types, tables in [
        (
            {"defer": "1", "failure": "1", "inprogress": "1"},
            Scope(user="Acct"),
            ["failure", "rejected"],
            (keyed, deferred, inflight),
        ),
        ({"domain": "big.example", "defer": "1", "inprogress": "1"}, None, None, (deferred, inflight)),
        ({"domain": "big.example", "defer": "1", "failure": "1"}, None, ["failure", "rejected"], (keyed, deferred)),
        ({"server": "mx1", "type": "inprogress,failure"}, None, ["failure"], (keyed, inflight)),
        ({"recipient": "a@b.example", "failure": "1", "inprogress": "1"}, None, ["failure", "rejected"], (keyed, inflight)),
    ]:  # fmt: skip
        plan = build_search_query(params, scope).plan
        assert plan.outcome_tables() == tuple(t for t, _ in tables), params
        sql, bound = plan.candidates("ASC", 1_000, 10)
        assert bound.get("c_types") == types and bound["c_k"] == 10, params
        inner = sql.split(" FROM (", 1)[1].rsplit(") ORDER BY ts ASC LIMIT {c_k:UInt64}", 1)
        assert len(inner) == 2 and inner[1] == "", sql  # the first k of them all
        branches = inner[0].split(" UNION ALL ")
        assert len(branches) == len(tables), sql
        for branch, (table, only) in zip(branches, tables, strict=True):
            assert f"FROM {table} WHERE field" in branch and only in branch, branch
            # each its first k from the bound on, in its own order
            assert "ts >= fromUnixTimestamp64Milli({c_bound:Int64}, 'UTC')" in branch, branch
            assert branch.endswith("ORDER BY ts ASC LIMIT {c_k:UInt64})"), branch
        if plan.recipient_filter() is not None:
            assert all(b.startswith("(SELECT ts, server, msgid, msgtime, value FROM") for b in branches)
        table, access, bound = plan.read_all(by_outcome=True)
        if plan.recipient_filter() is None:
            assert table == "latest" and access[0].count(" UNION ALL ") == len(tables) - 1, access
            assert all(f"FROM {t} WHERE" in access[0] for t, _ in tables)
        assert plan.yield_sql() is None, params


def test_the_inflight_keys_view_writes_every_version_in_progress():
    """search_inflight_keys' view reads every version in progress and every tombstone of `latest`, folds
    them per row identity (newest version first), and drops only a row whose newest version is a tombstone
    with its placeholder in the same insert; its rebuild reads the rows in progress of `latest FINAL`. A
    version in progress the view does not read would lose rows."""
    from eximtrack.search_index import backfill_statements
    from eximtrack.search_plan import INFLIGHT_KEYS_TABLE
    from sinks.clickhouse.migrations import load_migrations

    view = [
        s
        for m in load_migrations()
        for s in m.statements()
        if s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS {INFLIGHT_KEYS_TABLE}_mv ")
    ]
    assert len(view) == 1
    assert "WHERE type = 'inprogress' OR is_deleted = 1" in view[0]
    assert "GROUP BY server, msgid, recipient, deliveredto" in view[0]
    assert "HAVING newest_deleted = 0 OR placeholders = 0" in view[0]
    rebuild = dict(backfill_statements())[INFLIGHT_KEYS_TABLE]
    assert "FROM latest FINAL" in rebuild and rebuild.rstrip(";").endswith("WHERE type = 'inprogress'")
    # the view, its backfill and search_keys' view write the same keys of a row
    keys = re.compile(r"ARRAY JOIN (arrayFilter\(.*?\)\]\)) AS kv", re.S)
    search_keys = dict(backfill_statements())["search_keys"]
    assert keys.search(view[0]).group(1) == keys.search(rebuild).group(1) == keys.search(search_keys).group(1)
