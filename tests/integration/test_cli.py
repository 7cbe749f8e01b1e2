"""The CLI end to end on the real Exim samples (samples/mainlog-*.log + expected-*.json) and a real chDB.

In-process tests share the process's one chDB path (fresh database per test); the `python -m eximtrack`
tests run in subprocesses on their own store directory (a chDB directory admits one process at a time).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from eximtrack import cli
from schemas.records import EVENT_FIELDS
from sinks.clickhouse.store import Store, current_chdb_path

pytestmark = pytest.mark.store

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
MODES = ("all", "cpanel", "default")


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory):
    return current_chdb_path() or str(tmp_path_factory.mktemp("chdb-cli"))


@pytest.fixture
def url(chdb_path, monkeypatch):
    # the samples are recent, but keep them whatever their age: no TTL in test stores
    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    return f"chdb://{chdb_path}?database=cli_{uuid.uuid4().hex[:12]}"


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ingest(capsys, url, mode="all", *extra):
    rc, out, err = run(
        capsys, "ingest", "--server", "web1", "--store", url, *extra, SAMPLES / f"mainlog-{mode}.log"
    )
    assert rc == 0, err
    return out


def search(capsys, url, *args) -> list[dict]:
    rc, out, err = run(capsys, "search", "--store", url, "--format", "json", *args)
    assert rc == 0, err
    return jsonl(out)


def expected(mode: str) -> dict:
    return json.loads((SAMPLES / f"expected-{mode}.json").read_text())


# ----------------------------------------------------------------------------------------------------


def joiner_latest(mode: str, server: str = "web1") -> dict:
    """What the joiner itself folds as the latest state: the store must show exactly this."""
    from stream.join import join_lines

    text = (SAMPLES / f"mainlog-{mode}.log").read_bytes().decode("utf-8", errors="replace")
    joiner, _ = join_lines(server, text.splitlines())
    return {
        (e.msgid, e.recipient, e.deliveredto): (e.event_id, e.type, e.version)
        for e in joiner.latest().values()
    }


def row_key(rows) -> dict:
    return {
        (r["msgid"], r["recipient"], r["deliveredto"]): (r["event_id"], r["type"], r["version"]) for r in rows
    }


@pytest.mark.parametrize("mode", MODES)
def test_ingest_equals_joiner_fold_and_is_idempotent(capsys, url, mode):
    out = ingest(capsys, url, mode)
    assert "lines=" in out and "events=" in out and "rejects=" in out and "open_messages=" in out
    # what became of every line: the real-Exim samples have no reject, and the notes are counted
    shares = out.splitlines()[1]
    assert shares.startswith("lines: ignored ") and "rejected 0 (0.0%)" in shares and "note(s)" in shares
    first = search(capsys, url)
    assert len(first) == len(row_key(first))  # one row per (msgid, recipient, deliveredto)
    # latest FINAL (ReplacingMergeTree by version, tombstones dropped) == the joiner's own fold
    assert row_key(first) == joiner_latest(mode)

    store = Store.open(url)
    tables = ("events", "latest", "log_lines", "rejects")
    counts = {t: store.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0] for t in tables}
    assert counts["log_lines"] > 0
    ingest(capsys, url, mode)  # the same file again
    assert search(capsys, url) == first
    assert {t: store.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0] for t in tables} == counts


@pytest.mark.parametrize("mode", MODES)
def test_ingest_against_ground_truth(capsys, url, mode):
    """The samples' ground truth (expected-*.json, from the real-Exim harness) through ingest + search."""
    ingest(capsys, url, mode)
    rows = search(capsys, url)
    exp = expected(mode)
    got = collections.Counter(
        (r["msgid"], r["recipient"], r["type"]) for r in rows if r["type"] != "rejected"
    )
    want = collections.Counter((e["msgid"], e["recipient"], e["type"]) for e in exp["expected"])
    if mode == "default":
        # without +received_recipients a message never delivered has no recipient list: one
        # message-level row (recipient "") stands for its recipients
        got = collections.Counter({(m, t) for (m, _r, t) in got})
        want = collections.Counter({(m, t) for (m, _r, t) in want})
    n_rejected = sum(1 for r in rows if r["type"] == "rejected")
    assert (dict(want - got), dict(got - want)) == ({}, {})
    assert n_rejected == len(exp["rejections"])


