"""Unit tests of producers/tail.py with temp files and a fake clock: the exact (line, offset) sequences."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from producers.tail import FINGERPRINT_BYTES, Follower, Position


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float = 10.0) -> None:
        self.t += dt


class Writer:
    """Appends like Exim: O_APPEND on the path it opened; reopen() after a rename rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.write(self.fd, data)

    def lines(self, *lines: str) -> None:
        self.write(b"".join(line.encode() + b"\n" for line in lines))

    def reopen(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None

    def close(self) -> None:
        self.reopen()


def rename_rotate(path: Path, writer: Writer) -> None:
    """logrotate 'create' / cPanel: FILE -> FILE.1 (shifting older ones), new empty FILE."""
    for i in range(8, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            src.rename(path.with_name(f"{path.name}.{i + 1}"))
    path.rename(path.with_name(path.name + ".1"))
    path.touch()


def copytruncate(path: Path) -> None:
    for i in range(8, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            src.rename(path.with_name(f"{path.name}.{i + 1}"))
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    with open(path, "r+b") as fh:
        fh.truncate(0)


def drain(f: Follower, clock: FakeClock | None = None, rounds: int = 6) -> list:
    out = []
    for _ in range(rounds):
        got = f.poll()
        out.extend(got)
        if not got and clock is not None:
            clock.advance(10)
    return out


def pairs(lines) -> list[tuple[str, int]]:
    return [(ln.text, ln.offset) for ln in lines]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "exim_mainlog"


def test_lines_and_offsets(log):
    Writer(log).lines("a1", "bb2", "ccc3")
    f = Follower(log)
    got = f.poll()
    assert pairs(got) == [("a1", 0), ("bb2", 3), ("ccc3", 7)]
    assert got[-1].next_offset == 12
    assert len({ln.file_id for ln in got}) == 1
    st = os.stat(log)
    assert got[0].file_id.startswith(f"{st.st_dev}:{st.st_ino}:")
    assert f.poll() == []


def test_partial_line_is_held_until_newline(log):
    w = Writer(log)
    w.write(b"first\nsec")
    f = Follower(log)
    assert pairs(f.poll()) == [("first", 0)]
    assert f.poll() == []
    w.write(b"ond\nthi")
    assert pairs(f.poll()) == [("second", 6)]
    w.write(b"rd\n")
    assert pairs(f.poll()) == [("third", 13)]


def test_missing_file_waits_then_follows(log):
    f = Follower(log)
    assert f.poll() == []
    assert f.poll() == []
    Writer(log).lines("hello")
    assert pairs(f.poll()) == [("hello", 0)]


def test_rename_rotation_finishes_old_file_then_new_from_zero(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("old1", "old2")
    f = Follower(log, clock=clock, rotate_grace=1.0)
    first = f.poll()
    assert pairs(first) == [("old1", 0), ("old2", 5)]
    old_id = first[0].file_id
    rename_rotate(log, w)
    w.lines("old3")  # the writer has not reopened yet: still appends to the renamed file
    w.reopen()
    w.lines("new1", "new2")
    got = drain(f, clock)
    assert pairs(got) == [("old3", 10), ("new1", 0), ("new2", 5)]
    assert got[0].file_id == old_id
    assert got[1].file_id != old_id and got[1].file_id == got[2].file_id
    assert f.stats.rotations == 1


def test_rotation_waits_grace_period_for_late_writes(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("a")
    f = Follower(log, clock=clock, rotate_grace=5.0)
    assert pairs(f.poll()) == [("a", 0)]
    rename_rotate(log, w)
    w.reopen()
    Writer(log).lines("new")
    assert f.poll() == []  # rotation noticed, grace running: still on the old file
    clock.advance(1)
    with open(log.with_name(log.name + ".1"), "ab") as late:
        late.write(b"late\n")
    assert pairs(f.poll()) == [("late", 2)]
    clock.advance(6)
    assert pairs(drain(f, clock)) == [("new", 0)]


def test_two_rotations_within_grace_do_not_skip_a_generation(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("g1")
    f = Follower(log, clock=clock, rotate_grace=5.0)
    assert pairs(f.poll()) == [("g1", 0)]
    rename_rotate(log, w)
    w.reopen()
    w.lines("g2")
    assert f.poll() == []  # rotation seen, its successor opened and held, grace period running
    rename_rotate(log, w)  # g2's file is renamed away before we even started reading it
    w.reopen()
    w.lines("g3")
    clock.advance(10)
    assert pairs(drain(f, clock)) == [("g2", 0), ("g3", 0)]
    assert f.stats.rotations == 2


def test_rotation_seen_while_catching_up(log):
    """The rotation is noticed on the next poll even while the old file still has a backlog."""
    clock = FakeClock()
    w = Writer(log)
    w.lines(*[f"a{i}" for i in range(100)])
    f = Follower(log, clock=clock, rotate_grace=0)
    got = f.poll(max_lines=10)
    rename_rotate(log, w)
    w.reopen()
    w.lines("b0")
    got += f.poll(max_lines=10)  # sees the rotation, holds b0's file, still 80 lines behind in the old one
    rename_rotate(log, w)
    w.reopen()
    w.lines("c0")
    got += drain(f, clock, rounds=10)
    assert [ln.text for ln in got] == [f"a{i}" for i in range(100)] + ["b0", "c0"]


def test_partial_line_at_rotation_is_emitted_as_partial(log):
    clock = FakeClock()
    w = Writer(log)
    w.write(b"full\nfrag")
    f = Follower(log, clock=clock, rotate_grace=0)
    assert pairs(f.poll()) == [("full", 0)]
    rename_rotate(log, w)
    w.reopen()
    w.lines("next")
    got = drain(f, clock)
    assert pairs(got) == [("frag", 5), ("next", 0)]
    assert got[0].partial and got[0].next_offset == 9
    assert not got[1].partial


def test_copytruncate_after_everything_was_read(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("line one", "line two")
    f = Follower(log, clock=clock)
    first = f.poll()
    assert pairs(first) == [("line one", 0), ("line two", 9)]
    copytruncate(log)
    w.lines("after")  # O_APPEND: lands at offset 0 of the truncated file
    got = drain(f, clock)
    assert pairs(got) == [("after", 0)]
    assert got[0].file_id != first[0].file_id
    assert got[0].file_id.split(":")[:2] == first[0].file_id.split(":")[:2]  # same dev:inode
    assert f.stats.truncations == 1


def test_copytruncate_reads_unread_rest_from_the_copy(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("m1")
    f = Follower(log, clock=clock)
    first = f.poll()
    assert pairs(first) == [("m1", 0)]
    w.lines("m2", "m3")  # written but not read before the rotation
    w.write(b"m4-part")
    copytruncate(log)
    w.lines("fresh")
    got = drain(f, clock)
    assert pairs(got) == [("m2", 3), ("m3", 6), ("m4-part", 9), ("fresh", 0)]
    assert {ln.file_id for ln in got[:3]} == {first[0].file_id}  # same identity as before the truncation
    assert got[2].partial
    assert f.stats.recovered_from_copy == 1


def test_copytruncate_detected_by_fingerprint_when_file_regrew_past_offset(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("x")
    f = Follower(log, clock=clock)
    assert pairs(f.poll()) == [("x", 0)]
    with open(log, "r+b") as fh:
        fh.truncate(0)
    w.lines("yy", "zzz")  # already longer than our offset (2) when we look again
    got = drain(f, clock)
    assert pairs(got) == [("yy", 0), ("zzz", 3)]
    assert f.stats.truncations == 1


def test_long_lines_are_capped_and_counted(log):
    w = Writer(log)
    w.write(b"short\n" + b"A" * 100 + b"\n" + b"tail\n")
    f = Follower(log, max_line_bytes=10)
    got = f.poll()
    assert pairs(got) == [("short", 0), ("A" * 10, 6), ("tail", 107)]
    assert got[1].truncated and got[1].next_offset == 107
    assert f.stats.lines_truncated == 1


def test_long_line_split_across_reads(log):
    w = Writer(log)
    w.write(b"B" * 25)
    f = Follower(log, max_line_bytes=10)
    assert f.poll() == []
    w.write(b"B" * 30)
    assert f.poll() == []
    w.write(b"B\nok\n")
    got = f.poll()
    assert pairs(got) == [("B" * 10, 0), ("ok", 57)]
    assert got[0].truncated and got[0].next_offset == 57


def test_resume_from_checkpoint_in_same_file(log):
    w = Writer(log)
    w.lines("one", "two", "three")
    f = Follower(log)
    got = f.poll()
    ckpt = Position(got[1].file_id, got[1].next_offset)  # acked up to "two"
    f.close()
    w.lines("four")
    f2 = Follower(log, ckpt)
    assert pairs(f2.poll()) == [("three", 8), ("four", 14)]


def test_resume_after_rename_rotation_while_down(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("one", "two")
    f = Follower(log)
    got = f.poll()
    ckpt = Position(got[0].file_id, got[0].next_offset)
    f.close()
    w.lines("three")
    rename_rotate(log, w)
    w.reopen()
    w.lines("new")
    f2 = Follower(log, ckpt, clock=clock)
    out = drain(f2, clock)
    assert pairs(out) == [("two", 4), ("three", 8), ("new", 0)]
    assert out[0].file_id == ckpt.file_id and out[2].file_id != ckpt.file_id


def test_resume_after_two_rotations_while_down(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("a1", "a2")
    f = Follower(log)
    got = f.poll()
    ckpt = Position(got[0].file_id, got[0].next_offset)
    f.close()
    rename_rotate(log, w)
    w.reopen()
    w.lines("b1")
    os.utime(log, (os.stat(log).st_atime, os.stat(log.with_name(log.name + ".1")).st_mtime + 5))
    rename_rotate(log, w)
    w.reopen()
    w.lines("c1")
    f2 = Follower(log, ckpt, clock=clock)
    assert pairs(drain(f2, clock)) == [("a2", 3), ("b1", 0), ("c1", 0)]


def test_resume_when_checkpointed_file_is_gone_starts_current_from_zero(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("one", "two")
    f = Follower(log)
    got = f.poll()
    ckpt = Position(got[0].file_id, got[0].next_offset)
    f.close()
    rename_rotate(log, w)
    os.unlink(log.with_name(log.name + ".1"))  # e.g. compressed/deleted by logrotate
    w.reopen()
    w.lines("new")
    f2 = Follower(log, ckpt, clock=clock)
    assert pairs(drain(f2, clock)) == [("new", 0)]
    assert f2.stats.checkpoint_lost == 1


def test_resume_after_copytruncate_while_down_reads_rest_from_copy(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("p1", "p2")
    f = Follower(log)
    got = f.poll()
    ckpt = Position(got[0].file_id, got[0].next_offset)
    f.close()
    copytruncate(log)
    w.lines("q1")
    f2 = Follower(log, ckpt, clock=clock)
    out = drain(f2, clock)
    assert pairs(out) == [("p2", 3), ("q1", 0)]
    assert out[0].file_id == ckpt.file_id


def test_start_at_end_skips_existing_lines(log):
    w = Writer(log)
    w.write(b"old\nolder\npart")
    f = Follower(log, start_at_end=True)
    assert f.poll() == []
    w.write(b"ial\nnew\n")
    assert pairs(f.poll()) == [("partial", 10), ("new", 18)]


def test_fingerprint_uses_first_line_only(log):
    w = Writer(log)
    w.lines("hdr")
    f = Follower(log)
    a = f.poll()
    w.lines("x" * (FINGERPRINT_BYTES * 2))
    b = f.poll()
    assert a[0].file_id == b[0].file_id


def test_max_lines_and_position(log):
    Writer(log).lines(*[f"l{i}" for i in range(10)])
    f = Follower(log)
    got = f.poll(max_lines=3)
    assert [ln.text for ln in got] == ["l0", "l1", "l2"]
    assert f.position() == Position(got[0].file_id, got[-1].next_offset)
    rest = f.poll()
    assert [ln.text for ln in rest] == [f"l{i}" for i in range(3, 10)]


@pytest.mark.parametrize("seed", range(int(os.environ.get("TAIL_SEEDS", "12"))))
def test_random_rotations_and_restarts_lose_and_repeat_nothing(tmp_path, seed):
    """Writer + rotations (both styles) + crash/resume from the acked position, in random order.

    Every written line is read exactly once if we resume from exactly what was handed out; the (file_id,
    offset) identity of each line is unique.
    """
    rng = random.Random(seed)
    log = tmp_path / "mainlog"
    clock = FakeClock()
    w = Writer(log)
    written: list[str] = []
    read: list = []
    f = Follower(log, clock=clock, rotate_grace=0.5)
    n = 0
    for _step in range(300):
        r = rng.random()
        if r < 0.45:
            batch = [f"{seed}-line-{n + i}-" + "x" * rng.randint(0, 40) for i in range(rng.randint(1, 5))]
            n += len(batch)
            w.lines(*batch)
            written.extend(batch)
        elif r < 0.75:
            read.extend(f.poll(max_lines=rng.randint(1, 8)))
        elif r < 0.80 and log.exists():
            # Rotations are far apart in real life: the follower has moved to the current file before the
            # next one (two rotations within rotate_grace are not supported live; on resume they are).
            clock.advance(1)
            read.extend(drain(f, clock, rounds=3))
            rename_rotate(log, w)
            if rng.random() < 0.5:  # a late write into the renamed file before the writer reopens
                late = f"{seed}-line-{n}-late"
                n += 1
                w.lines(late)
                written.append(late)
            w.reopen()
        elif r < 0.83 and log.exists():
            # copytruncate only after we caught up: the lines written between copy and truncate would be
            # lost by logrotate itself, which is not what this test is about.
            clock.advance(1)
            read.extend(drain(f, clock, rounds=3))
            copytruncate(log)
        elif r < 0.90:
            # crash + restart from the position after the last line handed out
            pos = f.position()
            f.close()
            f = Follower(log, pos, clock=clock, rotate_grace=0.5)
        else:
            clock.advance(1)
    for _ in range(20):
        read.extend(f.poll())
        clock.advance(1)
    f.close()
    assert [ln.text for ln in read] == written
    ids = [(ln.file_id, ln.offset) for ln in read]
    assert len(set(ids)) == len(ids)


# --- the log itself, as issue 7 lists it: delete + re-create, delayed compression, a symlinked path ---------


def test_deleted_and_recreated_log_is_read_from_zero(log):
    clock = FakeClock()
    w = Writer(log)
    w.lines("a1", "a2")
    f = Follower(log, clock=clock, rotate_grace=1.0)
    assert pairs(f.poll()) == [("a1", 0), ("a2", 3)]
    w.lines("a3")  # written before the delete: must not be lost
    w.close()
    log.unlink()
    w2 = Writer(log)
    w2.lines("b1", "b2")
    got = drain(f, clock)
    assert pairs(got) == [("a3", 6), ("b1", 0), ("b2", 3)]
    assert got[0].file_id != got[1].file_id


def test_delayed_compression_of_the_rotated_file(log):
    """logrotate `delaycompress`: FILE -> FILE.1 now, FILE.1 -> FILE.2.gz at the next rotation."""
    import gzip

    clock = FakeClock()
    w = Writer(log)
    w.lines("g1")
    f = Follower(log, clock=clock, rotate_grace=1.0)
    assert pairs(f.poll()) == [("g1", 0)]
    rename_rotate(log, w)
    w.lines("g2")  # still into the renamed file
    w.reopen()
    w.lines("h1")
    assert pairs(drain(f, clock)) == [("g2", 3), ("h1", 0)]
    # next rotation: FILE.1 is compressed and removed, FILE -> FILE.1
    one = log.with_name(log.name + ".1")
    with open(one, "rb") as src, gzip.open(log.with_name(log.name + ".2.gz"), "wb") as dst:
        dst.write(src.read())
    one.unlink()
    rename_rotate(log, w)
    w.lines("h2")
    w.reopen()
    w.lines("i1")
    assert pairs(drain(f, clock)) == [("h2", 3), ("i1", 0)]


def test_symlinked_log_path_follows_the_target(tmp_path):
    real = tmp_path / "real" / "mainlog"
    real.parent.mkdir()
    link = tmp_path / "exim_mainlog"
    link.symlink_to(real)
    clock = FakeClock()
    w = Writer(real)
    w.lines("s1")
    f = Follower(link, clock=clock, rotate_grace=1.0)
    assert pairs(f.poll()) == [("s1", 0)]
    rename_rotate(real, w)  # the target rotates behind the link
    w.reopen()
    w.lines("t1")
    assert pairs(drain(f, clock)) == [("t1", 0)]
