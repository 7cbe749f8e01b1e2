"""Every SQL block of docs/SQL.md runs against a populated store, and its result is checked against an
independent computation (mostly a direct aggregation over latest FINAL / events FINAL)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.views.conftest import ROOT

pytestmark = pytest.mark.store

DOC = ROOT / "docs" / "SQL.md"
_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
_MARKED = re.compile(r"<!-- cookbook: (\w+) -->\n```sql\n(.*?)```", re.S)


def cookbook() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    marked = dict(_MARKED.findall(text))
    assert len(marked) == len(_BLOCK.findall(text)), (
        "every ```sql block of docs/SQL.md needs a cookbook marker"
    )
    return marked


def test_every_block_is_checked():
    assert set(cookbook()) == set(CHECKS)


def _rows(store, sql, params=None):
    return store.query(sql, params).result_rows


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def check_failed_mail_of_customer(store, sql):
    user, since = "Debian-exim", datetime(2026, 11, 20, tzinfo=UTC)  # the account whose mail bounced
    got = _rows(store, sql, {"user": user, "since": since})
    assert got and all(r[5] in ("failure", "rejected") for r in got)
    # the same number as FAILCOUNT of `eximtrack stats --user … --since …` (mail_hourly)
    from eximtrack.stats import stats

    s = stats(store, "user", since.isoformat(), None, user=user)
    assert len(got) == s[0]["FAILCOUNT"]


def check_top_bouncing_domains(store, sql):
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    got = _rows(store, sql, {"since": since, "until": until})
    want = _rows(
        store,
        """SELECT deliverydomain, uniqExact(server, msgid, recipient) AS n FROM events FINAL
           WHERE type = 'failure' AND is_deleted = 0 GROUP BY deliverydomain ORDER BY n DESC, deliverydomain
           LIMIT 10""",
    )
    assert [(r[0], r[1]) for r in got] == [tuple(r) for r in want]
    assert got[0][2]  # a reason template


def check_top_deferral_reasons(store, sql):
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    got = _rows(store, sql, {"since": since, "until": until})
    from tests.views.checks import TEMPLATE

    want = _rows(
        store,
        f"""SELECT {TEMPLATE} AS template, uniqExact(server, msgid, recipient, deliveredto, attempts) AS n
            FROM events FINAL WHERE type = 'defer' AND is_deleted = 0 GROUP BY template
            ORDER BY n DESC, template LIMIT 10""",
    )
    assert got and [tuple(r) for r in got] == [tuple(r) for r in want]


def check_stuck_in_queue(store, sql):
    now = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    got = _rows(store, sql, {"now": now})
    assert got
    assert all(r[4] in ("inprogress", "defer") and r[7] > 60 for r in got)
    want = _rows(
        store,
        """SELECT count() FROM latest FINAL WHERE type IN ('inprogress', 'defer')
           AND sendunixtime < {t:DateTime64(3, 'UTC')}""",
        {"t": now - timedelta(hours=1)},
    )[0][0]
    assert len(got) == want


def check_stuck_per_server(store, sql):
    now = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    got = {r[0]: (r[1], r[2]) for r in _rows(store, sql, {"now": now})}
    want = {
        r[0]: (r[1], r[2])
        for r in _rows(
            store,
            """SELECT server, countIf(type = 'inprogress') AS i, countIf(type = 'defer') AS d FROM latest FINAL
               WHERE protocol != '' AND toStartOfHour(toDateTime(sendunixtime, 'UTC')) < {t:DateTime('UTC')}
               GROUP BY server HAVING i + d > 0""",
            {"t": now.replace(minute=0) - timedelta(hours=1)},
        )
    }
    assert got == want and len(got) >= 4


def check_compromised_accounts(store, sql):
    got = _rows(store, sql, {"since": datetime(2026, 1, 1, tzinfo=UTC)})
    assert got
    # worst hour's unique recipients per outbound sender, straight from latest FINAL
    want = {
        (r[0], r[1]): r[2]
        for r in _rows(
            store,
            """SELECT user, sender, max(n) FROM (
                   SELECT user, lower(email) AS sender, toStartOfHour(toDateTime(sendunixtime, 'UTC')) AS h,
                          server, uniqExactIf(recipient, recipient != '' AND type != 'rejected') AS n
                   FROM latest FINAL WHERE senderauth != '' AND protocol != '' GROUP BY ALL)
               GROUP BY user, sender""",
        )
    }
    for r in got:
        assert want[(r[0], r[1])] == r[2], r


def check_deferrals_to_provider(store, sql):
    got = _rows(store, sql, {"domain": "remote.test"})
    want = _rows(
        store,
        """SELECT toStartOfHour(toDateTime(actionunixtime, 'UTC')) AS hour,
                  uniqExact(server, msgid, recipient, deliveredto, attempts, message)
           FROM events FINAL WHERE type = 'defer' AND is_deleted = 0 AND deliverydomain = 'remote.test'
           GROUP BY hour ORDER BY hour""",
    )
    assert len(got) >= 2
    # summed over templates: distinct (row, attempt, text) — a freeze re-emission has its own text
    assert [(_utc(r[0]), r[1]) for r in got] == [(_utc(r[0]), r[1]) for r in want]
    assert all("<addr>" in r[2] or r[2] for r in got)


def check_stats_per_account(store, sql):
    from eximtrack.stats import stats

    got = {r[0]: tuple(r[1:]) for r in _rows(store, sql)}
    want = {r["user"]: tuple(v for k, v in r.items() if k != "user") for r in stats(store, "user")}
    assert got == want and len(got) >= 3


def check_stats_per_account_from_states(store, sql):
    check_stats_per_account(store, sql)


def check_slow_destinations(store, sql):
    got = _rows(store, sql)
    assert got
    want = {
        r[0]: (r[1], [v / 1000 for v in r[2]])
        for r in _rows(
            store,
            """SELECT deliverydomain, count(), quantilesExact(0.5, 0.9, 0.99)(
                   greatest(0, dateDiff('millisecond', sendunixtime, actionunixtime)))
               FROM latest FINAL WHERE type = 'success' AND protocol != '' GROUP BY deliverydomain""",
        )
    }
    for r in got:
        assert (r[1], list(r[2])) == want[r[0]], r


def check_rejected_client_ips(store, sql):
    got = _rows(store, sql)
    want = _rows(
        store,
        """SELECT senderip, count() AS n FROM latest FINAL WHERE type = 'rejected'
           GROUP BY senderip ORDER BY n DESC, senderip LIMIT 10""",
    )
    assert [(r[0], r[1]) for r in got] == [tuple(r) for r in want] and got


def check_failed_mail_of_customer_fast(store, sql):
    """The access-path form returns exactly the rows of the plain query."""
    params = {"user": "Debian-exim", "since": datetime(2026, 11, 20, tzinfo=UTC)}
    got = _rows(store, sql, params)
    assert got and got == _rows(store, cookbook()["failed_mail_of_customer"], params)


def check_mail_in_flight_of_domain(store, sql):
    """The access-path form returns exactly the rows in progress of each sender domain in `latest FINAL`."""
    naive = (
        "SELECT sendunixtime, server, msgid, email, recipient FROM latest FINAL WHERE lower(domain) = "
        "lower({domain:String}) AND type = 'inprogress' ORDER BY sendunixtime DESC, server, msgid, recipient"
    )
    domains = _rows(
        store, "SELECT DISTINCT domain FROM latest FINAL WHERE type = 'inprogress' AND domain != ''"
    )
    assert domains  # the logs leave some mail in progress
    for (domain,) in domains:
        got = _rows(store, sql, {"domain": domain})
        assert got and got == _rows(store, naive, {"domain": domain}), domain


def check_mail_not_delivered_of_domain(store, sql):
    """The two access paths together return exactly each sender domain's rows deferred, failed or in progress
    in `latest FINAL`; and some domain has rows of both kinds, so neither table alone would do."""
    open_ = "type IN ('defer', 'failure', 'rejected', 'inprogress')"
    naive = (
        "SELECT sendunixtime, server, msgid, email, recipient, type FROM latest FINAL WHERE lower(domain) = "
        f"lower({{domain:String}}) AND {open_} ORDER BY sendunixtime DESC, server, msgid, recipient"
    )
    domains = _rows(store, f"SELECT DISTINCT domain FROM latest FINAL WHERE {open_} AND domain != ''")
    assert domains
    kinds = set()
    for (domain,) in domains:
        got = _rows(store, sql, {"domain": domain})
        assert got and got == _rows(store, naive, {"domain": domain}), domain
        kinds.add(frozenset("inprogress" if r[-1] == "inprogress" else "other" for r in got))
    assert frozenset({"inprogress", "other"}) in kinds


def check_newest_by_subject_word(store, sql):
    word = _rows(
        store,
        "SELECT w FROM latest FINAL ARRAY JOIN splitByNonAlpha(lower(subject)) AS w WHERE length(w) > 3 "
        "GROUP BY w ORDER BY count() DESC, w LIMIT 1",
    )[0][0]
    got = _rows(store, sql, {"word": word})
    want = _rows(
        store,
        "SELECT sendunixtime, server, msgid, email, recipient, subject, type FROM latest FINAL "
        "WHERE hasToken(lower(subject), {w:String}) ORDER BY sendunixtime DESC, server, msgid, recipient LIMIT 20",
        {"w": word},
    )
    assert got and got == want


def check_newest_by_subject_phrase(store, sql):
    """The word pairs of tok_pairs (text_pairs) narrow the candidates; the rows are those whose subject holds
    the phrase (any case), newest first."""
    from eximtrack.search_plan import phrase_pairs

    phrase = _rows(
        store,
        "SELECT arrayStringConcat(arraySlice(w, 1, 2), ' ') AS p FROM latest FINAL "
        "ARRAY JOIN [splitByChar(' ', lower(subject))] AS w "
        "WHERE length(w) >= 2 AND match(p, '^[a-z]{4,} [a-z]{4,}$') GROUP BY p ORDER BY count() DESC, p LIMIT 1",
    )[0][0]
    pairs = phrase_pairs(phrase, "contains")
    assert len(pairs) == 1
    got = _rows(store, sql, {"phrase": phrase.upper(), "pairs": pairs})
    want = _rows(
        store,
        "SELECT sendunixtime, server, msgid, email, recipient, subject, type FROM latest FINAL "
        "WHERE positionCaseInsensitive(subject, {p:String}) > 0 "
        "ORDER BY sendunixtime DESC, server, msgid, recipient LIMIT 20",
        {"p": phrase},
    )
    assert got and got == want


def check_mail_to_address(store, sql):
    """The recipient-ordered copy gives exactly the latest rows of `latest` for an address (any case)."""
    rcpt = _rows(
        store,
        "SELECT recipient FROM latest FINAL GROUP BY recipient ORDER BY count() DESC, recipient LIMIT 1",
    )[0][0]
    params = {"rcpt": rcpt.upper(), "since": datetime(2026, 1, 1, tzinfo=UTC)}
    got = _rows(store, sql, params)
    want = _rows(
        store,
        "SELECT sendunixtime, server, msgid, type, deliveredto, message FROM latest FINAL "
        "WHERE lower(recipient) = lower({rcpt:String}) AND sendunixtime >= {since:DateTime64(3, 'UTC')} "
        "ORDER BY sendunixtime DESC, server, msgid, deliveredto",
        params,
    )
    assert len(got) > 1 and got == want


def check_outcomes_by_server(store, sql):
    """The narrow copy gives exactly the latest state's outcomes of `latest` per server."""
    params = {"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2027, 1, 1, tzinfo=UTC)}
    got = _rows(store, sql, params)
    want = _rows(
        store,
        "SELECT server, type, count() AS rows FROM latest FINAL WHERE sendunixtime >= {since:DateTime64(3, 'UTC')} "
        "AND sendunixtime < {until:DateTime64(3, 'UTC')} GROUP BY server, type ORDER BY server, type",
        params,
    )
    assert len({t for _, t, _ in got}) > 2 and got == want


CHECKS = {
    name.removeprefix("check_"): fn for name, fn in dict(globals()).items() if name.startswith("check_")
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_cookbook_query(populated, name):
    CHECKS[name](populated, cookbook()[name])
