"""The cluster schema in a real ClickHouse engine (chDB): every generated statement parses, the schema
applies as one shard runs it, its tables have the single-node tables' columns, and the real samples give
the same searches, stats and views through it. tests/integration/cluster_one_shard.py says what one shard's
execution stands for; ON CLUSTER, replication and more than one shard need servers (docs/DEPLOY.md)."""

from __future__ import annotations

import json
import os
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
    tables = [t for t, e in engines.items() if e.endswith("MergeTree") or e == "Null"]
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


DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
READ_CONFIG = """
import json, sys
from chdb import session
s = session.Session(sys.argv[1])
rows = s.query("SELECT shard_num, replica_num, host_name FROM system.clusters WHERE cluster = 'eximtrack' ORDER BY 1, 2", "JSONCompact")
macros = s.query("SELECT getMacro('shard'), getMacro('replica'), getMacro('cluster')", "JSONCompact")
print(json.dumps([json.loads(rows.bytes())["data"], json.loads(macros.bytes())["data"][0]]))
"""


def test_the_deploy_cluster_configs_load_in_clickhouse(tmp_path):
    """deploy/clickhouse/: each node's config files, merged by ClickHouse's own loader (chDB), describe the
    same 2 x 2 cluster, and each node's macros name its own place in it; the compose file mounts them so."""
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    nodes = sorted(n for n in compose["services"] if n.startswith("ch-"))
    assert nodes == ["ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"]
    places = set()
    for node in nodes:
        mounts = {
            m.split(":")[1]: m.split(":")[0]
            for m in compose["services"][node]["volumes"]
            if m.startswith("./")
        }
        conf = tmp_path / node
        (conf / "config.d").mkdir(parents=True)
        (conf / "config.xml").write_text("<clickhouse/>")
        for inside, outside in mounts.items():
            if "/config.d/" in inside:
                (conf / "config.d" / Path(inside).name).write_text((DEPLOY / outside).read_text())
        out = subprocess.run(
            [sys.executable, "-c", READ_CONFIG, f"{conf / 'db'}?config-file={conf / 'config.xml'}"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "EXIMTRACK_CLUSTER_SECRET": "test"},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        replicas, (shard, replica, cluster) = json.loads(out.stdout)
        assert [(r[0], r[2]) for r in replicas] == [
            (1, "ch-s1r1"),
            (1, "ch-s1r2"),
            (2, "ch-s2r1"),
            (2, "ch-s2r2"),
        ]
        assert cluster == "eximtrack" and replica == node
        assert (int(shard), node) in {(r[0], r[2]) for r in replicas}  # its own shard
        places.add((shard, replica))
    assert len(places) == 4
