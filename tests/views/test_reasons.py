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
# (text, the row's delivery domain) -> template (migration 028)
DOMAIN_CASES = {
    (
        "550 5.1.1 <bob@example.com>: user unknown in example.com",
        "example.com",
    ): "550 5.1.1 <addr>: user unknown in <domain>",
    (
        "retry time not reached for any host for 'example.com'",
        "example.com",
    ): "retry time not reached for any host for '<domain>'",
    (
        "H=mx1.example.com [192.0.2.7]: example.com example.com.",
        "example.com",
    ): "H=<id>.<domain> [<ip>]: <domain> <domain>.",
    (
        "relay for example.com.au denied, not myexample.com or example.com-x",
        "example.com",
    ): "relay for example.com.au denied, not myexample.com or example.com-x",
    ("Mailbox full (example.com)", ""): "Mailbox full (example.com)",
    ("Mailbox full (EXAMPLE.COM)", "example.com"): "Mailbox full (EXAMPLE.COM)",  # as written: case-sensitive
    ("no such domain a-b.de: a-b.de.", "a-b.de"): "no such domain <domain>: <domain>.",
    ("user unknown in domain", "domain"): "user unknown in domain",  # no dot: could be a placeholder's name
    ("over quota for xn--bcher-kva.example", "xn--bcher-kva.example"): "over quota for <domain>",
    ("over quota for a+b.example", "a+b.example"): "over quota for a+b.example",  # not a name's characters
    ("über bücher.example.", "bücher.example"): "über bücher.example.",
    ("(.example.com) ..example.com", "example.com"): "(.<domain>) ..<domain>",
    # a domain with a digit is replaced before the other rules cut it apart (migration 032)
    (
        "451 4.7.7 account temporarily deferred, try again later (video-player1.de)",
        "video-player1.de",
    ): "451 4.7.7 account temporarily deferred, try again later (<domain>)",
    (
        "H=mx1.shop24.de [192.0.2.7]: 450 shop24.de busy, <bob@shop24.de>",
        "shop24.de",
    ): "H=<id>.<domain> [<ip>]: 450 <domain> busy, <addr>",
    ("over quota for 1und1.de and 1und1.de2", "1und1.de"): "over quota for <domain> and <id>.<id>",
}


@pytest.mark.parametrize("text", list(CASES))
def test_template_examples(text):
    assert reasons.template(text) == CASES[text]


@pytest.mark.parametrize("text,domain", list(DOMAIN_CASES))
def test_template_replaces_the_rows_delivery_domain(text, domain):
    assert reasons.template(text, domain) == DOMAIN_CASES[(text, domain)]


def test_template_is_idempotent_on_its_output():
    for text in CASES:
        once = reasons.template(text)
        assert reasons.template(once) == once
    for text, domain in DOMAIN_CASES:
        once = reasons.template(text, domain)
        assert reasons.template(once, domain) == once


def _all_reason_texts() -> list[tuple[str, str]]:
    """(text, delivery domain) of every reason in the samples and the cases, each also without its domain."""
    texts = (
        {(text, "") for text in CASES} | set(DOMAIN_CASES) | {("a \n\n b.\n", ""), ("a \nx.org\n", "x.org")}
    )
    paths = [SAMPLES / f"mainlog-{m}.log" for m in ("all", "cpanel", "default")]
    paths += [p / "input.log" for p in GOLDEN.iterdir() if (p / "input.log").exists()]
    for path in paths:
        _, out = join_lines("s", path.read_text(encoding="utf-8").splitlines())
        texts.update((ev.message, ev.deliverydomain) for ev in out.events if ev.message)
    texts |= {(text, "") for text, _ in texts}
    return sorted(texts)


@pytest.mark.store
def test_python_and_clickhouse_give_the_same_template(url):
    store = Store.open(url)
    pairs = _all_reason_texts()
    assert len(pairs) > 40
    # the samples' own texts name their delivery domain, so the domain rule is exercised on real Exim output
    assert sum(reasons.template(x, d) != reasons.template(x) for x, d in pairs) > 5
    got = store.query(
        f"SELECT x.1, x.2, {reasons.sql_expression('x.1')}, {reasons.sql_expression('x.1', 'x.2')} "
        "FROM (SELECT arrayJoin({t:Array(Tuple(String, String))}) AS x)",
        {"t": pairs},
    ).result_rows
    assert {(x, d): (t, td) for x, d, t, td in got} == {
        (x, d): (reasons.template(x), reasons.template(x, d)) for x, d in pairs
    }


def test_migration_embeds_the_generated_expression():
    sql = (MIGRATIONS_DIR / "003_aggregates.sql").read_text(encoding="utf-8")
    expr = reasons.sql_expression("message")
    assert sql.count(f"{expr} AS template,") == 2  # reasons_hourly_mv and rejections_hourly_mv
    assert sql.count("AS template,") == 2
    # migration 014 redefines reasons_hourly_mv (its insert counter) with the same expression
    sql = (MIGRATIONS_DIR / "014_event_hour_snapshots.sql").read_text(encoding="utf-8")
    assert sql.count(f"{expr} AS template,") == sql.count("AS template,") == 1
    # migrations 028 and 032: reasons_hourly_mv's template with the row's delivery domain (032: replaced
    # before the other rules), the stored rows re-templated from their example text; 032 has today's rule
    sql = (MIGRATIONS_DIR / "032_reason_domains_before_other_rules.sql").read_text(encoding="utf-8")
    assert sql.count(f"{reasons.sql_expression('message', 'deliverydomain')} AS template,") == 1
    assert sql.count("AS template,") == 1
    example = reasons.sql_expression("example", "deliverydomain")
    assert sql.count(f"{example} AS retemplated,") == 1
    assert sql.count(f"WHERE template != {example}") == 3
    old = (MIGRATIONS_DIR / "028_reason_templates_without_domain.sql").read_text(encoding="utf-8")
    assert old.count("AS template,") == old.count("AS retemplated,") == 1
    assert old.count("WHERE template != leftUTF8(") == 3
    assert old != sql and reasons.sql_expression("message", "deliverydomain") not in old
