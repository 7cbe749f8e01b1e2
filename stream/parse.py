"""Exim main-log line -> ParsedLine: the one parser of eximtrack (pure: no I/O, no faust/Kafka/ClickHouse).

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

Only the prefix is parsed for every line; the fields of a flag line are tokenised once, in one pass.
"""

from __future__ import annotations

import re

MESSAGE_FLAGS = {"<=": "arrival", "(=": "arrival", "=>": "delivery", "->": "delivery", ">>": "delivery",
                 "*>": "delivery", "==": "defer", "**": "failure"}  # fmt: skip

_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*\*?=")
_SPAM_RE = re.compile(
    r"SpamAssassin as (\S+) detected (?:OUTGOING \S+ )?message as (NOT )?spam \(([-0-9.]+)\)"
)
_REJECT_RCPT_RE = re.compile(r"(temporarily )?rejected RCPT <([^>]*)>")
_RCPT_ADDR_RE = re.compile(r"<([^>]*)>")
_TRAILING_DT_RE = re.compile(r" DT=(\S+)$")

# Connection- and process-level lines (no message id): ignored by rule, counted under the rule's name.
# Ordered: the first match wins. Documented in docs/ARCHITECTURE.md ("Lines that are ignored").
_IGNORE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("connection", ("SMTP connection", "no MAIL in SMTP connection", "unexpected disconnection",
                    "SMTP command timeout", "SMTP data timeout", "SMTP protocol synchronization error",
                    "SMTP protocol error", "SMTP syntax error", "SMTP call from", "Connection from ",
                    "refused connection", "TLS error on connection", "TLS session", "no host name found",
                    "SMTP incoming data timeout", "Connection refused")),
    ("process", ("Start queue run", "End queue run", "exim ", "cwd=", "Warning: No server certificate",
                 "pid written", "Exim configuration error", "  ", "Domain ", "Queue run", "queue run",
                 "daemon ", "Received SIGTERM", "SIGHUP", "LOG:", "tls_",
                 # seen in real configurations (issue 16): environment warning of Exim >= 4.86 and its
                 # second line, daemon re-exec, -oX override, an ACL condition deferred, ratelimit DB
                 "Warning: purging the environment", "Suggested action: use keep_environment",
                 "pid ", "daemon_smtp_port", "ACL ", "ratelimit")),
)  # fmt: skip
# Text found in a no-id line that starts with `H=`/`U=`/`F=` or a host, and is session-level.
_SESSION_MARKERS = (
    ("connection", " incomplete transaction "), ("connection", " rejected connection"),
    ("connection", " sender verify "), ("connection", " rejected EHLO or HELO"),
    ("connection", " rejected HELO"), ("connection", " rejected EHLO"), ("connection", " authenticator failed"),
    ("connection", " dropped: "), ("connection", " refused relay"), ("connection", " lost "),
    ("connection", " recipient verify "), ("connection", " Warning: "), ("connection", " TLS error"),
    ("connection", " SMTP "), ("connection", " no immediate delivery"), ("connection", "closed by"),
)  # fmt: skip


class ParsedLine:
    """What one line says. Unused attributes stay None/"" (slots keep it small and fast)."""

    __slots__ = ("kind", "date", "time", "zone", "pid", "msgid", "flag", "body", "fields", "address",
                 "original", "parents", "message", "rule", "reason")  # fmt: skip

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.date = ""
        self.time = ""
        self.zone: str | None = None
        self.pid = ""
        self.msgid = ""
        self.flag = ""
        self.body = ""
        self.fields: dict[str, str] = {}
        self.address = ""
        self.original = ""
        self.parents = ""
        self.message = ""
        self.rule = ""
        self.reason = ""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"ParsedLine({self.kind!r}, msgid={self.msgid!r}, flag={self.flag!r}, fields={self.fields!r})"


def _unparsed(reason: str) -> ParsedLine:
    p = ParsedLine("unparsed")
    p.reason = reason
    return p


def is_msgid(token: str) -> bool:
    """An Exim message id: `tttttt-pppppp-ff` (≤ 4.96) or `tttttt-ppppppppppp-ffff` (4.97+)."""
    n = len(token)
    if n == 16:
        if token[6] != "-" or token[13] != "-":
            return False
        return (
            _ALNUM.issuperset(token[:6]) and _ALNUM.issuperset(token[7:13]) and _ALNUM.issuperset(token[14:])
        )
    if n == 23:
        if token[6] != "-" or token[18] != "-":
            return False
        return (
            _ALNUM.issuperset(token[:6]) and _ALNUM.issuperset(token[7:18]) and _ALNUM.issuperset(token[19:])
        )
    return False


