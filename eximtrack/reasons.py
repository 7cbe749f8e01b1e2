"""Reason templates: a deferral/failure/rejection text with its variable parts replaced (pure, no I/O).

    template("SMTP error from remote mail server after RCPT TO:<bob@x.test>: 451 4.3.0 <bob@x.test>: Try again")
    -> "SMTP error from remote mail server after RCPT TO:<addr>: 451 4.3.0 <addr>: Try again"

so that "top reasons" groups what belongs together. The same rules exist twice, generated from one list:
`template()` applies them with Python's `re` (ASCII mode), `sql_expression(col)` builds the nested
`replaceRegexpAll` chain that the materialized views of schemas/clickhouse/003_aggregates.sql compute (RE2).
Every pattern uses only syntax both engines read the same way (no look-around, `[0-9]` not `\\d`, ASCII
`\\b`); tests/views/test_reasons.py checks that both give the same template for every reason in the samples
and that the migration embeds exactly `sql_expression("message")`.

What is replaced (in this order):
  * e-mail addresses, with their angle brackets          -> <addr>
  * Exim message ids (16 and 23 characters)              -> <id>
  * IPv6 in brackets / IPv4 with an optional :port       -> [<ip>] / <ip>
  * absolute paths (a pipe command, a file)              -> <path>
  * tokens mixing letters and digits (queue ids, hashes) -> <id>
  * numbers, except SMTP reply codes (2xx/4xx/5xx) and enhanced status codes (4.7.1), which are the reason
    itself                                                 -> <n>
then runs of white space become one space, the ends are trimmed and the text is cut at MAX_CHARS characters.
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

_COMPILED = tuple((re.compile(p, re.ASCII), r) for p, r in RULES)


def template(text: str | None) -> str:
    """The reason template of one result text (deterministic; '' for an empty text)."""
    if not text:
        return ""
    out = text
    for rx, repl in _COMPILED:
        out = rx.sub(repl, out)
    return out.strip(" ")[:MAX_CHARS]


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_expression(column: str) -> str:
    """The ClickHouse expression computing `template(column)` (RE2 replaceRegexpAll chain)."""
    expr = column
    for pattern, repl in RULES:
        expr = f"replaceRegexpAll({expr}, {_sql_string(pattern)}, {_sql_string(repl)})"
    return f"leftUTF8(trimBoth({expr}), {MAX_CHARS})"


__all__ = ["MAX_CHARS", "RULES", "sql_expression", "template"]
