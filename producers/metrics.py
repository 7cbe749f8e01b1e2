"""The shipper's Prometheus endpoint: a few named numbers, served as text by the standard library.

Counters and gauges live in one :class:`ShipMetrics` (thread-safe: the HTTP thread reads while the
shipping loop writes). Names (all labelled with ``server``):

- ``lines_shipped_total``        lines acknowledged by Kafka (``acks=all``)
- ``bytes_behind``               bytes of the log not yet acknowledged: unread + read-but-in-flight
- ``reconnects_total``           times the shipper lost the broker and got it back
- ``checkpoint_offset``          offset in the checkpointed file (the resume point after a crash)
- ``lines_truncated_total``      lines longer than the cap (the rest of the line was dropped)
- ``rotations_total``, ``truncations_total``  log rotations seen (rename, copytruncate)
- ``inflight_records``           records sent, not yet acknowledged
- ``accounts_sent_total``        account-map snapshots acknowledged
- ``broker_up``                  1 while the last delivery or metadata request succeeded

``python -m`` is not needed: :func:`serve` starts a daemon thread and returns the server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HELP = {
    "lines_shipped_total": ("counter", "Log lines acknowledged by Kafka."),
    "bytes_behind": ("gauge", "Bytes of the log not yet acknowledged by Kafka (unread plus in flight)."),
    "reconnects_total": ("counter", "Times the broker was lost and reached again."),
    "checkpoint_offset": ("gauge", "Byte offset stored in the checkpoint."),
    "lines_truncated_total": ("counter", "Lines longer than the cap; the rest of each was dropped."),
    "rotations_total": ("counter", "Rename rotations of the log seen."),
    "truncations_total": ("counter", "Truncations (copytruncate) of the log seen."),
    "inflight_records": ("gauge", "Records sent and not yet acknowledged."),
    "accounts_sent_total": ("counter", "Account-map snapshots acknowledged by Kafka."),
    "broker_up": ("gauge", "1 if the broker answered recently, else 0."),
}


class ShipMetrics:
    """The numbers above for one server; ``set``/``inc`` from any thread, ``render`` for Prometheus."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._values: dict[str, float] = dict.fromkeys(_HELP, 0.0)

    def set(self, name: str, value: float) -> None:
        if name not in _HELP:
            raise KeyError(name)
        with self._lock:
            self._values[name] = float(value)

    def inc(self, name: str, by: float = 1.0) -> None:
        if name not in _HELP:
            raise KeyError(name)
        with self._lock:
            self._values[name] += by

    def get(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def render(self) -> str:
        label = self.server.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out = []
        for name, value in self.snapshot().items():
            kind, text = _HELP[name]
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            num = repr(int(value)) if value == int(value) else repr(value)
            out.append(f'{name}{{server="{label}"}} {num}')
        return "\n".join(out) + "\n"


def serve(metrics: ShipMetrics, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` (and ``/``) on ``host:port`` from a daemon thread; ``.shutdown()`` to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404)
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # scrapes every 15 s would flood the journal

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
