"""Create eximtrack's Kafka topics (``schemas.topics``) with explicit partitions, retention and compaction.

Idempotent: a missing topic is created; an existing one is checked. A differing topic-level config is set
back to the value in ``schemas.topics`` (incremental alter, so other settings someone made are kept). A
differing *partition count* is never "fixed": changing it remaps servers to partitions (see
``schemas/topics.py``), so :class:`TopicMismatch` is raised and a human decides.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from eximtrack.broker_probe import client_settings
from schemas.topics import ALL_TOPICS, TopicSpec

log = logging.getLogger(__name__)

# seconds a component's start-up checks against Kafka are tried again before it exits (retry_at_start)
START_RETRY_SECONDS = 60.0

T = TypeVar("T")

# Kafka error code 36: TOPIC_ALREADY_EXISTS -- another process created it between our check and create.
_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class TopicMismatch(RuntimeError):
    """An existing topic has a partition count other than the one the key rule depends on."""


def resolve(
    topics: Iterable[TopicSpec], *, prefix: str = "", replication_factor: int, brokers: int
) -> list[tuple[TopicSpec, int]]:
    """Pure: apply a name prefix and pick per-topic replication and ``min.insync.replicas``.

    With 3+ replicas, ``min.insync.replicas=2`` makes ``acks=all`` survive one broker loss without
    accepting writes held by a single replica; with fewer, it must be 1 or every write would fail.
    """
    if replication_factor > brokers:
        raise ValueError(f"replication factor {replication_factor} > {brokers} broker(s)")
    out = []
    for spec in topics:
        config = dict(spec.config)
        config.setdefault("min.insync.replicas", "2" if replication_factor >= 3 else "1")
        out.append((dataclasses.replace(spec, name=prefix + spec.name, config=config), replication_factor))
    return out


def admin_client(bootstrap: str) -> KafkaAdminClient:
    """An admin client bootstrapped from the servers of `bootstrap` that answer now
    (eximtrack/broker_probe.py): kafka-python would give a randomly picked one its whole bootstrap timeout,
    then fail, and a component that checks its topics at start would exit with a broker frozen."""
    return KafkaAdminClient(**client_settings(bootstrap), client_id="eximtrack-topics")


def cluster_replication_factor(bootstrap: str, admin: KafkaAdminClient | None = None) -> int:
    """The replication factor eximtrack gives its topics on this cluster: min(3, number of brokers).
    `admin`: an existing admin client to use (not closed); otherwise one is opened and closed."""
    client = admin or admin_client(bootstrap)
    try:
        return min(3, len(client.describe_cluster()["brokers"]))
    finally:
        if admin is None:
            client.close()


def ensure_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec] = ALL_TOPICS,
    *,
    prefix: str = "",
    replication_factor: int | None = None,
    timeout_ms: int = 30_000,
    admin: KafkaAdminClient | None = None,
) -> dict[str, str]:
    """Make sure every topic exists as specified; return ``{name: "created" | "ok" | "updated"}``.

    :param bootstrap: ``host:port[,host:port]`` of the cluster.
    :param topics: the specs to ensure (default: all of eximtrack's topics).
    :param prefix: prepended to every name (tests use a unique prefix per test).
    :param replication_factor: default ``min(3, number of brokers)``.
    :param admin: an existing admin client to use (not closed); otherwise one is opened and closed.
    :raises TopicMismatch: an existing topic has a different partition count.
    """
    own = admin is None
    client = admin or admin_client(bootstrap)
    try:
        brokers = len(client.describe_cluster()["brokers"])
        rf = replication_factor or min(3, brokers)
        wanted = resolve(topics, prefix=prefix, replication_factor=rf, brokers=brokers)
        existing = {
            t["name"]: t for t in client.describe_topics([s.name for s, _ in wanted]) if t["error_code"] == 0
        }
        result: dict[str, str] = {}

        missing = [(s, r) for s, r in wanted if s.name not in existing]
        if missing:
            resp = client.create_topics(
                {
                    s.name: {"num_partitions": s.partitions, "replication_factor": r, "configs": s.config}
                    for s, r in missing
                },
                timeout_ms=timeout_ms,
                raise_errors=False,
                wait_for_metadata=False,
            )
            raced = []
            for t in resp["topics"]:
                if t["error_code"] == 0:
                    result[t["name"]] = "created"
                    log.info("created topic %s (%s partitions)", t["name"], t["num_partitions"])
                elif t["error_code"] == _ALREADY_EXISTS:
                    raced.append(t["name"])
                else:
                    raise for_code(t["error_code"])(f"creating topic {t['name']}: {t['error_message']}")
            if raced:
                existing.update({t["name"]: t for t in client.describe_topics(raced) if t["error_code"] == 0})
            created = [n for n, v in result.items() if v == "created"]
            if created:
                client.wait_for_topics(created, timeout_ms=timeout_ms)

        check = [s for s, _ in wanted if s.name in existing and s.name not in result]
        for spec in check:
            have = len(existing[spec.name]["partitions"])
            if have != spec.partitions:
                raise TopicMismatch(
                    f"topic {spec.name} has {have} partitions, eximtrack expects {spec.partitions}; "
                    "changing it would move servers to other partitions (see schemas/topics.py) -- not altered"
                )
        if check:
            described = client.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.config)) for s in check],
                config_filter="all",
            )["topic"]
            to_alter = []
            for spec in check:
                current = described.get(spec.name, {})
                diff = {k: v for k, v in spec.config.items() if current.get(k, {}).get("value") != v}
                if diff:
                    log.warning("topic %s: setting %s", spec.name, diff)
                    to_alter.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, diff))
                    result[spec.name] = "updated"
                else:
                    result[spec.name] = "ok"
            if to_alter:
                client.alter_configs(to_alter, raise_on_unknown=False)
        return result
    finally:
        if own:
            client.close()


def retry_at_start(
    call: Callable[[], T],
    what: str,
    seconds: float = START_RETRY_SECONDS,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """`call()` (a component's start-up check against Kafka: its topics, the replication, a first read) tried
    again while it raises a Kafka error, for up to `seconds`, then that error. A broker that froze after the
    probe, a partition whose leader is moving after a broker's loss: a request then times out (seen: the 3-node
    test's worker exited at start, `RequestTimedOutError` after 10 s, with a node just frozen). `call` makes its
    clients itself, so each try bootstraps anew from the servers that answer."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return call()
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                raise
            delay = min(5.0, 0.5 * 2**attempt)
            attempt += 1
            log.warning("%s failed (%r); trying again in %.1f s", what, exc, delay)
            sleep(delay)
