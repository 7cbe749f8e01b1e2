"""The shipper against a real Kafka broker, run as a subprocess like systemd would run it.

Rule checked throughout (see producers/ship.py): no written line is ever LOST, and when a line arrives more
than once (allowed after a SIGKILL between Kafka's ack and the checkpoint write) every copy carries the same
identity (server, file_id, offset) and the same text, so downstream can deduplicate. A Kafka record holds a
batch of consecutive lines of one file; every property is checked per LINE.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from eximtrack.local_broker import LocalBroker
from eximtrack.ports import free_port
from producers.publish import BATCH_MAX_LINES, decode_raw_lines, key_partition
from producers.topics import ensure_topics
from schemas.records import RawLine
from schemas.topics import ACCOUNTS, RAW_LINES

pytestmark = [pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ helpers


def make_topics(bootstrap: str) -> tuple[str, str]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(bootstrap, [RAW_LINES, ACCOUNTS], prefix=prefix)
    return prefix + RAW_LINES.name, prefix + ACCOUNTS.name


class Shipper:
    """``python -m producers.ship`` as a subprocess, with its metrics endpoint."""

    def __init__(
        self, log: Path, bootstrap: str, topic: str, accounts_topic: str, ckpt: Path, *extra: str
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "producers.ship",
            "--server",
            "mx1.example.net",
            "--tz",
            "Europe/Berlin",
            "--brokers",
            bootstrap,
            "--checkpoint",
            str(ckpt),
            "--topic",
            topic,
            "--accounts-topic",
            accounts_topic,
            *extra,
            str(log),
        ]
        self.ckpt = ckpt
        self.stderr = ckpt.with_suffix(".stderr")
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> Shipper:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.args[:-1], "--metrics-port", str(self.port), self.args[-1]],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return self

    def metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name.split("{")[0]] = float(value)
        return out

    def wait_metric(self, name: str, pred, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            value = self.metrics().get(name)
            if value is not None and pred(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"{name}={value} after {timeout}s\n{self.log_tail()}")

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_tail(self) -> str:
        try:
            return "shipper stderr:\n" + "\n".join(self.stderr.read_text().splitlines()[-30:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def shippers():
    started: list[Shipper] = []
    yield started
    for s in started:
        s.close()


def consume(
    bootstrap: str, topic: str, expected: int, timeout: float = 60, settle: float = 1.0, lines: bool = True
) -> list:
    """All records of ``topic`` from the beginning: wait for ``expected`` LINES in them (records, with
    ``lines=False``), then ``settle`` more seconds so that extra (duplicate) records are seen too."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        got = []
        n = 0
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(records)
                n += sum(len(decode_raw_lines(r.value)) for r in records) if lines else len(records)
            if n >= expected and settle_until is None:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return got
    finally:
        consumer.close()


def decode(records) -> list[tuple[RawLine, object]]:
    """(line, its record) for every line of every record, in order."""
    return [(line, r) for r in records for line in decode_raw_lines(r.value)]


def texts(records) -> list[str]:
    return [line.line for line, _ in decode(records)]


