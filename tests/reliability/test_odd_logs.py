"""Odd log files through `eximtrack ingest` into a real chDB store: NUL bytes, invalid UTF-8, CRLF, a very long
line, a last line without newline, duplicated lines, a clock going backwards. Each has a rule; none is lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.store]

ID = "1xWksW-0004pV-1a"


def run(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "eximtrack", *args], capture_output=True, text=True, timeout=300,
                         env={"EXIMTRACK_RETENTION_DAYS": "0", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def sql(store: str, statement: str) -> list[dict]:
    return [json.loads(x) for x in run("sql", "--store", store, "--format", "json", statement).splitlines()]


def test_odd_bytes_and_line_endings(tmp_path):
    good = f"2026-11-27 01:00:00 {ID} <= a@b.example H=(c) [10.0.0.1] P=esmtp S=10 for x@r.test y@r.test\n".encode()
    lines = [
        good,
        f"2026-11-27 01:00:01 {ID} => x@r.test R=lookuphost T=remote_smtp H=mx [192.0.2.1]\r\n".encode(),  # CRLF
        b"2026-11-27 01:00:02 \x00\x00garbage with NUL\n",  # NUL bytes: a reject, kept
        b"2026-11-27 01:00:03 "
        + ID.encode()
        + b" == y@r.test R=lookuphost T=remote_smtp defer (-44): 451 \xff\xfe bad utf-8\n",
        b'2026-11-27 01:00:04 1xWksX-0004pV-1b <= z@b.example H=(c) [10.0.0.2] P=esmtp S=1 T="'
        + b"s" * 200_000
        + b'" for q@r.test\n',
        good,  # a duplicated line: same event ids, nothing doubled
        b"2026-11-27 00:59:00 "
        + ID.encode()
        + b" => y@r.test R=lookuphost T=remote_smtp H=mx [192.0.2.1]\n",  # clock back
        b"2026-11-27 01:00:05 1xWksY-0004pV-1c <= last@b.example H=(c) [10.0.0.3] P=esmtp S=1 for w@r.test",  # no newline
    ]
    log = tmp_path / "odd.log"
    log.write_bytes(b"".join(lines))
    store = f"chdb://{tmp_path / 'store'}"
    out = run("ingest", "--server", "odd", "--store", store, str(log))
    assert "8" in out  # the counts line mentions the 8 lines read
    rows = {
        (r["msgid"], r["recipient"]): r
        for r in sql(store, "SELECT msgid, recipient, type, message, subject FROM latest FINAL")
    }
    assert rows[(ID, "x@r.test")]["type"] == "success"  # the CRLF line parsed
    # the clock went backwards but the later line still wins: versions never go back for one row
    assert rows[(ID, "y@r.test")]["type"] == "success"
    assert rows[("1xWksY-0004pV-1c", "w@r.test")]["type"] == "inprogress"  # last line without newline
    assert len(rows[("1xWksX-0004pV-1b", "q@r.test")]["subject"]) == 200_000  # long line kept whole
    rejects = sql(store, "SELECT line, reason FROM rejects FINAL")
    assert len(rejects) == 1 and "\x00" in rejects[0]["line"] and rejects[0]["reason"]
    history = sql(
        store,
        "SELECT type, message FROM events FINAL WHERE msgid = '"
        + ID
        + "' AND recipient = 'y@r.test' AND is_deleted = 0 ORDER BY version",
    )
    assert [h["type"] for h in history] == ["inprogress", "defer", "success"]
    assert "\ufffd" in history[1]["message"]  # invalid UTF-8 replaced, the line still counted as a defer
    # ingesting the same file again doubles nothing
    before = sql(store, "SELECT count() AS n FROM events FINAL")[0]["n"]
    run("ingest", "--server", "odd", "--store", store, str(log))
    assert sql(store, "SELECT count() AS n FROM events FINAL")[0]["n"] == before
