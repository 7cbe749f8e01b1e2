"""Fixtures for the integration tier: one real Kafka 4.x broker per test session.

The broker is fetched with Maven into the user cache (``$EXIMTRACK_CACHE``, see eximtrack/local_broker.py)
and started in a session tmp dir. A failed fetch or start FAILS the tests that need it -- it never skips
them, because a silently skipped integration tier looks exactly like a green one.
Tests stay hermetic by using a fresh topic (``unique_topic``) and consumer group per test.
"""

from __future__ import annotations

import uuid

import pytest

from eximtrack.local_broker import BrokerError, LocalBroker, fetch


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A running local broker (``.bootstrap`` is "127.0.0.1:PORT"), stopped at the end of the session."""
    try:
        fetch()
    except BrokerError as exc:
        pytest.fail(f"could not fetch the Kafka broker jars: {exc}", pytrace=False)
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), die_with_parent=True)
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"could not start the local Kafka broker: {exc}", pytrace=False)
    print(
        f"\nlocal Kafka {broker.version} at {broker.bootstrap}: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in broker.timings.items())
    )
    try:
        yield broker
    finally:
        code = broker.stop()
        print(f"\nlocal Kafka stopped (exit {code})")


@pytest.fixture
def kafka_bootstrap(kafka_broker: LocalBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic name nobody else in the session uses (tests create it or let the broker auto-create it)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"test.{stem}.{uuid.uuid4().hex[:8]}"
