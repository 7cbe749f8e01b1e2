"""Fixtures for the integration tier: one real Kafka 4.x broker per test session.

The broker is fetched with Maven into the user cache (``$EXIMTRACK_CACHE``, see eximtrack/local_broker.py)
and started in a session tmp dir. A failed fetch or start FAILS the tests that need it -- it never skips
them, because a silently skipped integration tier looks exactly like a green one.
Tests stay hermetic by using a fresh topic (``unique_topic``) and consumer group per test.

Where a Docker engine answers (a developer's laptop, a CI with Docker), the session broker is Apache Kafka's
own image started with testcontainers instead (``EXIMTRACK_TEST_DOCKER=0`` forces the local broker), and
``clickhouse_server_url`` starts a ClickHouse server container; without Docker it uses
``$EXIMTRACK_TEST_CLICKHOUSE_URL`` when given. This machine has no Docker engine: the local broker runs.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from eximtrack.local_broker import BrokerError, LocalBroker, fetch
from eximtrack.ports import free_port

KAFKA_IMAGE = "apache/kafka:4.1.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:26.9"


def index_reads(store, index: str, where: str, params: dict) -> tuple[str, str]:
    """The `Parts: …` and `Granules: …` lines EXPLAIN gives search_time's skip index `index` for a read of
    search_time `WHERE <where>`: what it leaves to read ('', '' when the plan does not use it)."""
    plan = [r[0].strip() for r in store.query(
        f"EXPLAIN indexes = 1 SELECT ts FROM search_time WHERE {where}", params
    ).result_rows]  # fmt: skip
    if f"Name: {index}" not in plan:
        return "", ""
    after = plan[plan.index(f"Name: {index}") :]
    parts = next(line for line in after if line.startswith("Parts:"))
    granules = next(line for line in after if line.startswith("Granules:"))
    return parts, granules


def grams_index_reads(store, value: str) -> tuple[str, str]:
    """index_reads of search_time's trigram index (migration 024) for `text LIKE '%value%'`."""
    from eximtrack.search_plan import GRAMS_INDEX

    return index_reads(store, GRAMS_INDEX, "text LIKE {v:String}", {"v": f"%{value}%"})


def docker_available() -> bool:
    """A Docker engine answers (not only the client binary)."""
    if os.environ.get("EXIMTRACK_TEST_DOCKER") == "0":
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


class DockerKafka:
    """Apache Kafka 4.x (KRaft, single node) in a testcontainers container; same surface as LocalBroker."""

    version = KAFKA_IMAGE.split(":")[1]

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        port = free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.timings: dict[str, float] = {}
        self.container = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(9092, port)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        )

    def start(self) -> DockerKafka:
        from eximtrack.broker_probe import metadata_brokers

        t0 = time.monotonic()
        self.container.start()
        host, port = self.bootstrap.split(":")
        deadline = time.monotonic() + 120
        while True:
            try:
                if metadata_brokers(host, int(port)):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrokerError("the Kafka container did not answer in 120 s")
            time.sleep(0.5)
        self.timings["ready"] = time.monotonic() - t0
        return self

    def stop(self) -> int:
        self.container.stop()
        return 0


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    """A running broker (``.bootstrap`` is "127.0.0.1:PORT"), stopped at the end of the session."""
    if docker_available():
        broker = DockerKafka()
        try:
            broker.start()
        except Exception as exc:
            pytest.fail(f"could not start the Kafka container: {exc}", pytrace=False)
        try:
            yield broker
        finally:
            broker.stop()
        return
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


@pytest.fixture(scope="session")
def clickhouse_server_url():
    """http://user:pass@host:port of a real ClickHouse server: $EXIMTRACK_TEST_CLICKHOUSE_URL, or a
    testcontainers ClickHouse where Docker answers. Without either, the server-backend tests cannot run on
    this machine and are reported as skipped (the chDB backend, same code path, is tested everywhere)."""
    url = os.environ.get("EXIMTRACK_TEST_CLICKHOUSE_URL")
    if url:
        yield url
        return
    if not docker_available():
        pytest.skip("no ClickHouse server: set EXIMTRACK_TEST_CLICKHOUSE_URL or provide a Docker engine")
    from testcontainers.community.clickhouse import ClickHouseContainer

    with ClickHouseContainer(CLICKHOUSE_IMAGE, username="eximtrack", password="test-only") as ch:
        port = ch.get_exposed_port(8123)
        yield f"http://eximtrack:test-only@{ch.get_container_host_ip()}:{port}"


@pytest.fixture(scope="session")
def clickhouse_cluster_url():
    """http://user:pass@host:port?cluster=NAME of one node of a real ClickHouse cluster (its remote_servers
    entry NAME, with {shard}/{replica} macros and Keeper; deploy/clickhouse/ starts one):
    $EXIMTRACK_TEST_CLICKHOUSE_CLUSTER_URL. Without it the cluster tests are reported as skipped (the cluster
    schema is parsed and applied as one shard in chDB everywhere: test_cluster_schema.py)."""
    url = os.environ.get("EXIMTRACK_TEST_CLICKHOUSE_CLUSTER_URL")
    if not url or "cluster=" not in url:
        pytest.skip("no ClickHouse cluster: set EXIMTRACK_TEST_CLICKHOUSE_CLUSTER_URL=http://…?cluster=NAME")
    return url
