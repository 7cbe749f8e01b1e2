"""Write tests/golden/parser/expected.jsonl.gz from the current parser, after a deliberate change (review the
differences tests/golden/parser/test_parser_golden.py reports first): python -m tests.golden.parser.write_golden

Real and generated lines are stored with their whole parse; the mutated lines, which the test derives again
from the real ones with fixed seeds, with a digest of it (the file stays small)."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from stream.parse import parse_line
from tests.golden.parser.lines import GROUPS, digest, generated_lines, mutated_groups, parsed, real_lines

GOLDEN = Path(__file__).with_name("expected.jsonl.gz")


def main() -> None:
    real = real_lines()
    with tempfile.TemporaryDirectory() as tmp:
        groups = {"real": real, "generated": generated_lines(Path(tmp)), **mutated_groups(real)}
    assert tuple(groups) == GROUPS
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as fh:
        for group, lines in groups.items():
            for line in lines:
                result = parsed(parse_line(line))
                if group in ("real", "generated"):
                    rec = {"group": group, "line": line, "parsed": result}
                else:
                    rec = {"group": group, "digest": digest(result)}
                fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    print(GOLDEN, GOLDEN.stat().st_size, "bytes", {g: len(v) for g, v in groups.items()})


if __name__ == "__main__":
    main()
