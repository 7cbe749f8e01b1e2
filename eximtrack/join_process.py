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
`eximtrack ingest` starts the child before it opens the store (`start`, then `Joining.run`): opening a store
(~0.7 s for a new one) and the first batch's joining overlap. The events older than the store's retention
are counted by the parent, which knows the retention, from the encoded batches (`count_before`).
The parent stops the child on any error of its own (an insert, Ctrl-C, a store it cannot open). The result is
the same as joining in one process: the same joiner over the same lines in the same order
(tests/integration/test_cli.py).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

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


class JoinProcessError(RuntimeError):
    """The joining process ended without reporting (killed, out of memory)."""


class Joining:
    """A joining child at work: started before the store is open (`start`), so that it reads and joins
    while this process opens the store, then drained into the store (`run`). A context manager: leaving
    it stops the child if `run` did not finish it (the store could not be opened, an error, Ctrl-C)."""

    def __init__(self, job: JoinJob) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs chDB's threads
        self._receiver, sender = ctx.Pipe(duplex=False)
        self._child = ctx.Process(target=_child, args=(sender, job), name="eximtrack-join", daemon=True)
        self._child.start()
        sender.close()

    def run(self, store, progress: Progress | None = None, cutoff: float | None = None) -> IngestStats:
        """Insert what the child sends into `store` until it is done; returns the child's counts, with
        the events older than `cutoff` (epoch seconds: the store's retention drops them) counted here,
        where the store's retention is known, from the encoded batches."""
        expired = 0
        try:
            while True:
                try:
                    message = self._receiver.recv()
                except EOFError:
                    self._child.join()
                    raise JoinProcessError(
                        f"the joining process ended without finishing (exit code {self._child.exitcode})"
                    ) from None
                kind = message[0]
                if kind == "batch":
                    store.insert_encoded(message[1], message[2])
                    if cutoff is not None and message[1] == "events":
                        expired += count_before(message[2], "actionunixtime", cutoff)
                elif kind == "progress":
                    if progress is not None:
                        progress.update(message[1], message[2])
                elif kind == "done":
                    stats = message[1]
                    stats.expired_events = expired
                    return stats
                else:  # "error"
                    raise message[1]
        finally:
            self.stop()

    def stop(self) -> None:
        self._receiver.close()
        if self._child.is_alive():
            self._child.terminate()
        self._child.join()

    def __enter__(self) -> Joining:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(job: JoinJob) -> Joining:
    """Start joining `job` in a child process (`Joining.run` inserts what it sends)."""
    return Joining(job)


def run(store, job: JoinJob, progress: Progress | None = None, cutoff: float | None = None) -> IngestStats:
    """Join `job` in a child process and insert what it sends into `store`; returns the child's counts."""
    with start(job) as joining:
        return joining.run(store, progress, cutoff)


def count_before(data: bytes, column: str, cutoff: float) -> int:
    """Rows of an encoded batch (`encode.arrow_ipc`) whose time `column` is set and before `cutoff`."""
    ms = pa.ipc.open_file(pa.BufferReader(data)).read_all().column(column).cast(pa.int64())
    return pc.sum(pc.and_(pc.greater(ms, 0), pc.less(ms, round(cutoff * 1000)))).as_py() or 0


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


__all__ = [
    "JoinJob",
    "JoinProcessError",
    "Joining",
    "PROGRESS_LINES",
    "count_before",
    "run",
    "start",
]
