"""Fuzzing the core: random and mutated Exim lines through parse + join. 0 crashes, every line accounted for.

Quick by default (CI); `EXIMTRACK_FUZZ_LINES=1000000 pytest tests/reliability/test_fuzz.py` (or `make fuzz`)
runs the full million. Mutations start from every line of the real-Exim samples: byte flips, truncations,
duplicated/removed tokens, NUL bytes, invalid UTF-8 (decoded with errors="replace" as ingest does),
CR/LF, huge tokens, swapped message ids, and lines of other messages spliced in.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from stream.join import Joiner

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
N_LINES = int(os.environ.get("EXIMTRACK_FUZZ_LINES", "60000"))


def _corpus() -> list[str]:
    lines = []
    for p in sorted(SAMPLES.glob("mainlog-*.log")):
        lines += p.read_text(encoding="utf-8").splitlines()
    return lines


def mutate(rng: random.Random, line: str, corpus: list[str]) -> str:
    op = rng.randrange(12)
    if op == 0 and line:  # flip bytes
        b = bytearray(line.encode("utf-8", "surrogatepass"))
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", errors="replace")
    if op == 1:  # truncate anywhere
        return line[: rng.randrange(len(line) + 1)]
    if op == 2:  # drop a token
        toks = line.split(" ")
        if len(toks) > 1:
            del toks[rng.randrange(len(toks))]
        return " ".join(toks)
    if op == 3:  # duplicate a token
        toks = line.split(" ")
        i = rng.randrange(len(toks))
        toks.insert(i, toks[i])
        return " ".join(toks)
    if op == 4:  # NUL bytes and control characters
        i = rng.randrange(len(line) + 1)
        return line[:i] + rng.choice(["\x00", "\x00\x00", "\x1b[0m", "\t", "\x7f"]) + line[i:]
    if op == 5:  # invalid UTF-8, decoded the way ingest decodes
        i = rng.randrange(len(line) + 1)
        return (line[:i].encode() + bytes([0xFF, 0xFE, 0xC3]) + line[i:].encode()).decode(
            "utf-8", errors="replace"
        )
    if op == 6:  # CRLF / embedded CR
        return line + "\r" if rng.random() < 0.5 else line.replace(" ", "\r", 1)
    if op == 7:  # a huge token
        i = rng.randrange(len(line) + 1)
        return line[:i] + "x" * rng.choice([1000, 20000, 70000]) + line[i:]
    if op == 8:  # splice two lines
        other = rng.choice(corpus)
        return line[: rng.randrange(len(line) + 1)] + other[rng.randrange(len(other) + 1) :]
    if op == 9:  # quotes and brackets in odd places
        i = rng.randrange(len(line) + 1)
        return line[:i] + rng.choice(['"', '\\"', "<", ">", "[", "]", "(", ")", ": ", "=", 'T="']) + line[i:]
    if op == 10:  # pure noise
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(120)))
    return line  # unchanged: real lines interleaved with the broken ones


def test_fuzz_core_never_crashes_and_accounts_for_every_line():
    corpus = _corpus()
    rng = random.Random(int(os.environ.get("EXIMTRACK_FUZZ_SEED", "20261127")))
    joiner = Joiner("fuzz", tz="Europe/Berlin", keep_latest=False)
    started = time.perf_counter()
    events = rejects = 0
    for n in range(N_LINES):
        line = mutate(rng, rng.choice(corpus), corpus)
        out = joiner.process(line, offset=n, seq=n)
        events += len(out.events)
        rejects += len(out.rejects)
        for r in out.rejects:
            assert r.reason and r.line == line
        for ev in out.events:
            assert ev.event_id and ev.msgid and ev.type
    s = joiner.stats
    assert s["lines"] == N_LINES
    assert s["message_lines"] + s["rejections"] + s["ignored"] + s["rejects"] == N_LINES
    assert s["rejects"] == rejects and s["events"] == events
    assert s["events"] > 0 and s["rejects"] > 0 and s["ignored"] > 0
    rate = N_LINES / (time.perf_counter() - started)
    print(
        f"\nfuzz: {N_LINES} lines, {events} events, {rejects} rejects, {s['ignored']} ignored, {rate:.0f} lines/s"
    )
