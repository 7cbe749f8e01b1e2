"""``eximtrack ship``: follow an Exim main log and publish every line to Kafka, at least once.

This module owns the shipping loop and the command line; the pieces are ``tail.py`` (where we are in the
log), ``publish.py`` (the producer and wire format), ``checkpoint.py`` (when a position is safe) and
``metrics.py`` (what an operator sees).

One line, step by step
    1. The follower reads a complete line and gives it its identity ``(file_id, offset)``.
    2. Consecutive lines of one file are grouped into a batch (at most ``BATCH_MAX_LINES`` lines, about
       ``BATCH_MAX_BYTES``; ``producers/publish.py``), encoded as one RawBatch JSON record, key = server
       name, and handed to the idempotent producer (``acks=all``); the record's delivery future goes into
       the in-order ack window. The window counts records (and their bytes); a batch's position is the
       next offset after its LAST line.
    3. When Kafka acknowledged the record *and every record before it*, the window's safe position moves
       to just after the batch's last line.
    4. At most every 0.25 s (and on shutdown) the safe position is written to the checkpoint file
       atomically. Nothing that Kafka has not acknowledged is ever checkpointed.
    On restart the follower resumes from the checkpoint (finding the file by inode if it was rotated).

Delivery guarantee -- the rule downstream must follow
    The shipper is AT-LEAST-ONCE. A line is never lost while its file (or its rotated sibling) still
    exists: the checkpoint only moves after Kafka's ack. But a crash (SIGKILL, power loss) between the ack
    and the next checkpoint write sends the lines after the checkpoint again, and a record retried across
    producer sessions is not deduplicated by the broker. Every copy of a line carries the SAME identity
    ``(server, file_id, offset)`` -- the identity depends only on the file and the byte position, never
    on time or on the process -- so consumers MUST deduplicate on ``(server, file_id, offset)`` (the joiner
    keeps the highest offset it applied per (server, file_id); the store uses ids derived from it).
    Within one producer session, the idempotent producer already suppresses duplicates from retries.

While the broker is down
    Records stay in the producer and are retried (no delivery timeout to speak of); the ack window stops
    growing at ``--max-inflight`` records / bytes, and then the shipper stops reading: the log file is the
    buffer, memory stays bounded, and the place in the log is kept. When the broker is back, the window
    drains and reading resumes at full speed (catch-up). A stall of acks longer than ``STALL_SECONDS``
    counts as an outage; its end increments ``reconnects_total``.

Stopping
    SIGTERM / SIGINT: stop reading, flush the producer (bounded wait), write the checkpoint for what was
    acknowledged, exit 0. A permanent delivery error (one kafka-python does not retry) exits 1 without
    checkpointing past it; systemd restarts the shipper, which resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
import zoneinfo
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError

from producers import checkpoint as ckpt
from producers.checkpoint import AckWindow, Checkpointer
from producers.metrics import ShipMetrics, serve
from producers.publish import (
    DEFAULT_TRUEUSEROWNERS,
    DEFAULT_USERDOMAINS,
    AccountsWatcher,
    Publisher,
    batch_lines,
)
from producers.tail import Follower, Position
from schemas.topics import ACCOUNTS, RAW_LINES

log = logging.getLogger("eximtrack.ship")

STALL_SECONDS = 10.0  # acks missing this long with records in flight = the broker is unreachable
ACCOUNTS_CHECK_SECONDS = 5.0
STATS_LOG_SECONDS = 60.0
EX_NOPERM = 77  # sysexits.h: the log exists but is not readable


def system_timezone() -> str:
    """The zone Exim writes its log times in, by default the system's: TZ, /etc/timezone, /etc/localtime."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                zoneinfo.ZoneInfo(name)
                return name
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"


def default_checkpoint(path: str, server: str) -> str:
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/eximtrack"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{server}-{Path(path).name}")
    return os.path.join(state, f"ship-{stem}.json")


