"""The HTTP API against a real chDB store filled from the real-Exim samples (see conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter

import pytest
from statsoracle import arrival_hour, cpanel_counters

from eximtrack.stats import COUNTERS
from eximtrack.web.query import FILTER_COLUMNS
from schemas.records import EVENT_FIELDS, SHOW_GROUPS

pytestmark = pytest.mark.store


def ident(row) -> tuple:
    return (row["server"], row["msgid"], row["recipient"], row["deliveredto"])


def lower(v) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in ("" if v is None else str(v)))


# ---------------------------------------------------------------------------------------------------- basics


def test_openapi_document_is_public_and_lists_the_endpoints(web):
    r = web.get("/api/v1/openapi.json", account=None)
    assert r.status == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/v1/search", "/api/v1/search.csv", "/api/v1/message/{server}/{msgid}", "/api/v1/stats"):
        assert path in doc["paths"]
    names = {p["name"] for p in doc["paths"]["/api/v1/search"]["get"]["parameters"]}
    assert set(FILTER_COLUMNS) | {"all", "searchmatch", "cursor", "sort", "success", "deliverytype"} <= names


@pytest.mark.parametrize(
    "path",
    ["/api/v1/search", "/api/v1/search.csv", "/api/v1/stats", "/api/v1/message/web1/x", "/api/v1/servers"],
)
def test_every_endpoint_needs_a_token(web, path):
    assert web.get(path, account=None).status == 401
    r = web.get(path, token="et_not-a-token")
    assert r.status == 401 and "error" in r.json()
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_whoami(web):
    me = web.api("/api/v1/whoami", "bob")
    assert me == {
        "id": me["id"],
        "name": "bob",
        "role": "webmail",
        "address": "bob@local.test",
        "retention_days": 0,
    }


def test_root_sees_every_row_the_cli_sees(web, all_rows):
    """The CLI (in another process, through the serve process's query endpoint) and the API agree."""
    out = subprocess.run(
        [sys.executable, "-m", "eximtrack", "search", "--store", web.store, "--format", "json"],
        env=web.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cli_rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert Counter(map(ident, all_rows)) == Counter(map(ident, cli_rows))
    assert len(set(map(ident, all_rows))) == len(all_rows)
    assert {r["server"] for r in all_rows} == {"web1", "web2"}
    total = web.api("/api/v1/search", with_total=1, limit=1)["total"]
    assert total == len(all_rows)


def test_flags_like_cpanel(web, all_rows):
    for flag, group in (
        ("success", "successes"),
        ("defer", "deferred"),
        ("failure", "failures"),
        ("inprogress", "inprogress"),
    ):
        rows = web.search_all(**{flag: 1})
        want = [r for r in all_rows if r["type"] in SHOW_GROUPS[group]]
        assert rows and sorted(map(ident, rows)) == sorted(map(ident, want)), flag
    both = web.search_all(success=0, defer=1, failure=1)
    assert {r["type"] for r in both} <= {"defer", "failure", "rejected"}
    r = web.get("/api/v1/search", params={"success": 0, "defer": 0, "failure": 0, "inprogress": 0})
    assert r.status == 400 and r.json()["error"] == "You must show at least one message type."


def test_deliverytype(web, all_rows):
    remote = web.search_all(deliverytype="remote")
    assert remote and all(r["transport_is_remote"] == 1 for r in remote)
    assert len(remote) == sum(r["transport_is_remote"] == 1 for r in all_rows)
    local = web.search_all(deliverytype="local")
    assert local and all(r["transport_is_remote"] == 0 and r["transport"] for r in local)


def _py_match(value: str, wanted: str, mode: str, case_sensitive: bool) -> bool:
    v, w = (value, wanted) if case_sensitive else (lower(value), lower(wanted))
    return {"eq": v == w, "begins": v.startswith(w), "contains": w in v}[mode]


@pytest.mark.parametrize("key", sorted(k for k in FILTER_COLUMNS if k != "spamscore"))
def test_every_filter_key_and_match_mode(web, all_rows, key):
    cols = FILTER_COLUMNS[key]
    sample = next(r for r in all_rows if r[cols[0]] and len(r[cols[0]]) > 3)
    value = sample[cols[0]]
    cs = key in ("msgid", "server")
    probes = {"eq": value if cs else value.upper(), "begins": value[:3], "contains": value[1:-1]}
    for mode, probe in probes.items():
        got = web.search_all(**{key: probe, f"{key}_searchmatch": mode})
        want = [r for r in all_rows if any(_py_match(r[c], probe, mode, cs) for c in cols)]
        assert sorted(map(ident, got)) == sorted(map(ident, want)), (key, mode, probe)
        assert got, (key, mode)
    # the global searchmatch works too
    got = web.search_all(**{key: value[:3], "searchmatch": "begins"})
    assert sorted(map(ident, got)) == sorted(
        map(ident, [r for r in all_rows if any(_py_match(r[c], value[:3], "begins", cs) for c in cols)])
    )


def test_case_sensitive_ids_and_message_id_brackets(web, all_rows):
    row = next(r for r in all_rows if r["message_id"])
    assert (
        web.search_all(
            msgid=row["msgid"].lower() if row["msgid"] != row["msgid"].lower() else row["msgid"].upper()
        )
        == []
    )
    got = web.search_all(message_id=f"<{row['message_id']}>")
    assert ident(row) in set(map(ident, got))


def test_all_searches_across_fields(web, all_rows):
    got = web.search_all(all="S07")  # a subject word
    assert got and all(
        "s07" in lower(r["subject"]) or any("s07" in lower(r[c]) for c in ("message", "message_id", "msgid"))
        for r in got
    )
    by_ip = web.search_all(all="127.0.0.1")
    assert len(by_ip) >= len([r for r in all_rows if r["senderip"] == "127.0.0.1"])


def test_dates_and_sizes(web, all_rows):
    times = sorted(r["sendunixtime"] or r["actionunixtime"] for r in all_rows)
    mid = times[len(times) // 2]
    later = web.search_all(startdate=mid)
    assert later and all((r["sendunixtime"] or r["actionunixtime"]) >= mid - 0.001 for r in later)
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(mid, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert sorted(map(ident, web.search_all(startdate=iso))) == sorted(map(ident, later))
    earlier = web.search_all(enddate=mid)
    assert len(earlier) + len(later) >= len(all_rows)
    sizes = sorted(r["size"] for r in all_rows if r["size"])
    lo, hi = sizes[len(sizes) // 4], sizes[3 * len(sizes) // 4]
    got = web.search_all(minsize=lo, maxsize=hi)
    assert sorted(map(ident, got)) == sorted(map(ident, [r for r in all_rows if lo <= r["size"] <= hi]))


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "nope"},
        {"sort": "size:sideways"},
        {"limit": "0"},
        {"limit": "10001"},
        {"limit": "ten"},
        {"searchmatch": "regex", "recipient": "a"},
        {"recipient_searchmatch": "like", "recipient": "a"},
        {"deliverytype": "relayed"},
        {"startdate": "last tuesday"},
        {"enddate": "1e300"},
        {"minsize": "-5"},
        {"maxsize": "big"},
        {"success": "maybe"},
        {"type": "bounced"},
        {"cursor": "garbage"},
        {"cursor": "eyJzIjoieCJ9.AAAA"},
        {"unknown_key": "1"},
        {"recipient": ["a@b", "c@d"]},
        {"with_total": "x"},
    ],
)
def test_bad_parameters_are_400_with_a_message(web, params):
    r = web.get("/api/v1/search", params=params)
    assert r.status == 400, (params, r.status, r.body[:200])
    assert r.json()["error"]
    if "cursor" not in params and "with_total" not in params and "limit" not in params:
        assert web.get("/api/v1/search.csv", params=params).status == 400
        assert web.get("/api/v1/stats", params=params).status == 400 or "sort" in params


def test_unknown_paths_and_methods(web):
    assert web.get("/api/v1/nothing").status == 404
    assert web.get("/static/../auth.py").status == 404
    assert web.get("/api/v1/message/web1").status == 404
    import urllib.request

    req = urllib.request.Request(web.url + "/api/v1/search", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("POST accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 405


# ---------------------------------------------------------------------------------------------------- paging


SORTS = [f for f in EVENT_FIELDS if f not in ("schema_version",)]


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_cursor_paging_returns_every_row_once_in_order_for_every_sort(web, all_rows, direction):
    for field in SORTS:
        sort = f"{field}:{direction}"
        full = web.api("/api/v1/search", sort=sort, limit=10_000)
        assert full["next_cursor"] is None and len(full["rows"]) == len(all_rows)
        paged = web.search_all(sort=sort, limit=37)
        assert [ident(r) for r in paged] == [ident(r) for r in full["rows"]], sort
        values = [r[field] for r in full["rows"]]
        key = [(-1e308 if v is None else v) for v in values]
        assert key == sorted(key, reverse=direction == "desc"), sort


def test_default_sort_is_sent_time_descending_and_minus_prefix(web):
    page = web.api("/api/v1/search", limit=50)
    assert page["sort"] == "sendunixtime:desc"
    t = [r["sendunixtime"] for r in page["rows"]]
    assert t == sorted(t, reverse=True)
    assert web.api("/api/v1/search", sort="-size", limit=5)["sort"] == "size:desc"


def test_cursor_is_bound_to_its_sort_and_signed(web):
    page = web.api("/api/v1/search", limit=5, sort="size")
    cursor = page["next_cursor"]
    assert web.get("/api/v1/search", params={"limit": 5, "sort": "email", "cursor": cursor}).status == 400
    body, sig = cursor.split(".")
    import base64

    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["k"][0] = 0
    forged = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=") + "." + sig
    r = web.get("/api/v1/search", params={"limit": 5, "sort": "size", "cursor": forged})
    assert r.status == 400 and "cursor" in r.json()["error"]


# ---------------------------------------------------------------------------------------------------- CSV


def test_csv_export_streams_every_row(web, all_rows):
    r = web.get("/api/v1/search.csv")  # the test server queries 7 rows at a time: many pages
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.body.decode("utf-8"))))
    assert len(rows) == len(all_rows)
    assert [ident(x) for x in rows] == [ident(x) for x in all_rows]
    assert list(rows[0]) == list(EVENT_FIELDS)


def test_csv_export_of_a_filtered_sorted_search(web, all_rows):
    r = web.get("/api/v1/search.csv", params={"failure": 1, "sort": "recipient"})
    rows = list(csv.DictReader(io.StringIO(r.body.decode("utf-8"))))
    want = web.search_all(failure=1, sort="recipient")
    assert [ident(x) for x in rows] == [ident(x) for x in want]
    assert {x["type"] for x in rows} <= {"failure", "rejected"}


# ---------------------------------------------------------------------------------------------------- message


def test_message_timeline(web, all_rows):
    bounced = next(r for r in all_rows if r["parent_msgid"])
    parent = web.api(f"/api/v1/message/{bounced['server']}/{bounced['parent_msgid']}")
    assert parent["arrival"] and parent["arrival"][0]["msgid"] == bounced["parent_msgid"]
    assert any(c["msgid"] == bounced["msgid"] for c in parent["children"])
    assert parent["attempts"] and all(a["msgid"] == bounced["parent_msgid"] for a in parent["attempts"])
    assert parent["lines"] and all(bounced["parent_msgid"] in ln["line"] for ln in parent["lines"])
    assert any(" <= " in ln["line"] for ln in parent["lines"])
    # a defer then success message has both attempts
    multi = [r for r in all_rows if r["attempts"] >= 2 and r["type"] == "success"]
    assert multi
    m = web.api(f"/api/v1/message/{multi[0]['server']}/{multi[0]['msgid']}")
    assert {"defer", "success"} <= {a["type"] for a in m["attempts"]}


def test_message_not_found_and_other_server(web, all_rows):
    row = all_rows[0]
    other = "web1" if row["server"] == "web2" else "web2"
    assert web.get(f"/api/v1/message/{other}/{row['msgid']}").status == 404
    assert web.get("/api/v1/message/web1/1xWxxx-000000-00").status == 404
    assert web.get(f"/api/v1/message/{row['server']}/{row['msgid']}", params={"x": 1}).status == 400


# ---------------------------------------------------------------------------------------------------- stats


def _grouped(rows, keys):
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return {g: cpanel_counters(rs) for g, rs in groups.items()}


def _got(res, keys):
    return {tuple(r[k] for k in keys): {c: r[c] for c in COUNTERS} for r in res["rows"]}


def test_stats_per_server_user_domain(web, all_rows):
    """Grouped by the sending side with a time range: read from the hourly aggregates."""
    keys = ["server", "user", "domain"]
    res = web.api("/api/v1/stats", groupby="server,user,domain")
    assert res["groupby"] == keys
    want = {g: c for g, c in _grouped(all_rows, keys).items() if c["SENDCOUNT"] or c["FAILCOUNT"]}
    assert _got(res, keys) == want
    total = web.api("/api/v1/stats", groupby="none")["rows"]
    assert total == [cpanel_counters(all_rows)] and total[0]["SENDCOUNT"] > 50
    # arrival-hour buckets: [hour(startdate), enddate)
    last = max(r["sendunixtime"] for r in all_rows if r["protocol"])
    hour = int(last) // 3600 * 3600
    for extra in ({}, {"minsize": "0"}):  # from the aggregates, from the latest rows
        ranged = {}
        for name, start, end in (("floor", last, None), ("next", hour + 3600, None), ("to", None, hour + 1)):
            params = dict(extra, groupby="none")
            params.update({k: str(v) for k, v in (("startdate", start), ("enddate", end)) if v is not None})
            ranged[name] = web.api("/api/v1/stats", **params)["rows"][0]
        want = cpanel_counters([r for r in all_rows if arrival_hour(r) >= hour])
        assert ranged["floor"] == want and want["SENDCOUNT"] > 0, extra  # startdate counts from its hour
        assert ranged["next"]["SENDCOUNT"] == ranged["next"]["FAILCOUNT"] == 0, extra
        assert ranged["to"] == cpanel_counters([r for r in all_rows if arrival_hour(r) < hour + 1]), extra
    assert web.get("/api/v1/stats", params={"groupby": "subject"}).status == 400


def test_stats_with_filters_and_receiving_side(web, all_rows):
    """A search filter or a grouping by the receiving side: computed from the latest rows, same counters."""
    keys = ["server", "user", "domain"]
    fast = web.api("/api/v1/stats", groupby="server,user,domain")
    direct = web.api("/api/v1/stats", groupby="server,user,domain", minsize="0")  # a no-op filter
    assert _got(direct, keys) == _got(fast, keys) and fast["rows"]
    by_rcpt = web.api("/api/v1/stats", groupby="deliverydomain")
    want = _grouped(all_rows, ["deliverydomain"])
    assert _got(by_rcpt, ["deliverydomain"]) == {
        g: c for g, c in want.items() if c["SENDCOUNT"] or c["FAILCOUNT"]
    }
    failures = web.api("/api/v1/stats", groupby="none", failure="1")["rows"]
    rows = [r for r in all_rows if r["type"] in SHOW_GROUPS["failures"]]
    assert failures == [cpanel_counters(rows)] and failures[0]["FAILCOUNT"] > 0


@pytest.mark.parametrize("extra", [{}, {"minsize": "0"}])  # from the aggregates, from the latest rows
def test_stats_top_groups_by_a_counter(web, extra):
    """`limit` and `sort`: the first groups of the full answer ordered by the counter (descending, ties by
    the group keys), and `more` says whether groups were left out."""
    keys = ["server", "user"]
    full = web.api("/api/v1/stats", groupby="server,user", limit="1000000", **extra)
    assert full["more"] is False and len(full["rows"]) > 3
    for sort in ("SENDCOUNT", "FAILCOUNT", "TOTALSIZE"):
        want = sorted(full["rows"], key=lambda r: (-r[sort], *(r[k] for k in keys)))
        got = web.api("/api/v1/stats", groupby="server,user", sort=sort, limit="3", **extra)
        assert got["rows"] == want[:3] and got["more"] is True, sort
    exact = web.api("/api/v1/stats", groupby="server,user", limit=str(len(full["rows"])), **extra)
    assert exact["rows"] == full["rows"] and exact["more"] is False
    assert web.api("/api/v1/stats", groupby="none", limit="1", **extra)["more"] is False
    for bad in ({"sort": "subject"}, {"limit": "0"}, {"limit": "x"}, {"limit": "2000000"}):
        r = web.get("/api/v1/stats", params={"groupby": "user", **extra, **bad})
        assert r.status == 400 and r.json()["error"], bad


# ---------------------------------------------------------------------------------------------------- injection


INJECTIONS = [
    "' OR 1=1 --",
    "x') OR ('1'='1",
    "{p0:String}",
    "\\' OR 1=1 #",
    "%' OR '%'='",
    "a\x00b",
    "'; DROP TABLE latest; --",
    "ü' UNION SELECT * FROM events --",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_every_parameter_is_harmless(web, all_rows, payload):
    for key in [*FILTER_COLUMNS, "all"]:
        for mode in ("eq", "contains"):
            r = web.get("/api/v1/search", params={key: payload, f"{key}_searchmatch": mode})
            assert r.status == 200, (key, r.body[:200])
            assert r.json()["rows"] == [] or all(
                payload.lower() in json.dumps(x).lower() for x in r.json()["rows"]
            )
    for key in ("sort", "startdate", "minsize", "deliverytype", "groupby", "cursor", "type", "searchmatch"):
        r = web.get("/api/v1/search", params={key: payload})
        assert r.status == 400, (key, r.status)
    r = web.get("/api/v1/message/web1/" + __import__("urllib.parse").parse.quote(payload, safe=""))
    assert r.status in (400, 404)
    # the store is intact
    assert web.api("/api/v1/search", with_total=1, limit=1)["total"] == len(all_rows)


def test_a_second_server_on_a_store_owned_by_another_process(web, all_rows, tmp_path):
    """chDB admits one process per store: a second `serve` (like one next to the sink) queries through the
    owner's read-only endpoint and answers the same."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "eximtrack", "serve", "--store", web.store, "--port", "0", "--tokens", web.tokens_file],
        env=web.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "listening on" in line, line
        second = type(web)(
            line.split("listening on ", 1)[1].split()[0].rstrip("/"),
            web.tokens,
            web.tokens_file,
            web.store,
            proc,
        )
        assert [ident(r) for r in second.search_all(limit=50)] == [ident(r) for r in all_rows]
        assert sorted(map(ident, second.search_all("bob"))) == sorted(map(ident, web.search_all("bob")))
        r = second.get("/api/v1/search.csv", "localacct")
        assert r.status == 200 and len(list(csv.DictReader(io.StringIO(r.body.decode())))) == len(
            web.search_all("localacct")
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
