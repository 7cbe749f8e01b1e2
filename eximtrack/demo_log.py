"""A growing, realistic Exim main log for demos and tests, made from the real-Exim samples.

Each round replays one of the sample logs (written by a real Exim 4.96 in tests/exim/harness.py) with fresh
message ids and timestamps moved to "now" (or to a fixed start, for reproducible tests), so every round is a
new set of messages with the real line shapes: deliveries, deferrals, bounces, rejections, frozen mail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stream.clock import base62

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
_ID_RE = re.compile(r"\b([0-9A-Za-z]{6})-([0-9A-Za-z]{6})-([0-9A-Za-z]{2})\b")
_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def sample_lines(mode: str = "cpanel") -> list[str]:
    return (SAMPLES / f"mainlog-{mode}.log").read_text(encoding="utf-8").splitlines()


def rounds(
    lines: list[str],
    start: datetime,
    n_rounds: int | None,
    round_seconds: int = 60,
    salt: int = 0,
    id_maps: list | None = None,
) -> Iterator[list[str]]:
    """Yield the sample once per round, each with its own message ids and timestamps shifted by round.
    With `id_maps`, each round's {sample id: new id} is appended to it (the truth follows the ids)."""
    first = None
    for line in lines:
        m = _TS_RE.match(line)
        if m:
            first = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            break
    if first is None:
        return
    r = 0
    renamer = _IdRenamer(salt)
    while n_rounds is None or r < n_rounds:
        shift = (start.replace(tzinfo=None) - first) + timedelta(seconds=r * round_seconds)
        renamer.ids.clear()
        out = []
        for line in lines:
            m = _TS_RE.match(line)
            if m:
                ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") + shift
                renamer.epoch = int(ts.replace(tzinfo=UTC).timestamp())
                line = _ID_RE.sub(renamer, ts.strftime("%Y-%m-%d %H:%M:%S") + line[19:])
            out.append(line)
        if id_maps is not None:
            id_maps.append(dict(renamer.ids))
        yield out
        r += 1


class _IdRenamer:
    """Gives every message id of one round a new, unique id whose time part is the shifted arrival time."""

    def __init__(self, salt: int) -> None:
        self.counter = salt * 10_000_000
        self.ids: dict[str, str] = {}
        self.epoch = 0

    def __call__(self, m: re.Match) -> str:
        old = m.group(0)
        new = self.ids.get(old)
        if new is None:
            self.counter += 1
            new = self.ids[old] = f"{base62(self.epoch, 6)}-{base62(self.counter, 6)}-{m.group(3)}"
        return new


def write_log(
    path: Path, mode: str = "cpanel", n_rounds: int = 10, start: datetime | None = None, salt: int = 0
) -> int:
    """Write `n_rounds` rounds of a sample to `path` (reproducible with a fixed `start`). Returns lines."""
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for chunk in rounds(sample_lines(mode), start, n_rounds, salt=salt):
            fh.write("\n".join(chunk) + "\n")
            n += len(chunk)
    return n


def truth(mode: str = "cpanel", n_rounds: int = 10, start: datetime | None = None, salt: int = 0) -> dict:
    """The generator's truth for `write_log(…, mode, n_rounds, start, salt)`: the real-Exim harness's ground
    truth of the sample (samples/expected-<mode>.json), once per round under that round's message ids."""
    import json

    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    maps: list[dict] = []
    for _ in rounds(sample_lines(mode), start, n_rounds, salt=salt, id_maps=maps):
        pass
    sample = json.loads((SAMPLES / f"expected-{mode}.json").read_text(encoding="utf-8"))
    expected, rejections = [], []
    for ids in maps:
        for e in sample["expected"]:
            e = dict(e, msgid=ids.get(e["msgid"], e["msgid"]))
            if "parent" in e:
                e["parent"] = ids.get(e["parent"], e["parent"])
            expected.append(e)
        rejections.extend(dict(r) for r in sample["rejections"])
    return {"mode": mode, "expected": expected, "rejections": rejections}


def grow(path: Path, mode: str = "cpanel", lines_per_second: float = 200.0, stop=None, salt: int = 0) -> None:
    """Append rounds to `path` at about `lines_per_second`, with timestamps of now, until `stop()` is true."""
    lines = sample_lines(mode)
    with open(path, "a", encoding="utf-8") as fh:
        for chunk in rounds(lines, datetime.now(UTC), None, salt=salt):
            for line in chunk:
                if stop is not None and stop():
                    return
                fh.write(line + "\n")
                fh.flush()
                time.sleep(1.0 / lines_per_second)
