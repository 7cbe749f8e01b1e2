"""How the processes that handle every line (the ingest child, the stream worker, the sink) set Python's
cyclic garbage collector.

Why: they allocate millions of small objects (parsed lines, events, states, decoded records), and few of
them are ever part of a reference cycle. With CPython's defaults (a young collection every 700 allocations,
a full one whenever the long-lived objects grew by a quarter) the collector walked the growing heap again and
again: in `eximtrack ingest`'s joining process it took 12 % of the time and freed nothing (collected 0, on the
busy cPanel server's log; docs/BENCHMARKS.md, session 16).

What: the objects alive after start-up (modules, classes, the app) are frozen out of every collection, and
the young generation is collected every 100,000 allocations instead of 700 (cycles still go, a little
later: at most ~100k dead objects wait), a full collection after 100 middle ones instead of 10. Nothing is
disabled: a process that does make cycles keeps its memory bounded.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 100)


def tune_for_throughput() -> None:
    """Call once, after start-up (imports done, long-lived objects built), before the hot loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


__all__ = ["THRESHOLDS", "tune_for_throughput"]
