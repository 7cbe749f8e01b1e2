"""`eximtrack serve`: the JSON API, its OpenAPI document and the Track Delivery page, in one process.

Standard library HTTP (ThreadingHTTPServer). Every /api/v1 endpoint except the OpenAPI document needs
`Authorization: Bearer <token>` (tokens file of eximtrack/web/auth.py); the token's account becomes a tenant
`Scope` that eximtrack/web/query.py ANDs into the SQL of every query (search, CSV, message, stats, servers).
Bad parameters are a 400 with {"error": "..."}; nothing a client sends reaches SQL except as a bound
parameter. With an embedded (chDB) store this process owns the directory and also serves the read-only
query endpoint for the CLI (sinks/clickhouse/query_server.py); when another process (the sink) owns it, the
app queries through that process.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import os
import secrets
import sys
import threading
import traceback
import urllib.parse
from contextlib import nullcontext
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from eximtrack import stats
from eximtrack.jsonable import json_bytes, jsonable, jsonable_rows
from eximtrack.search import run_show
from eximtrack.web import query as q
from eximtrack.web.auth import Account, AuthError, TokenStore, default_tokens_path
from eximtrack.web.openapi import document

STATIC_DIR = Path(__file__).resolve().parent / "static"
CSV_PAGE_ROWS = int(os.environ.get("EXIMTRACK_CSV_PAGE_ROWS") or 20_000)  # rows per query of an export


def _jsonable(value):
    return jsonable(value, datetimes="epoch")


def _rows(result) -> list[dict]:
    return _dict_rows(list(result.column_names), result.result_rows)


def _dict_rows(names: list[str], rows) -> list[dict]:
    return jsonable_rows(names, rows, datetimes="epoch")


class App:
    """The request-independent state: store, tokens, cursor key."""

    def __init__(
        self,
        store,
        tokens: TokenStore,
        cursor_key: bytes | None = None,
        stream_exports: bool | None = None,
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
            from sinks.clickhouse.query_server import ENGINE_LOCK

            self.lock = ENGINE_LOCK  # one chDB engine: queries take turns (shared with the query endpoint)
        else:
            self.lock = nullcontext()

    def retention_days(self) -> int | None:
        """Days the store keeps data (0 = forever; None when it cannot be told)."""
        try:
            with self.lock:
                return int(self.store.retention_days())
        except Exception:
            return None

    def query(self, sql: str, params: dict):
        with self.lock:
            return self.store.query(sql, params, readonly=True)

    def run(self, sql: str, params: dict) -> tuple[list[str], list[tuple]]:
        """query() as (column names, rows): what the search planner's page loop calls."""
        result = self.query(sql, params)
        return list(result.column_names), result.result_rows


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def make_handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        server_version = "eximtrack"
        sys_version = ""

        def log_message(self, fmt, *args):  # one line per request on stderr, without the token
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

        # -- plumbing ----------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self._common_headers()
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _common_headers(self) -> None:
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; frame-ancestors 'none'",
            )

        def _json(self, status: int, payload, extra: dict | None = None) -> None:
            body = json_bytes(payload)
            headers = {"Cache-Control": "no-store"}
            headers.update(extra or {})
            self._send(status, body, "application/json; charset=utf-8", headers)

        def _account(self) -> Account:
            auth = self.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "an API token is required: Authorization: Bearer <token>")
            try:
                account = app.tokens.authenticate(token)
            except AuthError as exc:
                print(f"eximtrack serve: {exc}", file=sys.stderr)
                raise ApiError(500, "the tokens file cannot be read") from None
            if account is None:
                raise ApiError(401, "unknown or revoked API token")
            return account

        # -- routing -----------------------------------------------------------------------------------
        def do_HEAD(self):  # noqa: N802
            self.do_GET()

        def do_POST(self):  # noqa: N802
            self._json(405, {"error": "only GET is supported"}, {"Allow": "GET, HEAD"})

        do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

        def do_GET(self):  # noqa: N802
            try:
                url = urllib.parse.urlsplit(self.path)
                path = url.path
                try:
                    params = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
                except ValueError:
                    raise ApiError(400, "malformed query string") from None
                if path == "/" or path == "/index.html":
                    return self._static("index.html")
                if path.startswith("/static/"):
                    return self._static(path[len("/static/") :])
                if path == "/api/v1/openapi.json":
                    return self._json(200, document())
                if not path.startswith("/api/v1/"):
                    raise ApiError(404, f"no such page: {path}")
                account = self._account()
                scope = account.scope()
                if path == "/api/v1/search":
                    return self._search(params, scope)
                if path == "/api/v1/search.csv":
                    return self._csv(params, scope)
                if path == "/api/v1/stats":
                    return self._stats(params, scope)
                if path == "/api/v1/servers":
                    return self._servers(params, scope)
                if path == "/api/v1/whoami":
                    me = {k: v for k, v in account.public().items() if k != "created"}
                    me["retention_days"] = app.retention_days()
                    return self._json(200, me)
                if path.startswith("/api/v1/message/"):
                    parts = path[len("/api/v1/message/") :].split("/")
                    if len(parts) != 2:
                        raise ApiError(404, "the path is /api/v1/message/{server}/{msgid}")
                    server, msgid = (urllib.parse.unquote(x) for x in parts)
                    return self._message(server, msgid, params, scope)
                raise ApiError(404, f"no such endpoint: {path}")
            except ApiError as exc:
                extra = {"WWW-Authenticate": 'Bearer realm="eximtrack"'} if exc.status == 401 else None
                self._json(exc.status, {"error": exc.message}, extra)
            except q.BadRequest as exc:
                self._json(400, {"error": str(exc)})
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception:
                traceback.print_exc(file=sys.stderr)
                try:
                    self._json(500, {"error": "internal error (see the server log)"})
                except Exception:
                    pass

        # -- static ------------------------------------------------------------------------------------
        def _static(self, name: str) -> None:
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ApiError(404, "no such file")
            file = STATIC_DIR / name
            if not file.is_file():
                raise ApiError(404, "no such file")
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript",):
                ctype += "; charset=utf-8"
            self._send(200, file.read_bytes(), ctype, {"Cache-Control": "no-cache"})

        # -- API ---------------------------------------------------------------------------------------
        def _search(self, params, scope) -> None:
            with_total = False
            if "with_total" in params:
                with_total = q.parse_flag("with_total", params["with_total"][-1])
            sq = q.build_search_query(params, scope, app.codec)
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
                csql, cparams = sq.count()
                payload["total"] = int(app.query(csql, cparams).result_rows[0][0])
            self._json(200, payload)

        def _csv(self, params, scope) -> None:
            sq = q.build_search_query(params, scope, None, csv=True)  # 400 before the first byte
            self.send_response(200)
            self.send_header("Content-Type", "text/csv; charset=utf-8")
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            self.send_header("Content-Disposition", f'attachment; filename="eximtrack-{stamp}.csv"')
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self._common_headers()
            self.end_headers()
            self.close_connection = True
            if self.command == "HEAD":
                return
            buf = io.StringIO()
            writer = csv.writer(buf)

            def flush():
                self.wfile.write(buf.getvalue().encode("utf-8"))
                buf.seek(0)
                buf.truncate()

            if app.stream_exports:
                sql, bound = sq.page(None, None)
                with app.lock:
                    names, rows = app.store.stream(sql, bound, readonly=True)
                    writer.writerow(names)
                    for n, row in enumerate(rows, 1):
                        writer.writerow(["" if v is None else _jsonable(v) for v in row])
                        if n % 2000 == 0:
                            flush()
                    flush()
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
                flush()
                if len(rows) < CSV_PAGE_ROWS:
                    break
                keys = sq.cursor_keys(rows[-1])

        def _stats(self, params, scope) -> None:
            request, groups = q.build_stats_query(params, scope)
            names, rows = request.run(app.run)
            rows, more = stats.trim(rows, request.top)
            self._json(200, {"groupby": groups, "rows": _dict_rows(names, rows), "more": more})

        def _servers(self, params, scope) -> None:
            if params:
                raise ApiError(400, f"unknown parameter(s): {', '.join(sorted(params))}")
            bound: dict = {}
            cond = q.scope_condition(scope, bound)
            sql = (
                "SELECT DISTINCT server FROM latest FINAL"
                + (f" WHERE {cond}" if cond else "")
                + " ORDER BY server"
            )
            result = app.query(sql, bound)
            self._json(200, {"servers": [r[0] for r in result.result_rows]})

        def _message(self, server, msgid, params, scope) -> None:
            if params:
                raise ApiError(400, f"unknown parameter(s): {', '.join(sorted(params))}")
            queries = q.build_message_queries(server, msgid, scope)
            if scope is not None:  # one cheap query answers the 404 of a message that is not the tenant's
                sql, bound = q.build_visible_query(server, msgid, scope)
                if not app.query(sql, bound).result_rows:
                    raise ApiError(404, f"no message {msgid} on server {server}")
            parts = {name: _dict_rows(*result) for name, result in run_show(queries, app.run).items()}
            if not parts["arrival"] and not parts["attempts"] and not parts["lines"]:
                raise ApiError(404, f"no message {msgid} on server {server}")
            self._json(200, {"server": server, "msgid": msgid, **parts})

    return Handler