def parse_line(text: str) -> ParsedLine:
    """Parse one main-log line (without its newline). Never raises."""
    try:
        return _parse(text)
    except Exception as exc:  # a parser bug must not lose the line: it becomes a reject with the reason
        return _unparsed(f"parser error: {type(exc).__name__}: {exc}")


# The usual line start, matched in one go: date, time[.frac], optional zone and [pid], optional message id.
# Only a match is trusted; anything else goes through _parse_checked, which says exactly what is wrong.
# A zone or [pid] that is there is always taken (the negative lookaheads stop the regex from backtracking
# past it to a different reading of the line).
_PREFIX_RE = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?)"
    r"(?: ([+-][0-9]{4})(?= |$)|(?! [+-][0-9]{4}(?: |$)))"
    r"(?: \[([0-9]+)\]|(?! \[[0-9]+\])) "
    r"(?:([0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}))(?: |$))?"
)


def _parse(text: str) -> ParsedLine:
    if text.endswith("\r"):
        text = text[:-1]
    m = _PREFIX_RE.match(text)
    if m is None:
        return _parse_checked(text)
    date, time, zone, pid, msgid = m.groups()
    return _finish(text[m.end() :], msgid or "", date, time, zone, pid or "")


def _finish(body: str, msgid: str, date: str, time: str, zone: str | None, pid: str) -> ParsedLine:
    p = _message_line(body, msgid) if msgid else _no_id_line(body)
    p.date = date
    p.time = time
    p.zone = zone
    p.pid = pid
    if not p.body:
        p.body = body
    return p


def _parse_checked(text: str) -> ParsedLine:
    n = len(text)
    if n < 20 or text[4] != "-" or text[7] != "-" or text[10] != " " or text[13] != ":" or text[16] != ":":
        if not text.strip():
            p = ParsedLine("ignored")
            p.rule = "blank"
            return p
        if text.startswith("  "):  # continuation of a multi-line configuration-error entry
            p = ParsedLine("ignored")
            p.rule = "process"
            return p
        return _unparsed("no Exim timestamp at the start of the line")
    date = text[0:10]
    if not (
        _DIGITS.issuperset(date[0:4]) and _DIGITS.issuperset(date[5:7]) and _DIGITS.issuperset(date[8:10])
    ):
        return _unparsed("malformed date")
    pos = 19
    if pos < n and text[pos] == ".":
        end = pos + 1
        while end < n and text[end] in _DIGITS:
            end += 1
        time = text[11:end]
        pos = end
    else:
        time = text[11:19]
    if not (
        _DIGITS.issuperset(time[0:2]) and _DIGITS.issuperset(time[3:5]) and _DIGITS.issuperset(time[6:8])
    ):
        return _unparsed("malformed time")
    zone = None
    if (
        pos + 5 < n
        and text[pos] == " "
        and text[pos + 1] in "+-"
        and _DIGITS.issuperset(text[pos + 2 : pos + 6])
    ) and (pos + 6 == n or text[pos + 6] == " "):
        zone = text[pos + 1 : pos + 6]
        pos += 6
    pid = ""
    if pos + 2 < n and text[pos] == " " and text[pos + 1] == "[":
        close = text.find("]", pos + 2)
        if close > 0 and _DIGITS.issuperset(text[pos + 2 : close]) and close > pos + 2:
            pid = text[pos + 2 : close]
            pos = close + 1
    if pos >= n or text[pos] != " ":
        return _unparsed("nothing after the timestamp")
    pos += 1
    msgid = ""
    sp = text.find(" ", pos)
    token = text[pos:sp] if sp > 0 else text[pos:]
    if is_msgid(token):
        msgid = token
        pos = sp + 1 if sp > 0 else n
    return _finish(text[pos:], msgid, date, time, zone, pid)


# --------------------------------------------------------------------------------------------- message lines


def _message_line(body: str, msgid: str) -> ParsedLine:
    flag = body[:2]
    kind = MESSAGE_FLAGS.get(flag)
    if kind is not None and body[2:3] == " ":
        if kind == "arrival":
            p = _arrival(body[3:])
        else:
            p = _result(body[3:], kind)
        p.flag = flag
        p.msgid = msgid
        p.body = body
        return p
    p = _message_state(body)
    p.msgid = msgid
    p.body = body
    return p


