"""A real, local, single-node Apache Kafka 4.x broker for development and the integration tests.

This module owns fetching the broker's jars and running one broker process; it does not import any Kafka
client library (readiness is checked with a hand-written Metadata request over a socket).

- :func:`fetch` resolves ``org.apache.kafka:kafka_2.13`` and every runtime dependency (plus a log4j2
  backend, which Kafka's POM leaves out) with Maven, using ``deploy/kafka/pom.xml``, into a cache outside the
  repository: ``${EXIMTRACK_CACHE:-~/.cache/eximtrack}/kafka/<version>/libs``. A completed fetch is marked
  with a ``.complete`` file and never repeated; concurrent fetches are serialised with a file lock.
- :class:`LocalBroker` formats KRaft storage for one node in *standalone* mode (one process is both broker and
  controller; the controller quorum is just itself), listens on 127.0.0.1 at free ports, writes
  ``server.properties`` and ``log4j2.properties`` into its work dir, runs ``java -cp libs/* kafka.Kafka`` and
  waits until a Metadata request lists the broker. On failure it raises :class:`BrokerError` with the tail of
  the broker log. ``stop()`` sends SIGTERM (a controlled shutdown), then SIGKILL after a grace period.
- ``python -m eximtrack.local_broker {fetch,start,stop,status} --dir DIR`` is the command line; ``start``
  leaves the broker running in the background and writes ``DIR/broker.pid`` and ``DIR/bootstrap``.
  :func:`register` adds the same commands as ``eximtrack broker ...`` to the main CLI.

A work dir keeps its data and its ports between runs: starting it again after ``stop`` reuses the formatted
log dir, the cluster id and the controller port (the standalone voter set written at format time names that
endpoint, so it must not change).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eximtrack.broker_probe import metadata_brokers
from eximtrack.ports import free_port, port_free

# 4.1.x: the newest line that kafka-python 3 and aiokafka 0.14 were both tested against at the time of
# writing (field notes: Maven Central serves 4.0-4.4; kafka-python is tested up to 4.3).
DEFAULT_VERSION = "4.1.1"
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 30.0

_REPO_ROOT = Path(__file__).resolve().parents[1]
_POM = _REPO_ROOT / "deploy" / "kafka" / "pom.xml"


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped. The message carries the reason."""


# --------------------------------------------------------------------------------------------- fetch


