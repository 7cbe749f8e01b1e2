"""`eximtrack ingest` end to end into the embedded store: lines/s and rows/s, beside the same eximstats run.

Each run starts from an empty chDB store and runs the console script once per server file — exactly what a
user types (process start, migrations, parse, join, inserts into events/latest/aggregates/log_lines) —
then checks that the store holds one Track Delivery row per row of the generator's truth, so a run that
stored too little (or too much) cannot report a speed. On the busy cPanel server's file it also measures the
most `ingest` could reach on this machine (bench/ingest_bound.py: each part's CPU against the cores).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench import eximstats, ingest_bound
from bench.corpus import comparison_corpus, single_server_corpus
from bench.timing import summarize, timed

ROOT = Path(__file__).resolve().parent.parent


def _eximtrack() -> list[str]:
    script = Path(sys.executable).with_name("eximtrack")
    return [str(script)] if script.exists() else [sys.executable, "-m", "eximtrack"]


def ingest_all(files: dict[str, Path], store: Path) -> None:
    for server, path in files.items():
        subprocess.run(
            [*_eximtrack(), "ingest", "--store", f"chdb://{store}", "--server", server,
             "--retention-days", "0", str(path)],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip


def _sql(store: Path, statement: str) -> list[dict]:
    out = subprocess.run(
        [*_eximtrack(), "sql", "--store", f"chdb://{store}", "--format", "json", statement],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def stored_counts(store: Path) -> dict:
    row = _sql(store, "SELECT (SELECT count() FROM events) AS events, (SELECT count() FROM latest FINAL) AS latest, "
               "(SELECT count() FROM log_lines) AS log_lines, (SELECT count() FROM rejects) AS rejects")[0]  # fmt: skip
    return {k: int(v) for k, v in row.items()}


def disk_usage(store: Path, events: int) -> dict:
    """Bytes on disk of the active parts per table (the store as ingest left it), per stored event."""
    rows = _sql(store, "SELECT table, sum(bytes_on_disk) AS bytes FROM system.parts WHERE active AND "
                "database = currentDatabase() GROUP BY table ORDER BY bytes DESC")  # fmt: skip
    by_table = {r["table"]: int(r["bytes"]) / events for r in rows}
    return {"bytes_per_event": sum(by_table.values()), "by_table": by_table}


def run(quick: bool, workdir: Path) -> dict:
    """The comparison corpus (several servers, the default mix), then one busy cPanel server's log."""
    out = measure(*comparison_corpus(workdir, quick), workdir, runs=2 if quick else 3)
    out["corpus"]["id_format"] = "old (16 chars)"
    files, manifest = single_server_corpus(workdir, quick)
    single = measure(files, manifest, workdir, runs=2 if quick else 3)
    single.pop("disk")
    # what this machine allows at best on that file: each part's CPU against its cores (bench/ingest_bound.py)
    ((server, path),) = files.items()
    eximstats_s = single["corpus"]["lines"] / single["eximstats"]["median"]
    single["bound"] = ingest_bound.measure(path, server, workdir, eximstats_s, runs=2)
    out["single_server"] = single
    return out


def measure(files: dict[str, Path], manifest: dict, workdir: Path, runs: int) -> dict:
    """eximstats then `eximtrack ingest` (a fresh store each run) over `files`, `runs` times alternating."""
    paths = list(files.values())
    lines = manifest["totals"]["lines"]
    with open(files[next(iter(files))].parent / "truth.jsonl", "rb") as fh:
        truth_rows = sum(1 for _ in fh)
    ref, line_rates, row_rates = [], [], []
    counts: dict = {}
    disk: dict = {}
    for i in range(runs):
        ref.append(lines / eximstats.run(paths, workdir / "eximstats.txt"))
        store = workdir / f"ingest-store-{i}"
        shutil.rmtree(store, ignore_errors=True)
        secs, _ = timed(lambda store=store: ingest_all(files, store))
        counts = stored_counts(store)
        if counts["latest"] != truth_rows:
            raise RuntimeError(f"ingest stored {counts['latest']} Track Delivery rows, the generator's truth has "
                               f"{truth_rows}")  # fmt: skip
        line_rates.append(lines / secs)
        row_rates.append((counts["events"] + counts["log_lines"] + counts["rejects"]) / secs)
        if i == runs - 1:
            disk = disk_usage(store, counts["events"])
        shutil.rmtree(store, ignore_errors=True)
    ref_s, line_s = summarize(ref, "lines/s"), summarize(line_rates, "lines/s")
    messages = sum(s["messages"] for s in manifest["servers"].values())
    return {
        "corpus": {"lines": lines, "servers": len(files), "messages": messages},
        "eximstats": ref_s.as_dict(),
        "ingest_lines": line_s.as_dict(),
        "ingest_rows": summarize(row_rates, "rows/s").as_dict(),
        "stored": counts,
        "truth_rows": truth_rows,
        "disk": disk,
        "ratio": line_s.median / ref_s.median,
        "target_ratio": 1.0,
    }
