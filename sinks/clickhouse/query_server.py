"""Read-only queries against an embedded (chDB) store owned by another process.

chDB allows one process per store directory. When the sink (or the web app) owns the store, it serves
read-only SQL with bound parameters on 127.0.0.1 and writes the port to `<store>/query-endpoint.json`;
`Store.open()` in another process (the CLI's `search`, `show`, `sql`) finds that file when the directory is
locked and talks to it instead (`RemoteStore`). Values cross as JSON, with datetimes tagged so they come
back as datetimes. Nothing is reachable from outside the machine, and only read-only sessions run the SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import orjson

from eximtrack.jsonable import json_bytes

ENDPOINT_FILE = "query-endpoint.json"


def _encode(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return {"$dt": value.timestamp()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):  # kept a tuple: a bound Array(Tuple(…)) parameter must stay one
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is int and not -(2**63) <= value < 2**64:  # JSON parsers make these floats
        return {"$int": str(value)}
    return value


def _decode(value):
    if isinstance(value, dict):
        if "$dt" in value:
            return dt.datetime.fromtimestamp(value["$dt"], tz=dt.UTC)
        if "$date" in value:
            return dt.date.fromisoformat(value["$date"])
        if "$int" in value:
            return int(value["$int"])
        if "$tuple" in value:
            return tuple(_decode(v) for v in value["$tuple"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class QueryServer:
    """Serves POST /query {"sql", "params"} -> {"columns", "rows"} with the store's read-only session: a
    one-route ASGI app (Starlette) under uvicorn, in a daemon thread of the owning process, on 127.0.0.1.
    Queries run in Starlette's thread pool, beside the sink's inserts: they take no turn on
    store.ENGINE_LOCK, so a search never holds up the stored lines, nor an insert a search."""

    def __init__(self, store, port: int = 0) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        from eximtrack.uvicorn_server import UvicornServer

        self.store = store
        self.token = uuid.uuid4().hex  # only processes that can read the store directory can query
        app = Starlette(routes=[Route("/query", self._endpoint, methods=["POST"])])
        self.server = UvicornServer(app, "127.0.0.1", port)
        self.port = self.server.port
        self.endpoint_path = os.path.join(store.url.path, ENDPOINT_FILE)

    async def _endpoint(self, request):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        if request.headers.get("x-eximtrack-token") != self.token:
            return Response(status_code=403)
        body = await request.body()
        status, data = await run_in_threadpool(self.answer, body)
        return Response(data, status, media_type="application/json")

    def answer(self, body: bytes) -> tuple[int, bytes]:
        """One request's JSON body -> (status, JSON answer); errors go back to the caller, who raises them."""
        try:
            request = orjson.loads(body)
            result = self.store.query(request["sql"], _decode(request.get("params")) or None, readonly=True)
            payload = {
                "columns": list(result.column_names),
                "rows": _encode([list(r) for r in result.result_rows]),
            }
            return 200, json_bytes(payload)
        except Exception as exc:
            return 400, json_bytes({"error": str(exc)})

    def start(self) -> None:
        self.server.start()
        tmp = self.endpoint_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"port": self.port, "token": self.token, "pid": os.getpid()}, fh)
        os.replace(tmp, self.endpoint_path)

    def stop(self) -> None:
        try:
            os.unlink(self.endpoint_path)
        except OSError:
            pass
        self.server.stop()


def find_endpoint(path: str) -> dict | None:
    """The endpoint another process serves for the store at `path`, if it is alive."""
    try:
        with open(os.path.join(path, ENDPOINT_FILE)) as fh:
            info = json.load(fh)
        os.kill(int(info["pid"]), 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


class RemoteStore:
    """The reading half of `Store`, over the owning process's query endpoint."""

    def __init__(self, url, endpoint: dict) -> None:
        self.url = url
        self.endpoint = endpoint

    def _call(self, sql: str, params) -> SimpleNamespace:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.endpoint['port']}/query",
            data=json.dumps({"sql": sql, "params": _encode(dict(params)) if params else None}).encode(),
            headers={"Content-Type": "application/json", "X-Eximtrack-Token": self.endpoint["token"]},
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                payload = orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = orjson.loads(exc.read())
            except ValueError:
                payload = {"error": str(exc)}
        if "error" in payload:
            raise RuntimeError(payload["error"])
        rows = [tuple(r) for r in _decode(payload["rows"])]
        return SimpleNamespace(column_names=tuple(payload["columns"]), result_rows=rows)

    def query(self, sql, params=None, *, readonly=True, settings=None):
        return self._call(sql, params)

    def query_dicts(self, sql, params=None, **kwargs):
        res = self._call(sql, params)
        return [dict(zip(res.column_names, row, strict=True)) for row in res.result_rows]

    def stream(self, sql, params=None, *, readonly=True):
        res = self._call(sql, params)
        return list(res.column_names), iter(res.result_rows)

    def retention_days(self) -> int:
        rows = self._call(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'",
            None,
        )
        text = rows.result_rows[0][0] if rows.result_rows else ""
        import re

        m = re.search(r"toIntervalDay\((\d+)\)", text)
        return int(m.group(1)) if m else 0

    def insert_events(self, *a, **k):
        raise RuntimeError(
            f"the store {self.url.path} is owned by process {self.endpoint['pid']} (the sink): it is read-only from here"
        )

    insert_rejects = insert_lines = insert_rollup = insert_encoded = insert_rollup_encoded = command = (
        insert_events
    )

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
