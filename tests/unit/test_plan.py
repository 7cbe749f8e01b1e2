"""`eximtrack plan`: its costs are the measured ones (bench/results.json), the arithmetic follows the fleet,
and docs/DEPLOY.md shows what the calculator prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eximtrack import plan as p

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_in_costs_are_the_measured_ones():
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    assert p.measured_from(results) == p.MEASURED, "update MEASURED from bench/results.json (make bench)"


def test_the_plan_scales_with_the_fleet():
    small, big = p.plan(p.Fleet(10, 5_000)), p.plan(p.Fleet(10_000, 5_000))
    assert big.lines_per_s == pytest.approx(small.lines_per_s * 1_000)
    assert big.store_gb == pytest.approx(small.store_gb * 1_000)
    m = p.MEASURED
    fleet = p.Fleet(1_000, 5_000, peak_factor=3, retention_days=30)
    got = p.plan(fleet)
    lines_per_day = 1_000 * 5_000 * m["lines_per_message"]
    assert got.lines_per_s == pytest.approx(lines_per_day / 86400)
    assert got.worker_cores == -(-lines_per_day / 86400 * 3 // m["worker_lines_per_core"])
    assert got.store_gb_per_day == pytest.approx(
        lines_per_day * m["events_per_line"] * m["store_bytes_per_event"] / 1e9
    )
    assert got.store_gb == pytest.approx(got.store_gb_per_day * 30)
    assert small.shards == 1 and big.shards > 1 and any("shard" in n for n in big.notes)
    huge = p.plan(p.Fleet(100_000, 20_000))
    assert huge.workers == 12 and any("partitions" in n for n in huge.notes)


def test_deploy_doc_shows_the_calculators_tables():
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    assert p.doc_tables() in text, "regenerate: eximtrack plan --doc"
