"""`eximtrack alerts`: check a rules file, test rules against a past time range, run them every minute.

    eximtrack alerts defaults > rules.yaml         # the shipped rules, to edit
    eximtrack alerts check --rules rules.yaml      # validate (exit 2 with the problem)
    eximtrack alerts test --since 2026-11-20 --until 2026-11-27 --every 15m   # what would have fired
    eximtrack alerts run --rules rules.yaml --metrics-port 9103               # evaluate, store, notify
    eximtrack alerts list [--all]                  # firing alerts (or every alert) from the store

`run` keeps alert states in the `alerts` table (one evaluator per store: two would notify twice) and serves
Prometheus metrics: `eximtrack_alerts_firing{rule}`, `eximtrack_alert_notifications_total{channel,outcome}`,
`eximtrack_alert_evaluation_seconds`, `eximtrack_alert_last_evaluation_timestamp_seconds`.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from eximtrack.alerts import table
from eximtrack.alerts.rules import DEFAULT_RULES, Rules, RulesError, load_rules
from eximtrack.alerts.runner import Evaluator, simulate

log = logging.getLogger("eximtrack.alerts")


def parse_every(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise ValueError(f"--every: expected e.g. 30s, 15m, 1h, not {text!r}") from None
    if value < 60:
        raise ValueError("--every: at least one minute")
    return timedelta(seconds=value)


def _rules(args) -> Rules:
    return load_rules(args.rules)


def _time(value: str, name: str) -> datetime:
    from eximtrack.search import SearchError, parse_time

    try:
        return datetime.fromtimestamp(parse_time(value, name), UTC)
    except (SearchError, TypeError) as exc:
        raise RulesError(str(exc)) from None


def cmd_alerts(args) -> int:
    from eximtrack import cli

    try:
        if args.action == "defaults":
            sys.stdout.write(DEFAULT_RULES)
            return 0
        rules = _rules(args)
        if args.action == "check":
            for r in rules.rules:
                params = ", ".join(f"{k}={v}" for k, v in r.params.items())
                print(f"{r.name}: {r.kind} ({params})")
            channels = [c for c, on in (("webhook", rules.webhook), ("email", rules.email)) if on]
            print(
                f"{len(rules.rules)} rules; notify: {', '.join(channels) or 'none (store and metrics only)'}"
            )
            return 0
        if args.action == "test":
            since, until = _time(args.since, "--since"), _time(args.until, "--until")
            every = parse_every(args.every)
            store = cli.open_store(args)
            from sinks.clickhouse.store import store_run

            for t in simulate(store_run(store), rules, since, until, every):
                print(
                    json.dumps(t)
                    if args.format == "json"
                    else f"{t['at']}  {t['event']:8s} {t['rule']}: {t['summary']}"
                )
            return 0
        store = cli.open_store(args)
        if args.action == "run" and not hasattr(store, "client"):
            raise RulesError(
                f"{store.url.display()} is an embedded store another process owns (the sink): alerts must be "
                "stored by that process — run `eximtrack sink … --alerts RULES` instead (or use a ClickHouse server)"
            )
        if args.action == "list":
            sql, params = table.list_query("all" if args.all else "firing", args.limit)
            for r in store.query_dicts(sql, params):
                print(
                    json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})
                )
            return 0
        return _run(store, rules, args)
    except (RulesError, ValueError) as exc:
        print(f"eximtrack alerts: {exc}", file=sys.stderr)
        return 2


def _run(store, rules: Rules, args) -> int:
    from eximtrack import logs
    from eximtrack.alerts.notify import Notifiers, QueuedNotifiers

    logs.configure("alerts", logging.INFO)

    notifiers = QueuedNotifiers(Notifiers(rules.webhook, rules.email))  # retries never delay an evaluation
    evaluator = Evaluator(store, rules, notifiers)
    ops = None
    if args.metrics_port is not None:
        from eximtrack.ops_endpoint import OpsEndpoint

        ops = OpsEndpoint(evaluator.registry, args.metrics_port, args.metrics_host)
        log.info("metrics, /healthz and /readyz on %s:%d", args.metrics_host, ops.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                done = evaluator.once()
                log.info("alerts: %(fired)d fired, %(resolved)d resolved, %(firing)d firing", done)
            except Exception:  # noqa: BLE001 - a failed evaluation is retried at the next interval
                log.exception("alert evaluation failed")
            if args.once:
                break
            stop.wait(max(0.0, args.interval - (time.monotonic() - started)))
    finally:
        notifiers.close()
        if ops is not None:
            ops.shutdown()
    return 0


def register(subparsers) -> None:
    from eximtrack.cli import add_store_arg

    p = subparsers.add_parser("alerts", help="fleet alerts: check, test and run rules over the aggregates")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("defaults", help="print the shipped rules (a starting rules file)")
    for name, text in (("check", "validate a rules file"), ("test", "what would have fired in a time range"),
                       ("run", "evaluate every --interval seconds, store and notify"),
                       ("list", "alerts in the store")):  # fmt: skip
        q = sub.add_parser(name, help=text)
        q.add_argument("--rules", metavar="FILE", help="rules file (YAML; default: the shipped rules)")
        if name != "check":
            add_store_arg(q)
        if name == "test":
            q.add_argument("--since", required=True)
            q.add_argument("--until", required=True)
            q.add_argument("--every", default="15m", help="evaluation step (default 15m)")
            q.add_argument("--format", choices=("text", "json"), default="text")
        if name == "run":
            q.add_argument("--interval", type=float, default=60.0, help="seconds between evaluations (60)")
            q.add_argument("--once", action="store_true", help="one evaluation, then exit")
            q.add_argument("--metrics-port", type=int, default=None)
            q.add_argument("--metrics-host", default="127.0.0.1")
        if name == "list":
            q.add_argument("--all", action="store_true", help="resolved alerts too")
            q.add_argument("--limit", type=int, default=100, help="newest first (default 100)")
    p.set_defaults(func=cmd_alerts)