class LogWriter:
    """Writes numbered lines like Exim (O_APPEND, reopen after rotation), optionally from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.n = 0
        self.written: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, i: int) -> str:
        return f"2026-11-27 10:00:{i % 60:02d} 1vTest-{i:06d}-AB => rcpt{i}@example.org R=dnslookup T=remote_smtp H=mx.example.org [192.0.2.{i % 250}]"

    def write(self, count: int) -> None:
        with self.lock:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            lines = [self.line(self.n + k) for k in range(count)]
            os.write(self.fd, "".join(x + "\n" for x in lines).encode())
            self.n += count
            self.written.extend(lines)

    def reopen(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None

    def start(self, per_tick: int = 50, tick: float = 0.005) -> None:
        def run():
            while not self._stop.is_set():
                self.write(per_tick)
                time.sleep(tick)

        self._stop.clear()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def check_no_loss(written: list[str], records) -> Counter:
    """Every written line arrived; duplicates (if any) are identical copies. Returns duplicate counts."""
    rows = decode(records)
    by_id: dict[tuple[str, str, int], str] = {}
    seen = Counter()
    for rec, _ in rows:
        ident = (rec.server, rec.file_id, rec.offset)
        if ident in by_id:
            assert by_id[ident] == rec.line, f"two different lines with identity {ident}"
        by_id[ident] = rec.line
        seen[ident] += 1
    texts = Counter(by_id.values())
    missing = [w for w in written if w not in texts]
    assert not missing, f"{len(missing)} lines lost, first: {missing[:3]}"
    assert sum(texts.values()) == len(written), "a line appears under two identities"
    assert [t for t in by_id.values()] == written, "order of first arrivals differs from the log order"
    return Counter({k: v for k, v in seen.items() if v > 1})


# ------------------------------------------------------------------------------------------- tests


def test_ship_a_file_exactly_once_in_order(kafka_bootstrap, tmp_path, shippers):
    topic, acc_topic = make_topics(kafka_bootstrap)
    log = tmp_path / "exim_mainlog"
    w = LogWriter(log)
    w.write(3000)
    ud = tmp_path / "userdomains"
    ud.write_text("example.org: alice\n*: nobody\n")
    s = Shipper(log, kafka_bootstrap, topic, acc_topic, tmp_path / "ck.json", "--userdomains", str(ud))
    shippers.append(s.start())
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 3000)
    w.write(500)  # lines appended while it runs
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 3500)
    s.wait_metric("eximtrack_ship_accounts_sent_total", lambda v: v >= 1)
    m = s.wait_metric("eximtrack_ship_lag_bytes", lambda v: v == 0, timeout=10)
    assert m == 0
    # cPanel rewrites the map by rename: the shipper sends a new snapshot (checked every 5 s).
    tmp = tmp_path / "userdomains.new"
    tmp.write_text("example.org: alice\nexample.com: bob\n")
    tmp.rename(ud)
    s.wait_metric("eximtrack_ship_accounts_sent_total", lambda v: v >= 2, timeout=20)
    assert s.terminate() == 0
    size = log.stat().st_size
    assert json.loads(s.ckpt.read_text())["offset"] == size

    records = consume(kafka_bootstrap, topic, 3500)
    assert texts(records) == w.written  # exactly once, in log order
    assert len(records) < 3500 / 10  # many lines per record
    parts = {r.partition for r in records}
    assert parts == {key_partition(b"mx1.example.net", RAW_LINES.partitions)}
    assert {r.key for r in records} == {b"mx1.example.net"}
    first = json.loads(records[0].value)
    assert set(first) == {"server", "file_id", "tz", "schema_version", "lines"}
    assert first["tz"] == "Europe/Berlin" and first["lines"][0][0] == 0
    assert all(len(json.loads(r.value)["lines"]) <= BATCH_MAX_LINES for r in records)
    rows = decode(records)
    offsets = [line.offset for line, _ in rows]
    assert offsets == sorted(offsets)
    # a batch is consecutive lines: each starts where the one before it ended
    size = {line.offset: len(line.line.encode()) + 1 for line, _ in rows}
    assert all(b == a + size[a] for a, b in zip(offsets, offsets[1:], strict=False))

    accounts = consume(kafka_bootstrap, acc_topic, 2, lines=False)
    assert len(accounts) == 2 and {a.key for a in accounts} == {b"mx1.example.net"}
    acc = [json.loads(a.value) for a in accounts]
    assert acc[0]["userdomains"] == "example.org: alice\n*: nobody\n" and acc[0]["trueuserowners"] is None
    assert acc[1]["userdomains"] == "example.org: alice\nexample.com: bob\n"

    # A restart after a clean stop sends nothing again.
    s2 = Shipper(log, kafka_bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts")
    shippers.append(s2.start())
    w.write(10)
    s2.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 10)
    assert s2.terminate() == 0
    records = consume(kafka_bootstrap, topic, 3510)
    assert texts(records) == w.written

    # A corrupt checkpoint is moved aside and the file re-shipped: duplicates with identical identities.
    (tmp_path / "ck.json").write_text("{garbage")
    s3 = Shipper(log, kafka_bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts")
    shippers.append(s3.start())
    s3.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 3510)
    assert s3.terminate() == 0
    assert list(tmp_path.glob("ck.json.corrupt-*"))
    dups = check_no_loss(w.written, consume(kafka_bootstrap, topic, 2 * 3510))
    assert len(dups) == 3510 and set(dups.values()) == {2}


@pytest.mark.parametrize("style", ["rename", "copytruncate"])
def test_rotation_while_shipping(kafka_bootstrap, tmp_path, shippers, style):
    topic, acc_topic = make_topics(kafka_bootstrap)
    log = tmp_path / "exim_mainlog"
    w = LogWriter(log)
    w.write(2000)
    s = Shipper(log, kafka_bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts")
    shippers.append(s.start())
    w.start()
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 2500)
    for _ in range(2):
        if style == "rename":
            for i in (2, 1):
                src = tmp_path / f"exim_mainlog.{i}"
                if src.exists():
                    src.rename(tmp_path / f"exim_mainlog.{i + 1}")
            log.rename(tmp_path / "exim_mainlog.1")
            time.sleep(0.05)  # the writer keeps writing into the renamed file for a moment
            log.touch()
            w.reopen()
        else:
            # logrotate's copytruncate: lines written between copy and truncate are lost by logrotate
            # itself (documented there); pause the writer so the test is about the shipper only.
            w.stop()
            shutil.copyfile(log, tmp_path / "exim_mainlog.1")
            with open(log, "r+b") as fh:
                fh.truncate(0)
            w.start()
        time.sleep(1.0)
    w.stop()
    total = len(w.written)
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= total, timeout=60)
    assert s.terminate() == 0
    records = consume(kafka_bootstrap, topic, total)
    dups = check_no_loss(w.written, records)
    assert not dups, "no restart happened, so nothing may be duplicated"
    assert len(decode(records)) == total
    ids = {line.file_id for line, _ in decode(records)}
    assert len(ids) == 3  # the original file and two generations after it
    assert all(len({line.file_id for line in decode_raw_lines(r.value)}) == 1 for r in records)


def test_sigkill_and_restart_lose_nothing(kafka_bootstrap, tmp_path, shippers):
    topic, acc_topic = make_topics(kafka_bootstrap)
    log = tmp_path / "exim_mainlog"
    ckpt = tmp_path / "ck.json"
    w = LogWriter(log)
    w.write(60_000)
    s = Shipper(log, kafka_bootstrap, topic, acc_topic, ckpt, "--no-accounts")
    shippers.append(s.start())
    w.start(per_tick=20)
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 20_000, timeout=60)
    s.kill()  # SIGKILL mid-stream: acked-but-not-checkpointed lines will be sent again
    killed_at = json.loads(ckpt.read_text())["offset"] if ckpt.exists() else 0
    time.sleep(0.3)

    # Rotate while the shipper is dead: the restart must finish the old file (found by inode) first.
    w.stop()
    log.rename(tmp_path / "exim_mainlog.1")
    w.reopen()
    w.write(1000)
    s2 = Shipper(log, kafka_bootstrap, topic, acc_topic, ckpt, "--no-accounts")
    shippers.append(s2.start())
    w.start(per_tick=20)
    s2.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 5_000, timeout=60)
    s2.kill()
    w.stop()
    w.write(100)

    s3 = Shipper(log, kafka_bootstrap, topic, acc_topic, ckpt, "--no-accounts")
    shippers.append(s3.start())
    ck_now = json.loads(ckpt.read_text())
    time.sleep(0.5)
    total = len(w.written)
    # Done when the checkpoint names the current file at its end (so everything before it was acked).
    st = log.stat()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert s3.proc.poll() is None, s3.log_tail()
        ck = json.loads(ckpt.read_text())
        if ck["file_id"].startswith(f"{st.st_dev}:{st.st_ino}:") and ck["offset"] == st.st_size:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(
            f"checkpoint {ckpt.read_text()} never reached the end of the log\n{s3.log_tail()}"
        )
    assert s3.terminate() == 0
    records = consume(kafka_bootstrap, topic, total, timeout=90, settle=2.0)
    dups = check_no_loss(w.written, records)
    print(
        f"\n{total} lines written, {len(records)} records, {sum(dups.values()) - len(dups)} duplicates "
        f"(checkpoint at kill: {killed_at}, before last start: {ck_now['offset']})"
    )


def test_broker_outage_waits_bounded_and_catches_up(tmp_path, shippers):
    """A broker of its own (stopped and restarted here); the shipper survives, holds its place, and
    keeps at most --max-inflight records in memory while the broker is away."""
    broker = LocalBroker(tmp_path / "kafka", start_timeout=300)  # a restart on a busy machine is slow
    broker.start()
    try:
        bootstrap = broker.bootstrap
        topic, acc_topic = make_topics(bootstrap)
        log = tmp_path / "exim_mainlog"
        w = LogWriter(log)
        w.write(1000)
        s = Shipper(
            log, bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts", "--max-inflight", "500"
        )
        shippers.append(s.start())
        s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 1000)
        broker.stop()
        w.write(20_000)
        time.sleep(3)
        m = s.metrics()
        assert s.proc.poll() is None
        assert m["eximtrack_ship_inflight_records"] <= 500
        assert m["eximtrack_ship_lag_bytes"] > 0
        assert m["eximtrack_ship_lines_shipped_total"] < 21_000
        s.wait_metric("eximtrack_ship_broker_up", lambda v: v == 0, timeout=30)
        broker.start()  # same work dir: same data, same ports
        assert broker.bootstrap == bootstrap
        s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 21_000, timeout=90)
        assert s.wait_metric("eximtrack_ship_reconnects_total", lambda v: v >= 1, timeout=10) >= 1
        # SIGTERM while the broker is away: bounded flush, checkpoint of what was acked, exit 0.
        broker.stop()
        w.write(2_000)
        time.sleep(1)
        t0 = time.monotonic()
        assert s.terminate(timeout=40) == 0
        assert time.monotonic() - t0 < 30
        ck = json.loads((tmp_path / "ck.json").read_text())
        assert ck["offset"] < log.stat().st_size
        broker.start()
        s2 = Shipper(log, bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts")
        shippers.append(s2.start())
        s2.wait_metric(
            "eximtrack_ship_checkpoint_offset_bytes", lambda v: v == log.stat().st_size, timeout=60
        )
        assert s2.terminate() == 0
        records = consume(bootstrap, topic, 23_000)
        check_no_loss(w.written, records)
    finally:
        broker.stop()


def test_missing_topic_waits_instead_of_auto_creating(kafka_bootstrap, tmp_path, shippers):
    """The raw-lines topic must be created with its partition count (key rule); the shipper never lets the
    broker auto-create it with defaults -- it waits, and ships once the topic exists."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    topic = prefix + RAW_LINES.name
    log = tmp_path / "exim_mainlog"
    w = LogWriter(log)
    w.write(100)
    s = Shipper(log, kafka_bootstrap, topic, prefix + ACCOUNTS.name, tmp_path / "ck.json", "--no-accounts")
    shippers.append(s.start())
    time.sleep(3)
    assert s.proc.poll() is None
    assert s.metrics().get("eximtrack_ship_lines_shipped_total", 0) == 0
    ensure_topics(kafka_bootstrap, [RAW_LINES], prefix=prefix)
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 100, timeout=30)
    assert s.terminate() == 0
    records = consume(kafka_bootstrap, topic, 100)
    assert len(decode(records)) == 100
    assert len({r.partition for r in records}) == 1


