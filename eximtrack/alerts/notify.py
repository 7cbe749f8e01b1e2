"""Telling humans and their tools that an alert fired or resolved: a signed JSON webhook (retried with
backoff; what still fails goes to a dead-letter file, one JSON line each, never dropped) and an e-mail
through an SMTP relay. Both carry the whole alert: the key, the numbers against the baseline, the top
reasons, example message ids and the Track Delivery link.

Webhook signature: `X-Eximtrack-Signature: sha256=<hex>` is HMAC-SHA256 over `<timestamp>.<body>` with the
key in the environment variable `secret_env` names, `<timestamp>` being the `X-Eximtrack-Timestamp` header
(epoch seconds): a receiver recomputes it and refuses old timestamps (replays). Retried: connection errors,
timeouts, 429 and 5xx, `retries` times after the first try, waiting 0.5 s doubling to 8 s; any other answer
is final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from eximtrack.alerts.rules import Email, Webhook
from eximtrack.alerts.state import Alert

log = logging.getLogger("eximtrack.alerts")

SIGNATURE_HEADER = "X-Eximtrack-Signature"
TIMESTAMP_HEADER = "X-Eximtrack-Timestamp"


def payload(event: str, alert: Alert) -> dict:
    """The JSON document of one transition (`firing` or `resolved`)."""
    f = alert.finding

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "event": event,
        "alert": {
            "id": alert.alert_id, "rule": f.rule, "kind": f.kind, "key": f.key, "state": alert.state,
            "started_at": iso(alert.started_at), "updated_at": iso(alert.updated_at),
            "resolved_at": iso(alert.resolved_at), "summary": f.summary, "value": f.value,
            "baseline": f.baseline, "threshold": f.threshold, "server": f.server, "owner": f.owner,
            "user": f.user, "sender": f.sender, "deliverydomain": f.deliverydomain,
            "reasons": list(f.reasons), "examples": list(f.examples), "link": f.link,
        },
    }  # fmt: skip


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    ok: bool
    attempts: int
    error: str = ""


class WebhookNotifier:
    def __init__(self, config: Webhook, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.sleep = sleep
        secret = os.environ.get(config.secret_env, "") if config.secret_env else ""
        if config.secret_env and not secret:
            raise ValueError(f"notify.webhook: the environment variable {config.secret_env} is not set")
        self.secret = secret.encode()

    def _post(self, body: bytes) -> tuple[bool, bool, str]:
        """(delivered, worth retrying, error)."""
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts, "User-Agent": "eximtrack-alerts"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        req = urllib.request.Request(self.config.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_seconds) as resp:
                return 200 <= resp.status < 300, False, "" if resp.status < 300 else f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            return False, exc.code == 429 or exc.code >= 500, f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return False, True, str(getattr(exc, "reason", exc))

    def send(self, doc: dict) -> Delivery:
        body = json.dumps(doc, sort_keys=True).encode()
        pause, error = 0.5, ""
        for attempt in range(1, self.config.retries + 2):
            ok, again, error = self._post(body)
            if ok:
                return Delivery(True, attempt)
            if not again or attempt > self.config.retries:
                break
            self.sleep(pause)
            pause = min(pause * 2, 8.0)
        self.dead_letter(doc, error, attempt)
        return Delivery(False, attempt, error)

    def dead_letter(self, doc: dict, error: str, attempts: int) -> None:
        line = json.dumps({"failed_at": time.time(), "error": error, "attempts": attempts, "payload": doc})
        with open(self.config.dead_letter, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        log.error("webhook %s failed after %d attempts (%s): kept in %s", self.config.url, attempts, error,
                  self.config.dead_letter)  # fmt: skip


def email_message(config: Email, event: str, alert: Alert) -> EmailMessage:
    f = alert.finding
    msg = EmailMessage()
    msg["From"] = config.sender
    msg["To"] = ", ".join(config.to)
    msg["Subject"] = f"[eximtrack] {event.upper()} {f.rule}: {f.key}"
    lines = [f.summary, "", f"rule: {f.rule} ({f.kind})", f"value: {f.value}  baseline: {f.baseline}  "
             f"threshold: {f.threshold}", f"since: {alert.started_at:%Y-%m-%d %H:%M:%S} UTC"]  # fmt: skip
    if alert.resolved_at:
        lines.append(f"resolved: {alert.resolved_at:%Y-%m-%d %H:%M:%S} UTC")
    if f.reasons:
        lines += ["", "top reasons:", *(f"  {r}" for r in f.reasons)]
    if f.examples:
        lines += ["", "example messages (server msgid):", *(f"  {e}" for e in f.examples)]
    if f.link:
        lines += ["", f"Track Delivery: {f.link}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailNotifier:
    def __init__(self, config: Email) -> None:
        self.config = config
        host, _, port = config.relay.partition(":")
        self.host, self.port = host, int(port or 25)

    def send(self, event: str, alert: Alert) -> Delivery:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=30) as smtp:
                if self.config.starttls:
                    smtp.starttls()
                if self.config.username_env:
                    smtp.login(
                        os.environ[self.config.username_env], os.environ.get(self.config.password_env, "")
                    )
                smtp.send_message(email_message(self.config, event, alert))
            return Delivery(True, 1)
        except (OSError, smtplib.SMTPException, KeyError) as exc:
            log.error("alert e-mail through %s failed: %s", self.config.relay, exc)
            return Delivery(False, 1, str(exc))


class Notifiers:
    """Every configured channel; `notify` sends one transition to each and counts the outcomes."""

    def __init__(self, webhook: Webhook | None, email: Email | None, sleep=time.sleep) -> None:
        self.webhook = WebhookNotifier(webhook, sleep) if webhook else None
        self.email = EmailNotifier(email) if email else None
        self.outcomes: dict[tuple[str, str], int] = {}

    def _count(self, channel: str, ok: bool) -> None:
        key = (channel, "sent" if ok else "failed")
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def notify(self, event: str, alert: Alert) -> None:
        if self.webhook:
            self._count("webhook", self.webhook.send(payload(event, alert)).ok)
        if self.email:
            self._count("email", self.email.send(event, alert).ok)


class QueuedNotifiers:
    """`Notifiers` on a thread of their own: `notify` only queues the transition, so that an evaluation (in
    the sink's loop, holding the store's engine) never waits out a webhook's retries. `close` sends what
    is queued, for at most `timeout` seconds."""

    def __init__(self, notifiers: Notifiers) -> None:
        self.notifiers = notifiers
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._send, name="alert-notify", daemon=True)
        self.thread.start()

    @property
    def outcomes(self) -> dict[tuple[str, str], int]:
        return dict(self.notifiers.outcomes)

    def notify(self, event: str, alert: Alert) -> None:
        self.queue.put((event, alert))

    def _send(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                self.notifiers.notify(*item)
            except Exception:  # noqa: BLE001 - one failed notification must not stop the others
                log.exception("alert notification failed")
            finally:
                self.queue.task_done()

    def close(self, timeout: float = 30.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout)


__all__ = [
    "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Delivery", "EmailNotifier", "Notifiers", "QueuedNotifiers",
    "WebhookNotifier",
    "email_message", "payload", "sign",
]  # fmt: skip
