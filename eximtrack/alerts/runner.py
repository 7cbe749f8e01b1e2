"""Running alert rules: one evaluation after another with the states in the `alerts` table (`Evaluator`,
`eximtrack alerts run`), from the sink's loop on an embedded store (`AlertLoop`, `eximtrack sink --alerts`),
or over a past time range with the states in memory (`simulate`, `eximtrack alerts test`)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from eximtrack.alerts import table
from eximtrack.alerts.evaluate import evaluate
from eximtrack.alerts.rules import Rules
from eximtrack.alerts.state import MemoryAlerts, step

log = logging.getLogger("eximtrack.alerts")


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
    holding `lock` (the engine's) while it reads and stores; notifications go out from a thread of their
    own. A failed evaluation is logged and retried: alerts never stop the sink."""

    def __init__(
        self, store, rules: Rules, seconds: float = 60.0, lock=None, registry=None, clock=time.monotonic
    ):
        from contextlib import nullcontext

        from eximtrack.alerts.notify import Notifiers, QueuedNotifiers

        # notifications on a thread of their own: a webhook's retries never hold the sink or the engine
        self.notifiers = QueuedNotifiers(Notifiers(rules.webhook, rules.email))
        self.evaluator = Evaluator(store, rules, self.notifiers, registry)
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

    def close(self, timeout: float = 30.0) -> None:
        """Send the notifications still queued (at most `timeout` seconds)."""
        self.notifiers.close(timeout)


__all__ = ["AlertLoop", "Evaluator", "simulate"]