class Shipper:
    """The shipping loop for one log file. ``run()`` returns the process exit code."""

    def __init__(
        self,
        path: str,
        publisher: Publisher,
        checkpoint_path: str,
        *,
        metrics: ShipMetrics | None = None,
        accounts: AccountsWatcher | None = None,
        from_end: bool = False,
        max_inflight: int = 50_000,
        max_inflight_bytes: int = 32 * 1024 * 1024,
        poll_interval: float = 0.2,
        checkpoint_interval: float = 0.25,  # one small fsync; bounds the re-sent lines after a crash
        flush_timeout: float = 10.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.path = path
        self.pub = publisher
        self.metrics = metrics or ShipMetrics(publisher.server)
        self.accounts = accounts
        self.window = AckWindow(max_inflight, max_inflight_bytes)
        self.checkpointer = Checkpointer(checkpoint_path, checkpoint_interval)
        self.poll_interval = poll_interval
        self.flush_timeout = flush_timeout
        self.stop = stop or threading.Event()
        try:
            start = ckpt.load(checkpoint_path)
        except ValueError as exc:
            # Unreadable position: re-ship the current file from its start rather than crash-loop. Safe:
            # the re-sent lines carry the same (file_id, offset) identities, so downstream drops them.
            aside = f"{checkpoint_path}.corrupt-{int(time.time())}"
            os.replace(checkpoint_path, aside)
            log.error("%s; moved it to %s and starting %s from the beginning", exc, aside, path)
            start = None
        if start is not None:
            log.info("resuming %s from checkpoint %s @ %d", path, start.file_id, start.offset)
            self.checkpointer.written = start
            self.window.safe = start
        self.follower = Follower(path, start, start_at_end=from_end, poll_interval=poll_interval)
        self._accounts_future: Any = None
        self._accounts_sig: tuple | None = None
        self._last_accounts_check = float("-inf")
        self._accounts_topic_ok = False
        self._last_accounts_topic_check = float("-inf")
        self._last_progress = time.monotonic()
        self._broker_down = False
        self._inflight_raw: list[int] = []  # raw log bytes per in-flight record, parallel to the window
        self._inflight_lines: list[int] = []  # log lines per in-flight record, parallel to the window
        self._unsent: list[Any] = []  # lines read from the log, not yet handed to the producer

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK):
            log.error("%s exists but is not readable by this user", self.path)
            return EX_NOPERM
        if not self._connect():
            return 0  # stopped before the broker was ever reachable: nothing sent, nothing to save
        try:
            code = self._loop()
        finally:
            code2 = self._shutdown()
        return code or code2

    def _connect(self) -> bool:
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.pub.connect()
                break
            except (KafkaError, OSError) as exc:
                self._set_down(True)
                log.warning(
                    "Kafka not reachable at %s (%s); retrying in %.0fs",
                    self.pub.config["bootstrap_servers"],
                    exc,
                    delay,
                )
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
        else:
            return False
        # The raw-lines topic must exist before anything is read (its partition count is part of the key
        # rule, so it is never auto-created). The accounts topic is checked in _ship_accounts: lines do not
        # wait for it.
        waited = 0.0
        while not self.stop.is_set() and not self.pub.check_topic(self.pub.topic):
            if waited % 30 < 1:
                log.error("topic %s does not exist (create it with ensure_topics); waiting", self.pub.topic)
            self.stop.wait(1.0)
            waited += 1.0
        if self._broker_down:
            self._set_down(False)
        self.metrics.set("broker_up", 1)
        return not self.stop.is_set()

    def _loop(self) -> int:
        last_stats = time.monotonic()
        last_backlog = float("-inf")
        shipped_at_stats = 0
        while not self.stop.is_set():
            now = time.monotonic()
            if self._collect(now):
                return 1
            self.checkpointer.maybe_write(self.window.safe, now)
            self._ship_accounts(now)
            if now - last_backlog >= 1.0:
                last_backlog = now
                self._update_gauges()
            if now - last_stats >= STATS_LOG_SECONDS:
                shipped = int(self.metrics.get("lines_shipped_total"))
                log.info(
                    "shipped %d lines (%.0f/s), %d in flight, %d bytes behind",
                    shipped,
                    (shipped - shipped_at_stats) / (now - last_stats),
                    self.window.in_flight,
                    int(self.metrics.get("lag_bytes")),
                )
                last_stats, shipped_at_stats = now, shipped
            if self.window.full:
                # Back-pressure: stop reading, the log file is the buffer. Poll the acks often while they
                # flow, rarely while the broker is away.
                self.stop.wait(0.1 if self._broker_down else 0.005)
                continue
            # Lines read but not yet sent (the window filled up in the middle of a poll) go first.
            lines = self._unsent or self.follower.poll(max_lines=5_000)
            self._unsent = []
            if not lines:
                self.stop.wait(self.poll_interval)
                continue
            sent = 0
            for batch in batch_lines(lines):
                if self.window.full:
                    break
                fut, size = self._send(batch)
                if fut is None:
                    return 0  # stopped while the broker was unreachable
                last = batch[-1]
                # The checkpoint position of a batch: after its last line, safe once the record is acked.
                self.window.add(fut, Position(last.file_id, last.next_offset), size)
                self._inflight_raw.append(sum(ln.next_offset - ln.offset for ln in batch))
                self._inflight_lines.append(len(batch))
                sent += len(batch)
            self._unsent = lines[sent:]
        return 0

    def _send(self, batch: list[Any]) -> tuple[Any | None, int]:
        while True:
            try:
                return self.pub.send_batch(batch)
            except KafkaTimeoutError as exc:
                # No metadata or no buffer space within max_block_ms: the broker is away. Same record again.
                self._set_down(True)
                log.warning("send blocked (%s); retrying", exc)
                if self.stop.is_set():
                    return None, 0
                self._collect(time.monotonic())

    def _collect(self, now: float) -> bool:
        """Take acknowledged records off the window; return True on a permanent delivery failure."""
        n = self.window.collect()
        if n:
            raw = sum(self._inflight_raw[:n])
            del self._inflight_raw[:n]
            lines = sum(self._inflight_lines[:n])
            del self._inflight_lines[:n]
            self.metrics.inc("lines_shipped_total", lines)
            self._last_progress = now
            if self._broker_down:
                self._set_down(False)
            self.metrics.set("lag_bytes", max(0.0, self.metrics.get("lag_bytes") - raw))
        elif self.window.in_flight and now - self._last_progress > STALL_SECONDS and not self._broker_down:
            log.warning(
                "no acknowledgement for %.0fs with %d records in flight: broker unreachable",
                now - self._last_progress,
                self.window.in_flight,
            )
            self._set_down(True)
        if not self.window.in_flight:
            self._last_progress = now
        if self.window.error is not None:
            log.error(
                "delivery failed permanently: %r; exiting without checkpointing past it", self.window.error
            )
            return True
        return False

    def _set_down(self, down: bool) -> None:
        if down == self._broker_down:
            return
        self._broker_down = down
        self.metrics.set("broker_up", 0 if down else 1)
        if not down:
            self.metrics.inc("reconnects_total")
            log.info("broker reachable again; catching up")

    def _ship_accounts(self, now: float) -> None:
        acc = self.accounts
        if acc is None or not acc.enabled:
            return
        fut = self._accounts_future
        if fut is not None and fut.is_done:
            if fut.failed():
                log.warning("account maps not delivered (%r); will resend", fut.exception)
            else:
                acc.acked_signature = self._accounts_sig
                self.metrics.inc("accounts_sent_total")
                log.info("account maps of %s shipped", acc.server)
            acc.pending_signature = None
            self._accounts_future = None
        if self._accounts_future is not None or now - self._last_accounts_check < ACCOUNTS_CHECK_SECONDS:
            return
        self._last_accounts_check = now
        if not self._accounts_topic_ok:
            if now - self._last_accounts_topic_check < 60.0:
                return
            self._last_accounts_topic_check = now
            self._accounts_topic_ok = self.pub.check_topic(self.pub.accounts_topic)
            if not self._accounts_topic_ok:
                log.error("topic %s does not exist; account maps not shipped yet", self.pub.accounts_topic)
                return
        change = acc.changed()
        if change is None:
            return
        sig, value = change
        try:
            self._accounts_future = self.pub.send_accounts(value)
        except KafkaTimeoutError:
            return
        acc.pending_signature = self._accounts_sig = sig

    def _update_gauges(self) -> None:
        st = self.follower.stats
        unsent = sum(ln.next_offset - ln.offset for ln in self._unsent)
        self.metrics.set("lag_bytes", self.follower.backlog_bytes() + sum(self._inflight_raw) + unsent)
        self.metrics.set("inflight_records", self.window.in_flight)
        self.metrics.set("lines_truncated_total", st.lines_truncated)
        self.metrics.set("rotations_total", st.rotations)
        self.metrics.set("truncations_total", st.truncations)
        if self.checkpointer.written is not None:
            self.metrics.set("checkpoint_offset_bytes", self.checkpointer.written.offset)

    def _shutdown(self) -> int:
        code = 0
        if self.pub.producer is not None:
            try:
                self.pub.flush(timeout=self.flush_timeout)
            except KafkaError as exc:
                log.warning("flush on shutdown incomplete: %r", exc)
            if self._collect(time.monotonic()):
                code = 1
        self.checkpointer.maybe_write(self.window.safe, time.monotonic(), force=True)
        self._update_gauges()
        log.info(
            "stopped: %d lines shipped, checkpoint %s, %d unacknowledged records dropped from memory (will be re-read)",
            int(self.metrics.get("lines_shipped_total")),
            self.checkpointer.written,
            self.window.in_flight,
        )
        try:
            self.pub.close(timeout=1.0 if self.window.in_flight else 5.0)
        except Exception as exc:  # closing must not turn a clean stop into a crash
            log.warning("closing the producer: %r", exc)
        self.follower.close()
        return code


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="Exim main log, e.g. /var/log/exim_mainlog")
    parser.add_argument("--server", required=True, help="this server's name: the Kafka key of its lines")
    parser.add_argument("--tz", default=None, help="zone of the log's timestamps (default: the system's)")
    parser.add_argument(
        "--brokers",
        default=os.environ.get("EXIMTRACK_BROKERS", "127.0.0.1:9092"),
        help="Kafka bootstrap HOST:PORT[,HOST:PORT] (default: $EXIMTRACK_BROKERS or %(default)s)",
    )
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: $STATE_DIRECTORY or /var/lib/eximtrack)"
    )
    parser.add_argument(
        "--userdomains",
        default=None,
        help=f"cPanel domain->user map (default: {DEFAULT_USERDOMAINS} if present)",
    )
    parser.add_argument(
        "--trueuserowners",
        default=None,
        help=f"cPanel user->owner map (default: {DEFAULT_TRUEUSEROWNERS} if present)",
    )
    parser.add_argument("--no-accounts", action="store_true", help="do not ship account maps")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics, /healthz and /readyz on this port",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default: %(default)s)"
    )
    parser.add_argument("--topic", default=RAW_LINES.name, help="raw-lines topic (default: %(default)s)")
    parser.add_argument(
        "--accounts-topic", default=ACCOUNTS.name, help="accounts topic (default: %(default)s)"
    )
    parser.add_argument(
        "--from-end", action="store_true", help="without a checkpoint, start at the end of FILE"
    )
    parser.add_argument(
        "--max-inflight", type=int, default=50_000, help="records in flight before reading pauses"
    )
    parser.add_argument("--linger-ms", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512 * 1024)
    parser.add_argument(
        "--compression",
        choices=("gzip", "lz4", "zstd", "snappy", "none"),
        default=None,
        help="default: lz4 > zstd > gzip, whichever is installed",
    )
    parser.add_argument("--log-level", default=os.environ.get("EXIMTRACK_LOG_LEVEL", "INFO"))


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``ship`` subcommand to the main CLI; it dispatches to :func:`run` via ``args.func``."""
    parser = subparsers.add_parser("ship", help="follow an Exim main log and publish its lines to Kafka")
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the shipper until SIGTERM/SIGINT; return the exit code."""
    from eximtrack import logs

    logs.configure("ship", args.log_level, server=args.server)
    for noisy in ("kafka", "kafka.conn", "kafka.net"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    tz = args.tz or system_timezone()
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        print(f"error: unknown time zone {tz!r}", file=sys.stderr)
        return 2
    path = os.path.abspath(args.file)
    checkpoint_path = args.checkpoint or default_checkpoint(path, args.server)
    accounts = None
    if not args.no_accounts:
        ud = args.userdomains or (DEFAULT_USERDOMAINS if os.path.exists(DEFAULT_USERDOMAINS) else None)
        to = args.trueuserowners or (
            DEFAULT_TRUEUSEROWNERS if os.path.exists(DEFAULT_TRUEUSEROWNERS) else None
        )
        accounts = AccountsWatcher(args.server, ud, to)
    publisher = Publisher(
        args.brokers,
        args.server,
        tz,
        topic=args.topic,
        accounts_topic=args.accounts_topic,
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        compression=args.compression,
    )
    metrics = ShipMetrics(args.server)
    httpd = serve(metrics, args.metrics_port, args.metrics_host) if args.metrics_port is not None else None
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log.info(
        "shipping %s as server %s (tz %s) to %s, checkpoint %s",
        path,
        args.server,
        tz,
        args.brokers,
        checkpoint_path,
    )
    shipper = Shipper(
        path,
        publisher,
        checkpoint_path,
        metrics=metrics,
        accounts=accounts,
        from_end=args.from_end,
        max_inflight=args.max_inflight,
        stop=stop,
    )
    try:
        return shipper.run()
    finally:
        if httpd is not None:
            httpd.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.ship", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
