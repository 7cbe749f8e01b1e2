"""The stream worker's command-line options reach the faust app it builds (no broker needed to build it)."""

from __future__ import annotations

import argparse

from stream.app import create_app, register, stall_check_interval


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["stream", *argv])


def test_session_timeout_from_the_option_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EXIMTRACK_STREAM_SESSION_TIMEOUT", raising=False)
    assert parse([]).session_timeout == 60.0
    assert parse(["--session-timeout", "12.5"]).session_timeout == 12.5
    monkeypatch.setenv("EXIMTRACK_STREAM_SESSION_TIMEOUT", "10")
    assert parse([]).session_timeout == 10.0
    app = create_app("127.0.0.1:1", data_dir=str(tmp_path), session_timeout=10.0)
    assert app.conf.broker_session_timeout == 10.0
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path)).conf.broker_session_timeout == 60.0


def test_stall_timeout_from_the_option_or_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("EXIMTRACK_STREAM_STALL_TIMEOUT", raising=False)
    assert parse([]).stall_timeout == 60.0
    assert parse(["--stall-timeout", "7.5"]).stall_timeout == 7.5
    monkeypatch.setenv("EXIMTRACK_STREAM_STALL_TIMEOUT", "0")
    assert parse([]).stall_timeout == 0.0
    assert (
        create_app("127.0.0.1:1", data_dir=str(tmp_path), stall_timeout=5.0).eximtrack_stall_detector.timeout
        == 5.0
    )
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path)).eximtrack_stall_detector.timeout == 60.0
    # 0 turns the watchdog off
    assert create_app("127.0.0.1:1", data_dir=str(tmp_path), stall_timeout=0).eximtrack_stall_detector is None
    # sampled a few times per timeout, between 1 and 5 s apart
    assert [stall_check_interval(t) for t in (2, 5, 12, 60, 600)] == [1.0, 1.25, 3.0, 5.0, 5.0]
