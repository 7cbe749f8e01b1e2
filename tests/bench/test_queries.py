"""bench/queries.py: the fast fill path generates what it says, and every benchmarked query (built by the real
builders) returns rows for its probe and the same rows as a naive SQL formulation of the same search.

One chDB path per process: the store lives in this process's chDB path (a tmp dir, or the path another test
already opened) under its own database."""

from __future__ import annotations

import uuid

import pytest

from bench import queries as Q
from sinks.clickhouse.store import Store, current_chdb_path
from stream.clock import msgid_time

pytestmark = [pytest.mark.store, pytest.mark.slow]

N_EVENTS = 200_000
KEY = "server, msgid, recipient, deliveredto"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    path = current_chdb_path() or str(tmp_path_factory.mktemp("chdb-bench"))
    try:
        st = Store.open(f"chdb://{path}?database=benchq_{uuid.uuid4().hex[:10]}")
    finally:
        mp.undo()
    st.filled = Q.fill(st.client, N_EVENTS, seed=7, end=1_780_000_000, chunk_slots=60_000)
    st.probes = Q.pick_probes(st)
    return st


def _rows(store, sql, params=None):
    return store.query(sql, params or {}).result_rows


def test_fill_size_and_shape(store):
    events = store.filled["events"]
    assert abs(events - N_EVENTS) < 0.03 * N_EVENTS
    latest = _rows(store, "SELECT count() FROM latest FINAL")[0][0]
    assert 2.5 < events / latest < 4.5  # attempt history: several events per Track Delivery row
    mix = dict(
        _rows(
            store, "SELECT type, count() / (SELECT count() FROM latest FINAL) FROM latest FINAL GROUP BY type"
        )
    )
    assert 0.75 < mix["success"] < 0.92
    for t in ("filtered", "archive", "failure", "defer", "inprogress", "rejected"):
        assert 0.002 < mix.get(t, 0) < 0.1, (t, mix)
    # tombstones: in events, never in latest FINAL; one per recipient row that got a result
    tomb = _rows(store, "SELECT count() FROM events WHERE is_deleted = 1")[0][0]
    resolved = _rows(store, "SELECT count() FROM latest FINAL WHERE type NOT IN ('inprogress', 'rejected')")[
        0
    ][0]
    assert tomb == resolved
    assert _rows(store, "SELECT count() FROM latest FINAL WHERE is_deleted = 1")[0][0] == 0
    servers, users, rcpts = _rows(
        store, "SELECT uniqExact(server), uniqExact(user), uniqExact(recipient) FROM latest FINAL"
    )[0]
    assert servers > 900 and users > 1000 and rcpts > 20_000
    days = _rows(store, "SELECT dateDiff('day', min(sendunixtime), max(sendunixtime)) FROM latest")[0][0]
    assert days >= 30


def test_msgids_encode_the_arrival_second(store):
    rows = _rows(
        store,
        "SELECT msgid, toUnixTimestamp(sendunixtime) FROM latest FINAL WHERE type != 'rejected' LIMIT 2000",
    )
    assert rows
    for msgid, ts in rows:
        parts = msgid.split("-")
        assert [len(p) for p in parts] in ([6, 6, 2], [6, 11, 4]), msgid
        assert msgid_time(msgid) == ts
    rej = _rows(store, "SELECT msgid FROM latest FINAL WHERE type = 'rejected' LIMIT 10")
    assert rej and all(m.startswith("rej-") for (m,) in rej)


def test_every_query_returns_rows(store):
    for name, parts in Q.build_queries(store.probes).items():
        assert Q.run_query(store, parts) > 0, name


def _api_keys(store, params):
    from eximtrack.web import query as q

    sq = q.build_search_query({**params, "limit": "10000"}, None)
    sql, bound = sq.page(None, 10_001)
    return store.query(f"SELECT {KEY}, type FROM ({sql})", bound).result_rows


def _naive(store, where, params):
    sql = (
        f"SELECT {KEY}, type FROM latest FINAL WHERE {where} "
        f"ORDER BY sendunixtime DESC, {KEY} SETTINGS use_skip_indexes = 0"
    )
    return store.query(sql, params).result_rows


