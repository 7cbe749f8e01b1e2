"""Which Kafka bootstrap servers answer: one Metadata request each, on Kafka's wire, with a short timeout.

Why: a broker that accepts connections and never answers (paused, a frozen VM, a blackholed host) holds or
fails a client that bootstraps from it, and both client libraries do bootstrap from it.
- kafka-python 3 picks one bootstrap server at random and gives that one attempt the whole of
  `bootstrap_timeout_ms` (30 s by default), then raises `KafkaTimeoutError`: the topic check a component
  runs at start, a worker's accounts reader, a sink's producer.
- aiokafka (under faust) tries the servers in the order given, each for its request timeout (faust's
  `broker_request_timeout`, 90 s).

So the components ask first (:func:`answering`) and hand the clients the servers that answered, in the
order given; when none answers, all of them, and the clients' own timeouts and retries decide as before.
Once bootstrapped, a client works from the cluster's metadata, which a fenced broker leaves. Until it is
fenced, a frozen broker is still in that metadata: kafka-python then gives a connection to it 10 s to set up
(`socket_connection_setup_timeout_ms`), eximtrack's clients :data:`CONNECTION_SETUP_TIMEOUT_MS`
(:func:`client_settings`).

The probe is hand-written so that starting and probing a broker needs no client library (also used by
eximtrack/local_broker.py to see a broker it started come up).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import partial

# seconds a server may take to answer the probe when none has answered yet (a broker still starting)
PROBE_TIMEOUT = 3.0
# seconds the others get once one server has answered: a live broker answers in milliseconds, even busy
ANSWER_GRACE = 0.5
# milliseconds a kafka-python client gives a new connection to one broker (its TCP connect and ApiVersions
# exchange) before dropping it and trying another; kafka-python's default is 10 s. A broker frozen and not yet
# fenced is still in the metadata a client bootstraps from: the 3-node test's worker, restarted 5 s after a
# freeze, picked it for its topic check and waited the 10 s in 4 of 14 runs.
CONNECTION_SETUP_TIMEOUT_MS = 3_000


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Send one Metadata v4 request (all topics) and return the brokers it lists as (id, host, port).

    Metadata v4 is in the range every 4.x broker serves (4.0 briefly dropped v0-v3 and brought them back,
    apache/kafka#18716; v4 was never affected). Request header v1, response header v0: both non-flexible.
    """
    client_id = b"eximtrack-probe"
    body = struct.pack(">i", -1) + b"\x00"  # topics = null (all), allow_auto_topic_creation = false
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    req = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(req)) + req)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    pos = 4 + 4  # correlation id, throttle_time_ms
    (n,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    brokers = []
    for _ in range(max(n, 0)):
        node_id, hlen = struct.unpack_from(">ih", resp, pos)
        pos += 6
        bhost = resp[pos : pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", resp, pos)
        pos += 6 + max(rlen, 0)
        brokers.append((node_id, bhost, bport))
    return brokers


def split_servers(brokers: str | Sequence[str]) -> list[str]:
    """`host:port[,host:port…]` (or a list of them) as a list of non-empty `host:port` strings."""
    items = brokers.split(",") if isinstance(brokers, str) else list(brokers)
    return [b.strip() for b in items if b.strip()]


def answers(server: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether `server` (`host[:port]`, Kafka's 9092 when no port is given) answers a Metadata request within
    `timeout` seconds."""
    host, sep, port = server.rpartition(":")
    if not sep or host.endswith(":") or not port.isdigit():  # "kafka1", or an IPv6 address without a port
        host, port = server, "9092"
    try:
        return bool(metadata_brokers(host.strip("[]"), int(port), timeout))
    except (OSError, ValueError, struct.error):
        return False


def answering(
    brokers: str | Sequence[str], timeout: float = PROBE_TIMEOUT, grace: float = ANSWER_GRACE
) -> list[str]:
    """The bootstrap servers of `brokers` that answer a Metadata request, in the order given; every server
    when none answers (a cluster still starting, a network down: the clients wait and retry as configured).

    All are asked at once. Once one has answered, the others get `grace` seconds more: a live broker answers
    in milliseconds, so the wait is bounded by the fastest answer plus `grace` (at most `timeout` when none
    answers), not by the frozen server's timeout."""
    servers = split_servers(brokers)
    if len(servers) <= 1:
        return servers
    pool = ThreadPoolExecutor(max_workers=len(servers))
    try:
        futures = {pool.submit(answers, s, timeout): s for s in servers}
        good: set[str] = set()
        deadline = time.monotonic() + timeout
        pending = set(futures)
        while pending:
            done, pending = wait(
                pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if not done:
                break
            for f in done:
                if f.result():
                    good.add(futures[f])
                    deadline = min(deadline, time.monotonic() + grace)
    finally:
        pool.shutdown(wait=False)  # a probe left waiting ends at its own timeout
    return [s for s in servers if s in good] or servers


def client_settings(brokers: str | Sequence[str], timeout: float = PROBE_TIMEOUT) -> dict:
    """Settings of a kafka-python client (admin, consumer or producer) that a frozen broker holds for seconds,
    not for kafka-python's timeouts: bootstrapped from the servers of `brokers` that answer now
    (:func:`answering`), and a connection to a broker that never answers given up after
    CONNECTION_SETUP_TIMEOUT_MS (through `kafka_client`: the clients take the setting only there)."""
    from kafka import KafkaAdminClient

    network_client = KafkaAdminClient.DEFAULT_CONFIG["kafka_client"]  # the one all three clients default to
    return {
        "bootstrap_servers": answering(brokers, timeout),
        "kafka_client": partial(
            network_client, socket_connection_setup_timeout_ms=CONNECTION_SETUP_TIMEOUT_MS
        ),
    }
