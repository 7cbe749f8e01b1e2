"""The Track Delivery web app as an ASGI application (Starlette): the JSON API, its OpenAPI document, the
page, health probes and Prometheus metrics. eximtrack/web/serve.py runs it under uvicorn.

Routes are generated from the operations of eximtrack/web/openapi.py: each accepts exactly the query
parameters it declares (anything else is a 400), so the served document is the app's own definition.
Every /api/v1 endpoint except the document needs `Authorization: Bearer <token>` (eximtrack/web/auth.py);
the token's account becomes a tenant `Scope` that eximtrack/web/query.py ANDs into the SQL of every query.
Nothing a client sends reaches SQL except as a bound parameter.

Queries block (chDB, clickhouse-connect), so a request's whole work — token check, query builders, store
calls, JSON encoding — runs in a bounded pool of query threads (`query_workers`), while the event loop only
routes and sends. Requests beyond the pool wait in a bounded queue (`queue_limit`; more is a 503), and one
that takes longer than `request_timeout` is answered 504 (its query then runs on until ClickHouse's
`max_execution_time`, which is the same limit). A CSV export runs in one query thread from its first to
its last row and is sent as it is produced, under back-pressure from the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import io
import os
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from eximtrack import stats
from eximtrack.jsonable import json_bytes, jsonable, jsonable_rows
from eximtrack.search import Scope, run_show
from eximtrack.search_plan import decide_read_all
from eximtrack.web import query as q
from eximtrack.web.auth import Account, AuthError, TokenStore
from eximtrack.web.openapi import OPERATIONS, Operation, document

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSV_PAGE_ROWS = int(os.environ.get("EXIMTRACK_CSV_PAGE_ROWS") or 20_000)  # rows per query of an export
CSV_CHUNK_ROWS = 2000  # rows per chunk sent of an export
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'",
    ),
]
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _jsonable(value):
    return jsonable(value, datetimes="epoch")


def _dict_rows(names: list[str], rows) -> list[dict]:
    return jsonable_rows(names, rows, datetimes="epoch")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class AppMetrics:
    """The web app's Prometheus metrics, in a registry of its own (one per App: tests run several)."""

    def __init__(self, query_workers: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eximtrack_http_requests",
            "HTTP requests answered, by route, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "eximtrack_http_request_duration_seconds",
            "Seconds from a request's arrival until its last byte was handed to the server, by route.",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.admitted = Gauge(
            "eximtrack_http_queries_admitted",
            "Requests running in a query thread or waiting for one.",
            registry=self.registry,
        )
        self.workers = Gauge(
            "eximtrack_http_query_workers", "Query threads of this process.", registry=self.registry
        )
        self.workers.set(query_workers)


class App:
    """The request-independent state: store, tokens, cursor key, the query pool and the metrics."""

    def __init__(
        self,
        store,
        tokens: TokenStore,
        cursor_key: bytes | None = None,
        stream_exports: bool | None = None,
        *,
        query_workers: int = 4,
        queue_limit: int = 64,
        request_timeout: float = 60.0,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.codec = q.CursorCodec(cursor_key or secrets.token_bytes(32))
        local_chdb = hasattr(store, "client") and getattr(store.url, "backend", "") == "chdb"
        # Exports: a ClickHouse server streams one query's blocks (O(rows), no lock to hold). The embedded
        # engine is shared by every request of this process (one query at a time) and a RemoteStore loads
        # whole results, so there an export is a sequence of keyset pages: other requests run in between.
        self.stream_exports = (
            stream_exports if stream_exports is not None else hasattr(store, "client") and not local_chdb
        )
        if local_chdb:
            from sinks.clickhouse.store import ENGINE_LOCK

            self.lock = ENGINE_LOCK  # one chDB engine: queries take turns (shared with the query endpoint)
        else:
            self.lock = nullcontext()
        self.query_workers = max(1, int(query_workers))
        self.admit_limit = self.query_workers + max(0, int(queue_limit))
        self.request_timeout = float(request_timeout)
        self.pool = ThreadPoolExecutor(self.query_workers, thread_name_prefix="eximtrack-query")
        self.metrics = AppMetrics(self.query_workers)
        self.admitted = 0  # touched on the event loop only
        self.settings = {"max_execution_time": max(1, int(self.request_timeout + 0.999))}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def admit(self) -> None:
        """A request takes a place among those the query pool runs or queues; 503 when none is left. (Called
        on the event loop only.) A request past its timeout gives its place back while its query may still
        hold a thread, so the queue's bound counts requests, not threads."""
        if self.admitted >= self.admit_limit:
            raise ApiError(
                503,
                "the server is busy: every query worker is taken and the queue is full",
                {"Retry-After": "1"},
            )
        self.admitted += 1
        self.metrics.admitted.set(self.admitted)

    def release(self) -> None:
        self.admitted -= 1
        self.metrics.admitted.set(self.admitted)

    def retention_days(self) -> int | None:
        """Days the store keeps data (0 = forever; None when it cannot be told)."""
        try:
            with self.lock:
                return int(self.store.retention_days())
        except Exception:
            return None

    def query(self, sql: str, params: dict):
        with self.lock:
            return self.store.query(sql, params, readonly=True, settings=self.settings)

    def run(self, sql: str, params: dict) -> tuple[list[str], list[tuple]]:
        """query() as (column names, rows): what the search planner's page loop calls."""
        result = self.query(sql, params)
        return list(result.column_names), result.result_rows

    def account(self, authorization: str) -> Account:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "an API token is required: Authorization: Bearer <token>")
        try:
            account = self.tokens.authenticate(token)
        except AuthError as exc:
            print(f"eximtrack serve: {exc}", file=sys.stderr)
            raise ApiError(500, "the tokens file cannot be read") from None
        if account is None:
            raise ApiError(401, "unknown or revoked API token")
        return account


# ---------------------------------------------------------------------------------------------------------
# The operations: plain functions of (app, call) run in a query thread.


@dataclass
class Call:
    """One API request as the handlers see it."""

    params: dict[str, list[str]]
    path: dict[str, str]
    account: Account

    @property
    def scope(self) -> Scope | None:
        return self.account.scope()


@dataclass
class Export:
    """A streamed answer: its headers (decided before the first byte) and its chunks."""

    media_type: str
    headers: dict[str, str]
    chunks: Callable[[], Iterator[bytes]]


def search(app: App, call: Call) -> dict:
    with_total = False
    if "with_total" in call.params:
        with_total = q.parse_flag("with_total", call.params["with_total"][-1])
    sq = q.build_search_query(call.params, call.scope, app.codec)
    rows = _dict_rows(*sq.fetch(app.run, sq.keys, sq.limit + 1))
    more = len(rows) > sq.limit
    rows = rows[: sq.limit]
    payload = {
        "rows": rows,
        "count": len(rows),
        "next_cursor": app.codec.encode(sq.sort, sq.cursor_keys(rows[-1])) if more and rows else None,
        "sort": sq.sort,
        "limit": sq.limit,
    }
    if with_total:
        csql, cparams = sq.count(app.run)
        payload["total"] = int(app.query(csql, cparams).result_rows[0][0])
    return payload


def search_csv(app: App, call: Call) -> Export:
    sq = q.build_search_query(call.params, call.scope, None, csv=True)  # 400 before the first byte
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    headers = {
        "Content-Disposition": f'attachment; filename="eximtrack-{stamp}.csv"',
        "Cache-Control": "no-store",
    }

    def chunks() -> Iterator[bytes]:
        buf = io.StringIO()
        writer = csv.writer(buf)

        def take() -> bytes:
            data = buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
            return data

        if app.stream_exports:
            sql, bound = sq.page(None, None, plan=decide_read_all(app.run, sq.plan))
            with app.lock:
                names, rows = app.store.stream(sql, bound, readonly=True)
                writer.writerow(names)
                for n, row in enumerate(rows, 1):
                    writer.writerow(["" if v is None else _jsonable(v) for v in row])
                    if n % CSV_CHUNK_ROWS == 0:
                        yield take()
            yield take()
            return
        keys = None
        header_done = False
        while True:
            names, plain = sq.fetch(app.run, keys, CSV_PAGE_ROWS)
            if not header_done:
                writer.writerow(names)
                header_done = True
            rows = _dict_rows(names, plain)
            for row in rows:
                writer.writerow(["" if row[n] is None else row[n] for n in names])
            yield take()
            if len(rows) < CSV_PAGE_ROWS:
                return
            keys = sq.cursor_keys(rows[-1])

    return Export("text/csv; charset=utf-8", headers, chunks)


def stats_groups(app: App, call: Call) -> dict:
    request, groups = q.build_stats_query(call.params, call.scope)
    names, rows = request.run(app.run)
    rows, more = stats.trim(rows, request.top)
    return {"groupby": groups, "rows": _dict_rows(names, rows), "more": more}


def servers(app: App, call: Call) -> dict:
    bound: dict = {}
    cond = q.scope_condition(call.scope, bound)
    sql = "SELECT DISTINCT server FROM latest FINAL" + (f" WHERE {cond}" if cond else "") + " ORDER BY server"
    return {"servers": [r[0] for r in app.query(sql, bound).result_rows]}


def alerts(app: App, call: Call) -> dict:
    sql, bound = q.build_alerts_query(call.params, call.scope)
    return {"alerts": _dict_rows(*app.run(sql, bound))}


def whoami(app: App, call: Call) -> dict:
    me = {k: v for k, v in call.account.public().items() if k != "created"}
    me["retention_days"] = app.retention_days()
    return me


def message(app: App, call: Call) -> dict:
    server, msgid = call.path["server"], call.path["msgid"]
    scope = call.scope
    queries = q.build_message_queries(server, msgid, scope)
    if scope is not None:  # one cheap query answers the 404 of a message that is not the tenant's
        sql, bound = q.build_visible_query(server, msgid, scope)
        if not app.query(sql, bound).result_rows:
            raise ApiError(404, f"no message {msgid} on server {server}")
    parts = {name: _dict_rows(*result) for name, result in run_show(queries, app.run).items()}
    if not parts["arrival"] and not parts["attempts"] and not parts["lines"]:
        raise ApiError(404, f"no message {msgid} on server {server}")
    return {"server": server, "msgid": msgid, **parts}


HANDLERS: dict[str, Callable[[App, Call], dict | Export]] = {
    "search": search,
    "search_csv": search_csv,
    "stats": stats_groups,
    "servers": servers,
    "alerts": alerts,
    "whoami": whoami,
    "message": message,
}


# ---------------------------------------------------------------------------------------------------------
# The ASGI layer: admission, timeouts, errors, headers, metrics.


def json_response(status: int, payload, headers: dict | None = None) -> Response:
    return Response(
        json_bytes(payload),
        status,
        {"Cache-Control": "no-store", **(headers or {})},
        media_type="application/json; charset=utf-8",
    )


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="eximtrack"', **(headers or {})}
    return json_response(status, {"error": message}, headers)


async def in_pool(app: App, fn: Callable, *args):
    """fn(*args) in a query thread; ApiError 504 after the request timeout."""
    future = asyncio.wrap_future(app.pool.submit(fn, *args))
    try:
        return await asyncio.wait_for(future, app.request_timeout)
    except TimeoutError:
        raise ApiError(504, f"the query took longer than {app.request_timeout:g} s") from None


async def stream_in_pool(app: App, chunks: Callable[[], Iterator[bytes]]):
    """The chunks of an export, produced from first to last in ONE query thread (it may hold the engine's
    lock across them) and handed over through a small queue: a slow client slows the producer down, and one
    that goes away stops it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=4)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Hand `item` over, waiting while the queue is full; False once the sender has stopped."""
        handed = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stop.is_set():
            try:
                handed.result(timeout=1.0)
                return True
            except concurrent.futures.TimeoutError:
                continue
        handed.cancel()
        return False

    def produce() -> None:
        try:
            for chunk in chunks():
                if not put(chunk):
                    return
        except BaseException as exc:  # handed to the sender, which cuts the answer short
            put(exc)
            return
        put(done)

    app.pool.submit(produce)
    try:
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):  # the connection is cut: the client sees an incomplete answer
                raise RuntimeError("the export failed part-way") from item
            yield item
    finally:
        stop.set()
        while not queue.empty():  # frees a producer blocked on a full queue
            queue.get_nowait()


