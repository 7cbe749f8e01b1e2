"""A component's operations endpoint: its Prometheus metrics at /metrics, /healthz and /readyz.

The shipper and the sink are threaded programs, so this is the official Prometheus client's own exporter
(`make_wsgi_app` on its threaded WSGI server) with the two probes in front of it: no event loop and no web
framework in the process that runs on every mail server. (The worker serves the same three pages from
faust's web server, the web app from its own routes.)

- /healthz: 200 while the process runs (liveness).
- /readyz: 200 when `ready()` says the component can do its work (the broker or the store answers), else
  503 with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

Readiness = Callable[[], tuple[bool, str]]  # (ready, why not)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's name
        pass  # a scrape every 15 s would flood the journal


def ops_app(registry: CollectorRegistry, ready: Readiness | None = None):
    """The WSGI app: the probes, and the registry's metrics on every other path."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, why = (True, "") if path == "/healthz" or ready is None else ready()
            body = (
                {"status": "ok" if path == "/healthz" else "ready"}
                if ok
                else {"status": "unavailable", "error": why}
            )
            data = json.dumps(body).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        return metrics(environ, start_response)

    return app


class OpsEndpoint:
    """Serves `ops_app` on host:port from a daemon thread; `port` is the bound port (0 picks one)."""

    def __init__(
        self, registry: CollectorRegistry, port: int, host: str = "127.0.0.1", ready: Readiness | None = None
    ) -> None:
        self.httpd = make_server(
            host, port, ops_app(registry, ready), ThreadingWSGIServer, handler_class=QuietHandler
        )
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


__all__ = ["OpsEndpoint", "Readiness", "ops_app"]
