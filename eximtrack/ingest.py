"""Batch ingest: Exim main log files (plain or .gz) -> core joiner -> store.

Files are read in the order given, line by line as bytes (so offsets are exact byte offsets of the
decompressed stream), decoded as UTF-8 with errors="replace", and fed to `stream.join.Joiner`. Its events,
rejects and log lines are written to the store in batches. Ids are deterministic (server, file identity,
offset, content), so ingesting the same file twice changes nothing a FINAL query sees.
"""

from __future__ import annotations

import gzip
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from sinks.clickhouse.store import BATCH_ROWS

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class IngestStats:
    files: int = 0
    bytes: int = 0
    lines: int = 0
    events: int = 0
    rejects: int = 0
    log_lines: int = 0
    open_messages: int = 0
    expired_events: int = 0  # events older than the store's retention (dropped by the TTL on insert)
    seconds: float = 0.0
    joiner: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def file_id_of(path: str) -> str:
    """Identity of a log file: absolute path + inode (stable across re-reads, distinct after rotation)."""
    ap = os.path.abspath(path)
    try:
        ino = os.stat(ap).st_ino
    except OSError:
        ino = 0
    return f"{ap}:{ino}"


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


class _Reader:
    """Byte lines of a plain or gzip file, with the decompressed offset and the compressed position."""

    def __init__(self, path: str):
        self.path = path
        self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.size = os.fstat(self.raw.fileno()).st_size
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw) if _is_gzip(path) else self.raw

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def lines(self) -> Iterator[tuple[int, str]]:
        offset = 0
        for raw in self.stream:
            start = offset
            offset += len(raw)
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            yield start, raw.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


