"""eximtrack benchmarks: throughput, freshness, query latency and footprint, beside the references.

`python -m bench` (or `make bench`; `make bench-quick` for the CI smoke run) runs every suite, each a module
with `run(quick, workdir) -> dict`, and writes bench/results.json; `python -m bench.report` renders docs/BENCHMARKS.md
and docs/benchmarks.png from it. Suites:
  generate  realistic multi-server Exim logs with their truth (bench/generate.py, also used by the others)
  core      parse + join lines/s vs Exim's eximstats on the same file
  ingest    `eximtrack ingest` into the embedded store vs the same eximstats run
  pipeline  shipper -> Kafka -> faust -> sink: sustained lines/s and freshness percentiles
  queries   Track Delivery searches, timeline and stats at 1e7 / 1e8 stored events (fast fill path)
  footprint bytes on disk per event, worker memory per open message, shipper memory
"""
