"""Fault injection: the real pipeline while its components are SIGKILLed and restarted at random moments.

Three servers' logs (generated from the real-Exim samples, one rotated by rename mid-way) are appended while
a chaos loop kills a random component — a shipper, the faust worker, the sink or the Kafka broker itself —
waits a random while (the broker once stays down for several seconds) and starts it again. At the end the
latest-state table and the event history must equal the direct `eximtrack ingest` of the same input: 0 lost,
0 duplicated. Quick in CI (EXIMTRACK_CHAOS_KILLS, default 6); `make chaos` runs 30 kills.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from eximtrack.demo_log import truth, write_log
from eximtrack.devstack import DevStack
from tests.integration.test_pipeline import (
    COUNTS,
    HISTORY,
    LATEST,
    append_probe,
    eximtrack,
    oracle,
    rows,
    searchable_after,
    wait_for,
)
from tests.unit.test_demo_log import outcomes

pytestmark = [pytest.mark.kafka, pytest.mark.store, pytest.mark.slow, pytest.mark.alone]

KILLS = int(os.environ.get("EXIMTRACK_CHAOS_KILLS", "6"))
PROBE = "chaosprobe"  # a server of its own: a line appended right after a restart, timed until searchable


def without_probe(sql: str) -> str:
    """The same query over the chaos servers only (the probe's lines are not in the oracle)."""
    return sql.replace("FROM latest FINAL", f"FROM latest FINAL WHERE server != '{PROBE}'").replace(
        "FROM events FINAL", f"FROM events FINAL WHERE server != '{PROBE}'"
    )


def _append_in_chunks(src: Path, dst: Path, rotate_at: int | None = None) -> None:
    lines = src.read_text().splitlines(keepends=True)
    rng = random.Random(str(dst))
    i = 0
    while i < len(lines):
        n = rng.randint(50, 400)
        if rotate_at is not None and i <= rotate_at < i + n:
            os.rename(dst, dst.with_name(dst.name + ".1"))  # rename + create, as logrotate does
            dst.touch()
            rotate_at = None
        with open(dst, "a") as fh:
            fh.writelines(lines[i : i + n])
        i += n
        time.sleep(rng.uniform(0.05, 0.4))


MODES = ("cpanel", "all", "default")


@dataclass
class GeneratedFleet:
    """Three servers' generated logs (one per sample mix), what a direct `eximtrack ingest` of them stores
    (the oracle) and the generator's truth, for the tests that kill parts of the pipeline while they ship."""

    sources: dict[str, list[Path]]
    want: list[dict]
    want_history: list[dict]
    n_rounds: int
    salt: int

    @classmethod
    def make(cls, tmp_path: Path, prefix: str, n_rounds: int, salt: int) -> GeneratedFleet:
        sources = {}
        for n, mode in enumerate(MODES):
            gen = tmp_path / f"gen{n}.log"
            write_log(gen, mode, n_rounds=n_rounds, salt=salt + n)
            sources[f"{prefix}{n}"] = [gen]
        store = oracle(tmp_path, sources)
        want = rows(eximtrack("sql", "--store", store, "--format", "json", LATEST))
        history = rows(eximtrack("sql", "--store", store, "--format", "json", HISTORY))
        return cls(sources, want, history, n_rounds, salt)

    def assert_truth(self, got: list[dict]) -> None:
        """Every recipient's outcome and every SMTP-time rejection of the generator, in the stored rows."""
        for n, (server, mode) in enumerate(zip(self.sources, MODES, strict=True)):
            t = truth(mode, n_rounds=self.n_rounds, salt=self.salt + n)
            stored = [(r["msgid"], r["recipient"], r["type"]) for r in got if r["server"] == server]
            assert outcomes([x for x in stored if x[2] != "rejected"], mode) == outcomes(
                [(e["msgid"], e["recipient"], e["type"]) for e in t["expected"]], mode
            )
            assert sum(1 for x in stored if x[2] == "rejected") == len(t["rejections"])


def test_random_kills_lose_and_double_nothing(tmp_path):
    fleet = GeneratedFleet.make(tmp_path, "chaos", n_rounds=6, salt=40)
    sources, want, want_history = fleet.sources, fleet.want, fleet.want_history

    stack = DevStack(tmp_path / "stack")  # its own broker, so the broker can be killed too
    live = {server: tmp_path / f"live-{server}.log" for server in sources}
    probe_log = tmp_path / "live-probe.log"
    for p in [*live.values(), probe_log]:
        p.touch()
    killed: list[str] = []
    recovery: list[tuple[str, float]] = []  # (sink or stream, seconds from its restart until stored again)
    try:
        stack.start(live | {PROBE: probe_log})
        stack.wait_endpoint()
        writers = [
            threading.Thread(
                target=_append_in_chunks, args=(sources[s][0], live[s], 2000 if s == "chaos0" else None)
            )
            for s in live
        ]
        for w in writers:
            w.start()
        rng = random.Random(int(os.environ.get("EXIMTRACK_CHAOS_SEED", "7")))
        names = ["stream", "sink", "broker", *[f"ship-{s}" for s in live]]
        broker_outage_done = False
        # every component is killed once (in random order) before the choice becomes free
        victims = rng.sample(names, len(names)) + [
            rng.choice(names) for _ in range(max(0, KILLS - len(names)))
        ]
        for victim in victims[:KILLS]:
            time.sleep(rng.uniform(1.0, 4.0))
            killed.append(victim)
            if victim == "broker":
                stack.broker.stop(timeout=0.0)  # SIGKILL right after SIGTERM
                time.sleep(8.0 if not broker_outage_done else rng.uniform(0.5, 3.0))
                broker_outage_done = True
                stack.broker.start()
            else:
                stack.components[victim].kill()
                time.sleep(rng.uniform(0.2, 3.0))
                stack.components[victim].start()
                if victim in ("sink", "stream"):  # stored again within seconds, not after a session timeout
                    msgid = f"1xCHP{len(killed) % 10}-0000AA-{len(recovery):02d}"
                    t0 = append_probe(probe_log, msgid, "10.9.9.9", "probe@example.net")
                    if victim == "sink":
                        stack.wait_endpoint()  # no CLI search while the sink opens the store
                    recovery.append((victim, round(searchable_after(stack, msgid, t0, 120, 0.3), 1)))
            for name, comp in stack.components.items():  # something that died on its own comes back too
                if not comp.alive():
                    killed.append(f"{name} (died by itself)")
                    comp.start()
        for w in writers:
            w.join()
        for comp in stack.components.values():
            if not comp.alive():
                comp.start()
        stack.wait_endpoint(timeout=120)
        got = wait_for(stack, want, timeout=300, query=without_probe(LATEST))
        print(f"\nchaos: {len(killed)} kills survived: {killed}; {len(want)} rows")
        print(f"chaos: restart -> stored again (s, incl. process start and a CLI poll): {recovery}")
        assert got == want
        counts = rows(stack.sql(without_probe(COUNTS)))[0]
        assert counts["latest_rows"] == counts["distinct_rows"] == len(want)
        assert rows(stack.sql(without_probe(HISTORY))) == want_history
        # no restart waited for the dead member's session to expire (45 s): static group membership
        assert not recovery or max(s for _, s in recovery) < 30, recovery
        fleet.assert_truth(got)
    finally:
        stack.stop()
