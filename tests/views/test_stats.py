"""`eximtrack stats` (read from mail_hourly) equals the cPanel-semantics counters computed directly from
`latest FINAL`; `eximtrack retention` sets and shows the TTLs."""

from __future__ import annotations

import json

import pytest

from eximtrack import cli
from eximtrack.stats import COUNTERS, RETENTION_TABLES, aggregate_retention, build_stats
from sinks.clickhouse.store import Store

pytestmark = pytest.mark.store

DIRECT = """
SELECT {key} AS k,
    uniqExactIf((server, msgid), type != 'rejected') AS SENDCOUNT,
    countIf(type IN ('success', 'filtered', 'archive')) AS SUCCESSCOUNT,
    countIf(type IN ('failure', 'rejected')) AS FAILCOUNT,
    countIf(type = 'defer') AS DEFERCOUNT,
    DEFERCOUNT + FAILCOUNT AS DEFERFAILCOUNT,
    countIf(type = 'inprogress') AS INPROGRESSCOUNT,
    toUInt64(arraySum(arrayMap(x -> x.3, groupUniqArrayIf((server, msgid, size), type != 'rejected')))) AS TOTALSIZE
FROM latest FINAL
WHERE (protocol != '' OR type = 'rejected') {extra}
GROUP BY k
"""


def run_stats(capsys, url, *args) -> list[dict]:
    rc = cli.main(["stats", "--store", url, "--format", "json", *args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def direct(store: Store, key: str, extra: str = "", params=None) -> dict:
    rows = store.query_dicts(DIRECT.format(key=key, extra=extra), params)
    return {r["k"]: {c: r[c] for c in COUNTERS} for r in rows}


@pytest.mark.parametrize("by", ["server", "user", "domain"])
def test_stats_equal_direct_counts(capsys, populated, by):
    got = run_stats(capsys, populated.url_text, "--by", by)
    assert got and all(set(COUNTERS) <= set(r) for r in got)
    assert {r[by]: {c: r[c] for c in COUNTERS} for r in got} == direct(populated, by)


def test_stats_time_window_and_filters(capsys, populated):
    hours = [
        r[0]
        for r in populated.query(
            "SELECT DISTINCT hour FROM mail_hourly WHERE server = 'gen-a' ORDER BY hour"
        ).result_rows
    ]
    assert len(hours) >= 2
    since, until = hours[0], hours[-1]  # --since 00:30 selects from the 00:00 bucket (hour granularity)
    got = run_stats(
        capsys,
        populated.url_text,
        "--by",
        "server",
        "--since",
        since.strftime("%Y-%m-%dT%H:30"),
        "--until",
        until.strftime("%Y-%m-%dT%H:%M"),
        "--server",
        "gen-a",
    )
    want = direct(
        populated,
        "server",
        "AND server = 'gen-a' AND toStartOfHour(toDateTime(sendunixtime, 'UTC')) >= {s:DateTime('UTC')}"
        " AND toStartOfHour(toDateTime(sendunixtime, 'UTC')) < {u:DateTime('UTC')}",
        {"s": since, "u": until},
    )
    assert {r["server"]: {c: r[c] for c in COUNTERS} for r in got} == want
    assert got[0]["SENDCOUNT"] > 0


def test_stats_top_groups(capsys, populated):
    """--limit N --sort C: the first N groups of the direct counts by C (descending, ties by the key), and a
    note on stderr that more exist; --limit 0 is every group."""
    want = direct(populated, "user")
    assert len(want) > 3
    every = run_stats(capsys, populated.url_text, "--by", "user", "--limit", "0")
    assert len(every) == len(want)
    for sort in ("SENDCOUNT", "DEFERFAILCOUNT", "TOTALSIZE"):
        rc = cli.main(["stats", "--store", populated.url_text, "--format", "json", "--by", "user",
                       "--sort", sort, "--limit", "2"])  # fmt: skip
        out, err = capsys.readouterr()
        got = [json.loads(line) for line in out.splitlines() if line.strip()]
        order = sorted(want, key=lambda k: (-want[k][sort], k))[:2]
        assert rc == 0 and [r["user"] for r in got] == order, sort
        assert all({c: r[c] for c in COUNTERS} == want[r["user"]] for r in got)
        assert "more exist" in err
    assert cli.main(["stats", "--store", populated.url_text, "--sort", "SUBJECT"]) == 2
    capsys.readouterr()


def test_stats_rejects_bad_arguments(capsys, populated):
    rc = cli.main(["stats", "--store", populated.url_text, "--since", "yesterday-ish"])
    assert rc == 2
    with pytest.raises(ValueError):
        build_stats("planet")


def test_retention_defaults_and_changes(capsys, url):
    store = Store.open(url, retention_days=None)
    assert set(aggregate_retention(store).values()) == {730}  # 2 years by default
    rc = cli.main(["retention", "--store", url, "--aggregates-days", "400", "--events-days", "30"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert aggregate_retention(store) == dict.fromkeys(RETENTION_TABLES, 400)
    assert store.retention_days() == 30
    assert "mail_hourly" in out and "400 days" in out and "30 days" in out
    rc = cli.main(["retention", "--store", url, "--aggregates-days", "0"])
    capsys.readouterr()
    assert set(aggregate_retention(store).values()) == {0}
