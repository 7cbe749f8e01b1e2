"""A 3-broker KRaft cluster (`eximtrack broker start --nodes 3`): topics get 3 replicas and
min.insync.replicas 2, and the pipeline survives SIGKILLs of brokers — the active controller first — while
three servers' logs are shipped, and the worker and the sink restarted while a broker is frozen work again
within seconds: the store equals a direct `eximtrack ingest` of the same input and the generator's truth,
nothing lost or doubled. The longest pause in stored events after each kill is printed.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import RequestTimedOutError

from eximtrack.broker_probe import CONNECTION_SETUP_TIMEOUT_MS, client_settings
from eximtrack.devstack import DevStack
from eximtrack.local_broker import LocalCluster
from tests.integration.test_pipeline import COUNTS, HISTORY, rows, wait_for
from tests.reliability.test_chaos import GeneratedFleet

pytestmark = [pytest.mark.kafka, pytest.mark.store, pytest.mark.slow, pytest.mark.alone]


def append_paced(src, dst, measured: threading.Event, seconds: float = 150, step: float = 0.5) -> None:
    """Append src to dst a little at a time, spread over `seconds`, until `measured` is set; then the rest at
    once. The kills and their measurements happen while mail flows, however long a broker takes to restart on
    a slow machine, and the test does not wait out the pacing once they are done."""
    lines = src.read_text().splitlines(keepends=True)
    per_step = max(1, int(len(lines) * step / seconds))
    i = 0
    while i < len(lines) and not measured.is_set():
        with open(dst, "a") as fh:
            fh.writelines(lines[i : i + per_step])
        i += per_step
        measured.wait(step)
    with open(dst, "a") as fh:
        fh.writelines(lines[i:])


def stored_rows(stack: DevStack) -> float:
    try:
        return stack.metrics("sink").get('eximtrack_sink_rows_total{kind="event"}', 0.0)
    except Exception:  # the sink restarting: no answer
        return -1.0


def sink_ready(stack: DevStack) -> bool:
    try:
        return stack.probe("sink", "/readyz")[0] == 200
    except OSError:  # the sink starting: no answer yet
        return False


def stream_lines(stack: DevStack) -> float:
    try:
        return stack.metrics("stream").get("eximtrack_stream_lines_total", 0.0)
    except Exception:  # the worker starting: no answer yet
        return -1.0


def test_broker_kills_and_a_frozen_broker_in_a_three_node_cluster_lose_and_double_nothing(tmp_path):
    fleet = GeneratedFleet.make(tmp_path, "kc", n_rounds=5, salt=70)
    sources, want, want_history = fleet.sources, fleet.want, fleet.want_history

    cluster = LocalCluster(tmp_path / "kafka", 3, die_with_parent=True).start()
    stack = DevStack(tmp_path / "stack", bootstrap=cluster.bootstrap)
    live = {server: tmp_path / f"live-{server}.log" for server in sources}
    for p in live.values():
        p.touch()
    pauses: list[tuple[int, float]] = []
    measured = threading.Event()
    try:
        stack.start(live)
        stack.wait_endpoint()
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        raw = stack.prefix + "eximtrack.raw-lines"
        (topic,) = admin.describe_topics([raw])
        assert {len(p["replica_nodes"]) for p in topic["partitions"]} == {3}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, raw)])
        assert configs["topic"][raw]["min.insync.replicas"]["value"] == "2"
        admin.close()

        writers = [
            threading.Thread(target=append_paced, args=(sources[s][0], live[s], measured)) for s in live
        ]
        for w in writers:
            w.start()
        rng = random.Random(11)
        victims = [cluster.controller() or 1]
        victims.append(rng.choice([n for n in cluster.nodes if n != victims[0]]))
        for victim in victims:
            time.sleep(3.0)
            before = stored_rows(stack)
            t0 = time.monotonic()
            cluster.kill(victim)
            # the longest the stored events stood still in the 15 s after the kill, mail flowing all along
            last, last_change, longest = before, t0, 0.0
            while time.monotonic() - t0 < 15:
                now_rows = stored_rows(stack)
                if now_rows > last:
                    longest = max(longest, time.monotonic() - last_change)
                    last, last_change = now_rows, time.monotonic()
                time.sleep(0.2)
            longest = max(longest, time.monotonic() - last_change)
            assert any(w.is_alive() for w in writers), (
                "the input ended before the measurement: pace it slower"
            )
            pauses.append((victim, round(longest, 1)))
            cluster.restart(victim)
        # A frozen broker (SIGSTOP: accepts connections, answers nothing), the first bootstrap server, which
        # aiokafka tries first and kafka-python picks a third of the time; fenced after 3 s. The worker and
        # then the sink are SIGKILLed and started again meanwhile: the worker processes lines again, the sink
        # is ready (Kafka answered its round) within seconds. Before eximtrack/broker_probe.py the worker exited
        # at start (a topic check's admin client bootstrapped from the frozen node and timed out), or waited
        # out faust's 30 s CreateTopics of its existing topics. (Requests the running clients had in flight to
        # the frozen node wait out their timeouts: docs/GUARANTEES.md, known limits.)
        time.sleep(3.0)
        first_port = int(cluster.bootstrap.split(",")[0].rsplit(":", 1)[1])
        frozen = next(n for n, (port, _) in cluster.layout.ports.items() if port == first_port)
        cluster.pause(frozen)
        try:
            time.sleep(5.0)  # fenced: its partitions and groups moved to the two others
            stack.components["stream"].kill()
            stack.components["stream"].start()
            t0 = time.monotonic()
            before = None
            while time.monotonic() - t0 < 60:
                lines = stream_lines(stack)
                if before is None and lines >= 0:
                    before = lines
                elif before is not None and lines > before:
                    break
                time.sleep(0.2)
            worker_back = time.monotonic() - t0
            if worker_back > 10:  # where the restart's time went (its log: start-up checks, recovery)
                print(f"\nthe worker restarted processed again after {worker_back:.1f} s; its log:")
                print(stack.components["stream"].tail(60))
            assert stack.components["stream"].alive(), stack.components["stream"].tail()
            stack.components["sink"].kill()
            stack.components["sink"].start()
            t0 = time.monotonic()
            while not sink_ready(stack) and time.monotonic() - t0 < 60:
                time.sleep(0.2)
            sink_back = time.monotonic() - t0
            assert stack.components["sink"].alive(), stack.components["sink"].tail()
            assert any(w.is_alive() for w in writers), (
                "the input ended before the measurement: pace it slower"
            )
        finally:
            cluster.resume(frozen)
        measured.set()
        for w in writers:
            w.join()
        for comp in stack.components.values():
            assert comp.alive(), f"{comp.name} died:\n{comp.tail()}"
        got = wait_for(stack, want, timeout=300)
        print(
            f"\ncluster: killed brokers {victims} (controller first); longest pause in stored events: {pauses}; "
            f"broker {frozen} frozen: the worker restarted processed again after {worker_back:.1f} s, the sink "
            f"restarted was ready after {sink_back:.1f} s"
        )
        assert got == want
        assert max(p for _, p in pauses) < 15, pauses  # stored events flowed again within the window
        # the worker's topic check at start may pick the frozen node (not yet fenced, so in the metadata): its
        # connection is given up after broker_probe.CONNECTION_SETUP_TIMEOUT_MS and the check tried again at
        # once (retry_at_start). With kafka-python's 10 s a restart took 14.7-19.3 s in 4 of 14 runs; before
        # broker_probe the worker exited, or waited out faust's 30 s
        assert worker_back < 15 and sink_back < 15, (worker_back, sink_back)
        counts = rows(stack.sql(COUNTS))[0]
        assert counts["latest_rows"] == counts["distinct_rows"] == len(want)
        # The event history: nothing doubled, nothing invented, no version other than the oracle's. The worker
        # is SIGKILLed while a frozen broker still holds its acks=all sends (until it leaves the ISR), so the
        # output of its last lines may be lost while its local tables hold them: their replay re-emits each
        # message's rows as they are now, and an intermediate event of that window (a placeholder replaced
        # within it) may be missing from the history, the documented limit (docs/GUARANTEES.md, known limits;
        # seen in 1 of 11 runs alone: 7 placeholder events of 2,605; 1-5 in runs beside another). The rows
        # above are exact.
        history = rows(stack.sql(HISTORY))
        got_events, want_events = ({tuple(e.values()) for e in h} for h in (history, want_history))
        assert len(got_events) == len(history) and got_events <= want_events, sorted(got_events - want_events)
        missing = sorted(want_events - got_events)
        print(f"history: {len(history)} events, {len(missing)} of the replay window missing")
        assert len(missing) <= len(want_history) // 50 and all(t != "rejected" for *_, t in missing), missing
        fleet.assert_truth(got)
        stack.stop()
        # the nodes stop together, each by its own controlled shutdown. A controlled shutdown needs a
        # controller quorum to approve it: a node slower than the others (a busy machine) can find the other
        # two gone and is then left to the SIGKILL (seen once, in session (39)'s test run). Stopped one after
        # another, the last node always was (LocalCluster.stop); two left to it would mean they no longer
        # stop together.
        codes = cluster.stop()
        assert set(codes) == set(cluster.nodes) and None not in codes.values(), codes
        assert list(codes.values()).count(-signal.SIGKILL) <= 1, codes
        assert not any(node.running() for node in cluster.nodes.values())
    finally:
        measured.set()
        stack.stop()
        cluster.stop()


def test_a_client_gives_up_a_connection_to_a_frozen_broker_in_seconds(tmp_path):
    """A broker frozen and not yet fenced is still in the cluster's metadata, so a client may pick it for a
    request: kafka-python gives the new connection 10 s to set up (the 3-node test's worker, restarted 5 s
    after a freeze, waited them for its topic check in 4 of 14 runs; this request took 30 s). eximtrack's clients
    (broker_probe.client_settings) give it CONNECTION_SETUP_TIMEOUT_MS. A broker's own configs are asked of
    that broker, so the request goes to the frozen node whatever the client would pick. The client that asks
    is made after the freeze and asks nothing before, so it has no connection to that node yet: one opened
    before would wait for the request's own timeout instead (30 s), and a request of its own choosing (e.g.
    `describe_cluster`) may go to the frozen node too."""
    cluster = LocalCluster(tmp_path / "kafka", 3, die_with_parent=True).start()
    try:
        live, frozen = 1, 3
        boot = f"127.0.0.1:{cluster.layout.ports[live][0]}"
        first = KafkaAdminClient(**client_settings(boot))
        try:
            assert len(first.describe_cluster()["brokers"]) == 3  # the metadata lists the node to be frozen
        finally:
            first.close()
        cluster.pause(frozen)
        admin = KafkaAdminClient(**client_settings(boot))
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimedOutError):
                admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(frozen))])
            took, limit = time.monotonic() - started, CONNECTION_SETUP_TIMEOUT_MS / 1000
            assert limit - 0.5 < took < limit + 2, took  # kafka-python's own settings: 30 s here
            described = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(live))])
            assert str(live) in described["broker"]  # the client goes on with the live brokers
        finally:
            admin.close()
    finally:
        cluster.resume(frozen)
        cluster.stop()


def test_a_sink_whose_group_coordinator_freezes_mid_rebalance_stores_again(tmp_path):
    """The group's coordinator paused (SIGSTOP: a frozen VM) just as a second member makes the sink's group
    rebalance: kafka-python kept sending its JoinGroup to the paused node, kept its old partitions and got
    nothing from them, for as long as the node stayed paused (over 5 min, measured). The sink's group watch
    sees records waiting and none consumed for `group_timeout`, makes its consumer anew, which finds the new
    coordinator, and stores again. Since the clients give a connection 3 s to set up
    (broker_probe.client_settings), the consumer sometimes finds the new coordinator itself (its coordinator
    marked dead, its FindCoordinator to the paused node given up after the 3 s): 1 or 2 of 8 runs. Either way the
    sink stores again."""
    import uuid

    from kafka import KafkaConsumer, KafkaProducer

    from producers.topics import ensure_topics
    from schemas import topics as T
    from schemas.records import DeliveryEvent, dumps_json
    from sinks.clickhouse.sink import Sink
    from sinks.clickhouse.store import Store, current_chdb_path

    cluster = LocalCluster(tmp_path / "kafka", 3, die_with_parent=True).start()
    paused: list[int] = []
    going = threading.Event()
    going.set()
    sink = runner = producer = None
    try:
        boot = cluster.bootstrap
        prefix = f"frz-{uuid.uuid4().hex[:6]}."
        ensure_topics(boot, prefix=prefix)
        path = current_chdb_path() or str(tmp_path / "store")
        store = Store.open(f"chdb://{path}?database=frz_{uuid.uuid4().hex[:8]}")
        sink = Sink(
            store, boot, prefix=prefix, group=prefix + "sink", instance_id="frz-sink", group_timeout=5.0
        )
        runner = threading.Thread(target=sink.run)
        runner.start()
        producer = KafkaProducer(bootstrap_servers=boot, acks="all")

        def publish():  # an event every 0.2 s, whatever the brokers do
            i = 0
            while going.is_set():
                now = time.time()
                event = DeliveryEvent(event_id=f"f{i}", type="success", server="s1", msgid=f"1abcD{i % 9}-000000-AA",
                                      recipient=f"r{i}@example.net", sendunixtime=now - 60,
                                      actionunixtime=now - 30, version=1).to_wire()  # fmt: skip
                try:
                    producer.send(prefix + T.EVENTS.name, key=f"k{i}".encode(), value=dumps_json([event]))
                except Exception:  # a send refused while the brokers settle: the next one goes on
                    pass
                i += 1
                time.sleep(0.2)

        writer = threading.Thread(target=publish, daemon=True)
        writer.start()

        def stored() -> int:
            return store.query("SELECT count() FROM events").result_rows[0][0]

        t0 = time.monotonic()
        while stored() == 0 and time.monotonic() - t0 < 120:
            time.sleep(0.5)
        assert stored() > 0
        coordinator = int(str(sink.consumer._coordinator.coordinator_id).rsplit("-", 1)[-1])
        names = [prefix + t.name for t in (T.EVENTS, T.REJECTS, T.LOG_LINES)]
        other_going = threading.Event()
        other_going.set()

        def other_member():
            member = KafkaConsumer(
                *names, bootstrap_servers=boot, group_id=prefix + "sink", enable_auto_commit=False
            )
            while other_going.is_set():
                member.poll(timeout_ms=100)
            member.close(timeout_ms=3000)

        other = threading.Thread(target=other_member, daemon=True)
        other.start()
        t1 = time.monotonic()
        while not sink.consumer._coordinator.rebalance_in_progress() and time.monotonic() - t1 < 60:
            time.sleep(0.0005)
        cluster.pause(coordinator)
        paused.append(coordinator)
        frozen = time.monotonic()
        other_going.clear()
        before = stored()
        while stored() <= before + 5 and time.monotonic() - frozen < 120:
            time.sleep(0.5)
        took = time.monotonic() - frozen
        remade = sink.metrics.consumer_remade._value.get()
        print(
            f"\nfrozen coordinator {coordinator}: stored again after {took:.1f} s, the consumer remade {remade:.0f}x"
        )
        assert stored() > before + 5, "nothing stored in the 120 s after the coordinator froze"
        other.join(30)
    finally:
        going.clear()
        for node in paused:
            cluster.resume(node)
        if sink is not None:
            sink.stop()
            runner.join(60)
        if producer is not None:  # closed while the brokers still answer (a producer left to the garbage
            producer.close(timeout=5)  # collector flushes against a stopped cluster, and warns)
        cluster.stop()
