"""`eximtrack plan`: how big a deployment must be for a fleet, from measured numbers.

Every figure is the fleet's mail volume times a cost measured by `make bench` on the 2-core box
(`bench/results.json`; which suite gives which number is in `MEASURED`). The numbers are kept here so that
an installed eximtrack can plan without the checkout; tests/unit/test_plan.py recomputes them from
bench/results.json, so they cannot drift from the measurements. docs/DEPLOY.md shows the plans for 10,
1,000 and 10,000 servers (generated: `eximtrack plan --doc`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from schemas.topics import RAW_LINE_PARTITIONS

# The measured costs (bench/results.json; `measured_from` recomputes each from the results file).
MEASURED = {
    # pipeline suite, drain: lines/s ÷ the cores each process used during it
    "worker_lines_per_core": 27293,
    "sink_lines_per_core": 20058,  # the embedded store: ClickHouse's insert work is in the sink's process
    "broker_lines_per_core": 91548,
    # core suite corpus (4 servers, the generator's default mix)
    "lines_per_message": 8.57,
    "events_per_line": 0.512,
    "raw_bytes_per_line": 143,
    # ingest suite: every table together (events, latest, access paths, aggregates, raw message lines)
    "store_bytes_per_event": 564,
    # pipeline suite: the worker's RSS, and its growth per open message (100k more open messages)
    "worker_base_rss_mib": 251,
    "worker_bytes_per_open_message": 542,
    # queries suite: the largest store measured (events); the per-shard bound of this plan
    "events_per_shard": 100_000_000,
}
RAW_LINES_RETENTION_DAYS = 7  # schemas/topics.py
REPLICAS = 3


def measured_from(results: dict) -> dict:
    """The costs of `MEASURED`, recomputed from a bench results file."""
    s = results["suites"]
    drain = s["pipeline"]["drain"]
    cores = drain["cpu_cores_used"]
    corpus = s["core"]["corpus"]
    return {
        "worker_lines_per_core": round(drain["lines_per_s"] / cores["stream"]),
        "sink_lines_per_core": round(drain["lines_per_s"] / cores["sink"]),
        "broker_lines_per_core": round(drain["lines_per_s"] / cores["kafka broker"]),
        "lines_per_message": round(corpus["lines"] / corpus["messages"], 2),
        "events_per_line": round(corpus["events"] / corpus["lines"], 3),
        "raw_bytes_per_line": round(corpus["bytes"] / corpus["lines"]),
        "store_bytes_per_event": round(s["ingest"]["disk"]["bytes_per_event"]),
        "worker_base_rss_mib": round(s["pipeline"]["peak_rss_mb"]["stream"]),
        "worker_bytes_per_open_message": round(s["pipeline"]["open_messages"]["bytes_per_open_message"]),
        "events_per_shard": max(int(v["events"]) for v in s["queries"]["_meta"].values()) // 10**8 * 10**8,
    }


@dataclass(frozen=True)
class Fleet:
    servers: int
    messages_per_day: float  # per server
    peak_factor: float = 3.0  # the busiest hour against the day's average
    retention_days: int = 90  # the store's TTL (events, latest, raw lines)
    lines_per_message: float | None = None  # default: the bench corpus's
    open_seconds: float = 600.0  # a message is open from arrival to its last delivery + 5 min grace
    deferred_share: float = 0.02  # messages still being retried a day after arrival


@dataclass(frozen=True)
class Plan:
    lines_per_s: float
    peak_lines_per_s: float
    events_per_day: float
    worker_cores: int
    workers: int
    sink_cores: int
    broker_cores: int
    brokers: int
    kafka_disk_gb: float
    store_gb_per_day: float
    store_gb: float
    shards: int
    open_messages: float
    worker_rss_mib: float
    notes: tuple[str, ...]


def plan(fleet: Fleet, m: dict = MEASURED) -> Plan:
    lpm = fleet.lines_per_message or m["lines_per_message"]
    messages_per_day = fleet.servers * fleet.messages_per_day
    lines_per_day = messages_per_day * lpm
    lines_per_s = lines_per_day / 86400
    peak = lines_per_s * fleet.peak_factor
    events_per_day = lines_per_day * m["events_per_line"]
    worker_cores = max(1, math.ceil(peak / m["worker_lines_per_core"]))
    workers = min(worker_cores, RAW_LINE_PARTITIONS)
    sink_cores = max(1, math.ceil(peak / m["sink_lines_per_core"]))
    broker_cores = max(1, math.ceil(peak / m["broker_lines_per_core"]))
    brokers = REPLICAS
    kafka_disk = lines_per_day * m["raw_bytes_per_line"] * RAW_LINES_RETENTION_DAYS * REPLICAS / 1e9
    store_per_day = events_per_day * m["store_bytes_per_event"] / 1e9
    stored_events = events_per_day * fleet.retention_days
    shards = max(1, math.ceil(stored_events / m["events_per_shard"]))
    open_messages = (
        messages_per_day / 86400 * fleet.peak_factor * fleet.open_seconds
        + messages_per_day * fleet.deferred_share
    ) / workers
    rss = m["worker_base_rss_mib"] + open_messages * m["worker_bytes_per_open_message"] / 2**20
    notes = []
    if worker_cores > RAW_LINE_PARTITIONS:
        notes.append(
            f"the peak needs {worker_cores} worker cores but the raw-lines topic has {RAW_LINE_PARTITIONS} "
            "partitions (at most one worker each): the joiner's cost per line must fall first (issue 12)"
        )
    if sink_cores > 1:
        notes.append(
            "more than one sink core: use a ClickHouse server (the embedded store admits one sink process); "
            "sinks scale by partitions like the workers"
        )
    if shards > 1:
        notes.append(
            f"{stored_events:,.0f} stored events: more than one store of the largest size measured (1e8); "
            "shard by message (a ClickHouse cluster) or shorten the retention"
        )
    return Plan(lines_per_s, peak, events_per_day, worker_cores, workers, sink_cores, broker_cores, brokers,
                kafka_disk, store_per_day, store_per_day * fleet.retention_days, shards, open_messages, rss,
                tuple(notes))  # fmt: skip


def rows(fleet: Fleet, p: Plan) -> list[tuple[str, str]]:
    return [
        ("mail", f"{fleet.servers:,} servers × {fleet.messages_per_day:,.0f} messages/day"),
        ("log lines", f"{p.lines_per_s:,.0f}/s on average, {p.peak_lines_per_s:,.0f}/s at the peak hour"),
        ("stream workers", f"{p.workers} process(es), one core each"),
        ("sink", f"{p.sink_cores} core(s)" + (" (a ClickHouse server)" if p.sink_cores > 1 else "")),
        ("Kafka", f"{p.brokers} brokers (replication 3), {p.broker_cores} core(s) in all"),
        ("Kafka disk (raw lines, 7 days, 3 replicas, before compression)", f"{p.kafka_disk_gb:,.1f} GB"),
        ("store", f"{p.store_gb_per_day:,.1f} GB/day, {p.store_gb:,.0f} GB for the retention"),
        ("ClickHouse shards", f"{p.shards} (≤ 1e8 events each)"),
        ("worker memory", f"{p.worker_rss_mib:,.0f} MiB each ({p.open_messages:,.0f} open messages)"),
    ]


def render(fleet: Fleet, p: Plan, markdown: bool) -> str:
    table = rows(fleet, p)
    if markdown:
        out = ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in table)]
    else:
        width = max(len(k) for k, _ in table)
        out = [f"{k:<{width}}  {v}" for k, v in table]
    out += [("- " if markdown else "note: ") + n for n in p.notes]
    return "\n".join(out) + "\n"


DOC_FLEETS = (Fleet(10, 5_000), Fleet(1_000, 5_000), Fleet(10_000, 5_000))


def doc_tables() -> str:
    """The sizing tables of docs/DEPLOY.md."""
    parts = []
    for fleet in DOC_FLEETS:
        parts.append(f"### {fleet.servers:,} servers\n\n" + render(fleet, plan(fleet), markdown=True))
    return "\n".join(parts)


def cmd_plan(args) -> int:
    if args.doc:
        print(doc_tables(), end="")
        return 0
    m = MEASURED
    if args.results:
        m = measured_from(json.loads(Path(args.results).read_text()))
    fleet = Fleet(
        args.servers, args.messages_per_day, args.peak_factor, args.retention_days, args.lines_per_message
    )
    print(render(fleet, plan(fleet, m), args.format == "markdown"), end="")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="size a deployment for a fleet from measured costs (docs/DEPLOY.md)"
    )
    p.add_argument("--servers", type=int, default=1000, help="Exim servers (default 1000)")
    p.add_argument(
        "--messages-per-day", type=float, default=5000, help="messages per server per day (default 5000)"
    )
    p.add_argument(
        "--peak-factor", type=float, default=3.0, help="the busiest hour ÷ the average (default 3)"
    )
    p.add_argument("--retention-days", type=int, default=90, help="days the store keeps events (default 90)")
    p.add_argument("--lines-per-message", type=float, default=None, help="default: the bench corpus's (8.57)")
    p.add_argument(
        "--results", metavar="FILE", help="costs from this bench results file instead of the built-in"
    )
    p.add_argument("--format", choices=("text", "markdown"), default="text")
    p.add_argument("--doc", action="store_true", help="print docs/DEPLOY.md's tables")
    p.set_defaults(func=cmd_plan)


__all__ = ["DOC_FLEETS", "MEASURED", "Fleet", "Plan", "doc_tables", "measured_from", "plan", "register"]
