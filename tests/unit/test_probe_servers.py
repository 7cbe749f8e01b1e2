"""eximtrack/broker_probe.py's pure parts: how a bootstrap server is read, and which servers `answering` keeps
(the probe itself replaced; the real one runs in tests/integration/test_broker_probe.py)."""

from __future__ import annotations

import time

from eximtrack import broker_probe


def test_a_server_without_a_port_is_asked_on_kafkas_port(monkeypatch):
    asked = []
    monkeypatch.setattr(broker_probe, "metadata_brokers", lambda h, p, t: asked.append((h, p)) or [(1, h, p)])
    for server in ("kafka1", "kafka1:9093", "[::1]:9094", "::1", "127.0.0.1:1"):
        assert broker_probe.answers(server)
    assert asked == [("kafka1", 9092), ("kafka1", 9093), ("::1", 9094), ("::1", 9092), ("127.0.0.1", 1)]


def test_answering_keeps_the_order_given_and_waits_only_a_grace_for_the_slow(monkeypatch):
    delays = {"a:1": None, "b:2": 0.0, "c:3": 0.05, "d:4": 5.0}  # None: refuses at once; 5 s: frozen

    def answers(server, timeout):
        delay = delays[server]
        if delay is None:
            return False
        time.sleep(min(delay, timeout))
        return delay <= timeout

    monkeypatch.setattr(broker_probe, "answers", answers)
    started = time.monotonic()
    assert broker_probe.answering("d:4,c:3,a:1,b:2", timeout=3.0, grace=0.3) == ["c:3", "b:2"]
    assert time.monotonic() - started < 2.0  # the frozen one got the grace, not the timeout
    monkeypatch.setattr(broker_probe, "answers", lambda server, timeout: False)
    assert broker_probe.answering(["a:1", "b:2"]) == ["a:1", "b:2"]  # none answers: all, as given
