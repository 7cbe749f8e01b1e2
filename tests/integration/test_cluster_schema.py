"""The cluster schema in a real ClickHouse engine (chDB): every generated statement parses, the schema
applies as one shard runs it, its tables have the single-node tables' columns, and the real samples give
the same searches, stats and views through it. tests/integration/cluster_one_shard.py says what one shard's
execution stands for; ON CLUSTER, replication and more than one shard need servers (docs/DEPLOY.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.store]

PROBE = Path(__file__).with_name("cluster_one_shard.py")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    out = subprocess.run(
        [sys.executable, str(PROBE), str(work / "store"), str(work / "config.xml")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_every_statement_parses_and_applies(probe):
    assert probe["statements"] > 100
    assert probe["parse_errors"] == []
    assert probe["exec_errors"] == []


def test_cluster_tables_have_the_single_node_columns(probe):
    single, cl = probe["columns"]["single"], probe["columns"]["cl"]
    engines = probe["engines"]["single"]
    tables = [t for t, e in engines.items() if e.endswith("MergeTree")]
    assert len(tables) > 20
    for table in tables:
        assert cl[f"{table}_local"] == single[table], table
        assert cl[table] == single[table], table  # the Distributed table over it
    for view, engine in engines.items():
        if engine in ("View", "MaterializedView"):
            assert cl[view] == single[view], view
    extra = set(cl) - set(single) - {f"{t}_local" for t in tables}
    assert not extra


def test_the_same_answers_through_the_cluster_layout(probe):
    single, cl = probe["answers"]["single"], probe["answers"]["cl"]
    assert single.keys() == cl.keys()
    for name in single:
        assert single[name], name  # every probe returns something
        assert cl[name] == single[name], name
