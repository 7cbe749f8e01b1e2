"""Scale-out on this machine: the pipeline's drain with one stream worker and with two (the second takes
half of the raw-lines partitions), same log sets, same stack otherwise. `python -m bench --only scaleout`.

docs/DEPLOY.md's sizing uses the cost per line measured here and in the pipeline suite; on a 2-core box the
cores, not the number of workers, are the limit, and this says by how much a second worker helps there.

A second sink needs a ClickHouse server (an embedded store admits one process): with
`EXIMTRACK_BENCH_CLICKHOUSE_URL=http://user:pass@host:8123` the suite also drains with two workers and one
sink, then two sinks (same group, each a share of the partitions), into a fresh database of that server;
without it the result says that it was not measured.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.corpus import build
from bench.pipeline import drain, expected_message_lines, warmed_up
from bench.timing import summarize

SERVER_ENV = "EXIMTRACK_BENCH_CLICKHOUSE_URL"


def measure(
    workdir: Path,
    quick: bool,
    workers: int,
    drains: list[dict[str, Path]],
    sinks: int = 1,
    store: str | None = None,
) -> dict:
    from eximtrack.devstack import DevStack

    root = workdir / f"scaleout-{workers}-{sinks}" / ("quick" if quick else "full")
    shutil.rmtree(root, ignore_errors=True)
    logs = {s: root / f"{s}.log" for s in drains[0]}
    root.mkdir(parents=True)
    for p in logs.values():
        p.touch()
    stack = DevStack(root, store, prefix=f"scale{workers}{sinks}.")
    with stack:
        stack.start(logs)
        for n in range(2, workers + 1):
            stack.stream(n).start()
        for n in range(2, sinks + 1):
            stack.sink(n).start()
        # the drains measure a settled group: a worker joining mid-drain stalled it for minutes once
        stack.wait_workers_ready(timeout=120 if quick else 300)
        store, appender = warmed_up(stack, logs)
        try:
            done = [
                drain(
                    stack,
                    store,
                    appender,
                    files,
                    expected_message_lines(files),
                    timeout=120 if quick else 900,
                )
                for files in drains
            ]
        finally:
            appender.close()
    rates = summarize([d["lines_per_s"] for d in done], "lines/s")
    cpu: dict[str, float] = {}
    for d in done:
        for name, cores in d["cpu_cores_used"].items():
            cpu[name] = cpu.get(name, 0.0) + cores / len(done)
    return {"workers": workers, "sinks": sinks, "lines_per_s": rates.as_dict(), "cpu_cores_used": cpu}


# 8 servers (the pipeline suite's 2 would sit on at most 2 of the 12 raw-lines partitions: nothing for a
# second worker), about as many lines per drain as the pipeline suite's
SIZE = {"quick": {"servers": 4, "messages_per_day": 500}, "full": {"servers": 8, "messages_per_day": 10_000}}


def log_set(workdir: Path, quick: bool, seed: int, days_ago: int) -> dict[str, Path]:
    start = (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT00:00:00+00:00")
    name = f"scaleout-{seed}" + ("-quick" if quick else "")
    return build(
        workdir / name, id_format="new", seed=seed, start=start, **SIZE["quick" if quick else "full"]
    )[0]


def run(quick: bool, workdir: Path) -> dict:
    runs = 1 if quick else 2  # the smoke run checks that each layout drains, not how steadily
    out = {}
    for workers in (1, 2):
        drains = [log_set(workdir, quick, seed=40 + k, days_ago=runs + 1 - k) for k in range(runs)]
        out[str(workers)] = measure(workdir, quick, workers, drains)
    one, two = (out[k]["lines_per_s"]["median"] for k in ("1", "2"))
    result = {"by_workers": out, "speedup_2_workers": two / one, "cores": os.cpu_count()}
    server = os.environ.get(SERVER_ENV)
    if not server:
        result["by_sinks"] = {
            "not_measured": f"no ClickHouse server ({SERVER_ENV}); an embedded store admits one sink"
        }
        return result
    by_sinks = {}
    for sinks in (1, 2):
        drains = [log_set(workdir, quick, seed=50 + k, days_ago=runs + 1 - k) for k in range(runs)]
        store = f"{server.rstrip('/')}/scaleout_{uuid.uuid4().hex[:8]}"
        by_sinks[str(sinks)] = measure(workdir, quick, 2, drains, sinks=sinks, store=store)
    result["by_sinks"] = by_sinks
    result["speedup_2_sinks"] = (
        by_sinks["2"]["lines_per_s"]["median"] / by_sinks["1"]["lines_per_s"]["median"]
    )
    return result