def test_gzip_ingest_same_as_plain(capsys, url, tmp_path):
    gz = tmp_path / "mainlog-all.log.gz"
    with open(SAMPLES / "mainlog-all.log", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    rc, out, err = run(capsys, "ingest", "--server", "web1", "--store", url, gz)
    assert rc == 0, err
    from_gz = search(capsys, url)
    ingest(capsys, url, "all")  # the plain file: same content ids -> nothing new
    assert search(capsys, url) == from_gz
    assert row_key(from_gz) == joiner_latest("all")


def test_search_json_shape_and_filters(capsys, url):
    ingest(capsys, url, "all")
    rows = search(capsys, url)
    assert all(list(r) == list(EVENT_FIELDS) for r in rows)
    assert all(isinstance(r["sendunixtime"], int) and isinstance(r["actionunixtime"], int) for r in rows)
    assert [r["sendunixtime"] for r in rows] == sorted((r["sendunixtime"] for r in rows), reverse=True)

    exp = expected("all")["expected"]
    n_fail = sum(1 for e in exp if e["type"] == "failure") + len(expected("all")["rejections"])
    assert len(search(capsys, url, "--show", "failures")) == n_fail
    assert len(search(capsys, url, "--type", "success", "--type", "filtered")) == sum(
        e["type"] in ("success", "filtered") for e in exp
    )
    assert len(search(capsys, url, "--show", "successes,deferred")) == sum(
        e["type"] in ("success", "filtered", "defer") for e in exp
    )
    assert len(search(capsys, url, "--limit", "3")) == 3
    bob = search(capsys, url, "--recipient", "BOB@local.test")
    assert bob and all(r["recipient"].lower() == "bob@local.test" for r in bob)
    remote = search(capsys, url, "--recipient", "remote.test", "--match", "contains")
    assert remote and all("remote.test" in r["recipient"] for r in remote)
    assert search(capsys, url, "--recipient", "' OR 1=1 --") == []
    assert search(capsys, url, "--recipient", "' OR 1=1 --", "--match", "contains") == []
    msgid = bob[0]["msgid"]
    assert {r["msgid"] for r in search(capsys, url, "--msgid", msgid)} == {msgid}
    assert len(search(capsys, url, "--server", "web1")) == len(rows)
    assert search(capsys, url, "--server", "web2") == []
    assert search(capsys, url, "--since", "2000-01-01", "--until", "2000-01-02") == []
    assert len(search(capsys, url, "--since", "2000-01-01")) == len(rows)
    newest = search(capsys, url, "--sort", "-actionunixtime")  # a leading "-" is not an option
    assert [r["actionunixtime"] for r in newest] == sorted((r["actionunixtime"] for r in rows), reverse=True)
    by_rcpt = search(capsys, url, "--sort", "recipient:asc")
    assert [r["recipient"] for r in by_rcpt] == sorted(r["recipient"] for r in by_rcpt)

    rc, out, _ = run(capsys, "search", "--store", url, "--format", "csv")
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == list(EVENT_FIELDS) and len(table) == len(rows) + 1
    rc, out, _ = run(capsys, "search", "--store", url)
    assert out.splitlines()[0].split()[:3] == ["Event", "From", "Address"]
    assert f"({len(rows)} rows)" in out


def test_show(capsys, url):
    ingest(capsys, url, "all")
    exp = expected("all")
    parent = next(e for e in exp["expected"] if e.get("parent"))["parent"]
    rc, out, err = run(capsys, "show", parent, "--store", url)
    assert rc == 0, err
    assert f"Message {parent} on web1" in out
    for section in ("Arrival", "Recipients", "Bounces / DSNs about this message", "Log lines"):
        assert section in out
    assert f"{parent} <= " in out  # the raw arrival line
    rc, out, _ = run(capsys, "show", parent, "--store", url, "--format", "json")
    data = json.loads(out)
    assert data["arrival"][0]["msgid"] == parent and data["children"] and data["lines"]
    assert [a["actionunixtime"] for a in data["attempts"]] == sorted(
        a["actionunixtime"] for a in data["attempts"]
    )
    rc, _, err = run(capsys, "show", "1xxxxx-000000-XX", "--store", url)
    assert rc == 1 and "no message" in err
    # a note (the DATA ACL's logwrite, S45) is in its message's story, and the store holds no reject
    noted = next(m for m, sc in exp["messages"].items() if sc == "S45")
    rc, out, _ = run(capsys, "show", noted, "--store", url, "--format", "json")
    assert any(
        line["line"].endswith(f"{noted} data acl: dkim status pass") for line in json.loads(out)["lines"]
    )
    assert Store.open(url).query("SELECT count() FROM rejects").result_rows[0][0] == 0


def test_sql(capsys, url):
    Store.open(url)
    rc, out, _ = run(
        capsys,
        "sql",
        "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name;",
        "--store",
        url,
        "--format",
        "json",
    )
    assert rc == 0
    assert {"events", "latest", "log_lines", "rejects"} <= {r["name"] for r in jsonl(out)}
    rc, out, _ = run(capsys, "sql", "WITH 2 AS x SELECT x * 21 AS answer, ';' AS s", "--store", url)
    assert rc == 0 and "42" in out
    for bad in (
        "INSERT INTO events (event_id) VALUES ('x')",
        "DROP TABLE events",
        "SELECT 1; DROP TABLE events",
        "ALTER TABLE events DELETE WHERE 1",
        "",
        "-- only a comment",
        "SELECT 1 FORMAT JSON",
    ):
        rc, _, err = run(capsys, "sql", bad, "--store", url)
        assert rc == 2 and "error" in err, bad
    rc, _, err = run(capsys, "sql", "SELECT * FROM no_such_table", "--store", url)
    assert rc == 1 and "no_such_table" in err
    rc, out, _ = run(capsys, "sql", "SELECT count() AS n FROM events", "--store", url, "--format", "csv")
    assert out.splitlines() == ["n", "0"]


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--type", "bounced"],
        ["search", "--show", "everything"],
        ["search", "--since", "yesterday"],
        ["search", "--match", "regex"],
        ["search", "--sort", "nosuchfield"],
        ["search", "--limit", "-3"],
        ["search", "--format", "xml"],
        ["ingest", "/no/such/file.log", "--server", "x"],
        ["ingest", "somefile"],  # no --server
        ["ingest", "--server", "web1", "--tz", "Mars/Olympus", __file__],
        ["show"],
        ["frobnicate"],
        [],
        ["search", "--store", "ftp://nowhere"],
        ["search", "--store", "chdb:///tmp/x?database=bad-name"],
    ],
)
def test_bad_arguments_exit_2_without_traceback(capsys, argv):
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert err.strip()


