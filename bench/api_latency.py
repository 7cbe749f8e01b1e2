"""Track Delivery over HTTP: the API requests of bench/queries.py (`api_requests`) sent to a real
`eximtrack serve` on a query store, timed from a client, beside the same requests through the builders in
the same session (issue 11: over HTTP at most 20 ms more than through the builders).

    python -m bench.api_latency --scale 1e7 --store .eximtrack/bench/q1e7 [--runs 15] [--json FILE]

Two processes, one after the other (a chDB directory admits one process): `python -m bench.queries --only
…` times the builders and records the store's probes; then `eximtrack serve` opens the store and this
process times the requests with one keep-alive HTTP connection, as a browser or an API client sends them
(authorisation, parameter checks, JSON encoding and the socket included). A page of 10 follows the
`next_cursor` of the pages before it once, then times the tenth.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench.queries import api_requests
from bench.timing import latencies

ROOT = Path(__file__).resolve().parent.parent


class Client:
    """One keep-alive connection to the server; GET with the bearer token, JSON back."""

    def __init__(self, url: str, token: str):
        parsed = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Connection": "keep-alive"}

    def get(self, path: str, params: dict) -> dict:
        self.conn.request("GET", f"{path}?{urllib.parse.urlencode(params)}", headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path} {params}: HTTP {resp.status} {body[:300]!r}")
        return json.loads(body)


def serve(store: str, tokens: str, log: Path, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """`eximtrack serve` of the checkout at `root` (another one to compare two versions) on `store`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "eximtrack", "serve", "--store", f"chdb://{store}", "--port", "0",
         "--tokens", tokens],
        cwd=root, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,  # noqa: SIM115
        env=dict(os.environ, EXIMTRACK_RETENTION_DAYS="0", PYTHONPATH=str(root)),
    )  # fmt: skip
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"eximtrack serve did not start: {line!r} {log.read_text()[-2000:]}")
    return proc, line.split("listening on ", 1)[1].split()[0].rstrip("/")


def measure_http(url: str, token: str, probes: dict, runs: int, only: tuple[str, ...] = ()) -> dict:
    client = Client(url, token)
    out = {}
    for name, (path, params, page) in api_requests(probes).items():
        if only and not name.startswith(only):
            continue
        params = dict(params)
        for _ in range(page - 1):
            params["cursor"] = client.get(path, params)["next_cursor"]
        n = len(client.get(path, params)["rows"])
        lat = latencies(lambda path=path, params=params: client.get(path, params), runs, warmup=1)
        lat["rows"] = n
        out[name] = lat
        print(f"{name:22} http p50 {lat['p50']:8.1f} ms  p95 {lat['p95']:8.1f} ms", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.api_latency", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, help="the store's scale, as bench.queries --scale")
    ap.add_argument("--store", required=True, help="a query store filled by bench.queries")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--only", default="", help="comma list of query-name prefixes")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--serve-root", default=str(ROOT), help="serve from this checkout (before/after pairs)")
    ap.add_argument("--skip-builders", action="store_true", help="time over HTTP only")
    args = ap.parse_args(argv)
    args.store = str(Path(args.store).resolve())  # the server may run from another directory
    only = tuple(p for p in args.only.split(",") if p)
    names = [n for n in api_requests(_probes(args.store)) if not only or n.startswith(only)]
    with tempfile.TemporaryDirectory() as tmp:
        builders_json = Path(tmp) / "builders.json"
        if args.skip_builders:
            builders = {"probes": _probes(args.store), "queries": {}}
        else:
            subprocess.run(
                [sys.executable, "-m", "bench.queries", "--scale", args.scale, "--store", args.store,
                 "--runs", str(args.runs), "--only", ",".join(names), "--json", str(builders_json)],
                cwd=ROOT, check=True,
            )  # fmt: skip
            builders = json.loads(builders_json.read_text())
        from eximtrack.web.auth import TokenStore

        tokens = str(Path(tmp) / "tokens.json")
        token = TokenStore(tokens).add("root", "bench")[0]
        proc, url = serve(args.store, tokens, Path(tmp) / "serve.log", Path(args.serve_root))
        try:
            http = measure_http(url, token, builders["probes"], args.runs, tuple(names))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {"scale": args.scale, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "queries": {}}
    nothing = {"p50": float("nan"), "p95": float("nan")}
    for name in http:
        b, h = builders["queries"].get(name, nothing), http[name]
        result["queries"][name] = {"builders": b, "http": h, "extra_p50_ms": h["p50"] - b["p50"],
                                   "extra_p95_ms": h["p95"] - b["p95"]}  # fmt: skip
    print(f"{'query':22} {'builders p50/p95':>18} {'http p50/p95':>16} {'extra p50/p95':>15}")
    for name, r in result["queries"].items():
        b, h = r["builders"], r["http"]
        print(f"{name:22} {b['p50']:8.1f} /{b['p95']:7.1f} {h['p50']:7.1f} /{h['p95']:7.1f} "
              f"{r['extra_p50_ms']:6.1f} /{r['extra_p95_ms']:6.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _probes(store: str) -> dict:
    path = Path(store) / "bench-probes.json"
    if not path.exists():
        raise SystemExit(f"{path} missing: run python -m bench.queries on this store first")
    return json.loads(path.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
