"""The components' log format: JSON lines with the component, and the server and message id a record
carries; text lines by default."""

from __future__ import annotations

import json
import logging

import pytest

from eximtrack import logs


@pytest.fixture
def root_restored():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_component_server_and_msgid(monkeypatch, capsys, root_restored):
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    logs.configure("sink", "info", server="mx1")
    log = logging.getLogger("eximtrack.sink")
    log.warning("dead-lettered %s: %s", "events[0]@5", "bad", extra={"msgid": "1abcde-000000-AA"})
    log.info("plain", extra={"server": "mx2"})
    log.debug("not shown")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["level"], r["message"]) for r in lines] == [
        ("WARNING", "dead-lettered events[0]@5: bad"),
        ("INFO", "plain"),
    ]
    assert (
        lines[0]["component"] == "sink"
        and lines[0]["server"] == "mx1"
        and lines[0]["msgid"] == "1abcde-000000-AA"
    )
    assert lines[1]["server"] == "mx2" and lines[1]["logger"] == "eximtrack.sink"
    assert lines[0]["time"].startswith("20") and "T" in lines[0]["time"]


def test_text_is_the_default_and_a_bad_format_is_refused(monkeypatch, capsys, root_restored):
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    logs.configure("ship", "info")
    logging.getLogger("eximtrack.ship").info("hello")
    line = capsys.readouterr().err.strip()
    assert line.endswith("INFO eximtrack.ship: hello") and not line.startswith("{")
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(ValueError, match="EXIMTRACK_LOG_FORMAT"):
        logs.configure("ship", "info")
