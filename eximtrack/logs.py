"""How every long-running component logs: one record per line on stderr, as text (default) or as JSON lines
for a log collector — `eximtrack --log-format json <command>` or EXIMTRACK_LOG_FORMAT=json.

A JSON line holds time, level, logger, message and the component (the command: ship, stream, sink,
serve), and the Exim server and message id where the record has them: the shipper tags every record with
its --server, and a record logged with ``extra={"server": …, "msgid": …}`` carries those. The JSON
formatter is python-json-logger's.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT_ENV = "EXIMTRACK_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ComponentTag(logging.Filter):
    """Adds the component (and a default server) to every record that passes the handler."""

    def __init__(self, component: str, server: str | None = None) -> None:
        super().__init__()
        self.component = component
        self.server = server

    def filter(self, record: logging.LogRecord) -> bool:
        record.component = self.component
        if self.server is not None and not hasattr(record, "server"):
            record.server = self.server
        return True


def log_format() -> str:
    fmt = os.environ.get(FORMAT_ENV, "text").strip().lower() or "text"
    if fmt not in FORMATS:
        raise ValueError(f"{FORMAT_ENV} must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def formatter(fmt: str | None = None) -> logging.Formatter:
    if (fmt or log_format()) == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
        )
    return logging.Formatter(TEXT_FORMAT)


def configure(
    component: str, level: int | str = logging.INFO, *, server: str | None = None
) -> logging.Handler:
    """The root logger writes to stderr in the chosen format, records tagged with `component`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter())
    handler.addFilter(ComponentTag(component, server))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else getattr(logging, str(level).upper(), logging.INFO))
    return handler


__all__ = ["FORMATS", "FORMAT_ENV", "ComponentTag", "configure", "formatter", "log_format"]
