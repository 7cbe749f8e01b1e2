"""The sink's hour closing (sinks/clickhouse/closing_schedule.py) on a real store: a step at a time from the
first stored hour, on the schedule, the numbers read unchanged, the states of closed months dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eximtrack.stats import rollup_horizon
from sinks.clickhouse.closing_schedule import ClosingSchedule, first_stored_hour
from sinks.clickhouse.store import Store
from tests.views import checks
from tests.views.conftest import ingest


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.store
def test_the_sink_closes_the_old_hours_a_step_at_a_time_and_the_numbers_stay(url, generated_logs):
    server, path = generated_logs[0]  # 2026-11-01 00:00 .. 01:30
    ingest(url, server, path)
    store = Store.open(url)
    before = checks.totals(store)
    first = first_stored_hour(store)
    assert first == datetime(2026, 11, 1, tzinfo=UTC)
    # 16 days after the last hour's end: every stored hour is closed; steps of an hour, 60 s apart
    clock = Clock((first + timedelta(days=16, hours=3)).timestamp())
    closing = ClosingSchedule(store, 16, clock=clock, step=timedelta(hours=1), catch_up_seconds=60,
                              check_seconds=3600, first_after=30)  # fmt: skip
    assert closing.maybe() is None  # not while the sink starts
    clock.now += 30
    done = closing.maybe()
    assert done["horizon"] == first + timedelta(hours=1) and done["rolled_keys"] > 0
    assert rollup_horizon(store) == first + timedelta(hours=1)
    assert checks.totals(store) == before
    assert closing.maybe() is None  # the next step is a catch-up interval later
    clock.now += 60
    assert closing.maybe()["horizon"] == first + timedelta(hours=2)
    clock.now += 60
    done = closing.maybe()  # the last stored hour; November's states stay (the horizon is in November)
    assert done["horizon"] == first + timedelta(hours=3)
    assert store.query("SELECT count() FROM mail_hourly").result_rows[0][0] > 0
    assert not checks.mismatches(store, only=checks.ROLLUP_PAIRS)
    assert checks.totals(store) == before
    clock.now += 60  # caught up: nothing more until the next check
    assert closing.maybe() is None and closing.steps == 3
    # a month later the horizon reaches the next month: November's states are dropped, the numbers stay
    clock.now = datetime(2026, 12, 17, 1, tzinfo=UTC).timestamp()
    closing.step = timedelta(days=31)
    done = closing.maybe()
    assert done["horizon"] == datetime(2026, 12, 1, 1, tzinfo=UTC)
    assert done["dropped_partitions"] == ["202611"]
    assert store.query("SELECT count() FROM mail_hourly").result_rows[0][0] == 0
    assert not checks.mismatches(store, only=checks.ROLLUP_PAIRS)
    assert checks.totals(store) == before
    assert closing.failures == 0


@pytest.mark.store
def test_an_empty_store_is_left_alone(url):
    store = Store.open(url)
    closing = ClosingSchedule(
        store, 16, clock=Clock(datetime(2026, 12, 1, tzinfo=UTC).timestamp()), first_after=0
    )
    assert closing.maybe() is None
    assert rollup_horizon(store) == datetime(1970, 1, 1, tzinfo=UTC) and closing.failures == 0