def iter_file_lines(path: str) -> Iterator[tuple[int, str]]:
    """(byte offset, line without newline) of a plain or .gz file."""
    reader = _Reader(path)
    try:
        yield from reader.lines()
    finally:
        reader.close()


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, stream=None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.last = 0.0
        self.started = time.monotonic()

    def update(self, done: int, lines: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = lines / max(now - self.started, 1e-9)
        self.stream.write(f"\r[{bar}] {frac * 100:5.1f}% {lines:,} lines {rate:,.0f} lines/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _Writer:
    """Writes batches to the store on a background thread, so joining and inserting overlap (the engine
    works outside the GIL). At most `depth` batches wait; the first insert error is re-raised in the caller."""

    def __init__(self, store, batch_rows: int, background: bool = True, depth: int = 2):
        self.store = store
        self.batch_rows = batch_rows
        self.error: BaseException | None = None
        self.thread = None
        if background:
            self.queue: queue.Queue = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._run, name="eximtrack-ingest-writer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self._write(*item)
                except BaseException as exc:  # handed to the caller
                    self.error = exc

    def _write(self, method: str, records: list) -> None:
        getattr(self.store, method)(records, self.batch_rows)

    def put(self, method: str, records: list) -> None:
        if self.error is not None:
            raise self.error
        if self.thread is None:
            self._write(method, records)
        else:
            self.queue.put((method, records))

    def close(self, raise_error: bool = True) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None
        if raise_error and self.error is not None:
            raise self.error


def make_joiner(
    server: str, tz: str = "UTC", userdomains: str | None = None, trueuserowners: str | None = None
):
    from stream.accounts import AccountMap
    from stream.join import Joiner

    accounts = None
    if userdomains or trueuserowners:
        accounts = AccountMap.from_files(userdomains=userdomains, trueuserowners=trueuserowners)
    # keep_latest=False: the store folds the latest state; the joiner need not keep every event in memory.
    return Joiner(server=server, tz=tz, accounts=accounts, keep_latest=False)


def ingest_files(
    store,
    paths: list[str],
    *,
    joiner=None,
    server: str | None = None,
    tz: str = "UTC",
    userdomains: str | None = None,
    trueuserowners: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
    now: Callable[[], float] = time.time,
    background: bool = True,
    joining=None,
) -> IngestStats:
    """Feed every line of `paths` (in order) to one joiner and write its output to `store` in batches of
    `batch_rows`.

    By default the joiner runs in a child process (eximtrack/join_process.py) that sends the batches
    encoded, and this process only inserts them: joining and inserting then use a core each; `joining`
    (`join_process.start` of the same files) is such a child started earlier, before the store was opened.
    With a `joiner` object, or background=False, everything runs here (background: inserts on a thread)."""
    if joiner is None and joining is None and not server:
        raise ValueError("a server name is required")
    started = time.monotonic()
    # search_time's trigram index is built once at the end, for the parts no merge rewrote meanwhile
    with store.text_index_deferred():
        retention = store.retention_days()
        cutoff = now() - retention * 86400 if retention else None
        total = sum(os.path.getsize(p) for p in paths)
        if joining is not None:
            stats = joining.run(store, progress, cutoff)
        elif joiner is None and background:
            from eximtrack import join_process

            job = join_process.JoinJob(list(paths), server, tz, userdomains, trueuserowners, batch_rows)
            stats = join_process.run(store, job, progress, cutoff)
        else:
            if joiner is None:
                joiner = make_joiner(server, tz, userdomains, trueuserowners)
            writer = _Writer(store, batch_rows, background=background)
            method = {"events": "insert_events", "rejects": "insert_rejects", "log_lines": "insert_lines"}
            try:
                stats = join_files(
                    joiner,
                    paths,
                    lambda table, records: writer.put(method[table], records),
                    batch_rows=batch_rows,
                    cutoff=cutoff,
                    on_progress=progress.update if progress is not None else None,
                )
            except BaseException:
                writer.close(raise_error=False)
                raise
            writer.close()
        if progress is not None:
            progress.update(total, stats.lines, force=True)
            progress.finish()
    stats.seconds = time.monotonic() - started
    return stats


def join_files(
    joiner,
    paths: list[str],
    emit: Callable[[str, list], None],
    *,
    batch_rows: int = BATCH_ROWS,
    cutoff: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestStats:
    """Feed every line of `paths` (in order) to `joiner`; hand its output to `emit(table, records)` in
    batches of at most `batch_rows` per table (events, rejects, log_lines), the rest at the end.
    `cutoff`: count the events older than it (the store's retention drops them). `on_progress(bytes done,
    lines)` every 1024 lines. Returns the counts (seconds left 0: the caller times the whole ingest)."""
    stats = IngestStats()
    pending: dict[str, list] = {"events": [], "rejects": [], "log_lines": []}

    def flush(force: bool = False) -> None:
        for table, records in pending.items():
            if records and (force or len(records) >= batch_rows):
                emit(table, records.copy())  # the receiver may keep it (a writer thread): hand over a copy
                records.clear()

    events, rejects, lines = pending["events"], pending["rejects"], pending["log_lines"]
    done_before = 0
    for path in paths:
        reader = _Reader(path)
        fid = file_id_of(path)
        try:
            for offset, line in reader.lines():
                stats.lines += 1
                out = joiner.process(line, file_id=fid, offset=offset)
                if out.events:
                    events.extend(out.events)
                    stats.events += len(out.events)
                    if cutoff is not None:
                        stats.expired_events += sum(1 for e in out.events if 0 < e.actionunixtime < cutoff)
                if out.rejects:
                    rejects.extend(out.rejects)
                    stats.rejects += len(out.rejects)
                if out.lines:
                    lines.extend(out.lines)
                    stats.log_lines += len(out.lines)
                if len(events) >= batch_rows or len(rejects) >= batch_rows or len(lines) >= batch_rows:
                    flush()
                if on_progress is not None and not stats.lines & 1023:
                    on_progress(done_before + reader.position(), stats.lines)
        finally:
            done_before += reader.size
            stats.bytes += reader.size
            reader.close()
        stats.files += 1
    flush(force=True)
    stats.joiner = dict(getattr(joiner, "stats", {}) or {})
    open_messages = getattr(joiner, "open_messages", None)
    if not isinstance(open_messages, int):
        open_messages = stats.joiner.get("open_messages", 0)
    stats.open_messages = int(open_messages or 0)
    return stats


__all__ = [
    "IngestStats",
    "Progress",
    "file_id_of",
    "ingest_files",
    "iter_file_lines",
    "join_files",
    "make_joiner",
]
