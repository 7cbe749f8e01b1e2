"""Golden cases for the parser + joiner: tests/golden/<case>/input.log -> expected.jsonl (reviewed by hand).

Each expected line is one row of the latest state (as `latest FINAL` shows it) or one reject. Regenerate after
a deliberate change with `EXIMTRACK_REGEN_GOLDEN=1 pytest tests/golden` and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from stream.join import join_lines

HERE = Path(__file__).parent
CASES = sorted(p.name for p in HERE.iterdir() if (p / "input.log").exists())
FIELDS = ("msgid", "recipient", "deliveredto", "type", "email", "sender", "senderauth", "senderhost", "senderip",
          "subject", "message_id", "spamscore", "size", "parent_msgid", "router", "transport", "host", "ip",
          "message", "confirmation", "attempts", "frozen", "sendunixtime", "actionunixtime", "queue_time",
          "delivery_time", "transport_is_remote")  # fmt: skip


def render(case: str) -> list[str]:
    lines = (HERE / case / "input.log").read_text(encoding="utf-8").splitlines()
    joiner, out = join_lines("golden", lines, tz="UTC")
    rows = [{"row": {f: getattr(ev, f) for f in FIELDS}} for _, ev in sorted(joiner.latest().items())]
    rows += [{"reject": {"reason": r.reason, "line": r.line}} for r in out.rejects]
    return [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    got = render(case)
    path = HERE / case / "expected.jsonl"
    if os.environ.get("EXIMTRACK_REGEN_GOLDEN"):
        path.write_text("\n".join(got) + "\n", encoding="utf-8")
    assert path.exists(), f"no expected.jsonl for {case}: run with EXIMTRACK_REGEN_GOLDEN=1 and review it"
    assert got == path.read_text(encoding="utf-8").splitlines()


def test_every_case_has_expectations():
    assert len(CASES) >= 9
