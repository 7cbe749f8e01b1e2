//! Exim main-log line -> `Parsed`: the one parser of eximtrack (pure: no Python, no I/O).
//!
//! The rules are those documented in stream/parse.py (which exposes this parser to Python as `parse_line`);
//! tests/golden/parser holds what the pure-Python parser this replaced made of 42k real, generated and
//! mutated lines, and this must give the same for every one. Python's string semantics are kept where they
//! matter: `str.split()`/`str.strip()` whitespace, code-point counts and slices, `re` character classes.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

pub type S<'a> = Cow<'a, str>;

/// What one line says. Unused parts stay empty (`zone` None), as in stream/parse.py's ParsedLine.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed<'a> {
    pub kind: &'static str,
    pub date: &'a str,
    pub time: &'a str,
    pub zone: Option<&'a str>,
    pub pid: &'a str,
    pub msgid: &'a str,
    pub flag: &'a str,
    pub body: &'a str,
    pub fields: Fields<'a>,
    pub address: S<'a>,
    pub original: S<'a>,
    pub parents: S<'a>,
    pub message: S<'a>,
    pub rule: &'static str,
    pub reason: &'static str,
}

/// `KEY -> value` in insertion order; setting a key again keeps its place (a Python dict).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields<'a>(pub Vec<(S<'a>, S<'a>)>);

impl<'a> Fields<'a> {
    pub fn set(&mut self, key: impl Into<S<'a>>, value: impl Into<S<'a>>) {
        let key = key.into();
        let value = value.into();
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            self.0.push((key, value));
        }
    }
    pub fn setdefault(&mut self, key: S<'a>, value: S<'a>) {
        if !self.0.iter().any(|(k, _)| *k == key) {
            self.0.push((key, value));
        }
    }
    pub fn get(&self, key: &str) -> Option<&S<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