def cache_root() -> Path:
    """Return the cache directory (``$EXIMTRACK_CACHE`` or ``~/.cache/eximtrack``)."""
    env = os.environ.get("EXIMTRACK_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eximtrack"


def libs_dir(version: str = DEFAULT_VERSION) -> Path:
    """Return where the jars of ``version`` live (whether or not they were fetched yet)."""
    return cache_root() / "kafka" / version / "libs"


def fetch(version: str = DEFAULT_VERSION, *, quiet: bool = True) -> Path:
    """Make sure the jars of Kafka ``version`` are in the cache; return the ``libs`` directory.

    Idempotent and safe to call from several processes at once. Raises :class:`BrokerError` when Maven
    is missing or cannot resolve the artifacts (never returns a half-filled directory).
    """
    libs = libs_dir(version)
    if (libs / ".complete").exists():
        return libs
    pom = Path(os.environ.get("EXIMTRACK_KAFKA_POM", _POM))
    if not pom.is_file():
        raise BrokerError(f"cannot fetch Kafka: {pom} not found (set EXIMTRACK_KAFKA_POM)")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("cannot fetch Kafka: `mvn` (Maven) is not on PATH")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():  # another process finished while we waited
            return libs
        tmp = libs.parent / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        jars = sorted(tmp.glob("*.jar")) if tmp.is_dir() else []
        if proc.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
            raise BrokerError(
                f"fetching Kafka {version} with Maven failed (exit {proc.returncode}):\n" + "\n".join(out)
            )
        (tmp / ".complete").write_text(f"{version}\n{len(jars)} jars\n")
        shutil.rmtree(libs, ignore_errors=True)
        os.replace(tmp, libs)
    return libs


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to send SIGTERM to the child when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the caller's stop() remains the only way
        pass


def _cluster_id() -> str:
    # Kafka's Uuid.toString: URL-safe base64 of 16 random bytes, no padding; Kafka re-draws ids that
    # start with "-" because they would read as a command-line flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid_is_our_broker(pid: int, workdir: Path) -> bool:
    """Guard against pid reuse: the process must be a kafka.Kafka JVM started on this work dir's config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and str(workdir / "server.properties") in args


# -------------------------------------------------------------------------------------------- broker


_LOG4J2 = """\
# Written by eximtrack.local_broker. One rolling file; the broker's own stdout goes to broker.out.
status = warn
name = eximtrack-local-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logdir}/server.log
appender.file.filePattern = {logdir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class LocalBroker:
    """One single-node KRaft Kafka broker (broker + controller in one JVM) living in ``workdir``.

    :param workdir: directory for config, logs and data (created if missing; kept after ``stop``).
    :param port: client (PLAINTEXT) port on 127.0.0.1; a free one when ``None`` (or the one this work dir
        used last time, if it is still free).
    :param version: Kafka version to run (fetched on ``start`` if not cached).
    :param heap: JVM ``-Xmx``/``-Xms``.
    :param extra_config: additional ``server.properties`` entries (override the defaults).
    :param die_with_parent: on Linux, SIGTERM the broker when the process that started it dies (a test run
        killed with SIGKILL then leaves no 512 MB JVM behind). Not for the CLI's background start.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        version: str = DEFAULT_VERSION,
        heap: str = DEFAULT_HEAP,
        extra_config: dict[str, str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        die_with_parent: bool = False,
        node_id: int = 1,
        cluster: ClusterLayout | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.node_id = node_id
        self.cluster = cluster  # None: a single node that is its own controller quorum
        self.requested_port = port
        self.version = version
        self.heap = heap
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.controller_port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        #: seconds spent in the last ``start()``: {"fetch", "format", "ready", "total"}
        self.timings: dict[str, float] = {}

    # paths
    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def state_path(self) -> Path:
        return self.workdir / "broker.json"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "broker.pid"

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for clients' ``bootstrap_servers``."""
        if self.port is None:
            raise BrokerError("broker has not been started")
        return f"127.0.0.1:{self.port}"

    # life cycle
    def start(self, wait: bool = True) -> LocalBroker:
        """Fetch (if needed), format (first time only), launch and (`wait`) wait until the broker serves
        metadata. A node of a cluster is ready only once its quorum formed: launch every node, then wait."""
        if self.running():
            raise BrokerError(f"a broker is already running from {self.workdir} (pid {self.pid})")
        t0 = time.monotonic()
        java = shutil.which("java")
        if java is None:
            raise BrokerError("`java` (17 or newer) is not on PATH")
        libs = fetch(self.version)
        t_fetch = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        state = self._load_state()
        cluster_id = self.cluster.cluster_id if self.cluster else state.get("cluster_id") or _cluster_id()
        formatted = (self.data_dir / "meta.properties").exists() and bool(state)
        if formatted and self.cluster and state.get("cluster_id") != cluster_id:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a node of another cluster: start afresh
            formatted = False
            state = {}
        if formatted and state.get("version") != self.version:
            # Upgrading a work dir in place is out of scope for a dev broker: start afresh instead.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            formatted = False
            state = {}
            cluster_id = self.cluster.cluster_id if self.cluster else _cluster_id()
        if self.cluster:
            self.port, self.controller_port = self.cluster.ports[self.node_id]
        else:
            self.controller_port = self._pick_controller_port(state, formatted)
            self.port = self._pick_port(state)
        self._write_config()
        (self.log_dir / "log4j2.properties").unlink(missing_ok=True)
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(logdir=self.log_dir))
        classpath = f"{libs}/*"
        jvm = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            classpath,
        ]
        if not formatted:
            self.data_dir.mkdir(exist_ok=True)
            fmt = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    *([] if self.cluster else ["--standalone"]),  # a cluster: the static voters of its config
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(self.config_path),
                    "--ignore-formatted",
                ],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                # The message is at the top, followed by a long Java stack trace: keep the message.
                text = [ln for ln in (fmt.stdout + fmt.stderr).splitlines() if not ln.startswith("\tat ")]
                raise BrokerError(
                    f"formatting KRaft storage in {self.data_dir} failed (exit {fmt.returncode}):\n"
                    + "\n".join(text[:40])
                )
        t_format = time.monotonic()
        self._save_state(cluster_id)
        with open(self.log_dir / "broker.out", "ab") as out:
            self.proc = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the test runner must not kill it half-way
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self.pid = self.proc.pid
        self.pid_path.write_text(f"{self.pid}\n")
        self.timings = {"fetch": t_fetch - t0, "format": t_format - t_fetch}
        self._launched = time.monotonic()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> LocalBroker:
        """Wait until the launched broker serves metadata listing itself (stop it and raise if it does not)."""
        try:
            self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["ready"] = time.monotonic() - self._launched
        self.timings["total"] = sum(self.timings.values())
        (self.workdir / "bootstrap").write_text(self.bootstrap + "\n")
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> int | None:
        """SIGTERM the broker, wait up to ``timeout`` s, then SIGKILL. Return its exit code (None if unknown)."""
        pid = self.pid
        if pid is None:
            return None
        code: int | None = None
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            code = self.wait_exit(pid, timeout)
            if code is None and _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                code = self.wait_exit(pid, 10.0)
        elif self.proc is not None:
            code = self.proc.poll()
        self.proc = None
        self.pid = None
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
        with contextlib.suppress(OSError):
            (self.workdir / "bootstrap").unlink()
        return code

    def running(self) -> bool:
        """Whether the process this object started (or attached to) is alive."""
        return self.pid is not None and _pid_alive(self.pid)

    def ready(self) -> bool:
        """Whether the broker answers a Metadata request listing itself."""
        if self.port is None:
            return False
        try:
            return any(b[2] == self.port for b in metadata_brokers("127.0.0.1", self.port))
        except (OSError, struct.error, UnicodeDecodeError):
            return False

    def attach(self) -> LocalBroker:
        """Adopt a broker started earlier from this work dir (by the CLI) via its pid file."""
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise BrokerError(f"no broker pid file in {self.workdir}") from exc
        if not (_pid_alive(pid) and _pid_is_our_broker(pid, self.workdir)):
            with contextlib.suppress(OSError):
                self.pid_path.unlink()
            raise BrokerError(f"broker pid {pid} from {self.pid_path} is not running")
        self.pid = pid
        state = self._load_state()
        self.port = state.get("port")
        self.controller_port = state.get("controller_port")
        return self

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker log (server.log, or broker.out if the JVM died before logging)."""
        parts = []
        for name in ("server.log", "broker.out"):
            p = self.log_dir / name
            if p.exists() and p.stat().st_size:
                parts.append(f"--- {p} ---\n{_tail(p, lines)}")
        return "\n".join(parts) or f"(no broker log in {self.log_dir})"

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # internals
    def _wait_ready(self, deadline: float) -> None:
        delay = 0.05
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerError(
                    f"Kafka broker exited with code {self.proc.returncode} during startup\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise BrokerError(
            f"Kafka broker on 127.0.0.1:{self.port} not ready after {self.start_timeout:.0f}s\n{self.log_tail()}"
        )

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                code = self.proc.poll()
                if code is not None:
                    return code
            elif not _pid_alive(pid):
                return 0  # not our child (CLI stop): the exit code is not ours to read
            time.sleep(0.1)
        return None

    def _load_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, cluster_id: str) -> None:
        state = {
            "version": self.version,
            "cluster_id": cluster_id,
            "port": self.port,
            "controller_port": self.controller_port,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def _pick_controller_port(self, state: dict, formatted: bool) -> int:
        if formatted and state.get("controller_port"):
            port = int(state["controller_port"])
            if not port_free(port, reuse=True):
                raise BrokerError(
                    f"controller port {port} of the formatted work dir {self.workdir} is taken; "
                    "stop whatever holds it or start from an empty work dir"
                )
            return port
        return free_port()

    def _pick_port(self, state: dict) -> int:
        if self.requested_port:
            if not port_free(self.requested_port, reuse=True):
                raise BrokerError(f"port {self.requested_port} on 127.0.0.1 is already in use")
            return self.requested_port
        last = state.get("port")
        if last and last != self.controller_port and port_free(int(last), reuse=True):
            return int(last)
        while True:
            port = free_port()
            if port != self.controller_port:
                return port

    def _write_config(self) -> None:
        nodes = len(self.cluster.ports) if self.cluster else 1
        replicas = str(min(3, nodes))
        min_isr = "2" if nodes >= 3 else "1"  # acks=all survives one broker's loss
        quorum = (
            {
                "controller.quorum.voters": self.cluster.voters,
                # a killed broker is fenced (its partitions get new leaders) after 3 s without a heartbeat,
                # not Kafka's 9 s: the pause a broker's crash causes (tests/reliability/test_cluster.py)
                "broker.session.timeout.ms": "3000",
                "broker.heartbeat.interval.ms": "500",
            }
            if self.cluster
            else {"controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}"}
        )
        conf = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            **quorum,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # The internal topics: as many replicas as the cluster can hold (one on a single node).
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # Tests create and join groups constantly; the default 3 s delay only slows them down.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        conf.update(self.extra_config)
        text = "# Written by eximtrack.local_broker; rewritten on every start.\n"
        text += "".join(f"{k}={v}\n" for k, v in conf.items())
        self.config_path.write_text(text)


@dataclasses.dataclass(frozen=True)
class ClusterLayout:
    """What every node of a local cluster must agree on: the cluster id and each node's ports."""

    cluster_id: str
    ports: dict[int, tuple[int, int]]  # node id -> (client port, controller port)

    @property
    def voters(self) -> str:
        return ",".join(f"{n}@127.0.0.1:{c}" for n, (_, c) in sorted(self.ports.items()))


