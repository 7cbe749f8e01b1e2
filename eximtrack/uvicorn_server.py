"""An ASGI app served by uvicorn on a socket bound before it starts: the web app (`eximtrack serve`) and the
embedded store's query endpoint (sinks/clickhouse/query_server.py) both run this way.

Binding first gives the real port at once (`--port 0`), and connections queue from then on. In the main
thread SIGTERM or Ctrl-C starts uvicorn's graceful shutdown (stop accepting, finish the requests in flight
within `graceful_timeout`); from another thread `start()`/`stop()` do the same.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import uvicorn


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from now on, even before the server accepts them
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app, *, keep_alive: float = 5, graceful_timeout: float = 30, access_log: bool = False, **extra
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # the process's own logging (eximtrack/logs.py), not uvicorn's stdout handlers
        log_level="warning",
        access_log=access_log,
        timeout_keep_alive=int(keep_alive),
        timeout_graceful_shutdown=int(graceful_timeout),
        server_header=False,
        **extra,
    )


class UvicornServer:
    """`asgi` under uvicorn on host:port (0: any free port), bound at construction."""

    def __init__(self, asgi, host: str = "127.0.0.1", port: int = 0, **config) -> None:
        self.sock = listening_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.uvicorn = uvicorn.Server(uvicorn_config(asgi, **config))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until SIGTERM or SIGINT (in the main thread) or stop(); a signal's graceful shutdown ends
        here with a normal return (uvicorn raises the signal again once done, to the handler set here)."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self.sock.close()
            if main:
                signal.signal(signal.SIGTERM, previous)

    def start(self) -> None:
        """serve_forever() in a daemon thread; returns once the server accepts."""
        self._thread = threading.Thread(target=self.serve_forever, name="uvicorn", daemon=True)
        self._thread.start()
        while not self.uvicorn.started and self._thread.is_alive():
            time.sleep(0.01)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self._thread:
            self._thread.join(timeout=60)


__all__ = ["UvicornServer", "listening_socket", "uvicorn_config"]
