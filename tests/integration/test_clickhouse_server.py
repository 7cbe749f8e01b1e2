"""The same store code against a ClickHouse server (http://…) instead of embedded chDB: ingest, idempotent
re-ingest and search. Runs where a server is given or Docker can start one (see conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.store]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "eximtrack", *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ingest_twice_and_search_on_a_server(clickhouse_server_url):
    store = f"{clickhouse_server_url}/t_{uuid.uuid4().hex[:8]}"
    run("ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-cpanel.log"))
    first = [json.loads(x) for x in run("search", "--store", store, "--format", "json").splitlines()]
    run("ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-cpanel.log"))
    second = [json.loads(x) for x in run("search", "--store", store, "--format", "json").splitlines()]
    assert first and first == second
    truth = json.loads((SAMPLES / "expected-cpanel.json").read_text())
    got = sorted((r["msgid"], r["recipient"], r["type"]) for r in second if r["type"] != "rejected")
    assert got == sorted((e["msgid"], e["recipient"], e["type"]) for e in truth["expected"])


def test_serve_with_two_workers_on_a_server(clickhouse_server_url, tmp_path):
    """`serve --workers 2`: two processes on one socket share the cursor key, so paging whose pages land on
    either process returns every row once; SIGTERM stops both."""
    import signal
    import urllib.request

    from eximtrack.web.auth import TokenStore

    store = f"{clickhouse_server_url}/t_{uuid.uuid4().hex[:8]}"
    run("ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-all.log"))
    want = sorted(
        (r["msgid"], r["recipient"], r["deliveredto"])
        for r in map(json.loads, run("search", "--store", store, "--format", "json").splitlines())
    )
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    token, _ = tokens.add("root", "root")
    proc = subprocess.Popen(
        [sys.executable, "-m", "eximtrack", "serve", "--store", store, "--port", "0", "--workers", "2",
         "--tokens", tokens.path],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "listening on" in line and "2 workers" in line, line
        url = line.split("listening on ", 1)[1].split()[0].rstrip("/")
        got, cursor = [], None
        while True:  # one connection per page: the kernel spreads them over both processes
            query = "limit=3" + (f"&cursor={cursor}" if cursor else "")
            req = urllib.request.Request(
                f"{url}/api/v1/search?{query}", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                page = json.loads(resp.read())
            got += [(r["msgid"], r["recipient"], r["deliveredto"]) for r in page["rows"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(got) == want and len(got) == len(set(got))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_ingest_twice_and_search_on_a_cluster(clickhouse_cluster_url):
    """The replicated, sharded layout on real servers: ingest (through the Distributed tables) twice, the
    samples' truth comes back once, every row of a message is on one shard, the tables are replicated."""
    base, _, query = clickhouse_cluster_url.partition("?")
    store = f"{base.rstrip('/')}/t_{uuid.uuid4().hex[:8]}?{query}"
    for _ in range(2):
        run("ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-cpanel.log"))
    rows = [json.loads(x) for x in run("search", "--store", store, "--format", "json").splitlines()]
    truth = json.loads((SAMPLES / "expected-cpanel.json").read_text())
    got = sorted((r["msgid"], r["recipient"], r["type"]) for r in rows if r["type"] != "rejected")
    assert got == sorted((e["msgid"], e["recipient"], e["type"]) for e in truth["expected"])

    def sql(statement: str) -> list:
        return [
            json.loads(x) for x in run("sql", "--store", store, "--format", "json", statement).splitlines()
        ]

    split = sql(
        "SELECT count() AS n FROM (SELECT server, msgid FROM latest GROUP BY server, msgid "
        "HAVING uniqExact(_shard_num) > 1)"
    )
    assert split == [{"n": 0}]
    engines = sql(
        "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'latest_local'"
    )
    assert engines == [{"engine": "ReplicatedReplacingMergeTree"}]
    stats = [
        json.loads(x)
        for x in run("stats", "--store", store, "--by", "server", "--format", "json").splitlines()
    ]
    assert [s["server"] for s in stats] == ["web1"] and stats[0]["SENDCOUNT"] > 0