class Server:
    """The HTTP server around an App (tests start it in-process or through `eximtrack serve`)."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.app = app
        self.httpd = ThreadingHTTPServer((host, port), make_handler(app))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="eximtrack-web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------------------------------
# CLI: `eximtrack serve` and `eximtrack token`


def cmd_serve(args) -> int:
    import signal

    from sinks.clickhouse.store import Store, StoreError

    tokens = TokenStore(args.tokens or default_tokens_path())
    try:
        accounts = tokens.load()
    except AuthError as exc:
        print(f"eximtrack: error: {exc}", file=sys.stderr)
        return 2
    try:
        store = Store.open(args.store)
    except StoreError as exc:
        print(f"eximtrack: error: {exc}", file=sys.stderr)
        return 1
    query_server = None
    if hasattr(store, "client") and store.url.backend == "chdb":
        from sinks.clickhouse.query_server import QueryServer

        query_server = QueryServer(store)
        query_server.start()
    try:
        server = Server(App(store, tokens), args.host, args.port)
    except OSError as exc:
        print(f"eximtrack: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        if query_server:
            query_server.stop()
        return 1
    if not accounts:
        print(
            f"eximtrack serve: warning: no tokens in {tokens.path}: create one with "
            f"`eximtrack token add --role root --name admin --tokens {tokens.path}`",
            file=sys.stderr,
        )
    print(
        f"eximtrack serve: listening on {server.url}/ (store {store.url.display()}, tokens {tokens.path})",
        flush=True,
    )

    def _stop(signum, frame):
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        if query_server:
            query_server.stop()
    return 0


def cmd_token(args) -> int:
    if args.token_command not in ("add", "list", "revoke"):
        print("usage: eximtrack token {add,list,revoke} … (eximtrack token add --help)", file=sys.stderr)
        return 2
    tokens = TokenStore(getattr(args, "tokens", None) or default_tokens_path())
    try:
        if args.token_command == "add":
            token, account = tokens.add(args.role, args.name, args.user, args.reseller, args.address)
            print(token)
            print(
                f"# token {account.id} ({account.role}{': ' + (account.user or account.reseller or account.address) if account.role != 'root' else ''}) "
                f"added to {tokens.path}; it is shown only now",
                file=sys.stderr,
            )
            return 0
        if args.token_command == "list":
            accounts = tokens.load()
            if args.format == "json":
                for a in accounts:
                    print(json.dumps(a.public()))
                return 0
            print(f"{'ID':<9} {'ROLE':<9} {'NAME':<24} {'ACCOUNT':<32} CREATED")
            for a in accounts:
                print(
                    f"{a.id:<9} {a.role:<9} {a.name:<24} {(a.user or a.reseller or a.address or '*'):<32} {a.created}"
                )
            return 0
        if args.token_command == "revoke":
            account = tokens.revoke(args.ident)
            print(f"revoked token {account.id} ({account.name})")
            return 0
    except AuthError as exc:
        print(f"eximtrack: error: {exc}", file=sys.stderr)
        return 2
    return 2


def register(sub) -> None:
    p = sub.add_parser("serve", help="the Track Delivery page and JSON API (HTTP)")
    p.add_argument("--store", metavar="URL", default=None, help="chdb:///path or http://host:8123[/db]")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 = any free port)")
    p.add_argument(
        "--tokens",
        metavar="FILE",
        default=None,
        help="tokens file (default: $EXIMTRACK_TOKENS or ./.eximtrack/tokens.json)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="API tokens of the web app: add, list, revoke")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", parser_class=type(p))
    a = tsub.add_parser("add", help="create a token (printed once)")
    a.add_argument("--role", required=True, choices=("root", "reseller", "user", "webmail"))
    a.add_argument("--name", required=True, help="who or what the token is for")
    a.add_argument("--user", help="cPanel account (role user)")
    a.add_argument("--reseller", help="reseller (role reseller): the owner in /etc/trueuserowners")
    a.add_argument("--address", help="email address (role webmail)")
    lst = tsub.add_parser("list", help="the tokens (never the secrets)")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    r = tsub.add_parser("revoke", help="remove a token")
    r.add_argument("ident", metavar="ID", help="token id (or its unique name)")
    for parser in (a, lst, r):
        parser.add_argument("--tokens", metavar="FILE", default=None, help="tokens file")
    p.set_defaults(func=cmd_token, token_command=None)


__all__ = ["App", "Server", "cmd_serve", "cmd_token", "register"]
