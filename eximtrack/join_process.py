"""The joining half of `eximtrack ingest`, in a child process: it reads the files, joins their lines and sends
the parent each batch already encoded for the store (Arrow IPC, `sinks.clickhouse.encode.arrow_ipc`); the
parent, which owns the store, only inserts.

Why a process and not a thread: joining is Python and holds the GIL while it runs, and the embedded engine
(chDB) needs the GIL at points during an insert, so inserts on a thread beside the joiner took twice as
long as alone and the two halves barely overlapped (one core busy of two; docs/BENCHMARKS.md). In two
processes the joiner has one core and the engine the other. The child imports no store code.

Protocol, child -> parent on one pipe. A send returns once the parent has read it, so at most one encoded
batch waits while the child joins the next (bounded memory, and the child never runs ahead of a failing
store):
    ("batch", table, data)   one insert: encode.arrow_ipc(table, records)
    ("progress", bytes done, lines)
    ("done", IngestStats)    every batch was sent
    ("error", exception)     the child failed; the parent raises it
The parent stops the child on any error of its own (an insert, Ctrl-C). The result is the same as joining
in one process: the same joiner over the same lines in the same order (tests/integration/test_cli.py).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

from eximtrack.ingest import IngestStats, Progress, join_files, make_joiner

PROGRESS_LINES = 8192  # the child reports progress at most every this many lines


@dataclass(frozen=True)
class JoinJob:
    """What the child needs (picklable: it starts in a fresh interpreter)."""

    paths: list[str]
    server: str
    tz: str = "UTC"
    userdomains: str | None = None
    trueuserowners: str | None = None
    batch_rows: int = 50_000
    cutoff: float | None = None  # count events older than this (the store's retention drops them)


class JoinProcessError(RuntimeError):
    """The joining process ended without reporting (killed, out of memory)."""


def run(store, job: JoinJob, progress: Progress | None = None) -> IngestStats:
    """Join `job` in a child process and insert what it sends into `store`; returns the child's counts."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs chDB's threads
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, job), name="eximtrack-join", daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                child.join()
                raise JoinProcessError(
                    f"the joining process ended without finishing (exit code {child.exitcode})"
                ) from None
            kind = message[0]
            if kind == "batch":
                store.insert_encoded(message[1], message[2])
            elif kind == "progress":
                if progress is not None:
                    progress.update(message[1], message[2])
            elif kind == "done":
                return message[1]
            else:  # "error"
                raise message[1]
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _child(sender, job: JoinJob) -> None:
    from eximtrack.gc_policy import tune_for_throughput
    from sinks.clickhouse.encode import arrow_ipc

    lines_reported = 0

    def report(done: int, lines: int) -> None:
        nonlocal lines_reported
        if lines - lines_reported >= PROGRESS_LINES:
            lines_reported = lines
            sender.send(("progress", done, lines))

    try:
        joiner = make_joiner(job.server, job.tz, job.userdomains, job.trueuserowners)
        tune_for_throughput()
        stats = join_files(
            joiner,
            job.paths,
            lambda table, records: sender.send(("batch", table, arrow_ipc(table, records))),
            batch_rows=job.batch_rows,
            cutoff=job.cutoff,
            on_progress=report,
        )
        sender.send(("done", stats))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        pass
    except BrokenPipeError:  # the parent stopped reading (its own error): nothing to report
        pass
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            sender.send(("error", exc))
        except Exception:  # not picklable, or the parent is gone
            try:
                sender.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            except OSError:
                pass
    finally:
        sender.close()


__all__ = ["JoinJob", "JoinProcessError", "PROGRESS_LINES", "run"]
