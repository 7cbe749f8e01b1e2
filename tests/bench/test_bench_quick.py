"""The benchmark suite's smoke run (`make bench-quick`): every suite runs at small sizes against the real
parts (eximstats, chDB, a local Kafka broker, faust) and its results must be complete and consistent, and the
report must render from them. The numbers themselves are not asserted (speed lives in docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.store, pytest.mark.exim]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--workdir", str(work)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    results = work / "results-quick.json"
    assert results.exists(), proc.stdout + proc.stderr
    data = json.loads(results.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    data["_work"] = str(work)
    return data


def test_every_suite_ran(quick):
    assert set(quick["suites"]) == {"core", "ingest", "footprint", "pipeline", "scaleout", "queries"}
    for name, suite in quick["suites"].items():
        assert "error" not in suite, (name, suite)
        # Linux: the hypervisor's share of the CPU time is recorded
        assert 0.0 <= suite["cpu_steal"] <= 1.0, (name, suite.get("cpu_steal"))
        # and where it ran: this run's CPU and commit, and how fast the box was when the run began
        assert suite["_machine"] == {k: quick["machine"][k] for k in ("cpu", "commit", "speed")}, name
    speed = quick["machine"]["speed"]
    assert speed["python_ms"] > 0 and speed["clickhouse_ms"] > 0 and speed["runs"] == 3
    assert quick["machine"]["cores"] >= 1 and quick["quick"] is True


def test_scaleout_drained_with_one_and_two_workers(quick):
    s = quick["suites"]["scaleout"]
    one, two = s["by_workers"]["1"], s["by_workers"]["2"]
    assert (
        "stream2" not in one["cpu_cores_used"] and two["cpu_cores_used"]["stream2"] > 0
    )  # both workers worked
    for run in (one, two):
        assert 0 < run["lines_per_s"]["min"] <= run["lines_per_s"]["median"] <= run["lines_per_s"]["max"]
    assert s["speedup_2_workers"] == two["lines_per_s"]["median"] / one["lines_per_s"]["median"]
    if os.environ.get("EXIMTRACK_BENCH_CLICKHOUSE_URL"):  # two sinks of one group share a server's store
        assert (
            s["by_sinks"]["2"]["cpu_cores_used"]["sink2"] > 0
            and "sink2" not in s["by_sinks"]["1"]["cpu_cores_used"]
        )
    else:
        assert "no ClickHouse server" in s["by_sinks"]["not_measured"]


def test_core_and_ingest_read_the_same_files_as_eximstats(quick):
    core, ing = quick["suites"]["core"], quick["suites"]["ingest"]
    manifest = json.loads((Path(quick["_work"]) / "corpus-quick" / "manifest.json").read_text())
    # eximstats counted the generated arrivals, so it really parsed the 16-character ids
    arrivals = manifest["totals"]["messages"]
    assert core["eximstats"]["totals"]["received"] == arrivals
    assert core["corpus"]["lines"] == manifest["totals"]["lines"] > 10_000
    assert core["corpus"]["events"] > arrivals
    for s in (core["eximstats"], core["core_1_process"], core["core_all_cores"], ing["ingest_lines"]):
        assert 0 < s["min"] <= s["median"] <= s["max"] and s["runs"] >= 2
    # ingest stored one Track Delivery row per truth row (the suite raises otherwise) and every event
    assert ing["stored"]["latest"] == ing["truth_rows"] > 0
    assert 0 < ing["stored"]["events"] <= core["corpus"]["events"]  # re-emissions of one event_id may merge
    assert ing["disk"]["bytes_per_event"] > 0 and "events" in ing["disk"]["by_table"]
    # and on one busy cPanel server's log (denser in recipients, deferrals and bounces), checked the same way
    one = ing["single_server"]
    assert one["corpus"]["servers"] == 1 and one["stored"]["latest"] == one["truth_rows"] > 0
    assert one["truth_rows"] / one["corpus"]["messages"] > ing["truth_rows"] / manifest["totals"]["messages"]
    for s in (one["eximstats"], one["ingest_lines"]):
        assert 0 < s["min"] <= s["median"] <= s["max"] and s["runs"] >= 2
    # what this machine allows on that file: every part measured in real processes, the views costing the
    # inserts more than a store without any, and the measured ingest below the bound (which leaves out merges
    # and process start)
    b = one["bound"]
    assert set(b["cpu_s"]) == {"join", "encode", "open", "insert", "insert_bare"}
    assert all(c["median"] > 0 and c["runs"] >= 2 for c in b["cpu_s"].values())
    assert b["cpu_s"]["insert"]["median"] > b["cpu_s"]["insert_bare"]["median"]
    assert 0 < b["ratio_bound"] < b["ratio_bound_bare"] and b["cores"] == os.cpu_count()
    assert one["ratio"] <= b["ratio_bound"] * 1.25


def test_pipeline_stored_everything_and_measured_freshness(quick):
    p = quick["suites"]["pipeline"]
    assert p["drain"]["lines_per_s"] > 0 and p["drain"]["curve"][-1][1] >= p["drain"]["message_lines"] > 0
    f = p["freshness"]
    assert f["probes"] >= 50 and 0 < f["p50"] <= f["p95"] <= f["p99"] <= f["max"]
    assert f["rate_appended"] > 0.5 * f["rate_target"]
    assert {"sink", "stream", "ship-web01"} <= set(p["peak_rss_mb"])
    assert p["open_messages"]["messages"] == 10_000 and p["open_messages"]["rss_after_mb"] > 0
    # each component was killed and restarted, and a line appended after each restart was stored
    rec = p["recovery_s"]
    assert set(rec) == {"ship", "stream", "sink", "timed_out"} and rec["timed_out"] == []
    assert p["recovery_worker_lines_redone"] >= 1  # at least the probe
    assert all(rec[n] > 0 for n in ("ship", "stream", "sink"))


def test_footprint_measured_open_states(quick):
    fp = quick["suites"]["footprint"]
    assert fp["open_messages"] > 1000 and fp["recipients_per_message"] >= 1
    assert 0 < fp["changelog_bytes"] < fp["worker_table_bytes"] < fp["as_python_dicts_bytes"]
    assert fp["ingest_objects_bytes"] > 0


def test_report_renders_from_the_results(quick, tmp_path):
    doc, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    shutil.copy(ROOT / "docs" / "BENCHMARKS.md", doc)
    shutil.copy(ROOT / "README.md", readme)
    results = Path(quick["_work"]) / "results-quick.json"
    assert report.main(["--results", str(results), "--doc", str(doc), "--plot", str(tmp_path / "b.png"),
                        "--readme", str(readme)]) == 0  # fmt: skip
    text = doc.read_text()
    assert "quick (smoke) sizes" in text and "eximstats" in text and "Freshness" in text
    assert "(steal;" in text and "pipeline " in text.split("(steal;", 1)[1].split("\n\n", 1)[0]
    assert "How fast the box was" in text and "queries " in text.split("How fast the box was", 1)[1]
    assert (tmp_path / "b.png").stat().st_size > 10_000
    assert "Core (parse + join) vs eximstats" in readme.read_text()
    # the hand-written parts around the markers survive
    assert text.startswith("# Benchmarks") and "## How to run" in text


def test_api_latency_times_the_same_requests_over_http(quick, tmp_path):
    """bench/api_latency.py on the quick query store: a real `eximtrack serve`, the same requests as the
    builders, every one answered (a failing request raises, so the run would exit non-zero)."""
    store = Path(quick["_work"]) / "q1e5"
    out = tmp_path / "api.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.api_latency", "--scale", "1e5", "--store", str(store), "--runs", "3",
         "--only", "msgid,failures_page10,total_recipient,stats_api_24h_user", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    res = json.loads(out.read_text())["queries"]
    assert {"msgid", "failures_page10", "total_recipient", "stats_api_24h_user"} <= set(res)
    for name, r in res.items():
        assert r["builders"]["p50"] > 0 and r["http"]["p50"] > 0 and r["http"]["runs"] == 3, name
    assert res["msgid"]["http"]["rows"] >= 1 and res["failures_page10"]["http"]["rows"] > 0
