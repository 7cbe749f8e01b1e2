"""bench/generate.py: deterministic, parses without a reject, its truth is what the joiner computes (every
recipient, both id formats and a mixed log), Exim's own eximstats agrees, and the configured mix is honoured."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.generate import DEFAULT_MIX, GenConfig, generate, message_id, parse_mix
from stream.clock import BASE62_DIGITS as BASE62
from stream.clock import msgid_time
from stream.join import join_lines
from tests.exim.test_outcomes import _rows
from tests.unit.test_demo_log import outcomes

EXIMSTATS = "/usr/sbin/eximstats"
OLD_ID = re.compile(r"^[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}$")
NEW_ID = re.compile(r"^[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}$")
ARRIVAL = re.compile(r"^(\S+ \S+) (\S+) <= ")


def _small(id_format: str, **kw) -> GenConfig:
    defaults = {"servers": 2, "messages_per_day": 1200, "days": 2.0, "seed": 7, "id_format": id_format}
    defaults.update(kw)
    return GenConfig(**defaults)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """{id_format: (outdir, manifest, truth rows, {server: (joiner, JoinOutput)})}, generated and joined once."""
    runs = {}
    for id_format in ("old", "new", "mixed"):
        out = tmp_path_factory.mktemp(f"gen-{id_format}")
        manifest = generate(_small(id_format), out)
        truth = [json.loads(line) for line in (out / "truth.jsonl").read_text(encoding="utf-8").splitlines()]
        joined = {
            server: join_lines(server, (out / f"{server}.log").read_text(encoding="utf-8").splitlines())
            for server in manifest["servers"]
        }
        runs[id_format] = (out, manifest, truth, joined)
    return runs


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_config_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = _small("mixed", messages_per_day=800)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    generate(_small("mixed", messages_per_day=800, seed=8), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert set(a) == {"web01.log", "web02.log", "truth.jsonl", "manifest.json"}
    assert a == b
    for name in ("web01.log", "web02.log", "truth.jsonl"):
        assert a[name] != c[name], name


@pytest.mark.parametrize("id_format", ["old", "new", "mixed"])
def test_every_line_parses(generated, id_format):
    out, manifest, _truth, joined = generated[id_format]
    for server, (joiner, total) in joined.items():
        assert [(r.reason, r.line) for r in total.rejects] == [], server
        assert joiner.stats["lines"] == manifest["servers"][server]["lines"] > 1000


@pytest.mark.parametrize("id_format", ["old", "new", "mixed"])
def test_truth_is_what_the_joiner_computes(generated, id_format):
    _out, manifest, truth, joined = generated[id_format]
    want_rows = {
        (t["server"], t["msgid"], t["recipient"], t["deliveredto"]): t["type"] for t in truth if t["msgid"]
    }
    assert len(want_rows) == sum(1 for t in truth if t["msgid"])  # one truth row per joiner row key
    got_rows, got_rejected, want_rejected = {}, Counter(), Counter()
    for server, (joiner, _total) in joined.items():
        latest = joiner.latest()
        for (msgid, rcpt, deliveredto), ev in latest.items():
            if ev.type == "rejected":
                got_rejected[(server, ev.recipient, ev.email)] += 1
            else:
                got_rows[(server, msgid, rcpt, deliveredto)] = ev.type
        # the per-recipient view of the real-Exim tests: (msgid, recipient, type) of every row
        mine = [
            (t["msgid"], t["recipient"], t["type"]) for t in truth if t["server"] == server and t["msgid"]
        ]
        theirs = [(m, r, ev.type) for (m, r), evs in _rows(latest).items() for ev in evs]
        assert outcomes(theirs, "cpanel") == outcomes(mine, "cpanel"), server
        parents = {t["msgid"]: t["parent"] for t in truth if t["server"] == server and t.get("parent")}
        assert parents, "no bounce or delay-warning children"
        for (msgid, _r, _d), ev in latest.items():
            assert ev.parent_msgid == parents.get(msgid, ""), msgid
    missing = {k: v for k, v in want_rows.items() if got_rows.get(k) != v}
    extra = {k: v for k, v in got_rows.items() if k not in want_rows}
    assert (missing, extra) == ({}, {})
    for t in truth:
        if t["type"] == "rejected":
            want_rejected[(t["server"], t["recipient"], t["sender"])] += 1
    assert got_rejected == want_rejected
    kinds = Counter(t["type"] for t in truth)
    assert set(kinds) == {"success", "filtered", "archive", "defer", "failure", "rejected", "inprogress"}, (
        kinds
    )
    assert manifest["outcomes"] == dict(sorted(kinds.items()))


@pytest.mark.parametrize("id_format", ["old", "new", "mixed"])
def test_message_ids_encode_their_arrival_and_are_unique(generated, id_format):
    out, manifest, _truth, _joined = generated[id_format]
    seen_formats = set()
    for server in manifest["servers"]:
        ids = []
        previous = ""
        for line in (out / f"{server}.log").read_text(encoding="utf-8").splitlines():
            stamp = line[:19]
            assert stamp >= previous, line  # sorted by time
            previous = stamp
            m = ARRIVAL.match(line)
            if not m:
                continue
            msgid = m.group(2)
            assert OLD_ID.match(msgid) or NEW_ID.match(msgid), msgid
            seen_formats.add(len(msgid))
            epoch = int(msgid_time(msgid))
            assert message_id(epoch, 1, 0.0, False)[:6] == msgid[:6]
            assert _utc(epoch) == m.group(1), line
            ids.append(msgid)
        assert len(ids) == len(set(ids)) == manifest["servers"][server]["messages"]
    assert seen_formats == {"old": {16}, "new": {23}, "mixed": {16, 23}}[id_format]


def _utc(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def test_base62_round_trip_matches_the_reference_id():
    # 1xWksW-0004pV-1a (exim-log-format.md §1.1): 1795743356 = 2026-11-27 01:35:56 UTC, pid 18569
    assert msgid_time("1xWksW") == 1795743356 and msgid_time("0004pV") == 18569  # 6 base-62 digits each
    assert message_id(1795743356, 18569, 0.0, False).startswith("1xWksW-0004pV-")
    assert NEW_ID.match(message_id(1795743356, 18569, 0.999999, True))
    assert BASE62[61] == "z"


def test_retries_spread_over_hours(generated):
    out, manifest, _truth, _joined = generated["old"]
    spans = []
    for server in manifest["servers"]:
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        for line in (out / f"{server}.log").read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 4)
            if len(parts) > 3 and parts[3] == "==":
                first.setdefault(parts[2], line[:19])
                last[parts[2]] = line[:19]
        spans += [_seconds(last[m]) - _seconds(first[m]) for m in first]
    assert max(spans) > 6 * 3600 and sum(1 for s in spans if s > 3600) > 5


def _seconds(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


def _eximstats_totals(exe: str, path: Path, tmp: Path) -> dict[str, tuple[int, ...]]:
    report = tmp / f"{path.stem}.txt"
    subprocess.run([exe, f"-txt={report}", str(path)], check=True, capture_output=True, timeout=120)
    totals = {}
    for line in report.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Deliveries by transport"):
            break
        m = re.match(r"^  (Received|Delivered|Temp Rejects|Rejects) +(.*)$", line)
        if m and m.group(1) not in totals:
            columns = m.group(2).split()  # [volume] messages [addresses] hosts …; reject rows have no volume
            if m.group(1) in ("Received", "Delivered"):
                columns = columns[1:]
            totals[m.group(1)] = tuple(int(c) for c in columns if c.isdigit())
    return totals


def test_eximstats_agrees_on_an_old_id_log(generated, tmp_path):
    exe = shutil.which("eximstats") or (EXIMSTATS if os.path.exists(EXIMSTATS) else None)
    if exe is None:
        pytest.fail(f"{EXIMSTATS} not found: install Debian's exim4-base (make apt)", pytrace=False)
    out, manifest, truth, _joined = generated["old"]
    for server, counts in manifest["servers"].items():
        totals = _eximstats_totals(exe, out / f"{server}.log", tmp_path)
        rows = [t for t in truth if t["server"] == server]
        delivered = sum(1 for t in rows if t["type"] in ("success", "filtered", "archive"))
        delivered_msgs = len({t["msgid"] for t in rows if t["type"] in ("success", "filtered", "archive")})
        temp = sum(1 for t in rows if t["type"] == "rejected" and t["temporary"])
        perm = sum(1 for t in rows if t["type"] == "rejected" and not t["temporary"])
        assert totals["Received"][0] == counts["messages"], totals
        # Delivered: messages = `=>` lines (one per delivery batch), addresses = `=>` + `->` lines
        assert totals["Delivered"][1] == delivered, totals
        assert delivered_msgs <= totals["Delivered"][0] <= delivered, totals
        assert totals["Temp Rejects"][0] == temp, totals
        # eximstats 4.96 counts as "Rejects" every line without a flag that says rejected/refused/dropped (so also
        # the host-level `<id> H=… Connection refused` line before a deferral) and `=>` lines without T= (blackhole)
        log = (out / f"{server}.log").read_text(encoding="utf-8")
        refused = len(re.findall(r"^\S+ \S+ \S+ H=[^\n]* Connection refused$", log, re.M))
        blackholed = sum(1 for t in rows if t["deliveredto"] == ":blackhole:")
        assert refused and blackholed
        assert totals["Rejects"][0] == perm + refused + blackholed, totals


def test_configured_mix_is_honoured(tmp_path):
    mix = parse_mix("success_local=60,rejected=10,failure=10,spam=20")
    assert mix["defer_pending"] == 0.0 and set(mix) == set(DEFAULT_MIX)
    manifest = generate(GenConfig(servers=1, messages_per_day=4000, days=1, seed=3, mix=mix), tmp_path)
    kinds = manifest["servers"]["web01"]["transactions"]
    total = sum(kinds.values())
    assert total == 4000 and set(kinds) == {"success_local", "rejected", "failure", "spam"}
    for kind, weight in (("success_local", 0.6), ("rejected", 0.1), ("failure", 0.1), ("spam", 0.2)):
        assert abs(kinds[kind] / total - weight) < 0.03, (kind, kinds)
    outcome = manifest["outcomes"]
    assert "defer" not in outcome and "archive" not in outcome
    # one to two RCPT rejections per rejected session
    assert kinds["rejected"] <= outcome["rejected"] <= 2 * kinds["rejected"]
    with pytest.raises(ValueError, match="unknown mix kinds"):
        generate(GenConfig(mix={"nonsense": 1.0}), tmp_path / "bad")