fn new(kind: &'static str) -> Parsed<'static> {
    Parsed {
        kind,
        ..Default::default()
    }
}

fn unparsed(reason: &'static str) -> Parsed<'static> {
    Parsed {
        kind: "unparsed",
        reason,
        ..Default::default()
    }
}

fn ignored(rule: &'static str) -> Parsed<'static> {
    Parsed {
        kind: "ignored",
        rule,
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------- Python string semantics

/// `str.isspace()`: the whitespace of `str.split()`, `str.strip()` and `re`'s `\s`.
pub fn py_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\x1c'..='\x1f' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}'
        | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// `re`'s `\S` as a character class.
#[cfg(test)]
const PY_NONSPACE: &str = r"[^\t\n\x0B\x0C\r\x1C-\x1F \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]";

/// `s.split()`.
fn py_split(s: &str) -> Vec<&str> {
    s.split(py_space).filter(|t| !t.is_empty()).collect()
}

/// `s.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// `s[n:]` with `n` counted in code points.
fn from_char(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[i..],
        None => "",
    }
}

/// `s[1:-1]` (code points).
fn inner(s: &str) -> &str {
    let mut it = s.chars();
    let first = match it.next() {
        Some(c) => c.len_utf8(),
        None => return "",
    };
    match it.next_back() {
        Some(c) => &s[first..s.len() - c.len_utf8()],
        None => "",
    }
}

/// `s[i:]` for a Python index that may be -1 (`find` missed): the last code point.
fn from_py_index(s: &str, i: Option<usize>) -> &str {
    match i {
        Some(i) => &s[i..],
        None => s.char_indices().last().map_or("", |(j, _)| &s[j..]),
    }
}

/// `s[:i]` for a Python index that may be -1: all but the last code point.
fn until_py_index(s: &str, i: Option<usize>) -> &str {
    match i {
        Some(i) => &s[..i],
        None => s.char_indices().last().map_or("", |(j, _)| &s[..j]),
    }
}

/// `s.find(pat, start)` (None for -1; a start past the end finds nothing).
fn find_from(s: &str, pat: &str, start: usize) -> Option<usize> {
    if start > s.len() {
        return None;
    }
    s[start..].find(pat).map(|i| i + start)
}

fn join<'a>(tokens: &[&'a str]) -> S<'a> {
    match tokens.len() {
        0 => Cow::Borrowed(""),
        1 => Cow::Borrowed(tokens[0]),
        _ => Cow::Owned(tokens.join(" ")),
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

fn alnum(s: &[u8]) -> bool {
    s.iter().all(|b| b.is_ascii_alphanumeric())
}

// ------------------------------------------------------------------------------------------------- line

/// An Exim message id: `tttttt-pppppp-ff` (<= 4.96) or `tttttt-ppppppppppp-ffff` (4.97+).
pub fn is_msgid(token: &str) -> bool {
    let b = token.as_bytes();
    match b.len() {
        16 => {
            b[6] == b'-' && b[13] == b'-' && alnum(&b[..6]) && alnum(&b[7..13]) && alnum(&b[14..])
        }
        23 => {
            b[6] == b'-' && b[18] == b'-' && alnum(&b[..6]) && alnum(&b[7..18]) && alnum(&b[19..])
        }
        _ => false,
    }
}

/// Parse one main-log line (without its newline). Never fails: what it cannot read is `unparsed`.
pub fn parse_line(text: &str) -> Parsed<'_> {
    let text = text.strip_suffix('\r').unwrap_or(text);
    let mut head = ['\0'; 20];
    let mut count = 0;
    for c in text.chars().take(20) {
        head[count] = c;
        count += 1;
    }
    if count < 20
        || head[4] != '-'
        || head[7] != '-'
        || head[10] != ' '
        || head[13] != ':'
        || head[16] != ':'
    {
        if py_strip(text).is_empty() {
            return ignored("blank");
        }
        if text.starts_with("  ") {
            return ignored("process"); // continuation of a multi-line configuration-error entry
        }
        return unparsed("no Exim timestamp at the start of the line");
    }
    let digit = |i: usize| head[i].is_ascii_digit();
    if !(0..4).all(digit) || !(5..7).all(digit) || !(8..10).all(digit) {
        return unparsed("malformed date");
    }
    if !(11..13).all(digit) || !(14..16).all(digit) || !(17..19).all(digit) {
        return unparsed("malformed time");
    }
    // the first 19 code points are ASCII: byte and code-point positions agree from here on
    let b = text.as_bytes();
    let n = b.len();
    let date = &text[0..10];
    let mut pos = 19;
    let time;
    if pos < n && b[pos] == b'.' {
        let mut end = pos + 1;
        while end < n && b[end].is_ascii_digit() {
            end += 1;
        }
        time = &text[11..end];
        pos = end;
    } else {
        time = &text[11..19];
    }
    let mut zone = None;
    if pos + 5 < n
        && b[pos] == b' '
        && (b[pos + 1] == b'+' || b[pos + 1] == b'-')
        && b[pos + 2..pos + 6].iter().all(|c| c.is_ascii_digit())
        && (pos + 6 == n || b[pos + 6] == b' ')
    {
        zone = Some(&text[pos + 1..pos + 6]);
        pos += 6;
    }
    let mut pid = "";
    if pos + 2 < n && b[pos] == b' ' && b[pos + 1] == b'[' {
        if let Some(close) = find_from(text, "]", pos + 2) {
            if close > pos + 2 && all_digits(&text[pos + 2..close]) {
                pid = &text[pos + 2..close];
                pos = close + 1;
            }
        }
    }
    if pos >= n || b[pos] != b' ' {
        return unparsed("nothing after the timestamp");
    }
    pos += 1;
    let mut msgid = "";
    let sp = find_from(text, " ", pos);
    let token = match sp {
        Some(sp) => &text[pos..sp],
        None => &text[pos..],
    };
    if is_msgid(token) {
        msgid = token;
        pos = match sp {
            Some(sp) => sp + 1,
            None => n,
        };
    }
    let body = &text[pos..];
    let mut p = if msgid.is_empty() {
        no_id_line(body)
    } else {
        message_line(body, msgid)
    };
    p.date = date;
    p.time = time;
    p.zone = zone;
    p.pid = pid;
    p.body = body;
    p
}

// ---------------------------------------------------------------------------------------- message lines

fn message_flag(flag: &[u8]) -> Option<&'static str> {
    Some(match flag {
        b"<=" | b"(=" => "arrival",
        b"=>" | b"->" | b">>" | b"*>" => "delivery",
        b"==" => "defer",
        b"**" => "failure",
        _ => return None,
    })
}

fn message_line<'a>(body: &'a str, msgid: &'a str) -> Parsed<'a> {
    let b = body.as_bytes();
    if b.len() >= 3 && b[2] == b' ' {
        if let Some(kind) = message_flag(&b[..2]) {
            let mut p = if kind == "arrival" {
                arrival(&body[3..])
            } else {
                result(&body[3..], kind)
            };
            p.flag = &body[..2];
            p.msgid = msgid;
            return p;
        }
    }
    let mut p = message_state(body);
    p.msgid = msgid;
    p
}

const STATE_PREFIXES: &[(&str, &str)] = &[
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
    ("original recipients ignored", "recipients_ignored"), // the system filter delivered it elsewhere
];

const INFO_PREFIXES: &[&str] = &[
    "SMTP error from remote",
    "SMTP connection outbound",
    "SMTP timeout",
    "DKIM:",
    "SA:",
    "PRDR ",
    "event ",
    "Warning:",
    "check_mail_permissions",
    "SMTP data timeout",
    "SMTP connection",
    "TLS error",
    "TLS session",
    "Connection refused",
    "retry time not reached",
    "failed to expand",
    "lowest numbered MX",
    "all hosts",
    "tainted",
    "DKIM ",
    "dkim",
    "ARC:",
    "DMARC",
    "SPF",
    "delivery deferred",
    "Message ",
    "message ",
    "Remote host",
    "host ",
    "Deferred",
    "internal problem",
    "Sender ",
];

#[cfg(test)]
static SPAM_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"SpamAssassin as ({ns}+) detected (?:OUTGOING {ns}+ )?message as (NOT )?spam \(([-0-9.]+)\)",
        ns = PY_NONSPACE
    ))
    .unwrap()
});

