"""Accounts see only their own mail, through every endpoint and every parameter.

The truth is computed here, in Python, from root's rows with cPanel's rules: a cPanel user sees its sends
(user) and the rows it receives (deliveryuser); a reseller the accounts it owns (owner/user,
deliveryowner/deliveryuser); a webmail login its address (email, recipient, deliveredto).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import urllib.parse

import pytest
from statsoracle import cpanel_counters
from webaccounts import ACCOUNTS

from eximtrack.stats import COUNTERS
from eximtrack.web.auth import TokenStore
from eximtrack.web.query import FILTER_COLUMNS

pytestmark = pytest.mark.store

SCOPED = [name for name, (role, _) in ACCOUNTS.items() if role != "root"]


def ident(row) -> tuple:
    return (row["server"], row["msgid"], row["recipient"], row["deliveredto"])


def low(v) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in (v or ""))


def visible(name: str, row: dict, sender_only: bool = False) -> bool:
    role, kw = ACCOUNTS[name]
    if role == "root":
        return True
    value = low(next(iter(kw.values())))
    if role == "user":
        cols = ["user"] + ([] if sender_only else ["deliveryuser"])
    elif role == "reseller":
        cols = ["owner", "user"] + ([] if sender_only else ["deliveryowner", "deliveryuser"])
    else:
        cols = ["email"] + ([] if sender_only else ["recipient", "deliveredto"])
    return any(low(row[c]) == value for c in cols)


def test_the_sample_accounts_see_something_and_not_everything(web, all_rows):
    for name in SCOPED:
        want = [r for r in all_rows if visible(name, r)]
        if name == "nobody":
            assert want == []
        else:
            assert 0 < len(want) < len(all_rows), name
    # inbound: localacct receives mail it did not send (cPanel: rows where it is the delivery user)
    assert any(r["deliveryuser"] == "localacct" and r["user"] != "localacct" for r in all_rows)


@pytest.mark.parametrize("name", SCOPED)
def test_search_shows_exactly_the_accounts_rows(web, all_rows, name):
    want = sorted(ident(r) for r in all_rows if visible(name, r))
    got = web.search_all(name)
    assert sorted(map(ident, got)) == want
    page = web.api("/api/v1/search", name, with_total=1, limit=3)
    assert page["total"] == len(want)
    servers = web.api("/api/v1/servers", name)["servers"]
    assert servers == sorted({s for s, *_ in want})


@pytest.mark.parametrize("name", SCOPED)
def test_no_filter_widens_the_scope(web, all_rows, name):
    own = {ident(r) for r in all_rows if visible(name, r)}
    probes = [{"all": ""}, {"all": "@"}, {"all": "test"}, {"searchmatch": "contains", "recipient": "@"}]
    for key in FILTER_COLUMNS:
        probes.append({key: "", f"{key}_searchmatch": "contains"})
        col = "spamscore" if key == "spamscore" else FILTER_COLUMNS[key][0]
        values = {r[col] for r in all_rows if not visible(name, r)} - {"", None}
        probes.extend({key: v} for v in sorted(map(str, values))[:3])
    for user in ("localacct", "remoteacct", "resellera", "root"):
        probes += [{"user": user}, {"deliveryuser": user}]
    for params in probes:
        got = {ident(r) for r in web.search_all(name, **params)}
        assert got <= own, (name, params, got - own)


@pytest.mark.parametrize("name", SCOPED)
def test_every_sort_and_the_csv_stay_in_scope(web, all_rows, name):
    want = sorted(ident(r) for r in all_rows if visible(name, r))
    for sort in ("email", "-recipient", "user", "deliveryuser:desc", "spamscore", "size:desc", "server"):
        assert sorted(map(ident, web.search_all(name, sort=sort, limit=11))) == want, sort
    r = web.get("/api/v1/search.csv", name)
    assert r.status == 200
    rows = list(csv.DictReader(io.StringIO(r.body.decode())))
    assert sorted(map(ident, rows)) == want


def test_a_cursor_from_root_does_not_open_another_scope(web, all_rows):
    page = web.api("/api/v1/search", "root", limit=2, sort="email")
    for name in SCOPED:
        got = web.api("/api/v1/search", name, limit=10_000, sort="email", cursor=page["next_cursor"])["rows"]
        assert all(visible(name, r) for r in got)


def test_cursor_tampering(web, all_rows):
    page = web.api("/api/v1/search", "bob", limit=1, sort="recipient")
    body, sig = page["next_cursor"].split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for evil in (["' OR 1=1 --", "", "", ""], [None, None, None, None], [1, 2], "x", {"a": 1}):
        for signature in (sig, "AAAAAAAAAAAAAAAAAAAAAA"):
            forged_body = dict(data, k=evil)
            cursor = base64.urlsafe_b64encode(json.dumps(forged_body).encode()).decode().rstrip("=")
            r = web.get(
                "/api/v1/search", "bob", {"limit": 5, "sort": "recipient", "cursor": f"{cursor}.{signature}"}
            )
            assert r.status == 400, (evil, r.status)


@pytest.mark.parametrize("name", SCOPED)
def test_guessed_message_ids_show_nothing_foreign(web, all_rows, name):
    msgs = sorted({(r["server"], r["msgid"]) for r in all_rows})
    own = [m for m in msgs if any(visible(name, r) for r in all_rows if (r["server"], r["msgid"]) == m)]
    # every foreign message id (must be a 404), a third of its own (the full timeline: slower)
    msgs = [m for m in msgs if m not in own] + own[SCOPED.index(name) % 3 :: 3]
    assert msgs
    assert name == "nobody" or any(visible(name, r) for r in all_rows if (r["server"], r["msgid"]) in msgs)
    for server, msgid in msgs:
        rows = [r for r in all_rows if (r["server"], r["msgid"]) == (server, msgid)]
        mine = [r for r in rows if visible(name, r)]
        r = web.get(f"/api/v1/message/{server}/{urllib.parse.quote(msgid)}", name)
        if not mine:
            assert r.status == 404, (name, server, msgid, r.body[:300])
            continue
        assert r.status == 200
        m = r.json()
        assert m["attempts"] and all(visible(name, a) for a in m["attempts"])
        assert {ident(a) for a in m["attempts"]} >= {ident(x) for x in mine if x["type"] != "inprogress"} - {
            None
        }
        assert all(visible(name, c) for c in m["children"])
        # raw lines name every recipient: only for the sending side
        if m["lines"]:
            assert any(visible(name, x, sender_only=True) for x in rows), (name, msgid)
        elif any(visible(name, x, sender_only=True) for x in rows):
            pytest.fail(f"{name} sent {msgid} but sees no log lines")


@pytest.mark.parametrize("name", SCOPED)
def test_stats_count_only_the_accounts_rows(web, all_rows, name):
    mine = [r for r in all_rows if visible(name, r)]
    rows = web.api("/api/v1/stats", name, groupby="server,user")["rows"]
    want: dict = {}
    for r in mine:
        want.setdefault((r["server"], r["user"]), []).append(r)
    want = {g: cpanel_counters(rs) for g, rs in want.items()}
    assert {(r["server"], r["user"]): {c: r[c] for c in COUNTERS} for r in rows} == {
        g: c for g, c in want.items() if c["SENDCOUNT"] or c["FAILCOUNT"]
    }
    total = web.api("/api/v1/stats", name, groupby="none")["rows"]
    assert total == [cpanel_counters(mine)]


def test_revoked_token_stops_working_at_once(web):
    ts = TokenStore(web.tokens_file)
    token, account = ts.add("webmail", "temp", address="bob@local.test")
    assert web.get("/api/v1/search", token=token).status == 200
    ts.revoke(account.id)
    assert web.get("/api/v1/search", token=token).status == 401
    assert web.get("/api/v1/search", "bob").status == 200


def test_tokens_file_keeps_only_hashes(web):
    with open(web.tokens_file) as fh:
        text = fh.read()
    for token in web.tokens.values():
        assert token not in text
    assert all(t["hash"].startswith("sha256:") for t in json.loads(text)["tokens"])
