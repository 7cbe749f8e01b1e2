"""Follow one log file like ``tail -F``, yielding complete lines with a stable identity. No Kafka here.

This module owns *where we are in the log*: which file (identity) and which byte offset. Every
:class:`Line` carries ``file_id`` and ``offset`` (byte offset of the line's first byte in that file), so a
line read twice -- after a crash, or after a producer retry -- is recognisably the same line.

File identity
    ``"dev:inode:fingerprint"``, where the fingerprint is a hash of the file's first line (at most
    :data:`FINGERPRINT_BYTES` bytes). ``dev:inode`` alone is not enough: copytruncate keeps the inode while
    the content starts over, and a deleted file's inode is reused by a later file. Exim's first line starts
    with a timestamp, so two generations of one inode get different fingerprints. The fingerprint is
    defined as soon as the file has one complete line -- i.e. always by the time a line is emitted.

Situations handled (all without losing or repeating a line)
    * rename + create (logrotate ``create``, cPanel's rotation): the path now names a new inode. This is
      checked on every poll, and the new file is opened at once and held by fd (so a second rotation
      before we get to it cannot make us skip it). The old file is read to its end (and watched for
      ``rotate_grace`` more seconds, for a writer that has not reopened yet), then the new one from 0.
      Limit: a generation that was created *and* rotated away between two polls (well under a second)
      is never seen live; it would be found among the siblings only on a resume.
    * copytruncate: same inode, size below our offset (or the first line changed). If a sibling such as
      ``FILE.1`` has our fingerprint and is longer than our offset, it is the copy: the lines we had not
      read yet are read from it, under the *old* identity (the copy has the same bytes at the same
      offsets). Then the truncated file is read from 0 under its new identity.
    * the file does not exist yet, or is between rename and create: wait.
    * a partial last line: held until its newline arrives. At rotation the old file will never get that
      newline; the fragment is emitted as a line (``partial=True``) so it is not lost.
    * very long lines: the first ``max_line_bytes`` bytes are kept, the rest up to the newline skipped;
      ``truncated=True`` and counted in ``stats.lines_truncated``.
    * resume from a checkpoint ``(file_id, offset)``: if the current file is the checkpointed one, go on
      from the offset. Otherwise look for the checkpointed inode among ``FILE.*`` / ``FILE-*`` siblings
      (uncompressed only); if found, finish it from the offset, then read any uncompressed siblings
      rotated after it (oldest first), then the current file from 0. If not found, start the current
      file from 0 (counted in ``stats.checkpoint_lost``).

The follower does no sleeping itself: :meth:`Follower.poll` reads what is available now and returns
(possibly nothing); :meth:`Follower.follow` wraps it with an injectable ``sleep``. Time (for the rotation
grace) comes from an injectable ``clock``. Tests drive it with temp files and a fake clock.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import stat as statmod
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: How many bytes of the first line make up the fingerprint.
FINGERPRINT_BYTES = 256
#: Default cap of one line. Exim lines are rarely above a few KB; a runaway line must not blow up a
#: Kafka record (1 MB default) or our memory.
MAX_LINE_BYTES = 64 * 1024
READ_CHUNK = 256 * 1024
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z", ".zip")


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line (without its newline) and its identity."""

    data: bytes
    file_id: str
    offset: int  # byte offset of the line's first byte in file_id
    next_offset: int  # offset just after this line's newline: where to resume after it
    truncated: bool = False  # longer than max_line_bytes; the rest was skipped
    partial: bool = False  # the file was rotated away before this line got its newline

    @property
    def text(self) -> str:
        # Exim escapes non-printing characters itself; anything still not UTF-8 is kept visibly as \\xNN
        # rather than replaced, so no information is lost.
        return self.data.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Position:
    """Where to resume: the identity of a file and the offset of the first unread byte."""

    file_id: str
    offset: int

    @property
    def dev_ino(self) -> tuple[int, int] | None:
        parts = self.file_id.split(":")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return None


@dataclass
class TailStats:
    lines_read: int = 0
    bytes_read: int = 0
    lines_truncated: int = 0
    partial_lines: int = 0
    rotations: int = 0
    truncations: int = 0
    recovered_from_copy: int = 0
    checkpoint_lost: int = 0
    skipped_compressed: int = 0