/// The first match of SPAM_RE in `body`, scanned by hand: (account, whether `NOT ` spam, score). Each part of
/// the pattern is matched in the one way it can be (a run of non-space characters ends at a space).
fn spam_verdict(body: &str) -> Option<(&str, bool, &str)> {
    const HEAD: &str = "SpamAssassin as ";
    let mut from = 0;
    while let Some(at) = body[from..].find(HEAD) {
        let start = from + at;
        if let Some(m) = spam_after(&body[start + HEAD.len()..]) {
            return Some(m);
        }
        from = start + 1;
    }
    None
}

fn spam_after(rest: &str) -> Option<(&str, bool, &str)> {
    let nonspace_run = |s: &str| s.find(py_space).unwrap_or(s.len());
    let end = nonspace_run(rest);
    if end == 0 {
        return None;
    }
    let account = &rest[..end];
    let r = rest[end..].strip_prefix(" detected ")?;
    let tail = |r: &str| -> Option<(bool, usize, usize)> {
        let base = r.as_ptr() as usize;
        let r = r.strip_prefix("message as ")?;
        let (not, r) = match r.strip_prefix("NOT spam (") {
            Some(r) => (true, r),
            None => (false, r.strip_prefix("spam (")?),
        };
        let n = r
            .bytes()
            .take_while(|b| matches!(b, b'-' | b'0'..=b'9' | b'.'))
            .count();
        if n == 0 || r.as_bytes().get(n) != Some(&b')') {
            return None;
        }
        let at = r.as_ptr() as usize - base;
        Some((not, at, at + n))
    };
    if let Some(o) = r.strip_prefix("OUTGOING ") {
        let end = nonspace_run(o);
        if end > 0 {
            if let Some(t) = o[end..].strip_prefix(' ') {
                if let Some((not, a, b)) = tail(t) {
                    return Some((account, not, &t[a..b]));
                }
            }
        }
    }
    let (not, a, b) = tail(r)?;
    Some((account, not, &r[a..b]))
}

fn message_state(body: &str) -> Parsed<'_> {
    if (body.starts_with("rejected from <") || body.starts_with("local_scan() function "))
        || body.contains(" rejected by non-SMTP ACL")
    {
        if let Some(p) = local_rejection(body) {
            return p;
        }
    }
    for (prefix, kind) in STATE_PREFIXES {
        if let Some(rest) = body.strip_prefix(prefix) {
            let mut p = new(kind);
            if *kind == "identification" || *kind == "completed" {
                p.fields = kv_tokens(rest);
            }
            p.message = Cow::Borrowed(body);
            return p;
        }
    }
    if body.contains(" rejected after DATA")
        || body.starts_with("rejected after DATA")
        || body.contains("temporarily rejected after DATA")
    {
        return rejection(body, "DATA");
    }
    if body.starts_with("H=")
        || body.starts_with("U=")
        || body.starts_with("F=")
        || body.starts_with("I=[")
    {
        if let Some((account, not, score)) = spam_verdict(body) {
            let mut p = new("spam");
            p.fields.set("score", score);
            p.fields.set("account", account);
            p.fields.set("verdict", if not { "ham" } else { "spam" });
            if body.starts_with("H=") {
                let tokens: Vec<&str> = body.split(' ').collect();
                take_host(&tokens, 0, &mut p.fields);
            }
            p.message = Cow::Borrowed(body);
            return p;
        }
        let mut p = new("info");
        p.message = Cow::Borrowed(body);
        return p;
    }
    if let Some(ei) = body.find(": error ignored") {
        if ei > 0 {
            let mut p = new("error_ignored");
            p.address = Cow::Borrowed(&body[..ei]);
            p.message = Cow::Borrowed(&body[ei + 2..]);
            return p;
        }
    }
    if INFO_PREFIXES.iter().any(|x| body.starts_with(x)) {
        if body.contains("SpamAssassin") {
            if let Some((account, _, score)) = spam_verdict(body) {
                let mut p = new("spam");
                p.fields.set("score", score);
                p.fields.set("account", account);
                p.message = Cow::Borrowed(body);
                return p;
            }
        }
        let mut p = new("info");
        p.message = Cow::Borrowed(body);
        return p;
    }
    if py_strip(body).is_empty() {
        return unparsed("a message id with no text");
    }
    let mut p = new("note");
    p.message = Cow::Borrowed(body);
    p
}

static LOCAL_SCAN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^local_scan\(\) function (?:timed out|crashed with signal [0-9]+) - message (temporarily )?rejected(?: \(size ([0-9]+)\))?",
    )
    .unwrap()
});
static READ_SIZE_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bread=([0-9]+)").unwrap());

