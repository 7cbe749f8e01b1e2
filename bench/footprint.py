"""Footprint of the join state: bytes per open message, in memory and on the changelog.

An open message is one whose `<=` arrived and whose `Completed` has not: the worker keeps its state
(stream/join.py MessageState) until then. Measured with tracemalloc over `n` realistic arrivals (the
arrival lines of the pipeline corpus: 1-n recipients, subjects, auth, TLS), without Kafka:
  worker_table_bytes   what the faust worker's in-memory table keeps per open message: the key and the
                       MessageState.to_bytes() value (everything the joiner + TableStates leave allocated);
  changelog_bytes      the size of that value, i.e. of its changelog record;
  as_python_dicts      the same states held as decoded dicts (how the worker held them before format 2 bytes);
  ingest_objects       MessageState objects, as `eximtrack ingest` holds them (Python's allocations only:
                       tracemalloc does not see the native rows of the compiled states, native/src/join.rs).
The pipeline suite measures the real worker process's RSS growth for the same question.
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


def _retained(build) -> tuple[int, object]:
    """Bytes still allocated after `build()` returned (what its result keeps alive), and the result."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return size, kept


def measure(lines: list[str]) -> dict:
    from stream.app import TableStates
    from stream.join import Joiner

    def worker_table() -> dict:
        # exactly what the stream worker holds: the joiner over TableStates, flushed once per Kafka record
        # (500 lines), whose table keeps MessageState.to_bytes() values under "server<US>msgid" keys
        table: dict = {}
        j = Joiner("bench", keep_latest=False, expiry=1e12, states=TableStates(table, "bench"))
        for r in range(0, len(lines), 500):
            for i, line in enumerate(lines[r : r + 500]):
                j.process(line, offset=r + i, seq=r + i)
            j.states.flush()
        return table

    def ingest_states() -> dict:
        j = Joiner("bench", keep_latest=False, expiry=1e12)  # nothing may expire mid-measurement
        for i, line in enumerate(lines):
            j.process(line, offset=i)
        return j.states

    table_bytes, table = _retained(worker_table)
    object_bytes, states = _retained(ingest_states)
    n = len(table)
    if n != len(states):
        raise RuntimeError(f"the worker table holds {n} states, the joiner {len(states)}")
    recipients = sum(len(st.rows) for st in states.values())
    as_dicts, _ = _retained(lambda: {k: json.loads(v) for k, v in table.items()})
    return {
        "open_messages": n,
        "recipients_per_message": recipients / n,
        "worker_table_bytes": table_bytes / n,
        "changelog_bytes": sum(len(v) for v in table.values()) / n,
        "as_python_dicts_bytes": as_dicts / n,
        "ingest_objects_bytes": object_bytes / n,
        "target_bytes": TARGET_BYTES,
    }


def run(quick: bool, workdir: Path) -> dict:
    files, _ = pipeline_corpus(workdir, quick, seed=20, days_ago=1)  # the pipeline suite's steady-load logs
    lines = arrival_lines(files, 10_000 if quick else 100_000)
    return measure(lines)
