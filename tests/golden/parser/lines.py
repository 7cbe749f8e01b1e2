"""The lines of the parser's golden file (tests/golden/parser/expected.jsonl.gz): every line of the real-Exim
samples and of the golden cases, lines mutated from them the way tests/unit/test_parse.py and the fuzz test
mutate (fixed seeds), and generated fleet lines (kept in the golden file itself, since the generator may
change). Every line is stored with what `parse_line` made of it when the file was written."""

from __future__ import annotations

import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def real_lines() -> list[str]:
    files = sorted((ROOT / "samples").glob("mainlog-*.log")) + sorted(
        (ROOT / "tests/golden").glob("*/input.log")
    )
    return [ln for f in files for ln in f.read_text(encoding="utf-8").splitlines()]


def near_start_mutations(lines: list[str], seed: int = 6, per_line: int = 6) -> list[str]:
    """Lines mutated near their start (timestamp, zone, pid, message id)."""
    rng = random.Random(seed)
    out = []
    for line in rng.sample(lines, min(3000, len(lines))):
        for _ in range(per_line):
            m = line
            for _ in range(rng.randrange(1, 4)):
                i, c = rng.randrange(0, min(len(m), 60) + 1), rng.choice(' -:.[]+0123456789aZ\r\t"\\')
                m = rng.choice((m[:i] + c + m[i + 1 :], m[:i] + c + m[i:], m[:i] + m[i + 1 :]))
            out.append(m)
    return out


def anywhere_mutations(lines: list[str], n: int, seed: int = 20261202) -> list[str]:
    """Lines mutated anywhere, as the fuzz test does (tests/reliability/test_fuzz.py)."""
    from tests.reliability.test_fuzz import mutate

    rng = random.Random(seed)
    return [mutate(rng, rng.choice(lines), lines) for _ in range(n)]


def generated_lines(workdir: Path, per_corpus: int = 4000, seed: int = 7) -> list[str]:
    """A sample of the benchmark generator's lines: the fleet mix and the busy cPanel server."""
    from bench.corpus import comparison_corpus, single_server_corpus
    from eximtrack.ingest import iter_file_lines

    rng = random.Random(seed)
    out = []
    for make in (comparison_corpus, single_server_corpus):
        files, _ = make(workdir, True)
        lines = [ln for p in files.values() for _, ln in iter_file_lines(str(p))]
        out += rng.sample(lines, min(per_corpus, len(lines)))
    return out


def parsed(p) -> dict:
    """What a ParsedLine says, as plain data."""
    names = ("kind", "date", "time", "zone", "pid", "msgid", "flag", "body", "fields", "address", "original",
             "parents", "message", "rule", "reason")  # fmt: skip
    return {n: getattr(p, n) for n in names}


GROUPS = ("real", "generated", "near_start", "anywhere")


def mutated_groups(real: list[str]) -> dict[str, list[str]]:
    """The mutated lines, derived again from the real ones on every run (fixed seeds)."""
    return {"near_start": near_start_mutations(real), "anywhere": anywhere_mutations(real, 25000)}


def digest(result: dict) -> str:
    """A short digest of a parse (the mutated lines' golden records hold only this)."""
    import hashlib
    import json

    text = json.dumps(result, ensure_ascii=False, sort_keys=True)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
