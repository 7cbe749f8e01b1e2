"""Reason templates: a deferral/failure/rejection text with its variable parts replaced (pure, no I/O).

    template("SMTP error from remote mail server after RCPT TO:<bob@x.test>: 451 4.3.0 <bob@x.test>: Try again")
    -> "SMTP error from remote mail server after RCPT TO:<addr>: 451 4.3.0 <addr>: Try again"

so that "top reasons" groups what belongs together. The same rules exist twice, generated from one list:
`template()` applies them with Python's `re` (ASCII mode), `sql_expression(col)` builds the nested
`replaceRegexpAll` chain that the materialized views compute (RE2): `rejections_hourly_mv` (migrations 003, 020)
with `sql_expression("message")`, `reasons_hourly_mv` (028) with `sql_expression("message", "deliverydomain")`.
Every pattern uses only syntax both engines read the same way (no look-around, `[0-9]` not `\\d`, ASCII
`\\b`); tests/views/test_reasons.py checks that both give the same template for every reason in the samples
and that the migrations embed exactly these expressions.

What is replaced (in this order, RULES):
  * e-mail addresses, with their angle brackets          -> <addr>
  * Exim message ids (16 and 23 characters)              -> <id>
  * IPv6 in brackets / IPv4 with an optional :port       -> [<ip>] / <ip>
  * absolute paths (a pipe command, a file)              -> <path>
  * tokens mixing letters and digits (queue ids, hashes) -> <id>
  * numbers, except SMTP reply codes (2xx/4xx/5xx) and enhanced status codes (4.7.1), which are the reason
    itself                                                 -> <n>
then runs of white space become one space, the ends are trimmed and the text is cut at MAX_CHARS characters.

With the row's own delivery domain (`template(text, domain)`, `sql_expression(col, domain_col)`: deferrals
and failures), the domain is replaced before the other rules (right after the white space and the
addresses), where the text names it as a whole name or as the end of a host's name: "user unknown in
example.com", "retry time not reached for any host for 'example.com'", "mx1.example.com" -> <domain>,
"<id>.<domain>". Before them, because they cut a domain with digits apart ("shop24.de" -> "<id>.de",
migration 032).

The domain rule (migrations 028 and 032) is what lets "top deferral reasons" group one reason across
destinations: Exim's own texts and many remote servers' name the recipient's domain, and without it every
destination made a template of its own (at 1e8 events the bench store had 105k templates a day; with the
rule after the others, still 31k, nearly all of them domains with a digit). The domain is `reasons_hourly`'s
`deliverydomain` dimension already, so nothing is lost. It matches the domain as written (case-sensitive:
Exim writes domains in lower case), made of ASCII name characters and with a dot (so that no placeholder can
match, and a template's rules applied to a template change nothing).
"""

from __future__ import annotations

import re

MAX_CHARS = 200

