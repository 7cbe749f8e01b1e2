"""The shipper's persisted read position, and the rule for when it may advance.

A checkpoint is ``{"file_id", "offset"}`` (a :class:`producers.tail.Position`): the identity of the log file
and the offset of the first byte *not yet acknowledged by Kafka*. It is written atomically (temp file in the
same directory, fsync, rename, fsync of the directory) so a crash leaves either the old or the new one.

:class:`AckWindow` enforces the order "Kafka ack, then checkpoint": records are registered in send order
with their delivery future; the checkpoint position only moves past a record when it and every record sent
before it were acknowledged (``acks=all``). A failed delivery stops the window there -- nothing after it is
ever checkpointed -- and is reported to the caller. The window also bounds memory: the shipper stops
reading while it is full.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from producers.tail import Position

FORMAT_VERSION = 1


def load(path: str | os.PathLike[str]) -> Position | None:
    """Read a checkpoint; None if there is none. A corrupt file raises ValueError (do not guess)."""
    try:
        raw = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        return Position(str(data["file_id"]), int(data["offset"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint {path} is corrupt: {raw[:200]!r}") from exc


def save(path: str | os.PathLike[str], pos: Position, **extra: Any) -> None:
    """Atomically replace the checkpoint at ``path`` with ``pos`` (tmp + fsync + rename + dir fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"file_id": pos.file_id, "offset": pos.offset, "v": FORMAT_VERSION, **extra})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, body.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class DeliveryFuture(Protocol):
    """What we need of kafka-python's FutureRecordMetadata."""

    is_done: bool

    def failed(self) -> bool: ...

    @property
    def exception(self) -> BaseException | None: ...


@dataclass(slots=True)
class _Pending:
    future: DeliveryFuture
    position: Position | None  # where to resume after this record (None: not a log line)
    nbytes: int


class AckWindow:
    """In-order tracking of in-flight records; yields the newest position safe to checkpoint.

    :param max_records: at most this many records in flight (sent, not yet acknowledged).
    :param max_bytes: at most this many payload bytes in flight.
    """

    def __init__(self, max_records: int = 50_000, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._pending: deque[_Pending] = deque()
        self._bytes = 0
        self.acked_records = 0
        self.acked_bytes = 0
        self.safe: Position | None = None  # newest position all of whose records are acknowledged
        self.error: BaseException | None = None

    def add(self, future: DeliveryFuture, position: Position | None, nbytes: int) -> None:
        self._pending.append(_Pending(future, position, nbytes))
        self._bytes += nbytes

    def collect(self) -> int:
        """Pop acknowledged records from the head; return how many. Stops at the first failure."""
        n = 0
        while self._pending and self._pending[0].future.is_done:
            head = self._pending[0]
            if head.future.failed():
                self.error = head.future.exception or RuntimeError("delivery failed")
                break
            self._pending.popleft()
            self._bytes -= head.nbytes
            self.acked_records += 1
            self.acked_bytes += head.nbytes
            if head.position is not None:
                self.safe = head.position
            n += 1
        return n

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.max_records or self._bytes >= self.max_bytes

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def in_flight_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._pending)


class Checkpointer:
    """Writes the window's safe position to disk when it moved, at most every ``interval`` seconds."""

    def __init__(self, path: str | os.PathLike[str], interval: float = 1.0) -> None:
        self.path = Path(path)
        self.interval = interval
        self.written: Position | None = None
        self._last_write = float("-inf")
        self.writes = 0

    def maybe_write(self, pos: Position | None, now: float, *, force: bool = False) -> bool:
        if pos is None or pos == self.written:
            return False
        if not force and now - self._last_write < self.interval:
            return False
        save(self.path, pos)
        self.written = pos
        self._last_write = now
        self.writes += 1
        return True

    def remove_stale_tmp(self) -> None:
        for p in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            with contextlib.suppress(OSError):
                p.unlink()