class ExportResponse(StreamingResponse):
    """A streamed export that gives its place in the query pool back when it ends, however it ends."""

    def __init__(self, app: App, export: Export) -> None:
        super().__init__(
            stream_in_pool(app, export.chunks), 200, export.headers, media_type=export.media_type
        )
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.app.release()


def query_params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def declared_only(op: Operation, endpoint):
    """`endpoint` behind a 400 for every query parameter `op` does not declare."""

    async def checked(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - op.query_names)
        if unknown:
            return error_response(400, f"unknown parameter(s): {', '.join(unknown)}")
        return await endpoint(request)

    return checked


def api_endpoint(app: App, op: Operation):
    handler = HANDLERS[op.name]

    def work(authorization: str, params: dict, path: dict):
        result = handler(app, Call(params, path, app.account(authorization)))
        if isinstance(result, Export):
            return result
        return json_bytes(result)

    async def endpoint(request: Request) -> Response:
        params = query_params(request)
        streaming = False
        try:
            app.admit()
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        try:
            result = await in_pool(
                app, work, request.headers.get("authorization", ""), params, dict(request.path_params)
            )
            if isinstance(result, Export):
                if request.method == "HEAD":
                    return Response(b"", 200, result.headers, media_type=result.media_type)
                streaming = True
                return ExportResponse(app, result)
            return Response(
                result, 200, {"Cache-Control": "no-store"}, media_type="application/json; charset=utf-8"
            )
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except q.BadRequest as exc:
            return error_response(400, str(exc))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return error_response(500, "internal error (see the server log)")
        finally:
            if not streaming:
                app.release()

    return endpoint


