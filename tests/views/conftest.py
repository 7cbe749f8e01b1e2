"""Fixtures for the aggregated-view tests: a chDB store per test (own database, the process's one chDB path)
and a session-wide populated store (real-Exim samples + golden cases + a generated multi-server log)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `from tests.views import checks` (tests/ is not a package)
    sys.path.insert(0, str(ROOT))

from eximtrack import cli  # noqa: E402
from eximtrack.demo_log import write_log  # noqa: E402
from sinks.clickhouse.store import Store, current_chdb_path  # noqa: E402

SAMPLES = ROOT / "samples"
GOLDEN = ROOT / "tests" / "golden"
GENERATED = (("gen-a", "cpanel", 0), ("gen-b", "all", 1), ("gen-c", "default", 2), ("gen-d", "cpanel", 3))
GEN_ROUNDS = 90  # rounds are 60 s apart: 1.5 h of mail, ~20k lines per server


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory):
    return current_chdb_path() or str(tmp_path_factory.mktemp("chdb-views"))


def new_url(chdb_path: str, prefix: str = "views") -> str:
    return f"chdb://{chdb_path}?database={prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(chdb_path, monkeypatch):
    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    return new_url(chdb_path)


def ingest(url: str, server: str, path: Path) -> None:
    rc = cli.main(["ingest", "--server", server, "--store", url, str(path)])
    assert rc == 0


@pytest.fixture(scope="session")
def generated_logs(tmp_path_factory) -> list[tuple[str, Path]]:
    d = tmp_path_factory.mktemp("genlogs")
    out = []
    for server, mode, salt in GENERATED:
        path = d / f"{server}.log"
        write_log(path, mode, GEN_ROUNDS, salt=salt)
        out.append((server, path))
    return out


def populate(url: str, generated_logs) -> None:
    for mode in ("all", "cpanel", "default"):
        ingest(url, f"sample-{mode}", SAMPLES / f"mainlog-{mode}.log")
    for case in sorted(p for p in GOLDEN.iterdir() if (p / "input.log").exists()):
        ingest(url, f"golden-{case.name}", case / "input.log")
    for server, path in generated_logs:
        ingest(url, server, path)


@pytest.fixture(scope="session")
def populated(chdb_path, generated_logs) -> Store:
    """One store with everything, shared by the stats, cookbook and report tests (read-only for them)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    url = new_url(chdb_path, "views_pop")
    try:
        populate(url, generated_logs)
        store = Store.open(url)
    finally:
        mp.undo()  # the retention is set by now; the variable must not leak into later tests
    store.url_text = url
    yield store
