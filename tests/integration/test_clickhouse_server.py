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
