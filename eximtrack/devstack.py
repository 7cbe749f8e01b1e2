"""The whole pipeline on one machine: local Kafka broker, topics, sink, faust worker and shippers.

Used by `make run` (`eximtrack run`) and by the end-to-end tests. Every component is a separate process,
started with the same console commands an operator would use (`eximtrack sink`, `eximtrack stream`,
`eximtrack ship`), so the tests exercise exactly what runs in production. The embedded chDB store is owned by
the sink process; searches from other processes go through its query endpoint (sinks/clickhouse/query_server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from eximtrack.local_broker import LocalBroker, fetch
from eximtrack.ports import free_port
from schemas import topics as T


class Component:
    """One `eximtrack …` subprocess with its own log file; can be killed and started again."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict | None = None) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "eximtrack", *args]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.metrics_port: int | None = None  # /metrics, /healthz, /readyz

    def start(self) -> Component:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)  # fmt: skip
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash every guarantee is written for."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class DevStack:
    """Broker + sink + stream worker + one shipper per log file, all on 127.0.0.1."""

    def __init__(self, workdir: Path, store: str | None = None, *, prefix: str | None = None,
                 broker: LocalBroker | None = None, bootstrap: str | None = None) -> None:  # fmt: skip
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = store or f"chdb://{self.workdir / 'store'}"
        self.prefix = prefix if prefix is not None else f"s{uuid.uuid4().hex[:6]}."
        self.app_id = f"{self.prefix}stream"
        self.broker = broker
        self._own_broker = broker is None and bootstrap is None
        self._bootstrap = bootstrap
        self.components: dict[str, Component] = {}
        self.env: dict[str, str] = {}  # added to every component's environment (e.g. EXIMTRACK_LOG_FORMAT)

    @property
    def bootstrap(self) -> str:
        return self._bootstrap or self.broker.bootstrap

    def start_broker(self) -> None:
        if self._own_broker and self.broker is None:
            fetch()
            self.broker = LocalBroker(self.workdir / "kafka")
            self.broker.start()

    def create_topics(self) -> None:
        from producers.topics import ensure_topics
        from stream.app import changelog_topics

        ensure_topics(self.bootstrap, prefix=self.prefix)
        ensure_topics(self.bootstrap, changelog_topics(self.app_id))

    def _component(self, name: str, args: list[str]) -> Component:
        comp = Component(name, args, self.workdir / f"{name}.log", self.env)
        self.components[name] = comp
        return comp

    def sink(self, n: int = 1) -> Component:
        """The sink (n > 1: another sink of the same group, sharing the partitions: a ClickHouse server's
        store only, an embedded one admits one process)."""
        name = "sink" if n == 1 else f"sink{n}"
        if name not in self.components:
            port = free_port()
            extra = [] if n == 1 else ["--instance-id", f"{self.prefix}sink-{n}"]
            self._component(name, [
                "sink", "--brokers", self.bootstrap, "--store", self.store, "--topic-prefix", self.prefix,
                "--group", f"{self.prefix}sink", "--batch-seconds", "0.5", "--metrics-port", str(port), *extra]
            ).metrics_port = port  # fmt: skip
        return self.components[name]

    def stream(self, n: int = 1) -> Component:
        name = "stream" if n == 1 else f"stream{n}"
        if name not in self.components:
            comp = self._component(name, [
                "stream", "--brokers", self.bootstrap, "--topic-prefix", self.prefix, "--app-id", self.app_id,
                "--data-dir", str(self.workdir / f"faust{n}"), "--instance-id", f"{self.app_id}-{n}",
                "--web-port", str(free_port())])  # fmt: skip
            comp.metrics_port = int(comp.args[-1])
        return self.components[name]

    def stream_metrics(self, n: int = 1) -> dict[str, float]:
        """The worker's /metrics page as {name{labels}: value}."""
        return self.metrics("stream" if n == 1 else f"stream{n}")

    def metrics(self, name: str) -> dict[str, float]:
        """A component's /metrics page as {name{labels}: value}."""
        status, body = self.probe(name, "/metrics")
        if status != 200:
            raise RuntimeError(f"{name} /metrics answered {status}")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                sample, _, value = line.rpartition(" ")
                out[sample] = float(value)
        return out

    def probe(self, name: str, path: str) -> tuple[int, bytes]:
        """GET a component's operations page (/metrics, /healthz, /readyz): (status, body)."""
        import urllib.error
        import urllib.request

        url = f"http://127.0.0.1:{self.components[name].metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def shipper(
        self, server: str, log: Path, tz: str = "UTC", accounts: tuple[Path, Path] | None = None
    ) -> Component:
        """`accounts` = (userdomains, trueuserowners) files to ship with the lines; none by default."""
        name = f"ship-{server}"
        maps = (
            ["--userdomains", str(accounts[0]), "--trueuserowners", str(accounts[1])]
            if accounts
            else ["--no-accounts"]
        )
        if name not in self.components:
            port = free_port()
            self._component(name, [
                "ship", "--server", server, "--tz", tz, "--brokers", self.bootstrap, *maps,
                "--topic", self.prefix + T.RAW_LINES.name, "--accounts-topic", self.prefix + T.ACCOUNTS.name,
                "--checkpoint", str(self.workdir / f"checkpoint-{server}.json"), "--linger-ms", "5",
                "--metrics-port", str(port), str(log)]
            ).metrics_port = port  # fmt: skip
        return self.components[name]

    def start(self, logs: dict[str, Path]) -> DevStack:
        self.start_broker()
        self.create_topics()
        self.sink().start()
        self.stream().start()
        for server, log in logs.items():
            self.shipper(server, log).start()
        return self

    def search_json(self, *args: str, timeout: float = 120) -> list[dict]:
        import json

        out = subprocess.run([sys.executable, "-m", "eximtrack", "search", "--store", self.store, "--format", "json",
                              *args], capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"search failed ({out.returncode}): {out.stderr.strip()}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def sql(self, statement: str, timeout: float = 120) -> str:
        out = subprocess.run([sys.executable, "-m", "eximtrack", "sql", "--store", self.store, "--format", "json",
                              statement], capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"sql failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def wait_workers_ready(self, timeout: float = 120) -> None:
        """Wait until every started worker answers /readyz: in the group, not rebalancing, with raw-lines
        partitions (a group of several has settled its assignment)."""
        workers = [n for n in self.components if n.startswith("stream")]
        deadline = time.monotonic() + timeout
        waiting = workers
        while time.monotonic() < deadline:
            waiting = []
            for name in workers:
                if not self.components[name].alive():
                    raise RuntimeError(f"{name} died:\n" + self.components[name].tail())
                try:
                    status = self.probe(name, "/readyz")[0]
                except OSError:  # its web server not up yet
                    status = 0
                if status != 200:
                    waiting.append(name)
            if not waiting:
                return
            time.sleep(0.5)
        raise TimeoutError(f"workers not ready after {timeout:.0f} s: {', '.join(waiting)}")

    def wait_endpoint(self, timeout: float = 60) -> None:
        """Wait until the sink serves queries for the embedded store."""
        from sinks.clickhouse.query_server import find_endpoint

        if not self.store.startswith("chdb://"):
            return
        path = self.store[len("chdb://") :].split("?")[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if find_endpoint(path):
                return
            if not self.components["sink"].alive():
                raise RuntimeError("sink died:\n" + self.components["sink"].tail())
            time.sleep(0.2)
        raise TimeoutError("the sink did not open the store:\n" + self.components["sink"].tail())

    def stop(self) -> None:
        for name in [n for n in self.components if n.startswith("ship-")] + ["stream", "stream2", "sink"]:
            comp = self.components.get(name)
            if comp is not None:
                comp.stop()
        if self._own_broker and self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> DevStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the whole pipeline on this machine (broker, shipper, stream, sink)"
    )
    p.add_argument("--store", default=None, help="store URL (default: chdb://./data or $EXIMTRACK_STORE)")
    p.add_argument("--workdir", default=".eximtrack/run", help="broker data, logs and checkpoints")
    p.add_argument("--log", default=None, help="Exim main log to ship (default: /var/log/exim4/mainlog if present, "
                   "else a demo log that keeps growing)")  # fmt: skip
    p.add_argument(
        "--server", default=None, help="server name for the shipped log (default: this host's name)"
    )
    p.add_argument("--rate", type=float, default=50.0, help="demo log: lines per second")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import socket
    import threading

    from eximtrack.config import resolve_store_url
    from eximtrack.demo_log import grow

    workdir = Path(args.workdir).resolve()
    store = resolve_store_url(args.store)
    if store.startswith("chdb://") and not store.startswith("chdb:///"):
        store = "chdb://" + str(Path(store[len("chdb://") :]).resolve())
    real = Path("/var/log/exim4/mainlog")
    log = Path(args.log) if args.log else (real if real.exists() else workdir / "demo-mainlog")
    server = args.server or socket.gethostname()
    stop = threading.Event()
    grower = None
    stack = DevStack(workdir, store, prefix="")
    print(
        f"eximtrack: starting a local Kafka broker, the sink ({store}), the faust worker and a shipper for {log}"
    )
    try:
        stack.start_broker()
        if log == workdir / "demo-mainlog":
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
            grower = threading.Thread(target=grow, args=(log,), kwargs={"lines_per_second": args.rate, "stop": stop.is_set},
                                      daemon=True)  # fmt: skip
            grower.start()
        stack.start({server: log})
        stack.wait_endpoint()
        print(
            f"\nRunning. Broker {stack.bootstrap}; component logs in {workdir}/*.log.\n"
            f"Search from another terminal, for example:\n"
            f"  .venv/bin/eximtrack search --store {store} --show failures,deferred --limit 20\n"
            f"  .venv/bin/eximtrack search --store {store} --server {server} --format json --limit 5\n"
            f"  .venv/bin/eximtrack show --store {store} MSGID\n"
            f"Prometheus metrics, /healthz and /readyz: "
            + ", ".join(
                f"{name} http://127.0.0.1:{c.metrics_port}/metrics" for name, c in stack.components.items()
            )
            + "\nCtrl-C stops everything.\n",
            flush=True,
        )
        while all(c.alive() for c in stack.components.values()):
            time.sleep(1)
        dead = [n for n, c in stack.components.items() if not c.alive()]
        print(
            f"eximtrack: {', '.join(dead)} stopped unexpectedly:\n"
            + "\n".join(stack.components[n].tail() for n in dead)
        )
        return 1
    except KeyboardInterrupt:
        print("\neximtrack: stopping …", flush=True)
        return 0
    finally:
        stop.set()
        stack.stop()