/// A message rejected outside SMTP (stream/parse.py `_local_rejection`); None if the body is not one of the
/// forms Exim 4.96 writes.
fn local_rejection(body: &str) -> Option<Parsed<'_>> {
    let mut fields = Fields::default();
    fields.set("kind", "LOCAL");
    fields.set("temporary", "");
    let text: S<'_>;
    if let Some(m) = LOCAL_SCAN_RE.captures(body) {
        fields.set("temporary", if m.get(1).is_some() { "1" } else { "" });
        if let Some(size) = m.get(2) {
            fields.set("S", size.as_str());
        }
        text = Cow::Borrowed(body);
    } else if body.starts_with("rejected from <") {
        let close = find_from(body, ">", 15)?;
        let colon = find_from(body, ": ", close)?;
        fields.set("F", &body[14..close + 1]);
        scan_fields(
            &split_tokens(py_strip(&body[close + 1..colon])),
            0,
            &mut fields,
            &mut Vec::new(),
        );
        let reason = &body[colon + 2..];
        text = Cow::Owned(format!(
            "rejected from {}: {}",
            fields.get("F").unwrap(),
            reason
        ));
    } else {
        let at = body.find("rejected by non-SMTP ACL");
        let prefix = match at {
            Some(at) if at > 0 => split_tokens(py_strip(&body[..at])),
            _ => Vec::new(),
        };
        if prefix.is_empty() || !prefix.iter().all(|t| field_key(t).is_some()) {
            return None; // `F=<s> [U=u] rejected by …` only
        }
        scan_fields(&prefix, 0, &mut fields, &mut Vec::new());
        text = Cow::Borrowed(&body[at.unwrap()..]);
    }
    if text.contains("message too big") {
        fields.set("kind", "SIZE");
        if let Some(m) = READ_SIZE_RE.captures(&text) {
            let size = m.get(1).unwrap().as_str().to_owned();
            fields.set("S", size);
        }
    }
    let mut p = new("rejection");
    p.fields = fields;
    p.message = text;
    Some(p)
}

fn kv_tokens(s: &str) -> Fields<'_> {
    let mut out = Fields::default();
    for tok in py_split(s) {
        if let Some(eq) = tok.find('=') {
            if eq > 0 {
                out.set(&tok[..eq], &tok[eq + 1..]);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------ field scanner

/// Split on spaces, keeping `KEY="…"` quoted values (with \" and \\ escapes) as one token: the matches of
/// `(?:[^ "]+|"(?:[^"\\]+|\\.)*"?)+` (a token runs to a space outside quotes; a quote runs to the next
/// unescaped quote, or to a backslash before a newline, or to the end), scanned by hand.
fn split_tokens(s: &str) -> Vec<&str> {
    if !s.contains('"') {
        return py_split(s);
    }
    let b = s.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && b[i] != b' ' {
            if b[i] == b'"' {
                i += 1;
                while i < n {
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < n && b[i + 1] != b'\n' => {
                            // `\\.`: the escaped character (one code point, maybe several bytes)
                            i += 1;
                            i += s[i..].chars().next().map_or(1, char::len_utf8);
                        }
                        b'\\' => break, // before a newline or at the end: the quote ends unclosed here
                        _ => i += 1,
                    }
                }
            } else {
                i += 1;
            }
        }
        out.push(&s[start..i]);
    }
    out
}

/// `"a \"b\" c"` -> `a "b" c` (Exim's C-style quoting of T=, C=, DN=).
pub fn unquote(value: &str) -> S<'_> {
    let mut v = value;
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        v = &v[1..v.len() - 1];
    } else if let Some(rest) = v.strip_prefix('"') {
        v = rest;
    }
    if !v.contains('\\') {
        return Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if next == '"' || next == '\\' {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// `[A-Za-z][A-Za-z0-9]*\*?=` at the start of `tok`: the key (with its `*`) and where the value starts.
fn field_key(tok: &str) -> Option<(&str, usize)> {
    let b = tok.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphabetic() {
        return None;
    }
    let mut i = 1;
    while i < b.len() && b[i].is_ascii_alphanumeric() {
        i += 1;
    }
    if i < b.len() && b[i] == b'*' {
        i += 1;
    }
    if i < b.len() && b[i] == b'=' {
        Some((&tok[..i], i + 1))
    } else {
        None
    }
}

/// Whether an H= part carries the `[ip]` (a HELO in parentheses may itself look like `([1.2.3.4])`).
fn has_ip(part: &str) -> bool {
    if part.starts_with('(') {
        match part.rfind(')') {
            Some(close) => part[close..].contains('['),
            None => false,
        }
    } else {
        part.contains('[')
    }
}

/// Consume an `H=` group starting at tokens[i] ("H=name", "(helo)", "[ip]:port"). Returns (next index,
/// whether the group ended with a glued `:` separator).
fn take_host<'a>(tokens: &[&'a str], mut i: usize, fields: &mut Fields<'a>) -> (usize, bool) {
    let mut parts: Vec<&'a str> = vec![&tokens[i][2..]];
    i += 1;
    while !has_ip(parts[parts.len() - 1]) && i < tokens.len() {
        let last = parts[parts.len() - 1];
        let next = tokens[i];
        if last.starts_with('(') && !last.trim_end_matches(':').ends_with(')') {
            parts.push(next);
            i += 1;
            continue;
        }
        if next.starts_with('(') || next.starts_with('[') {
            parts.push(next);
            i += 1;
            continue;
        }
        break;
    }
    let k = parts.len() - 1;
    let glued = parts[k].ends_with(':');
    if glued {
        parts[k] = &parts[k][..parts[k].len() - 1];
    }
    let (mut name, mut helo, mut ip, mut port) = ("", "", "", "");
    for part in &parts {
        if part.starts_with('(') && !has_ip(part) {
            helo = part.trim_matches(|c| c == '(' || c == ')');
        } else if let Some(open) = part.find('[') {
            let pre = &part[..open];
            if !pre.is_empty() && name.is_empty() {
                name = pre;
            }
            let rest = &part[open + 1..];
            let tail;
            match rest.find(']') {
                Some(close) => {
                    ip = &rest[..close];
                    tail = &rest[close + 1..];
                }
                None => {
                    ip = rest;
                    tail = "";
                }
            }
            let tail = tail.trim_end_matches('*');
            if let Some(p) = tail.strip_prefix(':') {
                port = p;
            }
        } else if name.is_empty() {
            name = part;
        } else if helo.is_empty() {
            helo = part;
        }
    }
    fields.set("H", join(&parts));
    fields.set("Hname", name);
    fields.set("Hhelo", helo);
    fields.set("Hip", ip);
    if !port.is_empty() {
        fields.set("Hport", port);
    }
    (i, glued)
}

