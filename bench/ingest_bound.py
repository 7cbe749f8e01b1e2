"""How fast `eximtrack ingest` of one file could be on this machine at best: the CPU of each of its parts,
measured apart, against the machine's cores.

`ingest` spreads its parts over the cores (a joining child, the store's engine threads), so whatever it
overlaps, its wall time is at least (CPU of all its parts) / cores, and its ratio to eximstats at most
eximstats' seconds × cores / that CPU. The parts, each measured in a fresh process (chDB allows one store
per process; CPU from getrusage, every engine thread included):

    join         parsing and joining every line (the compiled core through `join_files`, the collector set
                 as the joining child sets it)
    encode       the batches' Arrow encoding (what the joining child sends the store)
    open         opening a new store (the engine loaded, the schema baseline laid out)
    insert       inserting the batches with every view attached, merges stopped: the rows of `events`,
                 `latest` and its access paths, the hourly aggregates' feed, `log_lines`, `rejects`
    insert_bare  the same batches into a store with no view at all (`events`, `log_lines`, `rejects` only):
                 what a store without issue 11's access paths would cost

Merges, the final build of the trigram index and process start come on top, so the bound is an upper one:
the measured `ingest` stays below it (docs/BENCHMARKS.md, session 58).

    python -m bench.ingest_bound FILE SERVER STORE_DIR --views|--bare     (one child's parts, as JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from bench.timing import summarize

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parts(path: str, server: str, store_dir: str, views: bool) -> dict:
    """The CPU seconds of each part for one file (run in a process of its own)."""
    from eximtrack.gc_policy import tune_for_throughput
    from eximtrack.ingest import join_files, make_joiner
    from sinks.clickhouse.encode import arrow_ipc
    from sinks.clickhouse.store import Store

    tune_for_throughput()
    batches: list[tuple[str, bytes]] = []
    encode = 0.0

    def encoded(table: str, records: list) -> None:
        nonlocal encode
        t = _cpu()
        batches.append((table, arrow_ipc(table, records)))
        encode += _cpu() - t

    t = _cpu()
    join_files(make_joiner(server), [path], encoded)
    join = _cpu() - t - encode
    shutil.rmtree(store_dir, ignore_errors=True)
    t = _cpu()
    store = Store.open(f"chdb://{store_dir}")
    opened = _cpu() - t
    try:
        if not views:
            for (name,) in store.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'"
            ).result_rows:
                store.command(f"DROP VIEW {name}")
        store.command("SYSTEM STOP MERGES")
        t = _cpu()
        for table, data in batches:
            store.insert_encoded(table, data, rollup=views)
        insert = _cpu() - t
    finally:
        store.close()
        shutil.rmtree(store_dir, ignore_errors=True)
    return {"join": join, "encode": encode, "open": opened, "insert" if views else "insert_bare": insert}


def _child(path: Path, server: str, store_dir: Path, views: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ingest_bound", str(path), server, str(store_dir),
         "--views" if views else "--bare"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(path: Path, server: str, workdir: Path, eximstats_seconds: float, runs: int) -> dict:
    """Each part's CPU over `runs` rounds (a store with its views, then one without, alternating) and the
    bound they give against eximstats' `eximstats_seconds` on this machine's cores."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        for views in (True, False):
            for name, seconds in _child(path, server, workdir / "ingest-bound-store", views).items():
                samples.setdefault(name, []).append(seconds)
    return bound(samples, eximstats_seconds, os.cpu_count() or 1)


def bound(samples: dict[str, list[float]], eximstats_seconds: float, cores: int) -> dict:
    """The most `ingest` can reach against eximstats: eximstats' seconds × `cores` / the median CPU of the
    parts (`samples`: seconds per part, as `parts` names them), with the store as it is and with no view."""
    cpu = {name: summarize(values, "s").as_dict() for name, values in samples.items()}
    med = {name: c["median"] for name, c in cpu.items()}
    common = med["join"] + med["encode"] + med["open"]
    return {
        "cpu_s": cpu,
        "cores": cores,
        "eximstats_s": eximstats_seconds,
        "budget_cpu_s": eximstats_seconds * cores,  # what `ingest` may spend to be as fast as eximstats
        "total_cpu_s": common + med["insert"],
        "ratio_bound": eximstats_seconds * cores / (common + med["insert"]),
        "ratio_bound_bare": eximstats_seconds * cores / (common + med["insert_bare"]),
    }


def describe(b: dict) -> str:
    """The bound as the report says it."""
    c = b["cpu_s"]
    return (
        f"What this machine allows (bench/ingest_bound.py; CPU seconds of each part measured apart, medians over "
        f"{c['insert']['runs']} rounds): parse + join {c['join']['median']:.2f}, Arrow encoding "
        f"{c['encode']['median']:.2f}, opening a new store {c['open']['median']:.2f}, inserting the rows with "
        f"every view, merges stopped, **{c['insert']['median']:.2f}** (with no view at all: "
        f"{c['insert_bare']['median']:.2f}). {b['cores']} cores have {b['budget_cpu_s']:.2f} CPU-s in eximstats' "
        f"{b['eximstats_s']:.2f} s, so `ingest` cannot pass **{b['ratio_bound']:.2f}×** eximstats here (a store "
        f"without access paths: {b['ratio_bound_bare']:.2f}×); merges and the trigram index's final build come "
        "on top."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest_bound", description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("server")
    ap.add_argument("store_dir")
    kind = ap.add_mutually_exclusive_group(required=True)
    kind.add_argument("--views", action="store_true", help="the store as it is")
    kind.add_argument("--bare", action="store_true", help="the store with every view dropped")
    args = ap.parse_args(argv)
    print(json.dumps(parts(args.file, args.server, args.store_dir, args.views)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
