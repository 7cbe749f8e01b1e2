"""One `eximtrack serve` subprocess for the web tests, on its own chDB store filled by `eximtrack ingest` of
the real-Exim samples (web1 = mainlog-cpanel.log, web2 = mainlog-all.log) with the cPanel account maps in
tests/web/data/ (local.test -> localacct owned by resellera; remote.test, cut.test -> remoteacct, cutacct
owned by resellerb; dead.test -> deadacct owned by root). The pytest process itself may already use another
chDB path (one per process), so the store lives in the server process only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from webaccounts import ACCOUNTS

from eximtrack.web.auth import TokenStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # http.client.HTTPMessage: names are case-insensitive
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class WebServer:
    url: str
    tokens: dict[str, str]
    tokens_file: str
    store: str
    proc: subprocess.Popen
    env: dict = field(default_factory=dict)

    def get(self, path: str, account: str | None = "root", params=None, token: str | None = None) -> Response:
        query = ("?" + urllib.parse.urlencode(params, doseq=True)) if params else ""
        req = urllib.request.Request(self.url + path + query)
        tok = token if token is not None else (self.tokens[account] if account else None)
        if tok is not None:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return Response(resp.status, resp.headers, resp.read())  # case-insensitive names
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.headers, exc.read())

    def api(self, path: str, account: str = "root", **params):
        r = self.get(path, account, params)
        assert r.status == 200, (r.status, r.body[:300])
        return r.json()

    def search_all(self, account: str = "root", **params) -> list[dict]:
        """Every row of a search, paging with the cursor."""
        rows, cursor = [], None
        while True:
            p = dict(params, limit=params.get("limit", 10_000))
            if cursor:
                p["cursor"] = cursor
            page = self.api("/api/v1/search", account, **p)
            rows.extend(page["rows"])
            cursor = page["next_cursor"]
            if not cursor:
                return rows


# Two firing alerts for the page (eximtrack/alerts/): one about localacct (owned by resellera), one server-wide.
WRITE_ALERTS = """
import sys
from datetime import UTC, datetime
from eximtrack.alerts import table
from eximtrack.alerts.evaluate import Finding
from eximtrack.alerts.state import FIRING, Alert
from sinks.clickhouse.store import Store
at = datetime(2026, 11, 20, 12, tzinfo=UTC)
findings = [
    Finding("compromised-account", "sender_burst", "user=localacct", 400, 5, 200,
            "user localacct sent 400 messages in an hour", owner="resellera", user="localacct",
            link="https://track.example/?user=localacct&success=1&defer=1&failure=1&inprogress=1"),
    Finding("silent-server", "silent_server", "server=web2", 45, 30, 30, "web2: no log event for 45 minutes",
            server="web2", link="https://track.example/?server=web2"),
]
table.write(Store.open(sys.argv[1]), tuple(Alert(f"a{i}", f, FIRING, at, at) for i, f in enumerate(findings)))
"""


def _run(argv, env):
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="session")
def web(tmp_path_factory) -> WebServer:
    tmp = tmp_path_factory.mktemp("web")
    store = f"chdb://{tmp / 'store'}"
    env = dict(os.environ, EXIMTRACK_RETENTION_DAYS="0", EXIMTRACK_CSV_PAGE_ROWS="7")
    env.pop("EXIMTRACK_STORE", None)
    for server, log in (("web1", "mainlog-cpanel.log"), ("web2", "mainlog-all.log")):
        _run(
            [
                sys.executable, "-m", "eximtrack", "ingest", "--server", server, "--store", store,
                "--userdomains", str(DATA / "userdomains"), "--trueuserowners", str(DATA / "trueuserowners"),
                str(SAMPLES / log),
            ],
            env,
        )  # fmt: skip
    _run([sys.executable, "-c", WRITE_ALERTS, store], env)
    tokens_file = str(tmp / "tokens.json")
    ts = TokenStore(tokens_file)
    tokens = {name: ts.add(role, name, **kw)[0] for name, (role, kw) in ACCOUNTS.items()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eximtrack",
            "serve",
            "--store",
            store,
            "--port",
            "0",
            "--tokens",
            tokens_file,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(tmp / "serve.log", "wb"),  # noqa: SIM115
        text=True,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"eximtrack serve did not start: {line!r} {(tmp / 'serve.log').read_text()[-2000:]}")
    url = line.split("listening on ", 1)[1].split()[0].rstrip("/")
    server = WebServer(url, tokens, tokens_file, store, proc, env)
    deadline = time.time() + 30
    while server.get("/api/v1/openapi.json").status != 200:
        assert time.time() < deadline, "server not answering"
        time.sleep(0.1)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def all_rows(web) -> list[dict]:
    rows = web.search_all("root")
    assert len(rows) > 100
    return rows
