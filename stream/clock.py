"""Exim timestamps -> epoch seconds (UTC), and the arrival time encoded in Exim message ids.

Exim writes local time without an offset unless `log_timezone` is on; each server's zone is a setting
(default UTC). Converting every line through zoneinfo is slow, so the offset is cached per local hour:
all lines of one hour share it. In the repeated hour of a DST change the first (summer-time) reading is
used; this is documented in docs/ARCHITECTURE.md and only affects that one hour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# the arrival time (epoch seconds) in the first six base-62 digits of a message id: compiled (native/), where
# the joiner reads it for messages seen before their arrival
from eximtrack_core import msgid_time

BASE62_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n: int, width: int) -> str:
    """`n` in Exim's base 62 (0-9A-Za-z), left-padded to `width` digits: the inverse of what msgid_time reads."""
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(BASE62_DIGITS[r])
    return "".join(reversed(out))


class LocalClock:
    """Converts `YYYY-MM-DD`, `HH:MM:SS[.mmm]` and an optional ` ±hhmm` into epoch seconds."""

    __slots__ = ("tz", "_zone", "_hours")

    def __init__(self, tz: str = "UTC") -> None:
        self.tz = tz or "UTC"
        self._zone = ZoneInfo(self.tz)
        self._hours: dict[str, float] = {}

    def epoch(self, date: str, time: str, zone: str | None = None) -> float:
        base = self.hour_base(date, time, zone)
        seconds = int(time[3:5]) * 60 + int(time[6:8])
        if len(time) > 8:
            seconds += float("0" + time[8:])
        return base + seconds

    def hour_base(self, date: str, time: str, zone: str | None = None) -> float:
        """Epoch seconds of the start of the line's local hour (the compiled joiner asks once per hour and
        adds the minutes and seconds as `epoch` does). ValueError for a date or hour datetime refuses."""
        hour_key = date + time[:2] if zone is None else date + time[:2] + zone
        base = self._hours.get(hour_key)
        if base is None:
            y, m, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
            hh = int(time[0:2])
            if zone is None:
                local = datetime(y, m, d, hh, tzinfo=self._zone)
                base = local.timestamp()
            else:
                sign = -1 if zone[0] == "-" else 1
                offset = sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
                base = datetime(y, m, d, hh, tzinfo=UTC).timestamp() - offset
            if len(self._hours) > 4096:
                self._hours.clear()
            self._hours[hour_key] = base
        return base


__all__ = ["BASE62_DIGITS", "LocalClock", "base62", "msgid_time"]
