"""Footprint of the join state: bytes per open message, in memory and on the changelog.

An open message is one whose `<=` arrived and whose `Completed` has not: the worker keeps its
MessageState (stream/join.py) until then. The faust worker holds each state as the plain dict of
`MessageState.to_dict()` in its in-memory table and writes it, JSON-encoded, to the changelog topic; `eximtrack
ingest` holds MessageState objects. All three are measured here with tracemalloc over `n` realistic
arrivals (the arrival lines of the pipeline corpus, 1-n recipients, subjects, auth, TLS) fed to a Joiner,
without Kafka; the pipeline suite measures the real worker process's RSS for the same question.
(Disk bytes per stored event come from the ingest and queries suites.)
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

from bench.corpus import pipeline_corpus

TARGET_BYTES = 1024


def arrival_lines(files: dict[str, Path], n: int) -> list[str]:
    out = []
    for path in files.values():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if " <= " in line:
                    out.append(line.rstrip("\n"))
                    if len(out) >= n:
                        return out
    return out


def measure(lines: list[str]) -> dict:
    from stream.join import Joiner

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    joiner = Joiner(server="bench", keep_latest=False, expiry=1e12)  # nothing may expire mid-measurement
    for i, line in enumerate(lines):
        joiner.process(line, offset=i)
    gc.collect()
    objects = tracemalloc.get_traced_memory()[0] - base
    states = dict(joiner.states)
    n = len(states)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    table = {k: st.to_dict() for k, st in states.items()}
    gc.collect()
    as_dicts = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    wire = [len(json.dumps(v, separators=(",", ":")).encode()) for v in table.values()]
    recipients = sum(len(st.rows) for st in states.values())
    return {
        "open_messages": n,
        "recipients_per_message": recipients / n,
        "memory_objects_bytes": objects / n,
        "memory_table_dicts_bytes": as_dicts / n,
        "changelog_json_bytes": sum(wire) / n,
        "target_bytes": TARGET_BYTES,
    }


def run(quick: bool, workdir: Path) -> dict:
    files, _ = pipeline_corpus(workdir, quick, seed=7)
    lines = arrival_lines(files, 10_000 if quick else 100_000)
    return measure(lines)
