"""eximtrack/broker_probe.py against a real broker and listeners that accept connections and never answer
(a paused broker, a frozen VM), and the pipeline started with such a server first in its bootstrap list."""

from __future__ import annotations

import socket
import time

import pytest

from eximtrack.broker_probe import PROBE_TIMEOUT, answering, split_servers
from eximtrack.devstack import DevStack
from eximtrack.ports import free_port

pytestmark = [pytest.mark.kafka]


def silent_listener() -> socket.socket:
    """A socket that accepts connections (the kernel's backlog) and never answers: a frozen broker."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.fixture
def silent():
    """A `host:port` that accepts connections and never answers."""
    with silent_listener() as sock:
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def silent2():
    with silent_listener() as sock:
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_the_servers_that_answer_in_the_order_given(kafka_bootstrap, silent):
    refused = f"127.0.0.1:{free_port()}"  # nothing listens: the connection is refused at once
    started = time.monotonic()
    got = answering(f"{silent},{refused},{kafka_bootstrap}")
    took = time.monotonic() - started
    assert got == [kafka_bootstrap]
    # once the broker answered, the silent server got the grace, not its whole timeout
    assert took < PROBE_TIMEOUT, took
    assert answering([kafka_bootstrap, silent]) == [kafka_bootstrap]
    assert answering(f" {kafka_bootstrap} , {kafka_bootstrap} ") == [kafka_bootstrap, kafka_bootstrap]


def test_every_server_when_none_answers(silent, silent2):
    # the clients then wait and retry as they are configured to (a cluster still starting)
    assert answering(f"{silent},{silent2}", timeout=0.3) == [silent, silent2]
    assert answering(silent) == [silent]  # one server: nothing to choose, not probed
    assert split_servers("a:1,, b:2 ,") == ["a:1", "b:2"]


@pytest.mark.store
@pytest.mark.slow
def test_a_pipeline_whose_first_bootstrap_server_never_answers_stores(tmp_path, kafka_broker, silent):
    """Every component is given the silent server first. Without the probe the worker either exited at start
    (its topic check's admin client picked the silent server and timed out after 30 s) or, through aiokafka,
    waited 90 s on it before trying the broker; the sink could exit the same way."""
    stack = DevStack(tmp_path / "stack", bootstrap=f"{silent},{kafka_broker.bootstrap}")
    log = tmp_path / "mainlog"
    log.touch()
    try:
        stack.start({"p1": log})
        stack.wait_endpoint()
        with open(log, "a") as fh:
            fh.write(
                "2026-11-30 10:00:00 1pX7aB-000Abc-Q1 <= alice@example.com H=mx.example.com [192.0.2.1] "
                "P=esmtps S=1234 id=probe1@example.com\n"
                "2026-11-30 10:00:01 1pX7aB-000Abc-Q1 => bob@example.net R=dnslookup T=remote_smtp "
                'H=mx.example.net [198.51.100.2] C="250 OK"\n'
                "2026-11-30 10:00:01 1pX7aB-000Abc-Q1 Completed\n"
            )
        deadline = time.monotonic() + 60
        stored = 0.0
        while time.monotonic() < deadline and stored < 1:
            try:
                stored = stack.metrics("sink").get('eximtrack_sink_rows_total{kind="event"}', 0.0)
            except Exception:  # the sink's page not up yet
                pass
            time.sleep(0.5)
        for comp in stack.components.values():
            assert comp.alive(), f"{comp.name} exited:\n{comp.tail()}"
        assert stored >= 1, "nothing stored within 60 s:\n" + stack.components["stream"].tail()
    finally:
        stack.stop()