/// Scan `KEY=value` tokens from tokens[i]; stop at the `: message` separator. Returns (index where the scan
/// stopped, the message text after a separator or "").
fn scan_fields<'a>(
    tokens: &[&'a str],
    mut i: usize,
    fields: &mut Fields<'a>,
    flags: &mut Vec<&'a str>,
) -> (usize, S<'a>) {
    let n = tokens.len();
    while i < n {
        let tok = tokens[i];
        if tok == ":" {
            return (i + 1, join(&tokens[i + 1..]));
        }
        if let Some((key, start)) = field_key(tok) {
            if key == "H" {
                let (next, glued) = take_host(tokens, i, fields);
                i = next;
                if glued {
                    return (i, join(&tokens[i..]));
                }
                continue;
            }
            let mut value = &tok[start..];
            let mut glued = false;
            if value.starts_with('"') {
                // quoted value; a glued ':' after the closing quote separates the message
                if value.ends_with("\":") && !value.ends_with("\\\":") {
                    value = &value[..value.len() - 1];
                    glued = true;
                }
                fields.set(key, unquote(value));
            } else {
                if let Some(v) = value.strip_suffix(':') {
                    value = v; // `R=router:` / `[ip]:port:` — the message follows
                    glued = true;
                }
                fields.set(key, value);
            }
            i += 1;
            if glued {
                return (i, join(&tokens[i..]));
            }
            continue;
        }
        if tok.ends_with(':') && tok.chars().count() > 1 && !tok.starts_with('[') {
            // a bare word glued to the separator (e.g. "defer (-1):")
            flags.push(&tok[..tok.len() - 1]);
            return (i + 1, join(&tokens[i + 1..]));
        }
        flags.push(tok);
        i += 1;
    }
    (i, Cow::Borrowed(""))
}

// ------------------------------------------------------------------------------------------------ arrival

/// Index of the `"` closing a quoted value that starts at `start` (len if none): the first `"` not escaped.
fn closing_quote(text: &str, start: usize) -> usize {
    let b = text.as_bytes();
    let mut j = start;
    loop {
        let q = match find_from(text, "\"", j) {
            Some(q) => q,
            None => return text.len(),
        };
        let mut k = q;
        while k > start && b[k - 1] == b'\\' {
            k -= 1;
        }
        if (q - k) % 2 == 0 {
            return q;
        }
        j = q + 1;
    }
}

fn arrival(rest: &str) -> Parsed<'_> {
    let mut p = new("arrival");
    // sender: "<>" or an address, possibly with a quoted local part containing spaces
    let sp = if rest.starts_with('"') {
        let b = rest.as_bytes();
        let mut close = find_from(rest, "\"", 1);
        while let Some(c) = close {
            if b[c - 1] == b'\\' {
                close = find_from(rest, "\"", c + 1);
            } else {
                break;
            }
        }
        find_from(rest, " ", close.unwrap_or(0))
    } else {
        rest.find(' ')
    };
    let Some(sp) = sp else {
        p.address = Cow::Borrowed(rest);
        return p;
    };
    p.address = Cow::Borrowed(&rest[..sp]);
    let mut body = &rest[sp + 1..];
    // ` from <…>` and ` for …` are appended after T="…": cut them off the end first
    let mut tail_for = "";
    let mut tail_from = "";
    let search_from = match body.find(" T=\"") {
        Some(t_at) => closing_quote(body, t_at + 4), // skip the quoted subject
        None => 0,
    };
    if let Some(rest_for) = body.strip_prefix("for ") {
        tail_for = rest_for;
        body = "";
    } else if let Some(fi) = find_from(body, " for ", search_from) {
        tail_for = &body[fi + 5..];
        body = &body[..fi];
    }
    if body.starts_with("from <") {
        tail_from = &body[5..];
        body = "";
    } else if let Some(fr) = find_from(body, " from <", search_from) {
        tail_from = &body[fr + 6..];
        body = &body[..fr];
    }
    let mut fields = Fields::default();
    let mut flags = Vec::new();
    let tokens = if body.is_empty() {
        Vec::new()
    } else {
        split_tokens(body)
    };
    scan_fields(&tokens, 0, &mut fields, &mut flags);
    if !tail_from.is_empty() {
        fields.set(
            "from",
            py_strip(tail_from).trim_matches(|c| c == '<' || c == '>'),
        );
    }
    if !tail_for.is_empty() {
        fields.set("for", py_strip(tail_for));
    }
    if !flags.is_empty() {
        fields.set("flags", join(&flags));
    }
    p.fields = fields;
    p
}

