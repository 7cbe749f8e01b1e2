"""The eximtrack command line: ingest, search, show, sql (+ commands registered by other modules).

    eximtrack ingest --server NAME [--tz ZONE] [--userdomains FILE] [--trueuserowners FILE] [--store URL] FILE...
    eximtrack search [--store URL] [filters] [--format table|json|csv] [--limit N]
    eximtrack show MSGID [--server NAME] [--store URL] [--format text|json]
    eximtrack sql "SELECT …" [--store URL] [--format table|json|csv]

Exit codes: 0 success, 1 failure (store unavailable, message not found, query error), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import math
import os
import re
import sys
from datetime import UTC, datetime

from eximtrack.config import ConfigError, resolve_retention_days
from eximtrack.jsonable import jsonable
from eximtrack.search import MATCH_MODES, SearchError, SearchFilters, build_search, build_show, run_show
from schemas.records import OUTCOMES, SHOW_GROUPS

# ---------------------------------------------------------------------------------------------------
# EXTENSION COMMANDS: the modules below are imported lazily (only if they exist) and must expose
# `register(subparsers)`, which adds their subcommands and sets `func=<handler(args) -> int>` as the default
# of each. A command's start imports its own module only (found here by name: `eximtrack stats` without the
# Kafka clients and faust, ~0.5 s sooner); `--help` and an unknown command import them all, in this order.
# Add a new module with the commands it registers (tests/unit/test_deploy.py checks them); nothing else in
# this file needs to change.
EXTENSION_COMMANDS: dict[str, tuple[str, ...]] = {
    "producers.ship": ("ship",),
    "eximtrack.local_broker": ("broker",),
    "stream.app": ("stream",),
    "sinks.clickhouse.sink": ("sink",),
    "eximtrack.devstack": ("run",),  # the whole pipeline on one machine
    # cPanel's counters from the views; the aggregates' upkeep
    "eximtrack.stats": ("stats", "retention", "rollup", "rebuild-aggregates"),
    "eximtrack.search_index": ("rebuild-search-index",),
    "eximtrack.report": ("report", "dashboards"),  # dashboard panels as PNG; the Grafana JSON
    "eximtrack.web.serve": ("serve", "token"),  # page + HTTP API; API tokens
    "eximtrack.plan": ("plan",),  # deployment size for a fleet (docs/DEPLOY.md)
    "eximtrack.schema": ("schema",),  # the store's DDL, single node or cluster layout
    "eximtrack.alerts.cli": ("alerts",),  # fleet alert rules: check, test, run, list
}
EXTENSION_MODULES = list(EXTENSION_COMMANDS)
# ---------------------------------------------------------------------------------------------------

BUILTIN_COMMANDS = ("ingest", "search", "show", "sql")
READONLY_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")


class UsageError(Exception):
    """Bad arguments discovered after parsing (exit code 2)."""


class CommandError(Exception):
    """A command failed for a reason the user should see (exit code 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() can return the exit code."""

    def error(self, message):  # noqa: D401
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")


# ----------------------------------------------------------------------------------------------------
# helpers


def open_store(args, retention_days=None):
    from sinks.clickhouse.store import Store

    return Store.open(args.store, retention_days=retention_days)


def _iso(seconds) -> str:
    if seconds is None or seconds == 0:
        return ""
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _jsonable(value):
    return jsonable(value)


def _event_dict(columns, row) -> dict:
    """A search/show row -> DeliveryEvent-shaped dict; sendunixtime/actionunixtime as integer seconds."""
    d = dict(zip(columns, row, strict=False))
    for key in ("sendunixtime", "actionunixtime"):
        if key in d and d[key] is not None:
            d[key] = int(math.floor(float(d[key]) + 1e-9))
    return {k: _jsonable(v) for k, v in d.items()}


def _clip(text, width: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


# Track Delivery's default columns: (header, width, value of a row dict).
_TABLE_COLUMNS = (
    ("Event", 10, lambda d: d.get("type", "")),
    ("From Address", 30, lambda d: d.get("email") or "<>"),
    ("Sent Time (UTC)", 19, lambda d: _iso(d.get("sendunixtime") or d.get("actionunixtime"))),
    ("Spam Score", 10, lambda d: "" if d.get("spamscore") is None else f"{d['spamscore']:g}"),
    ("Recipient", 32, lambda d: d.get("recipient", "")),
    ("Result", 70, lambda d: d.get("message", "")),
)


def _write_event_table(out, columns, rows) -> int:
    header = "  ".join(h.ljust(w) for h, w, _ in _TABLE_COLUMNS).rstrip()
    out.write(header + "\n")
    out.write("  ".join("-" * w for _, w, _ in _TABLE_COLUMNS) + "\n")
    n = 0
    for row in rows:
        d = dict(zip(columns, row, strict=False))
        cells = [_clip(fn(d), w).ljust(w) for _, w, fn in _TABLE_COLUMNS]
        out.write("  ".join(cells).rstrip() + "\n")
        n += 1
    out.write(f"({n} row{'s' if n != 1 else ''})\n")
    return n


def write_generic_table(out, columns, rows, max_width: int = 60) -> int:
    rows = [[_clip(_jsonable(v) if not isinstance(v, str) else v, max_width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in rows:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return len(rows)


def write_csv(out, columns, rows, convert) -> int:
    writer = csv.writer(out)
    writer.writerow(columns)
    n = 0
    for row in rows:
        d = convert(columns, row)
        writer.writerow(["" if d[c] is None else d[c] for c in columns])
        n += 1
    return n


def write_json_lines(out, columns, rows, convert) -> int:
    n = 0
    for row in rows:
        out.write(json.dumps(convert(columns, row), ensure_ascii=False) + "\n")
        n += 1
    return n


def plain_dict(columns, row) -> dict:
    return {c: _jsonable(v) for c, v in zip(columns, row, strict=False)}


# ----------------------------------------------------------------------------------------------------
# ingest


def cmd_ingest(args) -> int:
    from eximtrack import join_process
    from eximtrack.ingest import Progress, ingest_files

    missing = [p for p in args.files if not os.path.isfile(p)]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    for opt in ("userdomains", "trueuserowners"):
        value = getattr(args, opt)
        if value and not os.path.isfile(value):
            raise UsageError(f"--{opt}: no such file: {value}")
    if args.tz:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(args.tz)
        except Exception:
            raise UsageError(f"--tz: unknown time zone {args.tz!r}") from None
    if args.batch_rows <= 0:
        raise UsageError("--batch-rows must be > 0")
    retention = resolve_retention_days(args.retention_days)
    job = join_process.JoinJob(
        list(args.files),
        args.server,
        args.tz or "UTC",
        args.userdomains,
        args.trueuserowners,
        args.batch_rows,
    )
    with join_process.start(job) as joining:  # it reads and joins while the store opens
        store = open_store(args, retention_days=retention)
        if not hasattr(store, "client"):  # a RemoteStore: the directory belongs to another process
            raise CommandError(
                f"cannot ingest into {store.url.path}: it is owned by process {store.endpoint.get('pid')} "
                "(read-only from here); stop it or let it consume the logs"
            )
        total = sum(os.path.getsize(p) for p in args.files)
        progress = Progress(total)
        stats = ingest_files(store, args.files, progress=progress, joining=joining)
    from eximtrack import stats_snapshots

    stats_snapshots.refresh(store)  # the hours just written, for fast `stats` and dashboards
    rate = stats.lines / stats.seconds if stats.seconds > 0 else 0.0
    print(
        f"ingested {stats.files} file(s) for server {args.server}: lines={stats.lines} events={stats.events} "
        f"rejects={stats.rejects} log_lines={stats.log_lines} open_messages={stats.open_messages} "
        f"({stats.seconds:.2f}s, {rate:,.0f} lines/s)"
    )
    print(line_shares(stats.lines, stats.joiner))
    if stats.expired_events:
        days = store.retention_days()
        print(
            f"warning: {stats.expired_events} event(s) are older than the store's {days}-day retention and "
            "were dropped by its TTL; use --retention-days 0 (keep forever) or a larger value to keep them",
            file=sys.stderr,
        )
    return 0


def line_shares(lines: int, joiner_stats: dict) -> str:
    """What became of the lines: ignored by a named rule, made an event, kept as a line of their message
    only (attached), or stored as a reject."""
    from stream.join import LINE_DISPOSITIONS

    parts = []
    for key in LINE_DISPOSITIONS:
        label = "rejected" if key == "rejects" else key
        n = int(joiner_stats.get(key, 0))
        parts.append(f"{label} {n} ({100 * n / lines:.1f}%)" if lines else f"{label} 0")
    notes, over = int(joiner_stats.get("notes", 0)), int(joiner_stats.get("notes_over_cap", 0))
    extra = f"; {notes} note(s)" + (f", {over} over the per-message cap (not stored)" if over else "")
    return "lines: " + ", ".join(parts) + extra


# ----------------------------------------------------------------------------------------------------
# search


def _filters_from_args(args) -> SearchFilters:
    show = []
    for item in args.show or []:
        show.extend(p.strip() for p in item.split(",") if p.strip())
    types = []
    for item in args.type or []:
        types.extend(p.strip() for p in item.split(",") if p.strip())
    return SearchFilters(
        recipient=args.recipient,
        sender=args.sender,
        address=args.address,
        domain=args.domain,
        msgid=args.msgid,
        message_id=args.message_id,
        subject=args.subject,
        senderip=args.senderip,
        server=args.server,
        user=args.user,
        type=types,
        show=show,
        since=args.since,
        until=args.until,
        match=args.match,
        sort=args.sort,
        limit=args.limit,
        scope=_scope_from_args(args),
    )


def _scope_from_args(args):
    from eximtrack.search import Scope

    given = {k: getattr(args, f"scope_{k}", None) for k in ("user", "reseller", "address")}
    given = {k: v for k, v in given.items() if v}
    if not given:
        return None
    if len(given) > 1:
        raise UsageError("give at most one of --scope-user, --scope-reseller, --scope-address")
    return Scope(**given)


def _add_scope(p) -> None:
    g = p.add_argument_group("tenant scope (what a cPanel user, reseller or webmail login may see)")
    g.add_argument("--scope-user", metavar="USER", help="only the account's sends and the mail it receives")
    g.add_argument(
        "--scope-reseller", metavar="OWNER", help="only accounts owned by the reseller (and its own)"
    )
    g.add_argument("--scope-address", metavar="ADDR", help="only mail from or to this address (webmail)")


def cmd_search(args) -> int:
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    filters = _filters_from_args(args)
    build_search(filters)  # SearchError -> exit 2 before opening the store
    store = open_store(args)

    from sinks.clickhouse.store import store_run

    sql, params = build_search(filters, store_run(store))  # a text value's trigrams chosen by a sample
    columns, rows = store.stream(sql, params)
    out = sys.stdout
    if args.format == "json":
        write_json_lines(out, columns, rows, _event_dict)
    elif args.format == "csv":
        write_csv(out, columns, rows, _event_dict)
    else:
        _write_event_table(out, columns, rows)
    return 0


# ----------------------------------------------------------------------------------------------------
# show


def cmd_show(args) -> int:
    queries = build_show(args.msgid, args.server, scope=_scope_from_args(args))
    store = open_store(args)

    from sinks.clickhouse.store import store_run

    parts = {}
    for name, (columns, rows) in run_show(queries, store_run(store)).items():
        conv = plain_dict if name in ("arrival", "lines") else _event_dict
        parts[name] = [conv(columns, row) for row in rows]
    if not any(parts.values()):
        print(
            f"no message {args.msgid}" + (f" on server {args.server}" if args.server else ""), file=sys.stderr
        )
        return 1
    if args.format == "json":
        print(json.dumps(parts, ensure_ascii=False, indent=2))
        return 0
    _print_show(parts, args.msgid)
    return 0


def _print_show(parts: dict, msgid: str) -> None:
    out = sys.stdout
    servers = sorted({r["server"] for key in ("arrival", "attempts", "lines") for r in parts[key]})
    for server in servers or [""]:
        out.write(f"Message {msgid} on {server}\n")
        arrival = [a for a in parts["arrival"] if a["server"] == server]
        if arrival:
            a = arrival[0]
            out.write("Arrival\n")
            fields = (
                ("Sent time", _iso(a["sendunixtime"]) or "(unknown: arrival not in the log)"),
                ("From", a["email"] or "<>"),
                ("Sender", a["sender"]),
                ("User / domain / owner", " / ".join(x for x in (a["user"], a["domain"], a["owner"]) if x)),
                ("Sender host", f"{a['senderhost']} [{a['senderip']}]" if a["senderip"] else a["senderhost"]),
                ("Authentication", a["senderauth"]),
                ("Protocol", a["protocol"]),
                ("Size", a["size"]),
                ("Spam score", "" if a["spamscore"] is None else a["spamscore"]),
                ("Subject", a["subject"]),
                ("Message-ID", a["message_id"]),
                ("Bounce of", a["parent_msgid"]),
            )
            for label, value in fields:
                if value not in ("", None):
                    out.write(f"  {label + ':':<24}{value}\n")
        attempts = [e for e in parts["attempts"] if e["server"] == server]
        if attempts:
            out.write("Recipients\n")
            by_rcpt: dict[str, list[dict]] = {}
            for e in attempts:
                by_rcpt.setdefault(e["recipient"], []).append(e)
            for rcpt, events in by_rcpt.items():
                out.write(f"  {rcpt or '(whole message)'}\n")
                for e in events:
                    where = " ".join(
                        x
                        for x in (
                            f"-> {e['deliveredto']}" if e["deliveredto"] and e["deliveredto"] != rcpt else "",
                            f"R={e['router']}" if e["router"] else "",
                            f"T={e['transport']}" if e["transport"] else "",
                            f"H={e['host']}" if e["host"] else "",
                            f"[{e['ip']}]" if e["ip"] else "",
                            "(frozen)" if e.get("frozen") else "",
                        )
                        if x
                    )
                    text = e["message"] or e["confirmation"]
                    line = f"    {_iso(e['actionunixtime'])}  {e['type']:<10} {where}  {text}"
                    out.write(line.rstrip() + "\n")
        children = [c for c in parts["children"] if c["server"] == server]
        if children:
            out.write("Bounces / DSNs about this message\n")
            for c in children:
                out.write(f"  {c['msgid']}  {_iso(c['sendunixtime'])}  {c['type']:<10} {c['recipient']}\n")
        lines = [ln for ln in parts["lines"] if ln["server"] == server]
        if lines:
            out.write("Log lines\n")
            for ln in lines:
                out.write(f"  {ln['line']}\n")
        out.write("\n")


# ----------------------------------------------------------------------------------------------------
# sql


def readonly_statement(sql: str) -> str:
    """Return the statement if it is one read-only statement (SELECT/WITH/SHOW/DESCRIBE/EXPLAIN), else raise
    UsageError. Scans quotes and comments so a ';' inside a string does not count; one trailing ';' is ok."""
    text = sql or ""
    i, n = 0, len(text)
    first_word = None
    end = None  # index of a terminating ';'
    while i < n:
        ch = text[i]
        if text.startswith("--", i) or ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise UsageError("unterminated /* comment in the SQL")
            i = j + 2
            continue
        if ch in ("'", '"', "`"):
            j = i + 1
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == ch:
                    if j + 1 < n and text[j + 1] == ch:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise UsageError("unterminated quoted string in the SQL")
            i = j + 1
            continue
        if ch == ";":
            if end is None:
                end = i
            i += 1
            continue
        if not ch.isspace():
            if end is not None:
                raise UsageError("only one SQL statement is allowed")
            if first_word is None:
                j = i
                while j < n and (text[j].isalnum() or text[j] == "_"):
                    j += 1
                first_word = text[i:j].upper() or ch
                i = max(j, i + 1)
                continue
        i += 1
    if first_word is None:
        raise UsageError("empty SQL statement")
    if first_word not in READONLY_KEYWORDS:
        raise UsageError(
            f"only read-only statements are allowed ({', '.join(READONLY_KEYWORDS)}), not {first_word}"
        )
    statement = text[:end] if end is not None else text
    if re.search(r"\bFORMAT\s+\w+\s*$", statement, re.IGNORECASE):
        raise UsageError("leave out the FORMAT clause: use --format table|json|csv")
    return statement


def cmd_sql(args) -> int:
    statement = readonly_statement(args.statement)
    store = open_store(args)
    try:
        result = store.query(statement, readonly=True)
    except Exception as exc:
        raise CommandError(first_line(exc)) from exc
    columns, rows = list(result.column_names), result.result_rows
    out = sys.stdout
    if args.format == "json":
        write_json_lines(out, columns, rows, plain_dict)
    elif args.format == "csv":
        write_csv(out, columns, rows, plain_dict)
    else:
        write_generic_table(out, columns, rows)
    return 0


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): what a command reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------
# parser


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def add_store_arg(p) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="chdb:///path[?database=NAME] or http://host:8123[/database] "
        "(default: $EXIMTRACK_STORE or chdb://./data)",
    )


def build_parser(
    load_extensions: bool = True, command: str | None = None
) -> tuple[argparse.ArgumentParser, list[tuple[str, str]]]:
    """The parser with the built-in commands and (if load_extensions) those of EXTENSION_MODULES: when
    `command` is one of EXTENSION_COMMANDS, only its module's (every command's start skips importing the
    others: `eximtrack stream` ~0.5 s sooner without pyarrow, clickhouse-connect, matplotlib …, `eximtrack
    stats` ~0.5 s without faust and the Kafka clients); else all of them, in order, until one registered
    `command`. Returns it with the [(module, error)] of extension modules that exist but failed to load."""
    parser = _Parser(prog="eximtrack", description="Track Delivery for a fleet of Exim servers.")
    from eximtrack import __version__

    parser.add_argument("--version", action="version", version=f"eximtrack {__version__}")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="the components' logs on stderr: text lines or JSON lines "
                        "(default: $EXIMTRACK_LOG_FORMAT or text)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("ingest", help="read Exim main logs (plain or .gz) into the store")
    p.add_argument("--server", required=True, help="name of the Exim server the logs come from")
    p.add_argument("--tz", default="UTC", help="time zone of the log timestamps (default: UTC)")
    p.add_argument("--userdomains", metavar="FILE", help="the server's /etc/userdomains")
    p.add_argument("--trueuserowners", metavar="FILE", help="the server's /etc/trueuserowners")
    p.add_argument(
        "--retention-days",
        type=nonneg_int,
        default=None,
        help="keep data N days (TTL; 0 = forever; default: $EXIMTRACK_RETENTION_DAYS or unchanged, 90 on a new store)",
    )
    p.add_argument("--batch-rows", type=int, default=50_000, help="rows per insert (default: 50000)")
    add_store_arg(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search delivery events (latest state per recipient)")
    add_store_arg(p)
    p.add_argument("--recipient", help="envelope recipient")
    p.add_argument("--sender", help="envelope sender (From Address)")
    p.add_argument("--address", help="sender or recipient")
    p.add_argument("--domain", help="sender or recipient domain")
    p.add_argument("--msgid", help="Exim message id (case-sensitive)")
    p.add_argument("--message-id", dest="message_id", help="Message-ID header")
    p.add_argument("--subject")
    p.add_argument("--senderip")
    p.add_argument("--server")
    p.add_argument("--user", help="cPanel account of the sender")
    p.add_argument(
        "--type", action="append", metavar="TYPE", help=f"outcome, repeatable: {', '.join(OUTCOMES)}"
    )
    p.add_argument("--show", action="append", metavar="GROUPS", help=f"comma list of {','.join(SHOW_GROUPS)}")
    p.add_argument("--since", help="ISO date/time (UTC unless it has a zone) or epoch seconds")
    p.add_argument("--until", help="ISO date/time (UTC unless it has a zone) or epoch seconds")
    p.add_argument("--match", choices=MATCH_MODES, default="eq", help="eq (default), begins or contains")
    p.add_argument(
        "--sort", metavar="FIELD", help="FIELD, -FIELD, FIELD:asc or FIELD:desc (default: sendunixtime desc)"
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--limit", type=nonneg_int, default=None, help="at most N rows (default: all)")
    _add_scope(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("show", help="the whole story of one message")
    p.add_argument("msgid", metavar="MSGID")
    p.add_argument("--server")
    add_store_arg(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    _add_scope(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("sql", help="run one read-only SQL statement against the store")
    p.add_argument("statement", metavar="SQL")
    add_store_arg(p)
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(func=cmd_sql)

    failed = []
    own = next((m for m in EXTENSION_MODULES if command in EXTENSION_COMMANDS.get(m, ())), None)
    for module_name in ([own] if own else EXTENSION_MODULES) if load_extensions else ():
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
            module = importlib.import_module(module_name)
            register = getattr(module, "register", None)
            if callable(register):
                register(sub)
        except Exception as exc:  # another part's bug must not break the built-in commands
            failed.append((module_name, first_line(exc)))
        if command is not None and command in sub.choices:
            break
    return parser, failed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--sort -size` (descending) would look like an option to argparse: glue it as `--sort=-size`.
    glued: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--sort" and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][:2] != "--":
            glued.append(f"--sort={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    argv = glued
    debug = bool(os.environ.get("EXIMTRACK_DEBUG"))
    # Extensions are imported only when the command is not a built-in one (or for --help), and only until
    # the one with the command: `search` and `ingest` do not pay for importing Kafka clients.
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser, failed = build_parser(load_extensions=wanted not in BUILTIN_COMMANDS, command=wanted)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        finally:
            if failed and (debug or (wanted and wanted not in BUILTIN_COMMANDS)):
                for name, err in failed:
                    print(f"eximtrack: warning: cannot load {name}: {err}", file=sys.stderr)
        if getattr(args, "log_format", None):
            os.environ["EXIMTRACK_LOG_FORMAT"] = args.log_format  # components and their children read it
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        return int(func(args) or 0)
    except UsageError as exc:
        msg = str(exc)
        if not msg.startswith(("eximtrack", "usage:")):
            msg = f"eximtrack: error: {msg}"
        print(msg, file=sys.stderr)
        return 2
    except (ConfigError, SearchError) as exc:
        print(f"eximtrack: error: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"eximtrack: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print("eximtrack: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"eximtrack: error: {first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
