"""eximtrack/reasons.py: the Python normaliser, the SQL expression of the views, and the migration agree."""

from __future__ import annotations

import pytest

from eximtrack import reasons
from sinks.clickhouse.migrations import MIGRATIONS_DIR
from sinks.clickhouse.store import Store
from stream.join import join_lines
from tests.views.conftest import GOLDEN, SAMPLES

CASES = {
    "SMTP error from remote mail server after RCPT TO:<bob@x.test>: 451 4.3.0 <bob@x.test>: Try later": "SMTP error from remote mail server after RCPT TO:<addr>: 451 4.3.0 <addr>: Try later",
    "defer (111): Connection refused": "defer (<n>): Connection refused",
    "rejected MAIL FROM:<bob@local.test>: message too big: size=80000 max=51200": "rejected MAIL FROM:<addr>: message too big: size=<n> max=<n>",
    "H=mx1.example [192.0.2.7]:25: Remote host closed connection": "H=<id>.example [<ip>]:<n>: Remote host closed connection",  # mx1/mx2/… group together,
    "550-5.7.1 [2001:db8::1] rate limited 1xWlh3-00009e-0M  x1ab9f0c": "550-5.7.1 [<ip>] rate limited <id> <id>",
    "Child process returned 69 from command: /usr/bin/procmail": "Child process returned <n> from command: <path>",
    "Unrouteable address": "Unrouteable address",
    "": "",
}


@pytest.mark.parametrize("text", list(CASES))
def test_template_examples(text):
    assert reasons.template(text) == CASES[text]


def test_template_is_idempotent_on_its_output():
    for text in CASES:
        once = reasons.template(text)
        assert reasons.template(once) == once


def _all_reason_texts() -> list[str]:
    texts = set(CASES)
    paths = [SAMPLES / f"mainlog-{m}.log" for m in ("all", "cpanel", "default")]
    paths += [p / "input.log" for p in GOLDEN.iterdir() if (p / "input.log").exists()]
    for path in paths:
        _, out = join_lines("s", path.read_text(encoding="utf-8").splitlines())
        texts.update(ev.message for ev in out.events if ev.message)
    return sorted(texts)


@pytest.mark.store
def test_python_and_clickhouse_give_the_same_template(url):
    store = Store.open(url)
    texts = _all_reason_texts()
    assert len(texts) > 20
    got = store.query(
        f"SELECT x, {reasons.sql_expression('x')} FROM (SELECT arrayJoin({{t:Array(String)}}) AS x)",
        {"t": texts},
    ).result_rows
    assert {x: t for x, t in got} == {x: reasons.template(x) for x in texts}


def test_migration_embeds_the_generated_expression():
    sql = (MIGRATIONS_DIR / "003_aggregates.sql").read_text(encoding="utf-8")
    expr = reasons.sql_expression("message")
    assert sql.count(f"{expr} AS template,") == 2  # reasons_hourly_mv and rejections_hourly_mv
    assert sql.count("AS template,") == 2
    # migration 014 redefines reasons_hourly_mv (its insert counter) with the same expression
    sql = (MIGRATIONS_DIR / "014_event_hour_snapshots.sql").read_text(encoding="utf-8")
    assert sql.count(f"{expr} AS template,") == sql.count("AS template,") == 1
