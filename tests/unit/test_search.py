"""build_search / build_show are pure: check the SQL shape and, above all, that values are bound."""

from __future__ import annotations

import re

import pytest

from eximtrack.search import SearchError, SearchFilters, build_search, build_show, parse_sort, parse_time
from schemas.records import EVENT_FIELDS


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
    select = sql.split(" FROM (", 1)[0]
    names = [part.rsplit(" AS ", 1)[-1].strip() for part in select[len("SELECT ") :].split(", ")]
    assert tuple(names) == EVENT_FIELDS


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
    assert params == {"p0": "example.com"}
    assert "lower(domain)" in sql and "lower(deliverydomain)" in sql and sql.count("position(") >= 4


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
    assert params["show0"] == ["archive", "failure", "filtered", "rejected", "success"]
    _, params = build_search({"show": "deferred,inprogress"})
    assert params["show0"] == ["defer", "inprogress"]
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
    assert set(q) == {"arrival", "attempts", "children", "lines"}
    for sql, params in q.values():
        assert "1abc" not in sql
        assert params == {"msgid": "1abc-def-GH", "server": "web1"}
        assert _placeholders(sql) == set(params)
    assert "FROM events FINAL" in q["attempts"][0] and "is_deleted = 0" in q["attempts"][0]
    assert "parent_msgid = {msgid:String}" in q["children"][0]
    assert "FROM log_lines FINAL" in q["lines"][0]
    assert build_show("m")["lines"][1] == {"msgid": "m"}
    with pytest.raises(SearchError):
        build_show("  ")


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


def test_token_prefilter_only_on_text_indexed_columns():
    sql, params = build_search({"recipient": "Bob@Example.com"})
    assert "(hasAllTokens(recipient, {tok1:Array(String)}) AND lower(recipient) = {p0:String})" in sql
    assert params["tok1"] == ["bob", "com", "example"]
    sql, params = build_search({"recipient": "bob", "match": "contains"})
    assert "hasAllTokens" not in sql  # no whole token: hasAllTokens(col, []) would be false
    sql, params = build_search({"address": "x@y.z", "match": "begins"})
    assert sql.count("hasAllTokens(") == 2 and params["tok1"] == ["x", "y"]
    sql, _ = build_search({"senderip": "10.0.0.1", "message_id": "a.b@c"})
    assert "hasAllTokens" not in sql


def test_scope_is_bound_and_anded():
    from eximtrack.search import Scope

    sql, params = build_search({"recipient": "a@b.c", "scope": {"user": "Bob' OR 1=1"}})
    assert "Bob" not in sql and "bob' or 1=1" in params.values()
    assert "(lower(user) = {scope2:String} OR lower(deliveryuser) = {scope2:String})" in sql
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
