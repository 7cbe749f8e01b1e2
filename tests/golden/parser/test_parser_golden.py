"""The parser gives, line for line, what the pure-Python parser it replaced gave (issue 12: the compiled core
must keep every output). tests/golden/parser/expected.jsonl.gz was written by that parser (write_golden.py)
from real-Exim lines, generated fleet lines and 32k lines mutated from the real ones near their start and
anywhere (byte flips, truncations, NUL, invalid UTF-8, CR, huge tokens, spliced lines, stray quotes)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from stream.parse import parse_line
from tests.golden.parser.lines import GROUPS, digest, mutated_groups, parsed, real_lines

GOLDEN = Path(__file__).with_name("expected.jsonl.gz")


def _records() -> list[dict]:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_every_line_parses_as_the_golden_file_says():
    records = _records()
    by_group: dict[str, list[dict]] = {g: [] for g in GROUPS}
    for rec in records:
        by_group[rec["group"]].append(rec)
    real = real_lines()
    assert [r["line"] for r in by_group["real"]] == real  # the samples did not change under the golden file
    mismatches = []
    for rec in by_group["real"] + by_group["generated"]:
        got = parsed(parse_line(rec["line"]))
        if got != rec["parsed"]:
            mismatches.append((rec["line"], rec["parsed"], got))
    for group, lines in mutated_groups(real).items():
        expected = by_group[group]
        assert len(expected) == len(lines), group
        for line, rec in zip(lines, expected, strict=True):
            got = parsed(parse_line(line))
            if digest(got) != rec["digest"]:
                mismatches.append((line, rec["digest"], got))
    assert not mismatches, f"{len(mismatches)} lines differ; first: {mismatches[0]!r}"[:3000]
    assert sum(len(v) for v in by_group.values()) > 40000
