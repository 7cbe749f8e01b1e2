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
from eximtrack.alerts.evaluate import evaluate
from eximtrack.alerts.rules import DEFAULT_RULES, Rules, RulesError, load_rules
from eximtrack.alerts.state import MemoryAlerts, step

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


def simulate(run, rules: Rules, since: datetime, until: datetime, every: timedelta) -> list[dict]:
    """Evaluate `rules` at since, since+every, … < until with in-memory states: the transitions, in order."""
    states = MemoryAlerts()
    out = []
    at = since
    while at < until:
        s = step(rules, list(states.open.values()), states.last_resolved, evaluate(run, rules, at), at)
        states.apply(s)
        for event, alerts in (("firing", s.fired), ("resolved", s.resolved)):
            for a in alerts:
                f = a.finding
                out.append({"at": at.isoformat(), "event": event, "rule": f.rule, "key": f.key, "value": f.value,
                            "baseline": f.baseline, "summary": f.summary, "examples": list(f.examples),
                            "link": f.link})  # fmt: skip
        at += every
    return out


class Evaluator:
    """One `alerts run` evaluation after another: read the open alerts, evaluate, store the changes, then
    notify (a crash between storing and notifying loses a notification, never repeats one), and keep the
    metrics."""

    def __init__(self, store, rules: Rules, notifiers, registry=None) -> None:
        from eximtrack.alerts.metrics import AlertMetrics
        from sinks.clickhouse.store import store_run

        self.store, self.rules, self.notifiers = store, rules, notifiers
        self.run = store_run(store)
        self.metrics = AlertMetrics(registry)
        self.registry = self.metrics.registry
        self._counted: dict = {}

    def once(self, at: datetime | None = None) -> dict:
        at = at or datetime.now(UTC)
        t0 = time.perf_counter()
        longest = max(r.cooldown_seconds for r in self.rules.rules)
        open_alerts = table.open_alerts(self.store)
        resolved = table.last_resolved(self.store, at - timedelta(seconds=longest))
        s = step(self.rules, open_alerts, resolved, evaluate(self.run, self.rules, at), at)
        table.write(self.store, s.changed)
        for alert in s.fired:
            self.notifiers.notify("firing", alert)
        for alert in s.resolved:
            self.notifiers.notify("resolved", alert)
        now_open = {a.ident for a in open_alerts} - {a.ident for a in s.resolved} | {a.ident for a in s.fired}
        for rule in self.rules.rules:
            self.metrics.firing.labels(rule.name).set(sum(1 for name, _ in now_open if name == rule.name))
        for key, n in self.notifiers.outcomes.items():
            self.metrics.notifications.labels(*key).inc(n - self._counted.get(key, 0))
            self._counted[key] = n
        self.metrics.evaluation.observe(time.perf_counter() - t0)
        self.metrics.last_evaluation.set(time.time())
        return {"fired": len(s.fired), "resolved": len(s.resolved), "firing": len(now_open)}


class AlertLoop:
    """`eximtrack sink --alerts FILE`: the rules evaluated by the process that owns an embedded store (no
    other process may write it), from the sink's loop (`maybe()` after each poll) at most every `seconds`,
    holding `lock` (the engine's). A failed evaluation is logged and retried: alerts never stop the sink."""

    def __init__(
        self, store, rules: Rules, seconds: float = 60.0, lock=None, registry=None, clock=time.monotonic
    ):
        from contextlib import nullcontext

        from eximtrack.alerts.notify import Notifiers

        self.evaluator = Evaluator(store, rules, Notifiers(rules.webhook, rules.email), registry)
        self.seconds, self.clock, self.lock = seconds, clock, lock or nullcontext()
        self.last = clock() - seconds  # the first call evaluates
        self.runs = self.failures = 0

    def maybe(self) -> dict | None:
        if self.clock() - self.last < self.seconds:
            return None
        self.last = self.clock()
        try:
            with self.lock:
                done = self.evaluator.once()
        except Exception:  # noqa: BLE001 - alerts never stop the writer
            self.failures += 1
            log.exception("alert evaluation failed; retrying in %.0f s", self.seconds)
            return None
        self.runs += 1
        if done["fired"] or done["resolved"]:
            log.info("alerts: %(fired)d fired, %(resolved)d resolved, %(firing)d firing", done)
        return done


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
    from eximtrack.alerts.notify import Notifiers

    logs.configure("alerts", logging.INFO)

    evaluator = Evaluator(store, rules, Notifiers(rules.webhook, rules.email))
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
