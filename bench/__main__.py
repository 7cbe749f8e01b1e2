"""Run the benchmark suites and write their results: `python -m bench [--quick] [--only core,ingest]`.

Full runs write bench/results.json (committed: docs/BENCHMARKS.md, its plot and the README's numbers are
rendered from it by `python -m bench.report`). Quick runs (the CI smoke test, `make bench-quick`) write
into the work directory only. The exit code is 1 when any suite failed (its error is kept in the results).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.timing import box_speed, cpu_steal, cpu_times

ROOT = Path(__file__).resolve().parent.parent
SUITES = ("core", "ingest", "footprint", "pipeline", "scaleout", "queries")
RESULTS = ROOT / "bench" / "results.json"


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for mod in ("chdb", "clickhouse_connect", "faust", "kafka"):
        try:
            from importlib.metadata import version

            versions[mod] = version({"faust": "faust-streaming", "kafka": "kafka-python"}.get(mod, mod))
        except Exception:
            versions[mod] = "?"
    try:
        from eximtrack.local_broker import DEFAULT_VERSION

        versions["kafka_broker"] = DEFAULT_VERSION
    except Exception:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "os": platform.platform(),
            "versions": versions, "commit": commit}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds to a few minutes)")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites ({', '.join(SUITES)})")
    ap.add_argument("--workdir", default=str(ROOT / ".eximtrack" / "bench"), help="generated logs and stores")
    ap.add_argument("--out", default=None, help="results file (default: bench/results.json, or "
                    "WORKDIR/results-quick.json with --quick)")  # fmt: skip
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s): {', '.join(unknown)}")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else (workdir / "results-quick.json" if args.quick else RESULTS)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("suites", {})
    results["machine"] = machine()
    results["machine"]["speed"] = box_speed(3 if args.quick else 7)
    # each suite also keeps where it ran, and how fast the box was when this run began: a later run of other
    # suites replaces the header's machine and commit
    ran_on = {k: results["machine"].get(k, "?") for k in ("cpu", "commit", "speed")}
    results["quick"] = args.quick
    failed = []
    for name in names:
        print(f"bench: {name} …", flush=True)
        t0 = time.perf_counter()
        ticks = cpu_times()
        try:
            suite = importlib.import_module(f"bench.{name}")
            data = suite.run(args.quick, workdir)
            data["seconds"] = round(time.perf_counter() - t0, 1)
            data["cpu_steal"] = cpu_steal(ticks, cpu_times())
            data["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            data["_machine"] = ran_on
            results["suites"][name] = data
            print(f"bench: {name} done in {data['seconds']} s", flush=True)
        except Exception as exc:
            failed.append(name)
            traceback.print_exc()
            results["suites"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"bench: results in {out}")
    if failed:
        print(f"bench: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
