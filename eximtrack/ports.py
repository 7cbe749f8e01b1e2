"""Local TCP ports for the processes eximtrack starts on this machine: a local Kafka broker's listener and
controller, the dev stack's metrics and web ports (and the test suite's real-Exim daemon).

A port the kernel picks (a bind to port 0) lies in its ephemeral range, the range it also hands to every
outgoing connection as its local port. Between being named and being bound by the process told to use it, such
a port can be taken by any client connecting meanwhile (seen in the test suite: the port the real-Exim
harness had named for its daemon was taken before Exim bound it). `free_port` picks below that range
instead, at random among ports that bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default, where the file cannot be read
POOL_SIZE = 12_000  # ports below the ephemeral range free_port picks from
LOWEST_PORT = 10_000  # ... never below this one (well-known and registered services)
TRIES = 50


def ephemeral_ports() -> range:
    """The kernel's local ports for outgoing connections."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        low, high = DEFAULT_EPHEMERAL
    return range(low, high + 1)


def port_free(port: int, reuse: bool = False) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now. `reuse`: as the JVM binds a server socket
    (SO_REUSEADDR), so that connections of a previous run in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that binds now, below the ephemeral range where there is room (else one the kernel
    picks)."""
    start = ephemeral_ports().start
    pool = range(max(LOWEST_PORT, start - POOL_SIZE), start)
    for port in random.sample(pool, min(len(pool), TRIES)):
        if port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = ["ephemeral_ports", "free_port", "port_free"]