def test_builders_equal_naive_sql(store):
    p = store.probes
    now = p["now"]
    t30 = int((now - 30 * 86400) * 1000)
    t1 = int((now - 86400) * 1000)
    nowms = int(now * 1000)
    since = "(sendunixtime >= fromUnixTimestamp64Milli({t:Int64}, 'UTC') OR (sendunixtime = 0 AND actionunixtime >= fromUnixTimestamp64Milli({t:Int64}, 'UTC')))"  # noqa: E501
    until = "((sendunixtime != 0 AND sendunixtime <= fromUnixTimestamp64Milli({u:Int64}, 'UTC')) OR (sendunixtime = 0 AND actionunixtime <= fromUnixTimestamp64Milli({u:Int64}, 'UTC')))"  # noqa: E501
    cases = [
        (
            {"recipient": p["recipient"], "startdate": str(now - 30 * 86400), "enddate": str(now)},
            f"lower(recipient) = {{v:String}} AND {since} AND {until}",
            {"v": p["recipient"].lower(), "t": t30, "u": nowms},
        ),
        ({"domain": p["domain"]}, "lower(domain) = {v:String}", {"v": p["domain"].lower()}),
        ({"msgid": p["msgid"]}, "msgid = {v:String}", {"v": p["msgid"]}),
        ({"message_id": p["message_id"]}, "lower(message_id) = {v:String}", {"v": p["message_id"].lower()}),
        (
            {"subject": p["subject"], "subject_searchmatch": "contains"},
            "positionCaseInsensitive(subject, {v:String}) > 0",
            {"v": p["subject"]},
        ),
        (
            {"subject": p["subject_word"], "subject_searchmatch": "contains"},
            "positionCaseInsensitive(subject, {v:String}) > 0",
            {"v": p["subject_word"]},
        ),
        (
            {"failure": "1", "startdate": str(now - 86400)},
            f"type IN ('failure', 'rejected') AND {since}",
            {"t": t1},
        ),
        (
            {"all": p["recipient"]},
            " OR ".join(f"positionCaseInsensitive({c}, {{v:String}}) > 0" for c in Q_ALL_COLUMNS()),
            {"v": p["recipient"]},
        ),
    ]
    for api_params, where, params in cases:
        got = _api_keys(store, api_params)
        want = _naive(store, where, params)
        assert got, api_params
        assert got == want, api_params


def Q_ALL_COLUMNS():  # noqa: N802
    from eximtrack.web.query import ALL_COLUMNS

    return ALL_COLUMNS


def test_stats_endpoint_equals_naive(store):
    from eximtrack.web import query as q

    now = store.probes["now"]
    sql, bound, _ = q.build_stats_query({"groupby": "server", "startdate": str(now - 86400)}, None)
    got = {r[0]: r[1:] for r in store.query(sql, bound).result_rows}
    naive = store.query(
        "SELECT server, count(), countIf(type IN ('success', 'filtered', 'archive')), "
        "countIf(type IN ('failure', 'rejected')), countIf(type = 'defer'), "
        "countIf(type IN ('failure', 'rejected') AND attempts > 1), countIf(type = 'inprogress'), sum(size), "
        "uniqExact(server, msgid) FROM latest FINAL WHERE sendunixtime >= fromUnixTimestamp64Milli({t:Int64}, 'UTC') "
        "GROUP BY server",
        {"t": int((now - 86400) * 1000)},
    ).result_rows
    assert got and got == {r[0]: tuple(r[1:]) for r in naive}


def test_all_text_index_expression_matches_the_builder():
    """The `all` prefilter is only served by the index of migration 006 when the expressions are identical."""
    from pathlib import Path

    from eximtrack.web.query import ALL_TEXT, build_search_query

    sql = (Path(__file__).resolve().parents[2] / "schemas/clickhouse/006_all_text_index.sql").read_text()
    assert f"INDEX IF NOT EXISTS tok_all {ALL_TEXT} TYPE text(" in sql
    assert f"preprocessor = lower({ALL_TEXT})" in sql
    q = build_search_query({"all": "Mark.Carter838@gmail.com"}, None)
    assert any(f"hasAllTokens({ALL_TEXT}, " in c for c in q.conds)
    assert ["carter838", "gmail"] in q.params.values()


def test_all_uses_the_text_index(store):
    from eximtrack.web import query as q

    sq = q.build_search_query({"all": store.probes["recipient"]}, None)
    sql, bound = sq.page(None, 101)
    plan = "\n".join(r[0] for r in store.query(f"EXPLAIN indexes = 1 {sql}", bound).result_rows)
    assert "tok_all" in plan