def test_help_exits_0(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "search" in out and "ingest" in out


def test_extension_registry(capsys, monkeypatch):
    assert "producers.ship" in cli.EXTENSION_MODULES and "eximtrack.local_broker" in cli.EXTENSION_MODULES
    monkeypatch.setattr(cli, "EXTENSION_MODULES", ["eximtrack.no_such_module", *cli.EXTENSION_MODULES])
    parser, failed = cli.build_parser()
    # a missing module is skipped silently; one that fails to import is reported, never fatal
    assert "eximtrack.no_such_module" not in {name for name, _ in failed}
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "search" in out


def test_python_dash_m_subprocess(tmp_path):
    store = f"chdb://{tmp_path}/store"
    env = {**os.environ, "EXIMTRACK_RETENTION_DAYS": "0", "EXIMTRACK_STORE": store}
    log = SAMPLES / "mainlog-cpanel.log"
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "eximtrack", "ingest", "--server", "web9", str(log)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "\r[" not in proc.stderr  # no progress bar when stderr is not a terminal
    proc = subprocess.run(
        [sys.executable, "-m", "eximtrack", "search", "--format", "json", "--server", "web9"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = jsonl(proc.stdout)
    assert row_key(rows) == joiner_latest("cpanel", server="web9")


def test_store_url_resolution(monkeypatch, tmp_path):
    from eximtrack.config import ConfigError, parse_store_url, resolve_store_url

    monkeypatch.delenv("EXIMTRACK_STORE", raising=False)
    assert resolve_store_url(None) == "chdb://./data"
    monkeypatch.setenv("EXIMTRACK_STORE", "chdb:///srv/x")
    assert resolve_store_url(None) == "chdb:///srv/x"
    assert resolve_store_url("http://h:8123") == "http://h:8123"  # --store wins

    u = parse_store_url("chdb://./data", cwd=str(tmp_path))
    assert (u.backend, u.path, u.database) == ("chdb", str(tmp_path / "data"), "eximtrack")
    u = parse_store_url("chdb:///abs/store?database=t1")
    assert (u.path, u.database) == ("/abs/store", "t1")
    assert parse_store_url("chdb:///abs/store#t2").database == "t2"
    assert parse_store_url("chdb://memory").path == ":memory:"

    monkeypatch.setenv("EXIMTRACK_CH_USER", "envuser")
    monkeypatch.setenv("EXIMTRACK_CH_PASSWORD", "envpass")
    u = parse_store_url("http://ch.example:8124/mail")
    assert (u.host, u.port, u.database, u.username, u.password, u.secure) == (
        "ch.example", 8124, "mail", "envuser", "envpass", False,
    )  # fmt: skip
    u = parse_store_url("https://bob:s3cret@ch.example")
    assert (u.port, u.username, u.password, u.secure, u.database) == (
        8443,
        "bob",
        "s3cret",
        True,
        "eximtrack",
    )
    assert "s3cret" not in u.display()
    for bad in ("ftp://x", "http://", "chdb:///x?database=a-b", "", "http://h:99999"):
        with pytest.raises(ConfigError):
            parse_store_url(bad)


def test_store_in_use_by_another_process(tmp_path):
    store = f"chdb://{tmp_path}/busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time\nfrom sinks.clickhouse.store import Store\nStore.open({store!r})\nprint('open', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        proc = subprocess.run(
            [sys.executable, "-m", "eximtrack", "search", "--store", store],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1
        assert "in use by another process" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_writer_waits_for_the_store_lock(tmp_path):
    """The sink opens its embedded store with `wait_for_lock`: while another process holds the directory (a
    CLI search that found no query endpoint opened it itself) it retries instead of exiting, and opens it
    once the holder is gone; with a wait shorter than the hold it fails with the clear lock error."""
    store = f"chdb://{tmp_path}/held"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys\nfrom sinks.clickhouse.store import Store\nStore.open({store!r})\nprint('open', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    opener = (
        "import sys, time\nfrom sinks.clickhouse.store import Store, StoreLockedError\nt = time.monotonic()\n"
        "try:\n    s = Store.open(sys.argv[1], wait_for_lock=float(sys.argv[2]))\n"
        "except StoreLockedError as exc:\n    print('locked', exc, flush=True); sys.exit(3)\n"
        "s.command('CREATE TABLE written (x UInt8) ENGINE = MergeTree ORDER BY x')\n"
        "print('opened', type(s).__name__, round(time.monotonic() - t, 1), flush=True)"
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        short = subprocess.run(
            [sys.executable, "-c", opener, store, "1"], capture_output=True, text=True, timeout=120
        )
        assert short.returncode == 3 and "in use by another process" in short.stdout, (
            short.stdout + short.stderr
        )
        waiting = subprocess.Popen(
            [sys.executable, "-c", opener, store, "60"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(3)
        assert waiting.poll() is None  # still waiting for the holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    out, _ = waiting.communicate(timeout=90)
    assert waiting.returncode == 0 and out.startswith("opened Store "), (
        out
    )  # the real store, not a read-only one
    assert float(out.split()[-1]) >= 2.5


def test_store_owned_by_a_process_serving_queries(tmp_path):
    """search/show/sql go through the owner's query endpoint; ingest refuses clearly."""
    store = f"chdb://{tmp_path}/owned"
    env = {**os.environ, "EXIMTRACK_RETENTION_DAYS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "eximtrack", "ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-all.log")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    code = (
        "import sys\nfrom sinks.clickhouse.store import Store\nfrom sinks.clickhouse.query_server import QueryServer\n"
        f"s = QueryServer(Store.open({store!r}))\ns.start()\nprint('open', flush=True)\nsys.stdin.read()\ns.stop()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        proc = subprocess.run(
            [sys.executable, "-m", "eximtrack", "search", "--format", "json", "--store", store],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert row_key(jsonl(proc.stdout)) == joiner_latest("all")
        # values JSON parsers would turn into floats or strings come back exactly
        proc = subprocess.run(
            [sys.executable, "-m", "eximtrack", "sql", "--format", "json", "--store", store,
             "SELECT toUInt256(2) * toUInt256(18446744073709551615) AS wide, toInt128('-170141183460469231731687303715884105728') AS low, "
             "toDateTime('2026-11-30 12:00:00', 'UTC') AS t, (1, 'a') AS tup"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (row,) = jsonl(proc.stdout)
        assert row["wide"] == 2 * (2**64 - 1) and row["low"] == -(2**127), row
        assert row["t"].startswith("2026-11-30T12:00:00") and row["tup"] == [1, "a"], row
        proc = subprocess.run(
            [sys.executable, "-m", "eximtrack", "ingest", "--server", "web1", "--store", store, str(SAMPLES / "mainlog-all.log")],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1 and "owned by process" in proc.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_small_batches_and_several_files(capsys, url, tmp_path):
    """Many background batches give the same result as one; files are read in the order given."""
    log = (SAMPLES / "mainlog-all.log").read_bytes().splitlines(keepends=True)
    half = len(log) // 2
    (tmp_path / "part1.log").write_bytes(b"".join(log[:half]))
    (tmp_path / "part2.log").write_bytes(b"".join(log[half:]))
    rc, out, err = run(
        capsys,
        "ingest",
        "--server",
        "web1",
        "--store",
        url,
        "--batch-rows",
        "7",
        tmp_path / "part1.log",
        tmp_path / "part2.log",
    )
    assert rc == 0, err
    assert f"lines={len(log)}" in out and "ingested 2 file(s)" in out
    assert row_key(search(capsys, url)) == joiner_latest("all")


def test_writer_errors_reach_the_caller(tmp_path):
    from eximtrack.ingest import ingest_files
    from schemas.records import DeliveryEvent

    class Out:
        def __init__(self, n):
            self.events = [DeliveryEvent(event_id=f"e{n}", type="defer", server="s", msgid="m")]
            self.rejects, self.lines = [], []

    class Joiner:
        stats = {}
        open_messages = 0

        def process(self, line, file_id="", offset=-1):
            return Out(offset)

    class BrokenStore:
        calls = 0

        def retention_days(self):
            return 0

        def text_index_deferred(self):
            return contextlib.nullcontext()

        def insert_events(self, events, batch_rows):
            BrokenStore.calls += 1
            raise RuntimeError("disk full")

    log = tmp_path / "x.log"
    log.write_text("a\nb\nc\nd\n")
    for background in (True, False):
        with pytest.raises(RuntimeError, match="disk full"):
            ingest_files(BrokenStore(), [str(log)], joiner=Joiner(), batch_rows=1, background=background)


def test_the_joining_process_stores_what_one_process_stores(chdb_path, tmp_path, monkeypatch):
    """`ingest_files` joins in a child process by default (eximtrack/join_process.py); the store must hold
    exactly what the same joiner writes from this process: every row of every table, with several
    batches (small batch_rows) and a generated multi-message log besides the real-Exim sample."""
    from eximtrack.demo_log import write_log
    from eximtrack.ingest import ingest_files, make_joiner

    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    generated = tmp_path / "gen.log"
    write_log(generated, "cpanel", 20, salt=5)
    paths = [str(SAMPLES / "mainlog-all.log"), str(generated)]
    dbs = {}
    for how in ("child", "here"):
        dbs[how] = f"cli_{uuid.uuid4().hex[:12]}"
        store = Store.open(f"chdb://{chdb_path}?database={dbs[how]}")
        joiner = make_joiner("web1") if how == "here" else None
        stats = ingest_files(store, paths, server="web1", joiner=joiner, batch_rows=500)
        assert stats.events > 1000 and stats.log_lines > stats.events  # several batches of each
        dbs[how + "_stats"] = (stats.lines, stats.events, stats.rejects, stats.log_lines, stats.open_messages)
    assert dbs["child_stats"] == dbs["here_stats"]
    a, b = dbs["child"], dbs["here"]
    for table in ("events", "latest", "log_lines", "rejects", "latest_by_recipient", "search_time"):
        for x, y in ((a, b), (b, a)):
            extra = store.query(
                f"SELECT count() FROM (SELECT * FROM {x}.{table} FINAL EXCEPT SELECT * FROM {y}.{table} FINAL)"
            ).result_rows[0][0]
            assert extra == 0, (table, x, y)
        assert store.query(f"SELECT count() FROM {a}.{table}").result_rows[0][0] > 0 or table == "rejects"


def test_events_older_than_the_retention_are_counted_and_warned_of(capsys, chdb_path, tmp_path):
    """Events the store's retention drops at once are counted: from the encoded batches by the process
    that owns the store when a child joins (`join_process`, started before the store is open), by
    `join_files` when this process joins; the same count, which `eximtrack ingest` warns of."""
    from bench.generate import GenConfig, generate
    from eximtrack.ingest import ingest_files, make_joiner
    from stream.join import join_lines

    generate(
        GenConfig(servers=1, messages_per_day=400, days=0.25, start="2020-01-01T00:00:00+00:00"), tmp_path
    )
    (path,) = sorted(tmp_path.glob("*.log"))
    _, joined = join_lines("web1", path.read_text().splitlines())
    older = sum(1 for e in joined.events if 0 < e.actionunixtime < time.time() - 86400)
    assert older == len(joined.events) > 100
    counts = []
    for joiner in (None, make_joiner("web1")):
        store = Store.open(f"chdb://{chdb_path}?database=cli_{uuid.uuid4().hex[:12]}", retention_days=1)
        stats = ingest_files(store, [str(path)], server="web1", joiner=joiner, batch_rows=100)
        counts.append(stats.expired_events)
    assert counts == [older, older]
    url = f"chdb://{chdb_path}?database=cli_{uuid.uuid4().hex[:12]}"
    rc, _, err = run(capsys, "ingest", "--store", url, "--server", "web1", "--retention-days", "1", path)
    assert rc == 0 and f"warning: {older} event(s) are older than the store's 1-day retention" in err
    rc, _, err = run(capsys, "ingest", "--store", url, "--server", "web1", "--retention-days", "0", path)
    assert rc == 0 and "warning" not in err


def test_ingest_leaves_every_part_with_the_trigram_index_it_deferred(chdb_path, monkeypatch):
    """`ingest_files` inserts without search_time's trigram index (the merges build it) and builds it at the
    end for the parts no merge rewrote: every part then skips the granules of a string found nowhere; the
    store's later inserts build it again themselves (its insert settings are restored)."""
    from eximtrack.ingest import ingest_files
    from eximtrack.web import query as q
    from sinks.clickhouse.store import INSERT_SETTINGS, store_run
    from tests.integration.conftest import grams_index_reads

    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    store = Store.open(f"chdb://{chdb_path}?database=cli_{uuid.uuid4().hex[:12]}")
    ingest_files(store, [str(SAMPLES / "mainlog-all.log")], server="web1")
    ingest_files(store, [str(SAMPLES / "mainlog-cpanel.log")], server="web2", background=False)
    assert store.insert_settings == INSERT_SETTINGS

    parts = store.query(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'search_time' AND active"
    ).result_rows[0][0]
    parts_read, granules_read = grams_index_reads(store, "zqxjvk")
    assert parts >= 2 and parts_read == f"Parts: 0/{parts}" and granules_read.startswith("Granules: 0/")
    _, got = q.build_search_query({"all": "xample"}, None).fetch(store_run(store), None, 5)
    assert got  # a part of a word, found through the index


def test_errors_of_the_joining_process_and_of_the_store_reach_the_caller(chdb_path, tmp_path, monkeypatch):
    from eximtrack.ingest import ingest_files

    monkeypatch.setenv("EXIMTRACK_RETENTION_DAYS", "0")
    store = Store.open(f"chdb://{chdb_path}?database=cli_{uuid.uuid4().hex[:12]}")
    # the child cannot read a file: its exception, raised here
    with pytest.raises(FileNotFoundError):
        ingest_files(store, [str(tmp_path / "missing.log")], server="web1")

    # the store refuses a batch: the error is raised here and the child is stopped, not left running
    class RefusingStore:
        def retention_days(self):
            return 0

        def text_index_deferred(self):
            return contextlib.nullcontext()

        def insert_encoded(self, table, data):
            raise RuntimeError("disk full")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_files(RefusingStore(), [str(SAMPLES / "mainlog-all.log")], server="web1", batch_rows=1)
    assert time.monotonic() - started < 30
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.name == "eximtrack-join"]


def test_progress_bar_only_on_a_terminal():
    from eximtrack.ingest import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    p = Progress(100, stream=quiet)
    p.update(50, 10, force=True)
    p.finish()
    assert quiet.getvalue() == ""
    tty = Tty()
    p = Progress(100, stream=tty)
    p.update(50, 10, force=True)
    p.finish()
    assert "50.0%" in tty.getvalue() and tty.getvalue().startswith("\r[")


def test_iter_file_lines_offsets_and_decoding(tmp_path):
    from eximtrack.ingest import iter_file_lines

    raw = b"first line\nbad \xff byte\r\nlast without newline"
    plain = tmp_path / "log"
    plain.write_bytes(raw)
    gz = tmp_path / "log.gz"
    gz.write_bytes(gzip.compress(raw))
    expected_lines = [(0, "first line"), (11, "bad \ufffd byte"), (23, "last without newline")]
    assert list(iter_file_lines(str(plain))) == expected_lines
    assert list(iter_file_lines(str(gz))) == expected_lines


def test_scope_flags_with_account_maps(capsys, url, tmp_path):
    (tmp_path / "userdomains").write_text("local.test: localacct\n*: nobody\n")
    (tmp_path / "trueuserowners").write_text("localacct: res1\n")
    rc, out, err = run(
        capsys, "ingest", "--server", "web1", "--store", url, "--userdomains", tmp_path / "userdomains",
        "--trueuserowners", tmp_path / "trueuserowners", SAMPLES / "mainlog-cpanel.log",
    )  # fmt: skip
    assert rc == 0, err
    rows = search(capsys, url)
    mine = [r for r in rows if "localacct" in (r["user"], r["deliveryuser"])]
    assert mine and len(mine) < len(rows)
    assert search(capsys, url, "--scope-user", "localacct") == mine
    assert search(capsys, url, "--scope-reseller", "res1") == [
        r
        for r in rows
        if "res1" in (r["owner"], r["deliveryowner"]) or "res1" in (r["user"], r["deliveryuser"])
    ]
    assert search(capsys, url, "--scope-user", "somebody-else") == []
    rc, _, err = run(capsys, "search", "--store", url, "--scope-user", "a", "--scope-address", "b@c")
    assert rc == 2 and "at most one" in err
