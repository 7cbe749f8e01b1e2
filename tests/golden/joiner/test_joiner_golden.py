"""The joiner gives, line for line, what it gave when tests/golden/joiner/expected.jsonl.gz was written
(issue 12: a compiled joiner must keep every event — ids, versions, every field — every reject and log line,
the counters and the stored form of the states the stream worker keeps). The inputs are in streams.py: the
real-Exim samples as `ingest` and as the stream worker (with a replay) feed them, generated fleet logs kept in
the golden file, and mutated lines."""

from __future__ import annotations

import gzip
import json

from tests.golden.joiner.streams import GOLDEN, all_records


def _golden() -> tuple[dict, list[dict]]:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as fh:
        head = json.loads(fh.readline())
        return head["generated"], [json.loads(line) for line in fh]


def test_every_line_joins_as_the_golden_file_says():
    generated, want = _golden()
    got = json.loads(json.dumps(all_records(generated), ensure_ascii=False))  # tuples, floats as stored
    assert [r["stream"] for r in got] == [r["stream"] for r in want]  # the same inputs, line for line
    for g, w in zip(got, want, strict=True):
        assert g == w, (
            f"first difference: {json.dumps(g, ensure_ascii=False)[:1500]} != {json.dumps(w)[:1500]}"
        )


def test_the_golden_file_covers_what_issue_12_names():
    generated, want = _golden()
    ends = {r["stream"]: r["end"] for r in want if "end" in r}
    assert sum(len(v) for v in generated.values()) > 10_000
    assert {name.split(":")[1] for name in generated} == {"fleet-new-ids", "cpanel-old-ids"}
    assert all(ends[f"real:mainlog-{m}"]["stats"]["events"] > 150 for m in ("default", "cpanel", "all"))
    assert all(ends[f"real:mainlog-{m}:sequenced"]["stats"]["replayed"] > 0 for m in ("default", "cpanel"))
    assert ends["mutated"]["stats"]["rejects"] > 1000
    assert sum(e["stats"]["events"] for e in ends.values()) > 10_000
