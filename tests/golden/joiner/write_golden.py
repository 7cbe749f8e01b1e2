"""Write tests/golden/joiner/expected.jsonl.gz from the current joiner, after a deliberate change (review the
differences tests/golden/joiner/test_joiner_golden.py reports first): python -m tests.golden.joiner.write_golden"""

from __future__ import annotations

import gzip
import json

from tests.golden.joiner.streams import GOLDEN, all_records, generated_streams


def main() -> None:
    generated = generated_streams()
    records = all_records(generated)
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write(json.dumps({"generated": generated}, ensure_ascii=False) + "\n")
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
    print(GOLDEN, GOLDEN.stat().st_size, "bytes", len(records), "records")


if __name__ == "__main__":
    main()