def _fingerprint(fd: int) -> str | None:
    """Hash of the first line (capped) or None if the file does not have a complete first line yet."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[: nl + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.sha256(head).hexdigest()[:16]


def make_file_id(dev: int, ino: int, fp: str) -> str:
    return f"{dev}:{ino}:{fp}"


@dataclass
class _Open:
    """An open file being read."""

    fd: int
    dev: int
    ino: int
    line_start: int  # offset of buf[0]: the start of the line being assembled
    fp: str | None = None
    fixed_id: str | None = None  # identity to use instead of our own (reading a copytruncate copy)
    end: int | None = None  # stop here (a copy: its bytes past the truncation point are not ours)
    buf: bytearray = field(default_factory=bytearray)
    skipping: bool = False  # inside an over-long line: dropping bytes until the newline
    skipped_len: int = 0
    name: str = ""

    @property
    def read_pos(self) -> int:
        return self.line_start + len(self.buf) + self.skipped_len

    def file_id(self) -> str | None:
        if self.fixed_id:
            return self.fixed_id
        if self.fp is None:
            self.fp = _fingerprint(self.fd)
        return make_file_id(self.dev, self.ino, self.fp) if self.fp else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class Follower:
    """Follow ``path`` across rotation; see the module docstring.

    :param path: the log file (it may not exist yet).
    :param position: resume point from a checkpoint, or None.
    :param start_at_end: without a checkpoint, start at the current end of the file instead of offset 0.
    :param max_line_bytes: cap of one emitted line.
    :param rotate_grace: seconds to keep reading a renamed-away file after noticing the rotation.
    :param clock: monotonic time source (injectable for tests).
    :param sleep: used by :meth:`follow` only.
    :param poll_interval: seconds :meth:`follow` sleeps when nothing is new.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        position: Position | None = None,
        *,
        start_at_end: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
        rotate_grace: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.25,
    ) -> None:
        self.path = os.fspath(path)
        self.max_line_bytes = max_line_bytes
        self.rotate_grace = rotate_grace
        self.clock = clock
        self.sleep = sleep
        self.poll_interval = poll_interval
        self.stats = TailStats()
        self._ready: deque[Line] = deque()
        self._cur: _Open | None = None
        self._queue: deque[tuple[str, int, str | None, int | None]] = deque()  # (path, offset, fixed_id, end)
        self._rotated_since: float | None = None
        # The file that replaced ours at the path, opened as soon as the rotation is seen: held by fd, so a
        # second rotation before we get to it cannot make us skip it.
        self._successor: _Open | None = None
        self._start_pos: Position | None = position
        self._start_at_end = start_at_end and position is None
        self._closed = False

    # ------------------------------------------------------------------ public

    def poll(self, max_lines: int = 10_000) -> list[Line]:
        """Return up to ``max_lines`` complete lines available now (maybe none). Never blocks."""
        out: list[Line] = []
        self._watch_rotation()
        guard = 0
        while len(out) < max_lines and guard < 64:
            guard += 1
            while self._ready and len(out) < max_lines:
                out.append(self._ready.popleft())
            if len(out) >= max_lines:
                break
            if not self._step():
                break
        return out

    def follow(self, stop: Callable[[], bool] = lambda: False) -> Iterator[Line]:
        """Yield lines forever (until ``stop()``), sleeping ``poll_interval`` when idle."""
        while not stop():
            lines = self.poll()
            if not lines:
                self.sleep(self.poll_interval)
                continue
            yield from lines

    def backlog_bytes(self) -> int:
        """Bytes in the followed files not yet turned into lines (what is ahead of the reader)."""
        total = 0
        path_counted = False
        cur = self._cur
        if cur is not None:
            try:
                size = os.fstat(cur.fd).st_size
            except OSError:
                size = cur.read_pos
            total += max(0, (cur.end if cur.end is not None else size) - cur.line_start)
            path_counted = cur.name == self.path and self._successor is None
        for qpath, off, _fid, end in self._queue:
            with contextlib.suppress(OSError):
                total += max(0, (end if end is not None else os.stat(qpath).st_size) - off)
            path_counted = path_counted or (qpath == self.path and end is None)
        if not path_counted and (cur is not None or self._queue):
            with contextlib.suppress(OSError):
                total += os.stat(self.path).st_size
        return total

    def position(self) -> Position | None:
        """Where the reader is (after the last line returned so far); None before the first file opened."""
        cur = self._cur
        if cur is None:
            return self._start_pos
        if self._ready:
            first = self._ready[0]
            return Position(first.file_id, first.offset)
        fid = cur.file_id()
        return Position(fid, cur.line_start) if fid is not None else None

    def close(self) -> None:
        for f in (self._cur, self._successor):
            if f is not None:
                f.close()
        self._cur = self._successor = None
        self._closed = True

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _step(self) -> bool:
        """Do one unit of work; return True if it may have produced lines or changed state."""
        if self._cur is None:
            return self._open_next()
        cur = self._cur
        limit = READ_CHUNK
        if cur.end is not None:
            limit = min(limit, cur.end - cur.read_pos)
        live = cur.end is None and cur.fixed_id is None
        chunk = os.pread(cur.fd, limit, cur.read_pos) if limit > 0 else b""
        # Verify after the read that the file was not truncated (and maybe rewritten past our offset)
        # before or while we read: then the chunk is not the continuation of what we had.
        if live and self._check_truncated(cur, size_at_least=cur.read_pos + len(chunk)):
            return True
        if chunk:
            self._consume(cur, chunk)
            if self._rotated_since is not None:
                self._rotated_since = self.clock()  # the old file still grows: restart the grace period
            return True
        # At the end of what we can read now.
        if cur.end is not None:  # a drained copy or a queued sibling: done with it
            self._finish_current(partial_ok=True)
            return True
        self._watch_rotation()
        if self._successor is not None and self._rotated_since is not None:
            now = self.clock()
            if now - self._rotated_since >= self.rotate_grace:
                self._rotated_since = None
                self._finish_current(partial_ok=True)
                return True
        return False

    def _watch_rotation(self) -> None:
        """Notice a rename rotation of the live file (once per poll, not only at EOF) and hold its successor."""
        cur = self._cur
        if cur is None or self._successor is not None or not self._cur_is_rotated():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        st = os.fstat(fd)
        self._successor = _Open(fd, st.st_dev, st.st_ino, 0, name=self.path)
        self._rotated_since = self.clock()
        self.stats.rotations += 1
        log.info(
            "%s was rotated (inode %s -> %s); finishing the old file first", self.path, cur.ino, st.st_ino
        )

    def _cur_is_rotated(self) -> bool:
        cur = self._cur
        if cur is None or cur.fixed_id is not None or cur.end is not None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away, not re-created yet: keep reading the old one meanwhile
        return (st.st_dev, st.st_ino) != (cur.dev, cur.ino)

    def _check_truncated(self, cur: _Open, size_at_least: int) -> bool:
        """copytruncate (or any truncation) of the live file; True if handled (cur replaced)."""
        try:
            st = os.fstat(cur.fd)
        except OSError:
            return False
        truncated = st.st_size < size_at_least
        if not truncated:
            fp = _fingerprint(cur.fd)
            if cur.fp is None:
                cur.fp = fp  # first time the first line is complete
            else:
                truncated = fp != cur.fp  # same inode, other first line: truncated and written again
        if not truncated:
            return False
        self.stats.truncations += 1
        old_id = cur.file_id() or make_file_id(cur.dev, cur.ino, "")
        resume_at = cur.line_start
        log.warning("%s was truncated (copytruncate?) below offset %d", self.path, resume_at)
        copy = self._find_copy(cur.fp, resume_at, exclude=(cur.dev, cur.ino)) if cur.fp else None
        cur.close()
        self._cur = None
        if copy is not None:
            cpath, csize = copy
            self.stats.recovered_from_copy += 1
            log.info(
                "reading the rest of %s (offset %d..%d) from its copy %s", old_id, resume_at, csize, cpath
            )
            # Before anything queued earlier, then the truncated file from 0.
            self._queue.appendleft((self.path, 0, None, None))
            self._queue.appendleft((cpath, resume_at, old_id, csize))
        else:
            if cur.buf and cur.fp:
                self.stats.partial_lines += 1  # whatever we held of the last line is gone with the data
            self._queue.appendleft((self.path, 0, None, None))
        return True

    def _find_copy(self, fp: str | None, min_size: int, exclude: tuple[int, int]) -> tuple[str, int] | None:
        for cand in self._siblings():
            try:
                fd = os.open(cand, os.O_RDONLY)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == exclude or st.st_size < min_size:
                    continue
                if _fingerprint(fd) == fp:
                    return cand, st.st_size
            finally:
                os.close(fd)
        return None

    def _siblings(self) -> list[str]:
        """Rotated siblings of the path (FILE.1, FILE-20260101, ...), uncompressed only, newest first."""
        names = set(glob.glob(glob.escape(self.path) + ".*")) | set(glob.glob(glob.escape(self.path) + "-*"))
        out = []
        for name in names:
            if name.endswith(COMPRESSED_SUFFIXES):
                continue
            try:
                st = os.stat(name)
            except OSError:
                continue
            if statmod.S_ISREG(st.st_mode):
                out.append((st.st_mtime, name))
        return [n for _, n in sorted(out, reverse=True)]

    def _rotation_key(self, name: str, mtime: float) -> tuple:
        """Order of rotated siblings, older < newer: by the rotation number of ``FILE.N`` (smaller is
        newer), by the suffix of ``FILE-20260101`` (dates sort), else by mtime. The first element names
        the scheme; keys of different schemes are not compared. Names beat mtimes: a copytruncate copy and
        the file rotated after it can carry the same mtime."""
        suffix = name[len(self.path) :]
        if suffix[:1] == "." and suffix[1:].isdigit():
            return ("num", -int(suffix[1:]))
        if suffix[:1] == "-":
            return ("dash", suffix)
        return ("mtime", mtime)

    def _open_next(self) -> bool:
        if self._queue:
            qpath, off, fixed, end = self._queue.popleft()
            if qpath == self.path and fixed is None and end is None:
                return self._open_path(off)
            try:
                fd = os.open(qpath, os.O_RDONLY)
            except OSError:
                log.warning("rotated file %s vanished before it was read; its lines are lost", qpath)
                return True
            st = os.fstat(fd)
            self._cur = _Open(
                fd,
                st.st_dev,
                st.st_ino,
                off,
                fixed_id=fixed,
                end=end if end is not None else st.st_size,
                name=qpath,
            )
            return True
        if self._start_pos is not None:
            pos, self._start_pos = self._start_pos, None
            return self._resume(pos)
        return self._open_path(None)

    def _open_path(self, offset: int | None) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # not there (yet): wait
        st = os.fstat(fd)
        if offset is None:
            offset = 0
            if self._start_at_end:
                self._start_at_end = False
                # Start after the last complete line (a partial one will be read whole once finished).
                offset = st.st_size
                if offset:
                    tail = os.pread(
                        fd, min(offset, self.max_line_bytes), offset - min(offset, self.max_line_bytes)
                    )
                    nl = tail.rfind(b"\n")
                    offset = offset - len(tail) + nl + 1 if nl >= 0 else offset
        self._cur = _Open(fd, st.st_dev, st.st_ino, offset, name=self.path)
        return True

    def _resume(self, pos: Position) -> bool:
        """Open the checkpointed file (or what became of it) at the checkpointed offset."""
        dev_ino = pos.dev_ino
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            if dev_ino == (st.st_dev, st.st_ino):
                fp = _fingerprint(fd)
                if (
                    fp is not None
                    and make_file_id(st.st_dev, st.st_ino, fp) == pos.file_id
                    and st.st_size >= pos.offset
                ):
                    self._cur = _Open(fd, st.st_dev, st.st_ino, pos.offset, fp=fp, name=self.path)
                    return True
                # Same inode, other content: truncated (copytruncate) while we were down.
                os.close(fd)
                fp_old = pos.file_id.split(":", 2)[2] if pos.file_id.count(":") >= 2 else None
                copy = self._find_copy(fp_old, pos.offset, exclude=(st.st_dev, st.st_ino))
                if copy is not None:
                    self.stats.recovered_from_copy += 1
                    self._queue.append((copy[0], pos.offset, pos.file_id, copy[1]))
                else:
                    self.stats.checkpoint_lost += 1
                    log.warning(
                        "checkpointed %s was truncated and no copy found; starting %s from 0",
                        pos.file_id,
                        self.path,
                    )
                self._queue.append((self.path, 0, None, None))
                return True
            os.close(fd)
        # Rotated away while we were down: look for it among the siblings by inode.
        found = None
        for cand in self._siblings():
            try:
                cfd = os.open(cand, os.O_RDONLY)
            except OSError:
                continue
            cst = os.fstat(cfd)
            if (cst.st_dev, cst.st_ino) == dev_ino:
                fp = _fingerprint(cfd)
                if fp is not None and make_file_id(cst.st_dev, cst.st_ino, fp) == pos.file_id:
                    found = (cand, cst)
            os.close(cfd)
            if found:
                break
        if found is None:
            self.stats.checkpoint_lost += 1
            log.warning(
                "checkpointed file %s not found (rotated and compressed or deleted?); starting %s from 0",
                pos.file_id,
                self.path,
            )
            self._queue.append((self.path, 0, None, None))
            return True
        cand, cst = found
        log.info("checkpointed file %s is now %s; finishing it from offset %d", pos.file_id, cand, pos.offset)
        self._queue.append((cand, pos.offset, None, cst.st_size))
        # Files rotated after ours (several rotations while we were down), oldest first.
        ours = self._rotation_key(cand, cst.st_mtime)
        newer = []
        for name in self._siblings():
            with contextlib.suppress(OSError):
                st = os.stat(name)
                key = self._rotation_key(name, st.st_mtime)
                if (st.st_dev, st.st_ino) != dev_ino and key[0] == ours[0] and key > ours:
                    newer.append((key, name))
        for _, name in sorted(newer):
            self._queue.append((name, 0, None, None))
        for name in glob.glob(glob.escape(self.path) + "*"):
            if name.endswith(COMPRESSED_SUFFIXES):
                with contextlib.suppress(OSError):
                    base = name.rsplit(".", 1)[0]
                    key = self._rotation_key(base, os.stat(name).st_mtime)
                    if key[0] == ours[0] and key > ours:
                        self.stats.skipped_compressed += 1
                        log.warning("%s was rotated and compressed while we were down; not read", name)
        self._queue.append((self.path, 0, None, None))
        return True

    def _consume(self, cur: _Open, chunk: bytes) -> None:
        self.stats.bytes_read += len(chunk)
        start = 0
        n = len(chunk)
        while start < n:
            nl = chunk.find(b"\n", start)
            if cur.skipping:
                if nl < 0:
                    cur.skipped_len += n - start
                    return
                cur.skipped_len += nl + 1 - start
                self._emit(cur, bytes(cur.buf), truncated=True, consumed=len(cur.buf) + cur.skipped_len)
                start = nl + 1
                continue
            if nl < 0:
                cur.buf += chunk[start:]
                if len(cur.buf) > self.max_line_bytes:
                    extra = len(cur.buf) - self.max_line_bytes
                    del cur.buf[self.max_line_bytes :]
                    cur.skipping = True
                    cur.skipped_len = extra
                return
            if cur.buf:
                cur.buf += chunk[start:nl]
                data = bytes(cur.buf)
                consumed = len(cur.buf) + 1
            else:
                data = chunk[start:nl]
                consumed = nl - start + 1
            if len(data) > self.max_line_bytes:
                self._emit(cur, data[: self.max_line_bytes], truncated=True, consumed=consumed)
            else:
                self._emit(cur, data, consumed=consumed)
            start = nl + 1

    def _emit(
        self,
        cur: _Open,
        data: bytes,
        *,
        consumed: int,
        truncated: bool = False,
        partial: bool = False,
    ) -> None:
        """Queue one line starting at cur.line_start spanning ``consumed`` bytes (newline included)."""
        if cur.skipping:
            consumed = len(cur.buf) + cur.skipped_len
        fid = cur.file_id() or make_file_id(cur.dev, cur.ino, "")
        if data.endswith(b"\r"):
            data = data[:-1]
        line = Line(data, fid, cur.line_start, cur.line_start + consumed, truncated, partial)
        self._ready.append(line)
        self.stats.lines_read += 1
        if truncated:
            self.stats.lines_truncated += 1
        if partial:
            self.stats.partial_lines += 1
        cur.line_start += consumed
        cur.buf.clear()
        cur.skipping = False
        cur.skipped_len = 0

    def _finish_current(self, *, partial_ok: bool) -> None:
        """Done with the current file: flush a held fragment as a partial line, close, move on."""
        cur = self._cur
        assert cur is not None
        if partial_ok and (cur.buf or cur.skipping):
            self._emit(cur, bytes(cur.buf), consumed=len(cur.buf), partial=True, truncated=cur.skipping)
        cur.close()
        self._cur = None
        if self._successor is not None:
            self._cur, self._successor = self._successor, None
            self._rotated_since = None
        elif not self._queue:
            self._queue.append((self.path, 0, None, None))