def build_asgi(app: App) -> Starlette:
    """The ASGI application of `app`."""
    openapi_body = json_bytes(document())

    async def openapi(request: Request) -> Response:
        if request.query_params:
            return error_response(
                400, f"unknown parameter(s): {', '.join(sorted(set(request.query_params)))}"
            )
        return Response(openapi_body, 200, {"Cache-Control": "no-cache"}, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(asyncio.wrap_future(app.pool.submit(app.query, "SELECT 1", {})), 10)
        except Exception as exc:  # not ready: the store does not answer
            return json_response(
                503, {"status": "unavailable", "error": str(exc)[:300] or type(exc).__name__}
            )
        return json_response(200, {"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(app.metrics.registry), 200, media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    public = {"openapi": openapi, "healthz": healthz, "readyz": readyz, "metrics": metrics}
    routes = [
        Route(
            op.path,
            declared_only(op, public[op.name] if op.public else api_endpoint(app, op)),
            methods=["GET", "HEAD"],
            name=op.name,
        )
        for op in OPERATIONS
    ]
    routes += [
        Route("/", page, methods=["GET", "HEAD"], name="page"),
        Route("/index.html", page, methods=["GET", "HEAD"], name="page"),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(405, "only GET is supported", {"Allow": "GET, HEAD"})
        if exc.status_code == 404:
            return error_response(404, f"no such endpoint: {request.url.path}")
        return error_response(exc.status_code, exc.detail or "error")

    asgi = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return Observed(asgi, app.metrics)


class Observed:
    """ASGI middleware: the security headers on every answer, and each request counted and timed by its
    route's name (bounded: unmatched paths count as "none")."""

    def __init__(self, app, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            name = getattr(route, "name", None) or "none"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(name, method, str(status)).inc()
            self.metrics.latency.labels(name, method).observe(time.perf_counter() - start)


__all__ = ["App", "ApiError", "Call", "Export", "HANDLERS", "build_asgi"]