_STATE_PREFIXES = (
    ("Completed", "completed"),
    ("Frozen", "frozen"),
    ("frozen by", "frozen"),
    ("Message is frozen", "frozen"),
    ("Unfrozen", "unfrozen"),
    ("unfrozen by", "unfrozen"),
    ("removed by", "removed"),
    ("cancelled by", "cancelled"),
    ("no immediate delivery", "queued"),
    ("Spool file", "locked"),
    ("Sender identification", "identification"),
    (
        "original recipients ignored",
        "recipients_ignored",
    ),  # the system filter delivered the message elsewhere
)
_INFO_PREFIXES = ("SMTP error from remote", "SMTP connection outbound", "SMTP timeout", "DKIM:", "SA:",
                  "PRDR ", "event ", "Warning:", "check_mail_permissions", "SMTP data timeout",
                  "SMTP connection", "TLS error", "TLS session", "Connection refused", "retry time not reached",
                  "failed to expand", "lowest numbered MX", "all hosts", "tainted", "DKIM ", "dkim",
                  "ARC:", "DMARC", "SPF", "delivery deferred", "Message ", "message ", "Remote host",
                  "host ", "Deferred", "internal problem", "Sender ")  # fmt: skip


def _message_state(body: str) -> ParsedLine:
    if body.startswith(("rejected from <", "local_scan() function ")) or " rejected by non-SMTP ACL" in body:
        p = _local_rejection(body)
        if p is not None:
            return p
    for prefix, kind in _STATE_PREFIXES:
        if body.startswith(prefix):
            p = ParsedLine(kind)
            if kind == "identification":
                p.fields = _kv_tokens(body[len(prefix) :])
            elif kind == "completed":
                p.fields = _kv_tokens(body[9:])
            p.message = body
            return p
    if (
        " rejected after DATA" in body
        or body.startswith("rejected after DATA")
        or ("temporarily rejected after DATA" in body)
    ):
        return _rejection(body, "DATA")
    if body.startswith(("H=", "U=", "F=")) or body.startswith("I=["):
        spam = _SPAM_RE.search(body) if "SpamAssassin" in body else None
        if spam:
            p = ParsedLine("spam")
            p.fields = {
                "score": spam.group(3),
                "account": spam.group(1),
                "verdict": "ham" if spam.group(2) else "spam",
            }
            p.fields.update(_host_fields(body))
            p.message = body
            return p
        p = ParsedLine("info")
        p.message = body
        return p
    ei = body.find(": error ignored")
    if ei > 0:
        p = ParsedLine("error_ignored")
        p.address = body[:ei]
        p.message = body[ei + 2 :]
        return p
    if body.startswith(_INFO_PREFIXES):
        if "SpamAssassin" in body:
            spam = _SPAM_RE.search(body)
            if spam:
                p = ParsedLine("spam")
                p.fields = {"score": spam.group(3), "account": spam.group(1)}
                p.message = body
                return p
        p = ParsedLine("info")
        p.message = body
        return p
    if not body.strip():
        return _unparsed("a message id with no text")
    p = ParsedLine("note")
    p.message = body
    return p


_LOCAL_SCAN_RE = re.compile(
    r"local_scan\(\) function (?:timed out|crashed with signal [0-9]+) - message (temporarily )?rejected"
    r"(?: \(size ([0-9]+)\))?"
)
_READ_SIZE_RE = re.compile(r"\bread=([0-9]+)")


def _local_rejection(body: str) -> ParsedLine | None:
    """A message rejected outside SMTP (a local submission, an error report): it has a message id, a sender
    (`F=` or `rejected from <s>`), the submitting user (`U=`) and a size where Exim logs one. None if the
    body is not one of the forms Exim 4.96 writes (then it is read as any other message line).
    Exim follows some of them with `Error while reading message with no usable sender address …` for the
    same id (no sender to tell): that line is a note of the message, the event comes from this one."""
    fields: dict[str, str] = {"kind": "LOCAL", "temporary": ""}
    m = _LOCAL_SCAN_RE.match(body)
    if m:
        fields["temporary"] = "1" if m.group(1) else ""
        if m.group(2):
            fields["S"] = m.group(2)
        text = body
    elif body.startswith("rejected from <"):
        close = body.find(">", 15)
        colon = body.find(": ", close)
        if close < 0 or colon < 0:
            return None
        fields["F"] = body[14 : close + 1]
        _scan_fields(_split_tokens(body[close + 1 : colon].strip()), 0, fields, [])
        reason = body[colon + 2 :]
        text = f"rejected from {fields['F']}: {reason}"
    else:
        at = body.find("rejected by non-SMTP ACL")
        prefix = _split_tokens(body[:at].strip()) if at > 0 else []
        if not prefix or not all(_FIELD_RE.match(t) for t in prefix):  # `F=<s> [U=u] rejected by …` only
            return None
        _scan_fields(prefix, 0, fields, [])
        text = body[at:]
    if "message too big" in text:
        fields["kind"] = "SIZE"
        size = _READ_SIZE_RE.search(text)
        if size:
            fields["S"] = size.group(1)
    p = ParsedLine("rejection")
    p.fields = fields
    p.message = text
    return p


