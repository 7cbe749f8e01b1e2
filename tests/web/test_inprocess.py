"""The app in-process on this process's chDB engine (fresh database): CSV exports stream the same bytes
whether the store streams one query (ClickHouse server) or the app walks keyset pages (embedded engine)."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from eximtrack import cli
from eximtrack.web import app as webapp
from eximtrack.web.auth import TokenStore
from eximtrack.web.serve import Server
from sinks.clickhouse.store import Store, current_chdb_path

pytestmark = pytest.mark.store

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def store_url(tmp_path_factory, monkeypatch, capsys):
    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    path = current_chdb_path() or str(tmp_path_factory.mktemp("chdb-web"))
    url = f"chdb://{path}?database=web_{uuid.uuid4().hex[:12]}"
    rc = cli.main(
        ["ingest", "--server", "web1", "--store", url, "--userdomains", str(DATA / "userdomains"),
         "--trueuserowners", str(DATA / "trueuserowners"), str(SAMPLES / "mainlog-all.log")]
    )  # fmt: skip
    capsys.readouterr()
    assert rc == 0
    return url


def fetch(url: str, token: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return resp.read()


@pytest.mark.parametrize("query", ["", "?failure=1&sort=recipient", "?all=local&sort=-spamscore"])
def test_streamed_and_paged_exports_are_identical(store_url, tmp_path, monkeypatch, query):
    store = Store.open(store_url)
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    root, _ = tokens.add("root", "root")
    user, _ = tokens.add("user", "u", user="localacct")
    monkeypatch.setattr(webapp, "CSV_PAGE_ROWS", 5)
    bodies = {}
    for streaming in (True, False):
        server = Server(webapp.App(store, tokens, stream_exports=streaming), "127.0.0.1", 0)
        server.start()
        try:
            for name, tok in (("root", root), ("user", user)):
                bodies[(streaming, name)] = fetch(f"{server.url}/api/v1/search.csv{query}", tok)
        finally:
            server.stop()
    for name in ("root", "user"):
        assert bodies[(True, name)] == bodies[(False, name)], name
    assert bodies[(True, "root")].count(b"\n") > bodies[(True, "user")].count(b"\n") > 1


def _get(url: str, token: str) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_query_over_the_request_timeout_is_a_504(store_url, tmp_path):
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    root, _ = tokens.add("root", "root")
    app = webapp.App(Store.open(store_url), tokens, request_timeout=0.0005)
    server = Server(app, "127.0.0.1", 0)
    server.start()
    try:
        status, _, body = _get(f"{server.url}/api/v1/search?all=local", root)
        assert status == 504 and b"longer than" in body
    finally:
        server.stop()
        app.close()


def test_a_full_pool_and_queue_answer_503_and_free_up_when_the_export_ends(store_url, tmp_path, monkeypatch):
    """One query thread, no queue: an export (one row per query) holds the thread until it ends or its
    client goes away; meanwhile another request is a 503 with Retry-After."""
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    root, _ = tokens.add("root", "root")
    monkeypatch.setattr(webapp, "CSV_PAGE_ROWS", 1)
    app = webapp.App(Store.open(store_url), tokens, query_workers=1, queue_limit=0)
    server = Server(app, "127.0.0.1", 0)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/api/v1/search.csv", headers={"Authorization": f"Bearer {root}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read1(16)
        status, headers, body = _get(f"{server.url}/api/v1/search?limit=1", root)
        assert status == 503 and headers.get("retry-after") == "1", (status, body)
        conn.close()  # the client goes away: the export stops and gives its place back
        deadline = time.time() + 20
        while (
            status := _get(f"{server.url}/api/v1/search?limit=1", root)[0]
        ) == 503 and time.time() < deadline:
            time.sleep(0.05)
        assert status == 200
    finally:
        server.stop()
        app.close()