@pytest.mark.slow
def test_throughput_200k_lines(kafka_bootstrap, tmp_path, shippers):
    topic, acc_topic = make_topics(kafka_bootstrap)
    log = tmp_path / "exim_mainlog"
    w = LogWriter(log)
    for _ in range(20):
        w.write(10_000)
    s = Shipper(log, kafka_bootstrap, topic, acc_topic, tmp_path / "ck.json", "--no-accounts")
    t0 = time.monotonic()
    shippers.append(s.start())
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 1, timeout=60)
    t1 = time.monotonic()
    s.wait_metric("eximtrack_ship_lines_shipped_total", lambda v: v >= 200_000, timeout=300)
    t2 = time.monotonic()
    assert s.terminate() == 0
    rate = 200_000 / (t2 - t1)
    print(
        f"\nshipped 200k lines ({log.stat().st_size / 1e6:.1f} MB) in {t2 - t1:.2f}s = {rate:,.0f} lines/s "
        f"(+{t1 - t0:.2f}s process start and connect)"
    )
    assert rate > 2_000


# ------------------------------------------------------------------- pure parts (no broker needed)


def test_encode_raw_line_is_plain_json_of_the_rawline_fields():
    from producers.publish import decode_raw_line, encode_raw_line
    from producers.tail import Line

    line = Line(b'a "q" \\ \xc3\xa9 \x01 \xff', "1:2:ab", 5, 20)
    value = encode_raw_line('mx"1', line, "Europe/Paris")
    expected = {
        "server": 'mx"1',
        "file_id": "1:2:ab",
        "offset": 5,
        "line": line.text,
        "tz": "Europe/Paris",
        "schema_version": 1,
    }
    assert value == json.dumps(expected, ensure_ascii=False, separators=(",", ":")).encode()
    assert decode_raw_line(value) == RawLine(**expected)
    assert line.text.endswith("\\xff")  # undecodable bytes stay visible


