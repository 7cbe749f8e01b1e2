"""`eximtrack serve` (the web app of eximtrack/web/app.py under uvicorn) and `eximtrack token`.

uvicorn is the HTTP server: keep-alive (`--keep-alive` seconds), and on SIGTERM or Ctrl-C a graceful
shutdown — it stops accepting, lets the requests in flight finish (at most `--graceful-timeout` seconds),
then exits. The listening socket is bound before the server starts (eximtrack/uvicorn_server.py), so `--port 0`
can be reported.
With an embedded (chDB) store this process owns the directory, also serves the read-only query endpoint
for the CLI (sinks/clickhouse/query_server.py) and runs one worker process; with a ClickHouse server store,
`--workers N` runs N processes on the same socket (uvicorn's supervisor), sharing one cursor key.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys

from eximtrack.uvicorn_server import UvicornServer, listening_socket, uvicorn_config
from eximtrack.web.app import App, build_asgi
from eximtrack.web.auth import AuthError, TokenStore, default_tokens_path

WORKER_CONFIG_ENV = "EXIMTRACK_SERVE_WORKER"  # how the supervisor hands a worker process its configuration


def configure_logging() -> None:
    """This process's logs on stderr (eximtrack/logs.py: text or JSON lines), with uvicorn's access lines
    ("client - "GET /path HTTP/1.1" 200") and errors."""
    from eximtrack import logs

    logs.configure("serve", logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)


class Server(UvicornServer):
    """An App served by uvicorn (eximtrack/uvicorn_server.py): `serve_forever()` in the main thread (signals:
    graceful shutdown), or `start()`/`stop()` from a background thread (tests)."""

    def __init__(
        self,
        app: App,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        keep_alive: float = 5,
        graceful_timeout: float = 30,
        access_log: bool = False,
    ) -> None:
        self.app = app
        super().__init__(
            build_asgi(app),
            host,
            port,
            keep_alive=keep_alive,
            graceful_timeout=graceful_timeout,
            access_log=access_log,
        )


def worker_app():
    """The ASGI app of one `--workers` process (uvicorn's factory), configured by the supervisor."""
    from sinks.clickhouse.store import Store

    conf = json.loads(os.environ[WORKER_CONFIG_ENV])
    configure_logging()
    app = App(
        Store.open(conf["store"], migrate=False),
        TokenStore(conf["tokens"]),
        bytes.fromhex(conf["cursor_key"]),
        query_workers=conf["query_workers"],
        queue_limit=conf["queue_limit"],
        request_timeout=conf["request_timeout"],
    )
    return build_asgi(app)


def cmd_serve(args) -> int:
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
    embedded = getattr(store.url, "backend", "") == "chdb"
    if args.workers > 1 and embedded:
        print(
            "eximtrack: error: --workers needs a ClickHouse server store: one process owns an embedded "
            "(chDB) store, and other processes query through it",
            file=sys.stderr,
        )
        return 2
    if not accounts:
        print(
            f"eximtrack serve: warning: no tokens in {tokens.path}: create one with "
            f"`eximtrack token add --role root --name admin --tokens {tokens.path}`",
            file=sys.stderr,
        )
    configure_logging()
    limits = {
        "query_workers": args.query_workers,
        "queue_limit": args.queue_limit,
        "request_timeout": args.request_timeout,
    }
    timing = {"keep_alive": args.keep_alive, "graceful_timeout": args.graceful_timeout, "access_log": True}
    if args.workers > 1:
        return _serve_workers(args, store, tokens, limits, timing)
    query_server = None
    if hasattr(store, "client") and embedded:
        from sinks.clickhouse.query_server import QueryServer

        query_server = QueryServer(store)
        query_server.start()
    app = App(store, tokens, **limits)
    try:
        server = Server(app, args.host, args.port, **timing)
    except OSError as exc:
        print(f"eximtrack: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        if query_server:
            query_server.stop()
        return 1
    print(
        f"eximtrack serve: listening on {server.url}/ (store {store.url.display()}, tokens {tokens.path})",
        flush=True,
    )
    try:
        server.serve_forever()  # returns after SIGTERM / Ctrl-C, once the requests in flight are answered
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
        if query_server:
            query_server.stop()
    return 0


def _serve_workers(args, store, tokens: TokenStore, limits: dict, timing: dict) -> int:
    from uvicorn.supervisors import Multiprocess

    from eximtrack.config import resolve_store_url

    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        print(f"eximtrack: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    os.environ[WORKER_CONFIG_ENV] = json.dumps(
        {
            "store": resolve_store_url(args.store),
            "tokens": tokens.path,
            "cursor_key": secrets.token_bytes(32).hex(),
            **limits,
        }
    )
    store.close()
    config = uvicorn_config("eximtrack.web.serve:worker_app", factory=True, workers=args.workers, **timing)
    print(
        f"eximtrack serve: listening on http://{host}:{port}/ ({args.workers} workers, tokens {tokens.path})",
        flush=True,
    )
    Multiprocess(config, sockets=[sock]).run()  # each worker process runs its own uvicorn.Server
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
    p.add_argument("--workers", type=int, default=1,
                   help="server processes on the socket (a ClickHouse server store only; default 1)")  # fmt: skip
    p.add_argument("--query-workers", type=int, default=4, metavar="N",
                   help="query threads per process: requests run their queries there (default 4)")  # fmt: skip
    p.add_argument("--queue-limit", type=int, default=64, metavar="N",
                   help="requests waiting for a query thread at most; more are answered 503 (default 64)")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=60, metavar="SECONDS",
                   help="a request's queries longer than this are answered 504 (default 60)")  # fmt: skip
    p.add_argument("--keep-alive", type=float, default=5, metavar="SECONDS",
                   help="idle keep-alive connections are closed after this (default 5)")  # fmt: skip
    p.add_argument("--graceful-timeout", type=float, default=30, metavar="SECONDS",
                   help="on SIGTERM, wait at most this long for the requests in flight (default 30)")  # fmt: skip
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


__all__ = ["Server", "cmd_serve", "cmd_token", "register", "worker_app"]