// ------------------------------------------------------------------------------- delivery/defer/failure

/// Tokens from tokens[i] up to the one ending in `closer`, joined; returns (next index, the group without a
/// glued `:`, whether a `:` separator was glued to it).
fn take_group<'a>(tokens: &[&'a str], mut i: usize, closer: char) -> (usize, S<'a>, bool) {
    let start = i;
    while i < tokens.len() {
        let tok = tokens[i];
        i += 1;
        if tok.trim_end_matches(':').ends_with(closer) {
            break;
        }
    }
    let group = join(&tokens[start..i]);
    let glued = group.ends_with(':');
    (i, sub(group, |s| s.trim_end_matches(':')), glued)
}

/// `cut` of a borrowed or owned text, borrowed or owned as it was.
fn sub<'a>(text: S<'a>, cut: impl Fn(&str) -> &str) -> S<'a> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(cut(s)),
        Cow::Owned(s) => Cow::Owned(cut(&s).to_owned()),
    }
}

static DEFER_ERRNO_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"defer \((-?\d+|[A-Z]+)\)").unwrap());

/// `re.search(r" DT=(\S+)$", message)`: (start of the match, the value).
fn trailing_dt(message: &str) -> Option<(usize, &str)> {
    let at = message.rfind(" DT=")?;
    let rest = &message[at + 4..];
    let value = rest.strip_suffix('\n').unwrap_or(rest);
    if value.is_empty() || value.chars().any(py_space) {
        return None;
    }
    Some((at, value))
}

fn result<'a>(rest: &'a str, kind: &'static str) -> Parsed<'a> {
    let mut p = new(kind);
    let tokens = split_tokens(rest);
    let n = tokens.len();
    let mut i = 0;
    let mut addr_end = 0; // the address is tokens[..addr_end]
    let mut addr_tail: Option<&'a str> = None; // the last address token without its glued ':'
    let mut message: S<'a> = Cow::Borrowed("");
    let mut done = false;
    // the address part: tokens up to "(parents)", "<original>", a KEY= field, "defer"/"routing", or ": "
    while i < n {
        let tok = tokens[i];
        let have = addr_end > 0;
        if have
            && (tok.starts_with('(')
                || tok.starts_with('<')
                || field_key(tok).is_some()
                || tok == ":")
        {
            break;
        }
        if have && kind == "defer" && (tok == "defer" || tok == "routing") {
            break;
        }
        if tok.ends_with(':') && kind != "delivery" && !tok.ends_with("]:") {
            addr_end = i + 1;
            addr_tail = Some(&tok[..tok.len() - 1]);
            i += 1;
            message = join(&tokens[i..]);
            done = true;
            break;
        }
        addr_end = i + 1;
        i += 1;
    }
    p.address = match addr_tail {
        None => join(&tokens[..addr_end]),
        Some(last) => {
            let mut parts: Vec<&str> = tokens[..addr_end - 1].to_vec();
            parts.push(last);
            Cow::Owned(parts.join(" "))
        }
    };
    // "(parents)" then "<original>", each optional; text glued to a group's end is the message
    for (open, close, slot) in [('(', ')', &mut p.parents), ('<', '>', &mut p.original)] {
        if !done && i < n && tokens[i].starts_with(open) {
            let (next, group, glued) = take_group(&tokens, i, close);
            i = next;
            *slot = sub(group, inner);
            if glued && kind != "delivery" {
                message = join(&tokens[i..]);
                done = true;
            }
        }
    }
    let mut fields = Fields::default();
    let mut flags: Vec<&'a str> = Vec::new();
    if !done {
        let (_, m) = scan_fields(&tokens, i, &mut fields, &mut flags);
        message = m;
    }
    if kind == "defer" {
        // "defer (N)" / "routing defer (N)" may sit among the fields; the errno is kept
        let words = flags.join(" ");
        if let Some(m) = DEFER_ERRNO_RE.captures(&words) {
            fields.set("errno", m.get(1).unwrap().as_str().to_owned());
        }
        flags.retain(|f| {
            *f != "defer" && *f != "routing" && !(f.starts_with('(') && f.ends_with(')'))
        });
    }
    if !message.is_empty() {
        if let Some((at, value)) = trailing_dt(&message) {
            let value = value.to_owned();
            fields.set("DT", value);
            message = sub(message, |s| &s[..at]);
        }
    }
    if !flags.is_empty() {
        fields.set("flags", join(&flags));
    }
    p.fields = fields;
    p.message = message;
    p
}