def test_key_partition_matches_the_default_partitioner():
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self):
            return {"t"}

        def partitions_for_topic(self, topic):
            return set(range(12))

        def available_partitions_for_topic(self, topic):
            return set(range(12))

    for server in ("mx1.example.net", "a", "server-ü", "x" * 300):
        key = server.encode()
        assert key_partition(key, 12) == DefaultPartitioner().partition("t", None, key, None, None, Cluster())


def test_ack_window_checkpoints_only_the_contiguous_acked_prefix():
    from producers.checkpoint import AckWindow
    from producers.tail import Position

    class F:
        def __init__(self):
            self.is_done = False
            self.exception = None

        def failed(self):
            return self.is_done and self.exception is not None

    futs = [F() for _ in range(4)]
    win = AckWindow(max_records=4)
    for i, f in enumerate(futs):
        win.add(f, Position("f", (i + 1) * 10), 100)
    assert win.full
    futs[1].is_done = futs[2].is_done = True  # acked out of order: nothing is safe yet
    assert win.collect() == 0 and win.safe is None
    futs[0].is_done = True
    assert win.collect() == 3 and win.safe == Position("f", 30) and not win.full
    futs[3].is_done, futs[3].exception = True, RuntimeError("boom")
    assert win.collect() == 0 and win.safe == Position("f", 30) and win.error is not None