class LocalCluster:
    """`nodes` KRaft brokers on 127.0.0.1, each broker and controller in one JVM (combined mode), with a
    static controller quorum: for development and for the tests that kill brokers. Work dirs
    ``workdir/node<N>``; the layout (cluster id, ports) is kept in ``workdir/cluster.json`` so a restarted
    cluster keeps its data. Internal topics get min(3, nodes) replicas and ``min.insync.replicas`` 2 from 3
    nodes on; eximtrack's own topics get the same from ``producers.topics.ensure_topics``."""

    def __init__(self, workdir: str | os.PathLike[str], nodes: int = 3, **kwargs: object) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        layout_path = self.workdir / "cluster.json"
        try:
            saved = json.loads(layout_path.read_text())
            layout = ClusterLayout(saved["cluster_id"], {int(k): tuple(v) for k, v in saved["ports"].items()})
            if len(layout.ports) != nodes or not all(
                port_free(p, reuse=True) for pair in layout.ports.values() for p in pair
            ):
                raise ValueError("another layout")
        except (OSError, ValueError, KeyError):
            ports: set[int] = set()
            while len(ports) < 2 * nodes:
                ports.add(free_port())
            it = iter(sorted(ports))
            layout = ClusterLayout(_cluster_id(), {n: (next(it), next(it)) for n in range(1, nodes + 1)})
            layout_path.write_text(
                json.dumps({"cluster_id": layout.cluster_id, "ports": layout.ports}) + "\n"
            )
        self.layout = layout
        self.nodes = {
            n: LocalBroker(self.workdir / f"node{n}", node_id=n, cluster=layout, **kwargs)  # type: ignore[arg-type]
            for n in layout.ports
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port, _ in self.layout.ports.values())

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes.values():
                node.start(wait=False)
            for node in self.nodes.values():
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        (self.workdir / "bootstrap").write_text(self.bootstrap + "\n")
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> dict[int, int | None]:
        """SIGTERM every node at once, then wait for each; their exit codes. Stopped one after another, the
        last node had lost the controller quorum its controlled shutdown asks, and waited out `timeout` for
        a SIGKILL (34 s for 3 nodes). Together, a node much slower than the others can still find the quorum
        gone and be left to the SIGKILL."""
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            exits = pool.map(lambda node: node.stop(timeout), self.nodes.values())
            codes = dict(zip(self.nodes, exits, strict=True))
        with contextlib.suppress(OSError):
            (self.workdir / "bootstrap").unlink()
        return codes

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (the crash the replication is for)."""
        node = self.nodes[node_id]
        if node.pid is not None and _pid_alive(node.pid):
            os.kill(node.pid, signal.SIGKILL)
            node.wait_exit(node.pid, 30.0)
        node.proc = None
        node.pid = None

    def restart(self, node_id: int) -> None:
        self.nodes[node_id].start()

    def pause(self, node_id: int) -> None:
        """SIGSTOP one node: alive to TCP, answering nothing (a frozen VM, a blackholed host)."""
        pid = self.nodes[node_id].pid
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT a node `pause` stopped."""
        pid = self.nodes[node_id].pid
        if pid is not None and _pid_alive(pid):
            os.kill(pid, signal.SIGCONT)

    def controller(self) -> int | None:
        """The node id of the active controller, as a live node's metadata says (None if none answers)."""
        from kafka import KafkaAdminClient

        for node in self.nodes.values():
            if node.running():
                try:
                    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap, request_timeout_ms=5000)
                    try:
                        return int(admin.describe_cluster()["controller_id"])
                    finally:
                        admin.close()
                except Exception:
                    continue
        return None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``broker {fetch,start,stop,status}`` to a parent CLI; dispatch with ``args.func(args)``."""
    parser = subparsers.add_parser(
        "broker", help="run a local Kafka broker, or a cluster of them with --nodes 3 (development, tests)"
    )
    _add_arguments(parser)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("fetch", "start", "stop", "status"))
    parser.add_argument("--dir", default=".eximtrack/kafka", help="broker work dir (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    parser.add_argument(
        "--kafka-version", default=DEFAULT_VERSION, help="Kafka version to fetch/run (default: %(default)s)"
    )
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="JVM heap (default: %(default)s)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="start: a KRaft cluster of this many brokers (combined mode, static quorum; topics get "
        "min(3, nodes) replicas and min.insync.replicas 2 from 3 nodes on). Default: 1",
    )
    parser.set_defaults(func=run)


def run_cluster(args: argparse.Namespace) -> int:
    """`broker start|stop|status` of a cluster work dir (``--nodes N`` > 1, or a dir with cluster.json)."""
    saved = Path(args.dir) / "cluster.json"
    nodes = args.nodes if args.nodes > 1 else len(json.loads(saved.read_text())["ports"])
    if args.action == "start":
        cluster = LocalCluster(args.dir, nodes, version=args.kafka_version, heap=args.heap)
        cluster.start()
        pids = ", ".join(str(n.pid) for n in cluster.nodes.values())
        print(f"started {nodes} brokers: pids {pids}, bootstrap {cluster.bootstrap}")
        return 0
    up = 0
    for n in range(1, nodes + 1):
        node = LocalBroker(Path(args.dir) / f"node{n}", node_id=n)
        try:
            node.attach()
        except BrokerError as exc:
            print(f"node {n}: not running ({exc})")
            continue
        if args.action == "stop":
            pid = node.pid
            node.stop()
            print(f"node {n}: stopped pid {pid}")
        else:
            state = "ready" if node.ready() else "running, not answering metadata"
            print(f"node {n}: {state}: pid {node.pid}, bootstrap {node.bootstrap}")
            up += node.ready()
    if args.action == "status":
        return 0 if up == nodes else (3 if up == 0 else 1)
    with contextlib.suppress(OSError):
        (Path(args.dir) / "bootstrap").unlink()
    return 0


def run(args: argparse.Namespace) -> int:
    """Handler of the ``broker`` command; returns the process exit code."""
    try:
        if args.action == "fetch":
            t0 = time.monotonic()
            libs = fetch(args.kafka_version, quiet=False)
            print(
                f"Kafka {args.kafka_version}: {len(list(libs.glob('*.jar')))} jars in {libs} "
                f"({time.monotonic() - t0:.1f}s)"
            )
            return 0
        if args.nodes > 1 or (Path(args.dir) / "cluster.json").exists():
            return run_cluster(args)
        broker = LocalBroker(args.dir, args.port, version=args.kafka_version, heap=args.heap)
        if args.action == "start":
            with contextlib.suppress(BrokerError):
                broker.attach()
                print(f"already running: pid {broker.pid}, bootstrap {broker.bootstrap}")
                return 0
            broker.start()
            t = broker.timings
            print(
                f"started: pid {broker.pid}, bootstrap {broker.bootstrap} "
                f"(fetch {t['fetch']:.1f}s, format {t['format']:.1f}s, ready {t['ready']:.1f}s)"
            )
            return 0
        if args.action == "stop":
            try:
                broker.attach()
            except BrokerError as exc:
                print(f"not running ({exc})")
                return 0
            pid = broker.pid
            broker.stop()
            print(f"stopped pid {pid}")
            return 0
        # status
        try:
            broker.attach()
        except BrokerError as exc:
            print(f"stopped ({exc})")
            return 3  # LSB: program is not running
        state = "ready" if broker.ready() else "running, not answering metadata"
        print(f"{state}: pid {broker.pid}, bootstrap {broker.bootstrap}")
        return 0 if broker.ready() else 1
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eximtrack.local_broker", description=__doc__.splitlines()[0]
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


@contextlib.contextmanager
def running_broker(workdir: str | os.PathLike[str], **kwargs: object) -> Iterator[LocalBroker]:
    """``with running_broker(tmpdir) as b: ...`` -- start a broker and always stop it."""
    broker = LocalBroker(workdir, **kwargs)  # type: ignore[arg-type]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
