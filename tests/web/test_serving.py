"""The web app as operators run it: its OpenAPI document is its own definition, health and readiness
probes, Prometheus metrics, and a graceful shutdown that finishes the requests in flight (a real
`eximtrack serve` process and a real SIGTERM)."""

from __future__ import annotations

import csv
import http.client
import io
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from eximtrack.web.app import App, build_asgi
from eximtrack.web.auth import TokenStore
from eximtrack.web.openapi import OPERATIONS

pytestmark = pytest.mark.store


def test_every_route_is_in_the_document_and_nothing_else(tmp_path):
    asgi = build_asgi(App(None, TokenStore(str(tmp_path / "tokens.json"))))
    routes = {r.path for r in asgi.app.routes if isinstance(r, Route) and r.name != "page"}
    assert routes == {op.path for op in OPERATIONS}


def _probe_path(path: str) -> str:
    return path.replace("{server}", "web1").replace("{msgid}", "nosuchid")


def test_every_documented_parameter_is_accepted_and_no_other(web):
    doc = web.get("/api/v1/openapi.json", account=None).json()
    assert {op.path for op in OPERATIONS} == set(doc["paths"])
    for path, item in doc["paths"].items():
        declared = [p["name"] for p in item["get"].get("parameters", []) if p["in"] == "query"]
        for name in declared:  # the builders know every declared parameter
            r = web.get(_probe_path(path), params={name: "1"})
            assert "unknown parameter" not in r.json().get("error", "") if r.status == 400 else True, (
                path,
                name,
            )
        r = web.get(_probe_path(path), params={"zz_undeclared": "1"})
        assert r.status == 400 and r.json() == {"error": "unknown parameter(s): zz_undeclared"}, path


def test_health_readiness_and_metrics(web):
    assert web.get("/healthz", account=None).json() == {"status": "ok"}
    assert web.get("/readyz", account=None).json() == {"status": "ready"}
    web.api("/api/v1/search", limit=1)
    assert web.get("/api/v1/search", params={"limit": "x"}).status == 400
    r = web.get("/metrics", account=None)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.body.decode())
        for s in family.samples
    }

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    assert value("eximtrack_http_requests_total", route="search", method="GET", status="200") >= 1
    assert value("eximtrack_http_requests_total", route="search", method="GET", status="400") >= 1
    assert value("eximtrack_http_request_duration_seconds_count", route="search", method="GET") >= 2
    assert value("eximtrack_http_query_workers") == 4
    assert value("eximtrack_http_queries_admitted") == 0


def _start_serve(web, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eximtrack", "serve", "--store", web.store, "--port", "0", "--tokens", web.tokens_file, *extra],
        env=env or web.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc, line.split("listening on ", 1)[1].split()[0].rstrip("/")


def test_sigterm_finishes_the_export_in_flight_then_exits(web, all_rows):
    """One row per query: the export takes many queries (through the owner's query endpoint); SIGTERM
    arrives after its first chunk, and the whole export still arrives, then the process exits 0."""
    proc, url = _start_serve(web, env=dict(web.env, EXIMTRACK_CSV_PAGE_ROWS="1"))
    try:
        host, port = urllib.parse.urlsplit(url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("GET", "/api/v1/search.csv", headers={"Authorization": f"Bearer {web.tokens['root']}"})
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.read1(64)  # the export has begun
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "exited with an export in flight"
        with pytest.raises(OSError):  # no new connections once shutting down
            http.client.HTTPConnection(host, int(port), timeout=5).request("GET", "/healthz")
        body = first + resp.read()
        assert len(list(csv.DictReader(io.StringIO(body.decode())))) == len(all_rows)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_need_a_server_store(web):
    out = subprocess.run(
        [sys.executable, "-m", "eximtrack", "serve", "--store", web.store, "--workers", "2", "--tokens", web.tokens_file],
        env=dict(os.environ, **web.env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--workers needs a ClickHouse server store" in out.stderr
