"""sinks/clickhouse/closing_schedule.py next_step: where one step of the sink's hour closing moves the horizon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sinks.clickhouse.closing_schedule import ClosingSchedule, next_step

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_a_first_step_starts_at_the_first_stored_hour_not_in_the_empty_past():
    assert next_step(EPOCH, at(1, 7, 30), at(20), DAY) == at(2, 7)


def test_steps_go_a_day_at_a_time_from_the_horizon_and_stop_at_the_target():
    assert next_step(at(5), at(1), at(20), DAY) == at(6)
    assert next_step(at(19, 12), at(1), at(20), DAY) == at(20)
    assert next_step(at(20), at(1), at(20), DAY) is None


def test_nothing_to_close_in_an_empty_store_or_one_whose_hours_are_all_recent():
    assert next_step(EPOCH, None, at(20), DAY) is None
    assert next_step(EPOCH, at(21), at(20), DAY) is None


def test_hours_are_closed_at_least_a_day_after_they_end():
    with pytest.raises(ValueError):
        ClosingSchedule(None, 0)