def _kv_tokens(s: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for tok in s.split():
        eq = tok.find("=")
        if eq > 0:
            out[tok[:eq]] = tok[eq + 1 :]
    return out


def _host_fields(body: str) -> dict[str, str]:
    """H=/I= of a per-message warning line (spam verdict): the client host and IP."""
    fields: dict[str, str] = {}
    if body.startswith("H="):
        tokens = body.split(" ")
        _, _ = _take_host(tokens, 0, fields)
    return fields


# ------------------------------------------------------------------------------------------- field scanner


# runs of plain characters as one unit (not one alternation per character): same tokens, ~2.7x faster
_TOKEN_RE = re.compile(r'(?:[^ "]+|"(?:[^"\\]+|\\.)*"?)+')


def _split_tokens(s: str) -> list[str]:
    """Split on spaces, keeping `KEY="…"` quoted values (with \\" and \\\\ escapes) as one token."""
    if '"' not in s:
        return s.split()
    return _TOKEN_RE.findall(s)


def unquote(value: str) -> str:
    """`"a \\"b\\" c"` -> `a "b" c` (Exim's C-style quoting of T=, C=, DN=)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    elif value.startswith('"'):
        value = value[1:]
    if "\\" not in value:
        return value
    out = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n and value[i + 1] in '"\\':
            out.append(value[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _has_ip(part: str) -> bool:
    """Whether an H= part carries the `[ip]` (a HELO in parentheses may itself look like `([1.2.3.4])`)."""
    if part.startswith("("):
        return ")" in part and "[" in part[part.rfind(")") :]
    return "[" in part


def _take_host(tokens: list[str], i: int, fields: dict[str, str], key: str = "H") -> tuple[int, bool]:
    """Consume an `H=` group starting at tokens[i] ("H=name", "(helo)", "[ip]:port"). Returns (next index,
    whether the group ended with a glued `:` separator)."""
    first = tokens[i][len(key) + 1 :]
    parts = [first]
    i += 1
    # a name may be followed by "(helo)" and/or "[ip]…"; "(helo" may contain spaces up to ")"
    while not _has_ip(parts[-1]) and i < len(tokens):
        nxt = tokens[i]
        if parts[-1].startswith("(") and not parts[-1].rstrip(":").endswith(")"):
            parts.append(nxt)
            i += 1
            continue
        if nxt.startswith("(") or nxt.startswith("["):
            parts.append(nxt)
            i += 1
            continue
        break
    last = parts[-1]
    glued = last.endswith(":") and not last.endswith("]:")
    if glued:
        parts[-1] = last = last[:-1]
    elif last.endswith("]:"):
        glued = True
        parts[-1] = last = last[:-1]
    name = helo = ip = port = ""
    for part in parts:
        if part.startswith("(") and not _has_ip(part):
            helo = part.strip("()")
        elif "[" in part:
            pre, _, rest = part.partition("[")
            if pre and not name:
                name = pre
            ip, _, tail = rest.partition("]")
            tail = tail.rstrip("*")
            if tail.startswith(":"):
                port = tail[1:]
        elif not name:
            name = part
        else:
            helo = helo or part
    fields[key] = " ".join(parts)
    fields[key + "name"] = name
    fields[key + "helo"] = helo
    fields[key + "ip"] = ip
    if port:
        fields[key + "port"] = port
    return i, glued


def _scan_fields(tokens: list[str], i: int, fields: dict[str, str], flags: list[str]) -> tuple[int, str]:
    """Scan `KEY=value` tokens from tokens[i]; stop at the `: message` separator.
    Returns (index where the scan stopped, the message text after a separator or "")."""
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == ":":
            return i + 1, " ".join(tokens[i + 1 :])
        m = _FIELD_RE.match(tok)
        if m:
            key = m.group()[:-1]
            if key == "H":
                i, glued = _take_host(tokens, i, fields)
                if glued:
                    return i, " ".join(tokens[i:])
                continue
            value = tok[m.end() :]
            glued = False
            if value.startswith('"'):
                # quoted value; a glued ':' after the closing quote separates the message
                if value.endswith('":') and not value.endswith('\\":'):
                    value = value[:-1]
                    glued = True
                fields[key] = unquote(value)
            else:
                if value.endswith(":"):  # `R=router:` / `[ip]:port:` — the message follows
                    value = value[:-1]
                    glued = True
                fields[key] = value
            i += 1
            if glued:
                return i, " ".join(tokens[i:])
            continue
        if tok.endswith(":") and len(tok) > 1 and tok[0] != "[":
            # a bare word glued to the separator ("CV=no:" handled above; this is e.g. "defer (-1):")
            flags.append(tok[:-1])
            return i + 1, " ".join(tokens[i + 1 :])
        flags.append(tok)
        i += 1
    return i, ""


# ----------------------------------------------------------------------------------------------- arrival


def _closing_quote(text: str, start: int) -> int:
    """Index of the `"` closing a quoted value that starts at `start` (len(text) if none): the first `"` not
    escaped, i.e. preceded by an even number of backslashes since `start` (found with str.find, not a loop
    over every character of the subject)."""
    j = start
    while True:
        q = text.find('"', j)
        if q < 0:
            return len(text)
        k = q
        while k > start and text[k - 1] == "\\":
            k -= 1
        if (q - k) % 2 == 0:
            return q
        j = q + 1


def _arrival(rest: str) -> ParsedLine:
    p = ParsedLine("arrival")
    # sender: "<>" or an address, possibly with a quoted local part containing spaces
    if rest.startswith('"'):
        close = rest.find('"', 1)
        while close > 0 and rest[close - 1] == "\\":
            close = rest.find('"', close + 1)
        sp = rest.find(" ", close if close > 0 else 0)
    else:
        sp = rest.find(" ")
    if sp < 0:
        p.address = rest
        return p
    p.address = rest[:sp]
    rest = rest[sp + 1 :]
    # ` from <…>` and ` for …` are appended after T="…": cut them off the end first
    tail_for = ""
    tail_from = ""
    body = rest
    t_at = body.find(' T="')
    search_from = 0
    if t_at >= 0:
        search_from = _closing_quote(body, t_at + 4)  # skip the quoted subject
    fi = body.find(" for ", search_from) if not body.startswith("for ") else 0
    if body.startswith("for "):
        tail_for = body[4:]
        body = ""
    elif fi >= 0:
        tail_for = body[fi + 5 :]
        body = body[:fi]
    fr = body.find(" from <", search_from)
    if body.startswith("from <"):
        fr = 0
        tail_from = body[5:]
        body = ""
    elif fr >= 0:
        tail_from = body[fr + 6 :]
        body = body[:fr]
    fields: dict[str, str] = {}
    flags: list[str] = []
    tokens = _split_tokens(body) if body else []
    _scan_fields(tokens, 0, fields, flags)
    if tail_from:
        fields["from"] = tail_from.strip().strip("<>")
    if tail_for:
        fields["for"] = tail_for.strip()
    if flags:
        fields["flags"] = " ".join(flags)
    p.fields = fields
    return p


# ----------------------------------------------------------------------------------- delivery/defer/failure


def _take_group(tokens: list[str], i: int, closer: str) -> tuple[int, str, bool]:
    """Tokens from tokens[i] up to the one ending in `closer` ("(a, b)", "<x y@z>"), joined; returns (next
    index, the group without a glued `:`, whether a `:` separator was glued to it)."""
    parts = []
    while i < len(tokens):
        tok = tokens[i]
        parts.append(tok)
        i += 1
        if tok.rstrip(":").endswith(closer):
            break
    group = " ".join(parts)
    return i, group.rstrip(":"), group.endswith(":")


def _result(rest: str, kind: str) -> ParsedLine:
    p = ParsedLine(kind)
    tokens = _split_tokens(rest)
    n = len(tokens)
    i = 0
    addr: list[str] = []
    message = ""
    done = False
    # the address part: tokens up to "(parents)", "<original>", a KEY= field, "defer"/"routing", or ": "
    while i < n:
        tok = tokens[i]
        if addr and (tok.startswith("(") or tok.startswith("<") or _FIELD_RE.match(tok) or tok == ":"):
            break
        if addr and kind == "defer" and tok in ("defer", "routing"):
            break
        if tok.endswith(":") and kind != "delivery" and not tok.endswith("]:"):
            addr.append(tok[:-1])
            i += 1
            message = " ".join(tokens[i:])
            done = True
            break
        addr.append(tok)
        i += 1
    p.address = " ".join(addr)
    if not done and i < n and tokens[i].startswith("("):
        i, parents, glued = _take_group(tokens, i, ")")
        p.parents = parents[1:-1]
        if glued and kind != "delivery":
            message, done = " ".join(tokens[i:]), True
    if not done and i < n and tokens[i].startswith("<"):
        i, original, glued = _take_group(tokens, i, ">")
        p.original = original[1:-1]
        if glued and kind != "delivery":
            message, done = " ".join(tokens[i:]), True
    fields: dict[str, str] = {}
    flags: list[str] = []
    if not done:
        i, message = _scan_fields(tokens, i, fields, flags)
    if kind == "defer":
        # "defer (N)" / "routing defer (N)" may sit among the fields; the errno is kept
        words = " ".join(flags)
        m = re.search(r"defer \((-?\d+|[A-Z]+)\)", words)
        if m:
            fields["errno"] = m.group(1)
        flags = [
            f for f in flags if f not in ("defer", "routing") and not (f.startswith("(") and f.endswith(")"))
        ]
    if message:
        m = _TRAILING_DT_RE.search(message)
        if m:
            fields["DT"] = m.group(1)
            message = message[: m.start()]
    if flags:
        fields["flags"] = " ".join(flags)
    p.fields = fields
    p.message = message
    return p


# ----------------------------------------------------------------------------------------- no-id lines


def _no_id_line(body: str) -> ParsedLine:
    if "rejected RCPT" in body:
        return _rejection(body, "RCPT")
    if "rejected MAIL" in body:
        return _rejection(body, "MAIL")
    if "rejected after DATA" in body:
        return _rejection(body, "DATA")
    for rule, prefixes in _IGNORE_RULES:
        if body.startswith(prefixes):
            p = ParsedLine("ignored")
            p.rule = rule
            return p
    if body.startswith(("H=", "U=", "F=", "I=")) or " authenticator failed for " in body:
        for rule, marker in _SESSION_MARKERS:
            if marker in body:
                p = ParsedLine("ignored")
                p.rule = rule
                return p
    if " authenticator failed for " in body or body.startswith(("rejected ", "refused ")):
        p = ParsedLine("ignored")
        p.rule = "connection"
        return p
    return _unparsed("unrecognised line without a message id")


def _rejection(body: str, kind: str) -> ParsedLine:
    """SMTP-time rejection: `[H=… U=… F=<s> A=…] [temporarily ]rejected RCPT <r>: reason` and friends."""
    p = ParsedLine("rejection")
    fields: dict[str, str] = {"kind": kind}
    at = body.find("temporarily rejected")
    temporary = at >= 0
    if not temporary:
        at = body.find("rejected ")
    fields["temporary"] = "1" if temporary else ""
    prefix = body[:at].strip()
    text = body[at:]
    if prefix:
        flags: list[str] = []
        _scan_fields(_split_tokens(prefix), 0, fields, flags)
    if kind == "RCPT":
        m = _REJECT_RCPT_RE.search(text)
        if m:
            p.address = m.group(2)
    elif kind == "MAIL":
        # "rejected MAIL <s>[: reason]" or "rejected MAIL FROM:<s> H=…: message too big: …"
        after = text[text.find("rejected MAIL") + 13 :]
        m = _RCPT_ADDR_RE.search(after)
        if m:
            fields["F"] = "<" + m.group(1) + ">"
        if after.startswith(" FROM:"):
            fields["kind"] = "SIZE" if "too big" in after else "MAIL"
            tail = after.split(">", 1)[1] if ">" in after else ""
            tail_fields: dict[str, str] = {}
            _scan_fields(_split_tokens(tail.strip()), 0, tail_fields, [])
            for k, v in tail_fields.items():
                fields.setdefault(k, v)
            if "too big" in text:
                sender = m.group(1) if m else ""
                text = f"rejected MAIL FROM:<{sender}>: " + text[text.find("message too big") :]
    p.fields = fields
    p.message = text
    return p