# (RE2/Python pattern, replacement using \1-style group references)
RULES: tuple[tuple[str, str], ...] = (
    (r"<?[^\t\n\f\r <>@\"(),;:]+@[A-Za-z0-9_.-]*[A-Za-z0-9_]>?", "<addr>"),
    (r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}\b", "<id>"),
    (r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b", "<id>"),
    (r"\[[0-9A-Fa-f]*:[0-9A-Fa-f:.]*\]", "[<ip>]"),
    (r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(:[0-9]+)?\b", "<ip>"),
    (r"(^|[\t\n\f\r =(])/[^\t\n\f\r :;,)]+", r"\1<path>"),
    (r"\b(?:[0-9]+[A-Za-z_]|[A-Za-z_]+[0-9])[0-9A-Za-z_]*\b", "<id>"),
    # a number not glued to a '.', a letter or another digit, and not a 3-digit reply code 2xx/4xx/5xx;
    # applied twice because a match consumes the separator in front of the next number
    (
        r"(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\.[^0-9]|\.$|$)",
        r"\1<n>\3",
    ),
    (
        r"(^|[^0-9A-Za-z_.<])([0-9]{1,2}|[0-9]{4,}|[0136789][0-9][0-9])([^0-9A-Za-z_.]|\.[^0-9]|\.$|$)",
        r"\1<n>\3",
    ),
    (r"[\t\n\f\r ]+", " "),
)
ADDRESS_RULE, WHITE_SPACE_RULE = RULES[0], RULES[-1]
# with a delivery domain: these rules, then the domain rule, then the others (not the white space again: no
# rule makes a run of it, every replacement is a non-empty placeholder)
BEFORE_DOMAIN = (WHITE_SPACE_RULE, ADDRESS_RULE)
AFTER_DOMAIN = RULES[1:-1]


def _compiled(rules: tuple[tuple[str, str], ...]) -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((re.compile(p, re.ASCII), r) for p, r in rules)


_COMPILED, _BEFORE_DOMAIN, _AFTER_DOMAIN = map(_compiled, (RULES, BEFORE_DOMAIN, AFTER_DOMAIN))

# The domain rule marks each run of name characters (a domain, a host's name, a word), without its trailing
# dots (a sentence's full stop), with MARK on both sides, replaces a marked run that is the domain or ends in
# "." + the domain, and drops the marks: plain string replacements, no regular expression built from the
# domain (ClickHouse compiles such a pattern per row: a 1e7-event store's migration took 10 minutes) and no
# arrays or lambdas (the view's SELECT is planned on every insert: they added 5 ms to each). A domain
# without a dot is never replaced (`<domain>` itself holds the run "domain").
NAME_RUN = r"[0-9A-Za-z_.-]*[0-9A-Za-z_-]"
_NAME_RUN = re.compile(NAME_RUN)
MARK = "\n"  # never in the text here: the white-space rule turned every newline into a space first
DOMAIN = "<domain>"


def _without_domain(text: str, domain: str) -> str:
    d = domain if "." in domain else ""
    marked = _NAME_RUN.sub(MARK + r"\g<0>" + MARK, text)
    marked = marked.replace(MARK + d + MARK, MARK + DOMAIN + MARK).replace(
        "." + d + MARK, "." + DOMAIN + MARK
    )
    return marked.replace(MARK, "")


def template(text: str | None, domain: str | None = None) -> str:
    """The reason template of one result text (deterministic; '' for an empty text); with `domain` (the
    row's delivery domain, '' when it has none) the domain rule too, as `sql_expression(col, domain_col)`."""
    if not text:
        return ""
    out = text
    rules = _COMPILED
    if domain is not None:
        for rx, repl in _BEFORE_DOMAIN:
            out = rx.sub(repl, out)
        out = _without_domain(out, domain)
        rules = _AFTER_DOMAIN
    for rx, repl in rules:
        out = rx.sub(repl, out)
    return out.strip(" ")[:MAX_CHARS]


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _replaced(expr: str, rules: tuple[tuple[str, str], ...]) -> str:
    """`expr` wrapped in one replaceRegexpAll per rule, in order."""
    for pattern, repl in rules:
        expr = f"replaceRegexpAll({expr}, {_sql_string(pattern)}, {_sql_string(repl)})"
    return expr


def sql_expression(column: str, domain_column: str | None = None) -> str:
    """The ClickHouse expression computing `template(column)` (RE2 replaceRegexpAll chain), or with
    `domain_column`, `template(column, domain_column)` (the domain rule after the white space and the
    addresses: one constant pattern, then plain replacements)."""
    expr = column
    rules = RULES
    if domain_column:
        mark = "'\\n'"  # MARK
        d = f"if(position({domain_column}, '.') > 0, {domain_column}, '')"
        expr = _replaced(expr, BEFORE_DOMAIN)
        expr = f"replaceRegexpAll({expr}, {_sql_string(NAME_RUN)}, concat({mark}, '\\\\0', {mark}))"
        expr = f"replaceAll({expr}, concat({mark}, {d}, {mark}), concat({mark}, '{DOMAIN}', {mark}))"
        expr = f"replaceAll({expr}, concat('.', {d}, {mark}), concat('.{DOMAIN}', {mark}))"
        expr = f"replaceAll({expr}, {mark}, '')"
        rules = AFTER_DOMAIN
    return f"leftUTF8(trimBoth({_replaced(expr, rules)}), {MAX_CHARS})"


__all__ = [
    "ADDRESS_RULE",
    "AFTER_DOMAIN",
    "BEFORE_DOMAIN",
    "DOMAIN",
    "MAX_CHARS",
    "MARK",
    "NAME_RUN",
    "RULES",
    "sql_expression",
    "template",
    "WHITE_SPACE_RULE",
]
