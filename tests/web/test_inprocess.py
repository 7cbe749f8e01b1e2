"""The app in-process on this process's chDB engine (fresh database): CSV exports stream the same bytes
whether the store streams one query (ClickHouse server) or the app walks keyset pages (embedded engine)."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import pytest

from eximtrack import cli
from eximtrack.web import app as webapp
from eximtrack.web.serve import Server
from eximtrack.web.auth import TokenStore
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
