"""The generator (eximtrack/demo_log.py) and its truth: rounds of the real-Exim samples under fresh ids, whose
outcomes are the harness's ground truth of the sample, mapped to each round's ids."""

import collections

import pytest

from eximtrack.demo_log import truth, write_log
from stream.join import join_lines


def outcomes(rows, mode):
    got = collections.Counter((m, r, t) for (m, r, t) in rows)
    if mode == "default":  # no recipient list in the log: the message-level row stands for its recipients
        got = collections.Counter({(m, t) for (m, _r, t) in got})
    return got


@pytest.mark.parametrize("mode", ["cpanel", "all", "default"])
def test_generated_log_matches_the_generator_truth(tmp_path, mode):
    log = tmp_path / "gen.log"
    write_log(log, mode, n_rounds=3, salt=5)
    t = truth(mode, n_rounds=3, salt=5)
    joiner, _ = join_lines("gen", log.read_text().splitlines())
    latest = [(e.msgid, e.recipient, e.type) for e in joiner.latest().values() if e.type != "rejected"]
    assert outcomes(latest, mode) == outcomes(
        [(e["msgid"], e["recipient"], e["type"]) for e in t["expected"]], mode
    )
    assert sum(1 for e in joiner.latest().values() if e.type == "rejected") == len(t["rejections"])
    assert len({e["msgid"] for e in t["expected"]}) == 3 * len(
        {e["msgid"] for e in truth(mode, 1, salt=5)["expected"]}
    )