// ------------------------------------------------------------------------------------------- no-id lines

// Connection- and process-level lines (no message id): ignored by rule, counted under the rule's name.
// Ordered: the first match wins. Documented in docs/ARCHITECTURE.md ("Lines that are ignored").
const IGNORE_RULES: &[(&str, &[&str])] = &[
    (
        "connection",
        &[
            "SMTP connection",
            "no MAIL in SMTP connection",
            "unexpected disconnection",
            "SMTP command timeout",
            "SMTP data timeout",
            "SMTP protocol synchronization error",
            "SMTP protocol error",
            "SMTP syntax error",
            "SMTP call from",
            "Connection from ",
            "refused connection",
            "TLS error on connection",
            "TLS session",
            "no host name found",
            "SMTP incoming data timeout",
            "Connection refused",
        ],
    ),
    (
        "process",
        &[
            "Start queue run",
            "End queue run",
            "exim ",
            "cwd=",
            "Warning: No server certificate",
            "pid written",
            "Exim configuration error",
            "  ",
            "Domain ",
            "Queue run",
            "queue run",
            "daemon ",
            "Received SIGTERM",
            "SIGHUP",
            "LOG:",
            "tls_",
            // seen in real configurations (issue 16): environment warning of Exim >= 4.86 and its second line,
            // daemon re-exec, -oX override, an ACL condition deferred, ratelimit DB
            "Warning: purging the environment",
            "Suggested action: use keep_environment",
            "pid ",
            "daemon_smtp_port",
            "ACL ",
            "ratelimit",
        ],
    ),
];

// Text found in a no-id line that starts with `H=`/`U=`/`F=` or a host, and is session-level.
const SESSION_MARKERS: &[&str] = &[
    " incomplete transaction ",
    " rejected connection",
    " sender verify ",
    " rejected EHLO or HELO",
    " rejected HELO",
    " rejected EHLO",
    " authenticator failed",
    " dropped: ",
    " refused relay",
    " lost ",
    " recipient verify ",
    " Warning: ",
    " TLS error",
    " SMTP ",
    " no immediate delivery",
    "closed by",
];

fn no_id_line(body: &str) -> Parsed<'_> {
    if body.contains("rejected RCPT") {
        return rejection(body, "RCPT");
    }
    if body.contains("rejected MAIL") {
        return rejection(body, "MAIL");
    }
    if body.contains("rejected after DATA") {
        return rejection(body, "DATA");
    }
    for (rule, prefixes) in IGNORE_RULES {
        if prefixes.iter().any(|x| body.starts_with(x)) {
            return ignored(rule);
        }
    }
    let auth_failed = body.contains(" authenticator failed for ");
    let session = ["H=", "U=", "F=", "I="].iter().any(|x| body.starts_with(x)) || auth_failed;
    if session && SESSION_MARKERS.iter().any(|m| body.contains(m)) {
        return ignored("connection"); // every session marker's rule is "connection"
    }
    if auth_failed || body.starts_with("rejected ") || body.starts_with("refused ") {
        return ignored("connection");
    }
    unparsed("unrecognised line without a message id")
}

