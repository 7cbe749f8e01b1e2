"""Exim main-log line -> ParsedLine: the one parser of eximtrack (pure: no I/O, no faust/Kafka/ClickHouse).

The rules run compiled: native/src/parse.rs, built by maturin into the module `eximtrack_core` (issue 12:
parsing in CPython cost ~6 us a line, a third of the joiner's time; compiled it costs ~1.7 us, most of it
making the Python objects). This module is the Python interface the rest of eximtrack and the tests use.
tests/golden/parser holds what the pure-Python parser it replaced made of 42k real, generated and mutated
lines; the compiled one gives the same for every one.

`parse_line(text)` never raises. It returns a `ParsedLine` whose `kind` says what the line is:

  message lines (carry an Exim message id, 16 or 23 characters):
    arrival (`<=`, `(=`), delivery (`=>`, `->`, `>>`, `*>`), defer (`==`), failure (`**`),
    completed, frozen, unfrozen, removed, cancelled, error_ignored, queued (`no immediate delivery`),
    recipients_ignored (`original recipients ignored (system filter)`),
    locked (`Spool file … is locked`), spam (cPanel's SpamAssassin warning, comes before `<=`),
    identification (cPanel `Sender identification U= D= S=`), autoreply (a filter's reply, `=> >addr`),
    info (other known per-message detail: host errors, warnings, DKIM, SA, cPanel outbound lines),
    note (any other text after a message id: ACL `logwrite` output, TLS and DKIM/ARC details, DANE, system
    filter remarks, Exim's follow-up lines; kept as a raw line of its message, no outcome meaning)
  rejection: an SMTP-time rejection (`rejected RCPT`, `temporarily rejected RCPT`, `rejected MAIL`,
    `rejected MAIL FROM … message too big`, `rejected after DATA`), or one outside SMTP, which has a
    message id (`rejected from <s> U=u: message too big: read=N max=M`, `F=<s> rejected by non-SMTP ACL: …`,
    `local_scan() function timed out|crashed with signal N - message temporarily rejected (size N)`)
  ignored: a connection- or process-level line, ignored by a documented rule (`rule` names it)
  unparsed: anything else; `reason` says why. The caller stores it as a reject, never drops it.

Only the prefix is parsed for every line; the fields of a flag line are tokenised once, in one pass. Python's
string semantics are kept (`str.split()` whitespace, code-point positions); a line holding lone surrogates
(no decoder of eximtrack makes them) is read with each one as U+FFFD.
"""

from __future__ import annotations

from eximtrack_core import ParsedLine, is_msgid, parse_line, unquote

__all__ = ["ParsedLine", "is_msgid", "parse_line", "unquote"]
