"""The sink's feed of the hourly aggregates: the events of several batches, inserted into `events_rollup`
(migration 020) at once.

Each insert into `events_rollup` runs the six hourly aggregates' views, at a cost mostly fixed per insert;
the sink inserts into `events` (what makes an arrival searchable) every fraction of a second under a steady
stream. So the sink keeps each batch's encoded events here, and inserts them into `events_rollup` in one go
once the oldest is `seconds` old or `max_rows` are held, and before it commits its Kafka offsets
(sinks/clickhouse/sink.py: the offsets of a batch are committed only after its rollup insert). Pure: the
sink does the I/O; this holds what is pending and says when it is due.
"""

from __future__ import annotations

import time

from sinks.clickhouse import encode

DEFAULT_SECONDS = 2.0
DEFAULT_MAX_ROWS = 50_000


class RollupFeed:
    """Encoded event batches inserted into `events` whose rollup insert is pending. Bounded: due at
    `max_rows` events (the sink flushes it before it takes the next batch)."""

    def __init__(
        self, seconds: float = DEFAULT_SECONDS, max_rows: int = DEFAULT_MAX_ROWS, clock=time.monotonic
    ):
        self.seconds = seconds
        self.max_rows = max_rows
        self.clock = clock
        self.blobs: list[bytes] = []
        self.batches: list = []  # what each blob encodes (the sink's DecodedBatch, or a list of events)
        self.rows = 0
        self.first: float | None = None  # when the oldest pending batch was added

    def add(self, data: bytes, events) -> None:
        """A batch inserted into `events` (encoded as `data`; `events`: anything sized that the caller can
        turn into its events again) whose rollup is now pending."""
        if not len(events):
            return
        if self.first is None:
            self.first = self.clock()
        self.blobs.append(data)
        self.batches.append(events)
        self.rows += len(events)

    def __len__(self) -> int:
        return self.rows

    def due(self) -> bool:
        """Whether the pending events should be inserted now: held `seconds`, or `max_rows` of them."""
        if not self.rows:
            return False
        return self.rows >= self.max_rows or self.clock() - self.first >= self.seconds

    def take(self) -> tuple[bytes, list]:
        """(one encoding of every pending event, the batches added, in order) and nothing pending any more."""
        data = encode.concat_ipc(self.blobs) if self.blobs else b""
        batches = self.batches
        self.blobs, self.batches, self.rows, self.first = [], [], 0, None
        return data, batches


__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_SECONDS", "RollupFeed"]