/// SMTP-time rejection: `[H=… U=… F=<s> A=…] [temporarily ]rejected RCPT <r>: reason` and friends.
fn rejection<'a>(body: &'a str, kind: &'static str) -> Parsed<'a> {
    let mut p = new("rejection");
    let mut fields = Fields::default();
    fields.set("kind", kind);
    let mut at = body.find("temporarily rejected");
    let temporary = at.is_some();
    if !temporary {
        at = body.find("rejected ");
    }
    fields.set("temporary", if temporary { "1" } else { "" });
    let prefix = py_strip(until_py_index(body, at));
    let rest: &'a str = from_py_index(body, at);
    let mut text: S<'a> = Cow::Borrowed(rest);
    if !prefix.is_empty() {
        scan_fields(&split_tokens(prefix), 0, &mut fields, &mut Vec::new());
    }
    if kind == "RCPT" {
        if let Some(start) = rest.find("rejected RCPT <") {
            if let Some(close) = find_from(rest, ">", start + 15) {
                p.address = Cow::Borrowed(&rest[start + 15..close]);
            }
        }
    } else if kind == "MAIL" {
        // "rejected MAIL <s>[: reason]" or "rejected MAIL FROM:<s> H=…: message too big: …"
        let after: &'a str = match rest.find("rejected MAIL") {
            Some(i) => &rest[i + 13..],
            None => from_char(rest, 12),
        };
        let sender: Option<&'a str> = after
            .find('<')
            .and_then(|open| find_from(after, ">", open + 1).map(|close| &after[open + 1..close]));
        if let Some(s) = sender {
            fields.set("F", format!("<{s}>"));
        }
        if after.starts_with(" FROM:") {
            fields.set(
                "kind",
                if after.contains("too big") {
                    "SIZE"
                } else {
                    "MAIL"
                },
            );
            let tail = match after.find('>') {
                Some(gt) => &after[gt + 1..],
                None => "",
            };
            let mut tail_fields = Fields::default();
            scan_fields(
                &split_tokens(py_strip(tail)),
                0,
                &mut tail_fields,
                &mut Vec::new(),
            );
            for (k, v) in tail_fields.0 {
                fields.setdefault(k, v);
            }
            if rest.contains("too big") {
                let big = from_py_index(rest, rest.find("message too big"));
                text = Cow::Owned(format!(
                    "rejected MAIL FROM:<{}>: {}",
                    sender.unwrap_or(""),
                    big
                ));
            }
        }
    }
    p.fields = fields;
    p.message = text;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const RX: &str = "2026-11-27 10:00:00 1xWksW-0004pV-1a ";

    #[test]
    fn arrival_fields() {
        let line = format!("{RX}<= a@b.example H=mail.b.example (helo) [1.2.3.4]:25 P=esmtps S=123 id=x@y T=\"Hi \\\"there\\\"\" for r@c.test");
        let p = parse_line(&line);
        assert_eq!(p.kind, "arrival");
        assert_eq!(p.address, "a@b.example");
        assert_eq!(p.fields.get("Hname").unwrap(), "mail.b.example");
        assert_eq!(p.fields.get("Hip").unwrap(), "1.2.3.4");
        assert_eq!(p.fields.get("T").unwrap(), "Hi \"there\"");
        assert_eq!(p.fields.get("for").unwrap(), "r@c.test");
    }

    #[test]
    fn short_non_ascii_line_counts_code_points() {
        assert_eq!(
            parse_line("2026-01-01 12:00:0€").reason,
            "no Exim timestamp at the start of the line"
        );
        assert_eq!(parse_line("\u{2003}\u{2003}").rule, "blank");
    }

    #[test]
    fn defer_with_errno_and_trailing_dt() {
        let line = format!("{RX}== x@r.test R=r T=t defer (-44) H=h [2.2.2.2]: 451 later DT=3s");
        let p = parse_line(&line);
        assert_eq!(p.kind, "defer");
        assert_eq!(p.fields.get("errno").unwrap(), "-44");
        assert_eq!(p.fields.get("DT").unwrap(), "3s");
        assert_eq!(p.message, "451 later");
    }

    #[test]
    fn split_tokens_finds_what_the_token_regex_finds() {
        let re = Regex::new(r#"(?:[^ "]+|"(?:[^"\\]+|\\.)*"?)+"#).unwrap();
        let alphabet = [' ', '"', '\\', '\n', 'a', 'é', '=', ':'];
        let mut seed: u64 = 12;
        for _ in 0..20000 {
            let mut text = String::from("\"");
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push(alphabet[(seed >> 61) as usize]);
            }
            let want: Vec<&str> = re.find_iter(&text).map(|m| m.as_str()).collect();
            assert_eq!(split_tokens(&text), want, "{text:?}");
        }
    }

    #[test]
    fn spam_verdict_finds_what_the_spam_regex_finds() {
        let parts = [
            "SpamAssassin as ",
            "cpuser",
            " detected ",
            "OUTGOING ",
            "x ",
            "message as ",
            "NOT ",
            "spam (",
            "1.5",
            "-",
            ".",
            ")",
            " ",
            "\t",
            "é",
            "\u{85}",
            "SpamAssassin",
            "OUTGOING",
        ];
        let valid = [
            "SpamAssassin as ",
            "cpuser",
            " detected ",
            "OUTGOING ",
            "x ",
            "message as ",
            "NOT ",
            "spam (",
            "1.5",
            ")",
        ];
        let mut seed: u64 = 7;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % m) as usize
        };
        let mut matched = 0;
        for _ in 0..100000 {
            // a valid verdict (with or without OUTGOING/NOT), a few parts of it replaced, dropped or added
            let mut tokens: Vec<&str> = valid.to_vec();
            if next(2) == 0 {
                tokens.remove(6);
            }
            if next(2) == 0 {
                tokens.drain(3..5);
            }
            for _ in 0..next(4) {
                let at = next(tokens.len() as u64 + 1);
                match next(3) {
                    0 if at < tokens.len() => tokens[at] = parts[next(parts.len() as u64)],
                    1 if at < tokens.len() => {
                        tokens.remove(at);
                    }
                    _ => tokens.insert(at, parts[next(parts.len() as u64)]),
                }
            }
            let text: String = tokens.concat();
            let want = SPAM_RE.captures(&text).map(|m| {
                (
                    m.get(1).unwrap().as_str(),
                    m.get(2).is_some(),
                    m.get(3).unwrap().as_str(),
                )
            });
            matched += want.is_some() as usize;
            assert_eq!(spam_verdict(&text), want, "{text:?}");
        }
        assert!(matched > 10000, "{matched}");
        let line = "H=x [1.2.3.4] F=<a@b> SpamAssassin as cpuser detected OUTGOING smtp message as NOT spam (1.2)";
        assert_eq!(spam_verdict(line), Some(("cpuser", true, "1.2")));
    }
}