def test_checkpoint_save_is_atomic_and_round_trips(tmp_path):
    from producers import checkpoint
    from producers.tail import Position

    path = tmp_path / "state" / "ck.json"
    assert checkpoint.load(path) is None
    checkpoint.save(path, Position("1:2:abc", 123))
    assert checkpoint.load(path) == Position("1:2:abc", 123)
    checkpoint.save(path, Position("1:2:abc", 456))
    assert checkpoint.load(path) == Position("1:2:abc", 456)
    assert [p.name for p in path.parent.iterdir()] == ["ck.json"]  # no temp file left behind
    path.write_text("{not json")
    with pytest.raises(ValueError):
        checkpoint.load(path)


def test_metrics_and_probes_of_the_shipper():
    import json

    from prometheus_client.parser import text_string_to_metric_families

    from producers.metrics import ShipMetrics, serve

    m = ShipMetrics('mx"1')
    m.inc("lines_shipped_total", 5)
    m.set("lag_bytes", 42)
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["eximtrack_ship_reconnects"].type == "counter"
    assert families["eximtrack_ship_lag_bytes"].type == "gauge"
    (sample,) = families["eximtrack_ship_lines_shipped"].samples
    assert sample.name == "eximtrack_ship_lines_shipped_total" and sample.labels == {"server": 'mx"1'}
    assert sample.value == 5
    port = free_port()
    httpd = serve(m, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.read().decode() == m.render()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert json.loads(resp.read()) == {"status": "ok"}
        with pytest.raises(urllib.error.HTTPError) as exc:  # the broker never answered
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert exc.value.code == 503 and "broker" in json.loads(exc.value.read())["error"]
        m.set("broker_up", 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert json.loads(resp.read()) == {"status": "ready"}
    finally:
        httpd.shutdown()
