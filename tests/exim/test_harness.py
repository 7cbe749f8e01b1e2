"""Tests of the real-Exim harness itself (no eximtrack code): the logs exist, the truth matches them, and the
log_selector modes differ as they should. Only tiny, independent regexes are used on the logs."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

from tests.exim.harness import ID_RE, LOG_SELECTORS, MODES, SCENARIOS

pytestmark = [pytest.mark.exim, pytest.mark.slow]

# what the scenario definitions produce, identical in every mode
EXPECTED_TYPES = {"success": 39, "failure": 12, "defer": 3, "inprogress": 2, "filtered": 2}
# generated messages: bounces of S07 remote 550, S08 unknown user, S11 pipe fail, S12 :fail:, S22 -Mg,
# S23 retry timeout, S28 mixed outcome, S40 (to a remote sender), S41 (refused: fails, frozen);
# S31 success DSN; S33 delay warning
EXPECTED_GENERATED = {"bounce": 9, "dsn": 1, "warning": 1}
EXPECTED_MESSAGES = 50  # 39 accepted messages + 11 generated
EXPECTED_REJECTIONS = Counter(
    {("RCPT", False): 2, ("RCPT", True): 1, ("MAIL", False): 1, ("DATA", False): 1, ("SIZE", False): 1,
     ("LOCAL_SIZE", False): 1, ("LOCAL_ACL", False): 2}
)  # fmt: skip

PREFIX = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d(?P<ms>\.\d{3})?)(?: \[(?P<pid>\d+)\])?"
    r"(?: (?P<id>" + ID_RE + r"))? (?P<body>.*)$"
)


def lines(res) -> list[str]:
    return res.mainlog.read_text(encoding="utf-8", errors="surrogateescape").splitlines()


def parsed(res) -> list[re.Match]:
    out = []
    for ln in lines(res):
        m = PREFIX.match(ln)
        assert m, f"unexpected line shape: {ln!r}"
        out.append(m)
    return out


@pytest.fixture(params=MODES)
def res(request, exim_runs):
    return exim_runs[request.param]


def test_all_modes_ran(exim_runs):
    assert set(exim_runs) == set(MODES)
    for mode, r in exim_runs.items():
        assert r.mode == mode
        assert r.log_selector == LOG_SELECTORS[mode]


def test_log_exists(res):
    assert res.mainlog.is_file()
    assert res.mainlog.stat().st_size > 1000
    assert any("daemon started" in ln for ln in lines(res)[:3])


def test_no_self_check_problems(res):
    assert res.problems == []


def test_runtime_budget(res):
    assert res.runtime < 60


def test_daemon_stopped(res):
    assert res.daemon_pid > 0
    with pytest.raises(ProcessLookupError):
        os.kill(res.daemon_pid, 0)


def test_expected_shape(res):
    for e in res.expected:
        assert {"msgid", "recipient", "type", "scenario"} <= set(e)
        assert re.fullmatch(ID_RE, e["msgid"])
        # "system-filter": what Exim logs as the recipient of a system filter's own delivery (S46)
        assert e["recipient"] == e["recipient"].lower() and (
            "@" in e["recipient"] or e["recipient"] == "system-filter"
        )
        assert e["type"] in {"success", "filtered", "defer", "failure", "inprogress"}
    keys = [(e["msgid"], e["recipient"], e.get("deliveredto", "")) for e in res.expected]
    assert len(keys) == len(set(keys))


def test_counts(res):
    assert Counter(e["type"] for e in res.expected) == EXPECTED_TYPES
    assert len({e["msgid"] for e in res.expected}) == EXPECTED_MESSAGES
    assert Counter(e["generated"] for e in res.expected if "parent" in e) == EXPECTED_GENERATED
    assert Counter((r["kind"], r["temporary"]) for r in res.rejections) == EXPECTED_REJECTIONS
    assert {fn.__name__.split("_")[0].upper() for fn in SCENARIOS} <= set(res.scenarios)


def test_counts_identical_across_modes(exim_runs):
    shapes = {
        mode: sorted((e["scenario"], e["recipient"], e.get("deliveredto", ""), e["type"]) for e in r.expected)
        for mode, r in exim_runs.items()
    }
    assert shapes["default"] == shapes["cpanel"] == shapes["all"]


def test_every_expected_msgid_in_log(res):
    ids = Counter(m["id"] for m in parsed(res) if m["id"])
    for e in res.expected:
        assert ids[e["msgid"]] >= 2, e  # at least an arrival and one more line
    arrivals = {m["id"] for m in parsed(res) if m["body"].startswith(("<= ", "(= "))}
    assert {e["msgid"] for e in res.expected} <= arrivals


def test_final_lines_agree_with_truth(res):
    """Coarse, independent check: the last flag line of each expected message agrees with its types."""
    last_flags: dict[str, set[str]] = {}
    notes: dict[str, list[str]] = {}
    for m in parsed(res):
        if not m["id"]:
            continue
        body = m["body"]
        flag = body[:2]
        if flag in ("=>", "->", ">>", "*>", "**", "==") and body[2:3] == " ":
            last_flags.setdefault(m["id"], set()).add(flag)
        notes.setdefault(m["id"], []).append(body)
    for e in res.expected:
        f = last_flags.get(e["msgid"], set())
        body = notes[e["msgid"]]
        if e["type"] in ("success", "filtered"):
            assert f & {"=>", "->", ">>", "*>"}, e
        elif e["type"] == "defer":
            assert f == {"=="}, e
        elif e["type"] == "inprogress":
            assert not f, e
        elif e.get("how") == "removed":
            assert any(b.startswith("removed by ") for b in body), e
        elif e.get("how") == "cancelled":
            assert any(b.startswith("cancelled by ") for b in body), e
        else:
            assert "**" in f, e


def test_queue_at_end(res):
    pending = {e["msgid"] for e in res.expected if e["type"] in ("defer", "inprogress") or e.get("frozen")}
    assert set(res.queue_at_end) == pending


def test_bounces(res):
    log = "\n".join(lines(res))
    for e in res.expected:
        if "parent" in e:
            assert re.search(re.escape(e["msgid"]) + r" <= <> R=" + re.escape(e["parent"]) + " ", log)
            assert e["recipient"] in (
                "alice@local.test",
                "dave@local.test",
                "ext-sender@remote.test",
                "bad-sender@remote.test",
            )


def test_rejection_lines(res):
    log = lines(res)
    for r in res.rejections:
        if r["kind"] == "RCPT":
            word = "temporarily rejected" if r["temporary"] else "rejected"
            assert any(f"F=<{r['sender']}> {word} RCPT <{r['recipient']}>" in ln for ln in log), r
        elif r["kind"] == "MAIL":
            assert any(f"rejected MAIL <{r['sender']}>" in ln for ln in log), r
        elif r["kind"] == "SIZE":
            assert any(
                f"rejected MAIL FROM:<{r['sender']}>" in ln and "message too big" in ln for ln in log
            ), r
        elif r["kind"] == "DATA":
            assert any(f"F=<{r['sender']}> rejected after DATA" in ln for ln in log), r
        elif r["kind"] == "LOCAL_SIZE":
            assert any(f"rejected from <{r['sender']}> U=" in ln and "message too big" in ln for ln in log), r
        elif r["kind"] == "LOCAL_ACL":
            assert any(f"F=<{r['sender']}> rejected by non-SMTP ACL: " in ln for ln in log), r
        else:
            raise AssertionError(f"unknown rejection kind {r}")


def _first_index(res, msgid, pred):
    for i, m in enumerate(parsed(res)):
        if m["id"] == msgid and pred(m["body"]):
            return i
    return None


def test_spam_warning_before_arrival(res):
    smtp_ids = {
        m["id"] for m in parsed(res) if m["id"] and m["body"].startswith("<= ") and " P=esmtp" in m["body"]
    }
    assert len(smtp_ids) >= 15
    for mid in smtp_ids:
        w = _first_index(res, mid, lambda b: 'Warning: "SpamAssassin as cpaneleximscanner detected' in b)
        a = _first_index(res, mid, lambda b: b.startswith("<= "))
        assert w is not None and w < a, mid


def test_cutthrough_before_arrival(res):
    (e,) = [e for e in res.expected if e["scenario"] == "S14"]
    c = _first_index(res, e["msgid"], lambda b: b.startswith(">> ok-cut@cut.test "))
    a = _first_index(res, e["msgid"], lambda b: b.startswith("<= "))
    assert c is not None and a is not None and c < a


def test_auth_and_local_submissions(res):
    by_sc = {}
    for e in res.expected:
        by_sc.setdefault(e["scenario"], e["msgid"])
    arrivals = {m["id"]: m["body"] for m in parsed(res) if m["id"] and m["body"].startswith("<= ")}
    assert " P=esmtpa " in arrivals[by_sc["S24"]]
    assert " A=dovecot_login:alice@local.test " in arrivals[by_sc["S24"]]
    assert " U=root P=local " in arrivals[by_sc["S25"]]


def test_mode_differences(exim_runs):
    text = {m: "\n".join(lines(r)) for m, r in exim_runs.items()}
    rows = {m: parsed(r) for m, r in exim_runs.items()}
    # subject only with +subject (cpanel, all)
    assert ' T="S01 local delivery"' not in text["default"]
    assert ' T="S01 local delivery"' in text["cpanel"] and ' T="S01 local delivery"' in text["all"]
    # pid and millisec only with +all
    assert all(m["pid"] for m in rows["all"]) and all(m["ms"] for m in rows["all"])
    for mode in ("default", "cpanel"):
        assert not any(m["pid"] or m["ms"] for m in rows[mode])
    # +received_recipients, +incoming_port, +smtp_connection, +arguments: cpanel and all
    for mode, present in (("default", False), ("cpanel", True), ("all", True)):
        arr = [m["body"] for m in rows[mode] if m["body"].startswith("<= alice@local.test H=")]
        assert arr
        assert all(" for " in b for b in arr) is present
        assert all(re.search(r"\[127\.0\.0\.1\]:\d+ ", b) for b in arr) is present
        assert ("SMTP connection from [127.0.0.1]" in text[mode]) is present
        assert any(m["body"].startswith("cwd=") for m in rows[mode]) is present
    # interface and receive time only with +all
    assert " I=[127.0.0.1]:" in text["all"] and " I=[127.0.0.1]:" not in text["cpanel"]
    assert " RT=" in text["all"] and " QT=" in text["all"] and " DT=" in text["all"]
    assert " QT=" not in text["default"]


def test_distinct_runs(exim_runs):
    ids = [{e["msgid"] for e in r.expected} for r in exim_runs.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_special_shapes(res):
    """Scenarios whose lines have rarer shapes really produced them."""
    first = {}
    for e in res.expected:
        first.setdefault(e["scenario"], e["msgid"])
    body = {}
    for m in parsed(res):
        if m["id"]:
            body.setdefault(m["id"], []).append(m["body"])
    assert any(b.startswith("(= alice@local.test ") for b in body[first["S38"]])  # fakereject
    assert any(b.startswith("*> bob <bob@local.test> ") for b in body[first["S35"]])  # -N
    assert any(
        re.search(r" P=esmtpsa (?:L\S* )?X=TLS", b) and " A=dovecot_plain:alice@local.test " in b
        for b in body[first["S37"]]
    )
    assert any(b.startswith("=> carol <Carol@Local.TEST> ") for b in body[first["S27"]])
    assert any(
        b.startswith('=> ok quoted@remote.test <"ok quoted"@remote.test> ') for b in body[first["S30"]]
    )
    assert (
        "bad-never@remote.test: error ignored: RFC 3461 DSN, failure notify not requested"
        in body[first["S32"]]
    )
    assert "unfrozen by root" in body[first["S34"]]
    assert "frozen by ACL" in body[first["S19"]]
    assert "no immediate delivery: queued by ACL" in body[first["S20"]]
    assert "removed by root" in body[first["S21"]] and "cancelled by root" in body[first["S22"]]
    assert any(
        b.startswith("** user@dead.test") and "retry timeout exceeded" in b for b in body[first["S23"]]
    )
    # a bounce refused by the sender's server: `** …` (`F=<>` with +sender_on_delivery), then frozen
    (bounce,) = [e for e in res.expected if e["scenario"] == "S41" and "parent" in e]
    assert any(b.startswith("** bad-sender@remote.test ") for b in body[bounce["msgid"]])
    assert "Frozen (delivery error message)" in body[bounce["msgid"]]


def test_noise_lines(res):
    log = "\n".join(lines(res))
    assert "SMTP protocol synchronization error" in log
    assert "SMTP connection from (halfway.example) [127.0.0.1]" in log  # lost while reading message data
    assert "unexpected disconnection while reading SMTP command from (dropper.example)" in log
    # +smtp_syntax_error and +smtp_incomplete_transaction are only in +all
    assert ('SMTP syntax error in "FOOBAR"' in log) is (res.mode == "all")
    assert ("incomplete transaction (connection lost) from <alice@local.test>" in log) is (res.mode == "all")


def test_the_daemon_starts_on_another_port_when_its_port_was_taken(tmp_path):
    """free_port() names a port that was free; another process can bind it before Exim does (seen: Exim
    logged the bind failure and waited to retry, the probe reached the other listener, the harness found no
    pid file). The daemon is then started again on another port, and the log holds no trace of the try."""
    import socket

    from tests.exim.harness import EximRun, find_exim

    if os.geteuid() != 0:
        pytest.fail("the real-Exim harness must run as root", pytrace=False)
    find_exim()
    run = EximRun(tmp_path, "default")
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        run.setup()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run.port = taken.getsockname()[1]
        run.start_daemon()
        assert run.port != taken.getsockname()[1] and run.daemon_pid
        os.kill(run.daemon_pid, 0)  # alive, and its pid file named it
        assert b"bind()" not in (run.rt / "log" / "mainlog").read_bytes()
    finally:
        taken.close()
        run.stop()
