"""Alert states: from one evaluation's findings and the alerts open before it, which alerts fire, which are
updated and which resolve. Pure: the caller reads and writes the `alerts` table (eximtrack/alerts/store.py)
or keeps them in memory (`alerts test`).

An alert is (rule, key) from the evaluation that first found it until the first evaluation that does not:

  * a finding with no open alert opens one (`firing`, notified), unless the same (rule, key) resolved less
    than the rule's cool-down ago (then nothing: a flapping key notifies once per cool-down);
  * a finding with an open alert updates its numbers (stored, not notified);
  * an open alert without a finding resolves (`resolved`, notified).

Every change is a new version of the alert's row (versions grow with the evaluation time, so a replayed or
repeated evaluation cannot bring an older state back).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime

from eximtrack.alerts.evaluate import Finding
from eximtrack.alerts.rules import Rules

FIRING = "firing"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    alert_id: str
    finding: Finding
    state: str
    started_at: datetime
    updated_at: datetime
    resolved_at: datetime | None = None

    @property
    def ident(self) -> tuple[str, str]:
        return (self.finding.rule, self.finding.key)

    @property
    def version(self) -> int:
        """Grows with every change of one alert: the evaluation time in ms, resolution after firing."""
        return int(self.updated_at.timestamp() * 1000) * 2 + (self.state == RESOLVED)


def alert_id(rule: str, key: str, started_at: datetime) -> str:
    return hashlib.blake2b(f"{rule}\0{key}\0{started_at.isoformat()}".encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class Step:
    """What one evaluation changed: every new version to store, and the transitions to notify."""

    changed: tuple[Alert, ...]
    fired: tuple[Alert, ...]
    resolved: tuple[Alert, ...]


def step(
    rules: Rules,
    open_alerts: list[Alert],
    last_resolved: dict[tuple[str, str], datetime],
    findings: list[Finding],
    at: datetime,
) -> Step:
    """The transitions of one evaluation at `at`: `open_alerts` are the firing alerts before it,
    `last_resolved` the time each (rule, key) last resolved (for the cool-down)."""
    open_by = {a.ident: a for a in open_alerts}
    found = {(f.rule, f.key): f for f in findings}
    changed, fired, resolved = [], [], []
    for ident, finding in found.items():
        alert = open_by.get(ident)
        if alert is not None:
            updated = replace(alert, finding=finding, updated_at=at)
            changed.append(updated)
            continue
        since = last_resolved.get(ident)
        if since is not None and (at - since).total_seconds() < rules.by_name(finding.rule).cooldown_seconds:
            continue
        new = Alert(alert_id(*ident, at), finding, FIRING, at, at)
        changed.append(new)
        fired.append(new)
    for ident, alert in open_by.items():
        if ident not in found:
            done = replace(alert, state=RESOLVED, updated_at=at, resolved_at=at)
            changed.append(done)
            resolved.append(done)
    return Step(tuple(changed), tuple(fired), tuple(resolved))


class MemoryAlerts:
    """The open alerts and last resolutions kept in memory: `alerts test` and the unit tests."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], Alert] = {}
        self.last_resolved: dict[tuple[str, str], datetime] = {}

    def apply(self, s: Step) -> None:
        for alert in s.changed:
            if alert.state == FIRING:
                self.open[alert.ident] = alert
            else:
                self.open.pop(alert.ident, None)
                self.last_resolved[alert.ident] = alert.resolved_at


__all__ = ["FIRING", "RESOLVED", "Alert", "MemoryAlerts", "Step", "alert_id", "step"]
