"""Fixtures of the alert tests: a chDB store URL per test (own database, the process's one chDB path)."""

from __future__ import annotations

import uuid

import pytest

from sinks.clickhouse.store import current_chdb_path


@pytest.fixture
def chdb_store_url(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    path = current_chdb_path() or str(tmp_path_factory.mktemp("alerts-chdb"))
    return f"chdb://{path}?database=alerts_{uuid.uuid4().hex[:12]}"
