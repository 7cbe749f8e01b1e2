"""Core throughput: parse + join (no store) lines/s, beside eximstats on the same files in the same run.

The core pass is exactly what `eximtrack ingest` does before it writes: read each server's file as bytes,
decode, `Joiner.process` every line (stream/join.py: the compiled parser and joiner of native/), keep the
events. It is measured two ways: one process over all files (what eximstats does), and one process per
server file on all cores (how a fleet's logs are naturally split; the join is per server, so it needs no
coordination).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import eximstats
from bench.corpus import comparison_corpus
from bench.timing import summarize, timed


def join_file(path: str, server: str) -> tuple[int, int]:
    """Parse + join one server's file; (lines, events)."""
    from eximtrack.ingest import file_id_of, iter_file_lines, make_joiner

    joiner = make_joiner(server)
    fid = file_id_of(path)
    lines = events = 0
    for offset, line in iter_file_lines(path):
        out = joiner.process(line, file_id=fid, offset=offset)
        lines += 1
        events += len(out.events)
    return lines, events


def join_all(files: dict[str, Path], workers: int = 1) -> tuple[int, int]:
    if workers <= 1:
        totals = [join_file(str(p), s) for s, p in files.items()]
    else:
        with ProcessPoolExecutor(workers) as pool:
            totals = list(pool.map(join_file, [str(p) for p in files.values()], list(files)))
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def run(quick: bool, workdir: Path) -> dict:
    files, manifest = comparison_corpus(workdir, quick)
    paths = list(files.values())
    lines = manifest["totals"]["lines"]
    size = sum(p.stat().st_size for p in paths)
    runs = 2 if quick else 3
    cores = os.cpu_count() or 1
    ref, one, many = [], [], []
    report = workdir / "eximstats.txt"
    events = 0
    for _ in range(runs):  # interleaved, so a slow moment of the machine hits both sides
        ref.append(lines / eximstats.run(paths, report))
        secs, (n, events) = timed(lambda: join_all(files, 1))
        if n != lines:
            raise RuntimeError(f"core read {n} lines, the corpus has {lines}")
        one.append(lines / secs)
        secs, _ = timed(lambda: join_all(files, cores))
        many.append(lines / secs)
    ref_s, one_s, many_s = summarize(ref, "lines/s"), summarize(one, "lines/s"), summarize(many, "lines/s")
    return {
        "corpus": {"lines": lines, "bytes": size, "servers": len(files), "id_format": "old (16 chars)",
                   "messages": manifest["totals"]["messages"], "events": events},
        "eximstats": ref_s.as_dict() | {"version": eximstats.version(),
                                         "totals": eximstats.totals(report.read_text())},
        "core_1_process": one_s.as_dict(),
        "core_all_cores": many_s.as_dict(),
        "ratio_1_process": one_s.median / ref_s.median,
        "ratio_all_cores": many_s.median / ref_s.median,
        "cores": cores,
        "target_ratio": 1.0,  # issue 12: parse + join in one process at least as fast as eximstats
    }  # fmt: skip
