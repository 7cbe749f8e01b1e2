"""A real-Exim scenario harness: run Exim 4.96 (Debian ``exim4-daemon-light``) with its own config, spool
and log directory, drive delivery scenarios over SMTP and the command line, and return the real main log
plus the ground truth of every scenario.

Nothing leaves loopback: the daemon listens on 127.0.0.1 at a free port and every "remote" domain is routed
with ``manualroute`` to a small SMTP sink (a thread in this process) on 127.0.0.1 that plays the remote
servers. The ground truth comes from the scenario definitions and from what Exim answered (the message id in
the ``250 OK id=...`` reply to DATA, the ids the sink saw in the ``Received:`` header of cutthrough
deliveries, ``exim -bp`` for command-line submissions); the only thing read from the log is the list of
bounce children (``<= <> R=<parent>``), with a tiny regex of its own.

Usage::

    from tests.exim.harness import run_exim_scenarios
    res = run_exim_scenarios(tmp_path, "cpanel")      # mode in {"default", "cpanel", "all"}

    python -m tests.exim.harness --out samples           # regenerate samples/mainlog-<mode>.log etc.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from eximtrack.ports import free_port

MODES = ("default", "cpanel", "all")

LOG_SELECTORS = {
    "default": "",
    "cpanel": "+all_parents +arguments +incoming_port +received_recipients +retry_defer +smtp_connection +subject",
    "all": "+all",
}

EXIM_CANDIDATES = ("/usr/sbin/exim4", "/usr/sbin/exim", "/usr/local/sbin/exim", "/usr/bin/exim4")

AUTH_USER = "alice@local.test"
AUTH_PASSWORD = "s3cret-Passw0rd"
SPAM_WARNING = '"SpamAssassin as cpaneleximscanner detected message as NOT spam (0.4)"'

LOCAL_USERS = ("alice", "bob", "carol", "dave")

# timing knobs (seconds)
DEAD_RETRY_CUTOFF = 5  # retry rule `dead.test * F,5s,1s`
DELAY_WARNING = 2  # delay_warning (only for subjects with "[warn]")
IDLE_TIMEOUT = 30.0


class HarnessError(RuntimeError):
    pass


class EximMissing(HarnessError):
    pass


@dataclass
class HarnessResult:
    mainlog: Path
    expected: list[dict]
    rejections: list[dict]
    log_selector: str
    mode: str = ""
    workdir: Path | None = None
    rejectlog: Path | None = None
    paniclog: Path | None = None
    # msgid -> scenario name for every message the harness knows about (incl. generated ones)
    messages: dict[str, str] = field(default_factory=dict)
    # scenario name -> subject / description
    scenarios: dict[str, str] = field(default_factory=dict)
    # message ids still on the queue at the end (from `exim -bp`)
    queue_at_end: list[str] = field(default_factory=list)
    # self-check problems (empty when the truth is consistent with what Exim did)
    problems: list[str] = field(default_factory=list)
    runtime: float = 0.0
    exim_version: str = ""
    daemon_pid: int = 0  # the (stopped) daemon's pid

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "log_selector": self.log_selector,
            "exim_version": self.exim_version,
            "expected": self.expected,
            "rejections": self.rejections,
            "messages": self.messages,
            "scenarios": self.scenarios,
            "queue_at_end": self.queue_at_end,
        }


# --------------------------------------------------------------------------------------------------------
# helpers


def find_exim() -> str:
    for c in EXIM_CANDIDATES:
        if os.path.exists(c) and os.access(c, os.X_OK):
            return c
    w = shutil.which("exim4") or shutil.which("exim")
    if w:
        return w
    raise EximMissing("exim4 not found: install exim4-daemon-light (make deps)")


DAEMON_START_TRIES = 3  # ports tried for the daemon (free_port's port can be taken before Exim binds it)


ID_RE = r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{11}-[0-9A-Za-z]{4}|[0-9A-Za-z]{6}-[0-9A-Za-z]{2})"
# bounce children: "<id> <= <> R=<parent>" (the only thing the harness reads from the log)
BOUNCE_RE = re.compile(r" (" + ID_RE + r") <= <> R=(" + ID_RE + r") ")
REPLY_ID_RE = re.compile(r"\bid=(" + ID_RE + r")\b")
RECEIVED_ID_RE = re.compile(r"\bid (" + ID_RE + r")\b")


# --------------------------------------------------------------------------------------------------------
# the SMTP sink that plays every remote server


class _SinkHandler(socketserver.StreamRequestHandler):
    timeout = 60

    def _send(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:  # noqa: C901 - a tiny SMTP state machine
        sink: Sink = self.server.sink  # type: ignore[attr-defined]
        self._send("220 sink.remote.test ESMTP eximtrack-sink")
        mail_from = None
        rcpts: list[str] = []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            cmd = line[:4].upper()
            if cmd in ("EHLO", "HELO"):
                if cmd == "EHLO":
                    self._send("250-sink.remote.test Hello\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250 HELP")
                else:
                    self._send("250 sink.remote.test Hello")
            elif cmd == "MAIL":
                mail_from = line[10:].strip()
                rcpts = []
                self._send("250 2.1.0 Ok")
            elif cmd == "RCPT":
                m = re.search(r"<([^>]*)>", line)
                addr = (m.group(1) if m else line[8:]).lower()
                code, text = sink.rcpt_reply(addr)
                if code == 250:
                    rcpts.append(addr)
                self._send(text)
            elif cmd == "DATA":
                if not rcpts:
                    self._send("554 5.5.1 Error: no valid recipients")
                    continue
                self._send("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while True:
                    d = self.rfile.readline()
                    if not d:
                        return
                    if d in (b".\r\n", b".\n"):
                        break
                    data.append(d)
                body = b"".join(data).decode("utf-8", "replace")
                n = sink.record(mail_from, rcpts, body)
                self._send(f"250 2.0.0 Ok: queued as SINK{n:05d}")
                rcpts = []
            elif cmd == "RSET":
                mail_from, rcpts = None, []
                self._send("250 2.0.0 Ok")
            elif cmd == "NOOP":
                self._send("250 2.0.0 Ok")
            elif cmd == "QUIT":
                self._send("221 2.0.0 Bye")
                return
            else:
                self._send("502 5.5.2 Error: command not recognized")


class _SinkServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Sink:
    """Remote servers: behaviour by recipient local part.

    ok-*             250
    tempfail-once-*  451 the first time the address is seen, then 250
    tempfail-*       451 always
    bad-*            550 (multi-line reply)
    anything else    250
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.messages: list[dict] = []
        self.server = _SinkServer(("127.0.0.1", 0), _SinkHandler)
        self.server.sink = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="exim-sink", daemon=True)

    def start(self) -> Sink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def rcpt_reply(self, addr: str) -> tuple[int, str]:
        local = addr.split("@", 1)[0]
        with self.lock:
            n = self.seen.get(addr, 0)
            self.seen[addr] = n + 1
        if local.startswith("tempfail-once"):
            if n == 0:
                return 451, f"451 4.7.1 <{addr}>: Recipient address rejected: try again later"
            return 250, "250 2.1.5 Ok"
        if local.startswith("tempfail"):
            return 451, f"451 4.3.0 <{addr}>: Temporary local problem - please try later"
        if local.startswith("bad"):
            return 550, (
                f"550-5.1.1 <{addr}>: Recipient address rejected: User unknown in virtual mailbox table\r\n"
                "550 5.1.1 Please check the address and try again"
            )
        return 250, "250 2.1.5 Ok"

    def record(self, mail_from: str | None, rcpts: list[str], body: str) -> int:
        ids = RECEIVED_ID_RE.findall(body.split("\n\n", 1)[0].split("\r\n\r\n", 1)[0])
        with self.lock:
            self.messages.append({"from": mail_from, "rcpts": list(rcpts), "exim_ids": ids, "body": body})
            return len(self.messages)


# --------------------------------------------------------------------------------------------------------
# the Exim configuration

CONFIG_TEMPLATE = r"""
# eximtrack test harness configuration (generated) -- cPanel-like names, loopback only
primary_hostname = realexim.test
qualify_domain = local.test
domainlist local_domains = local.test
hostlist relay_from_hosts = <; 127.0.0.1

spool_directory = @@SPOOL@@
log_file_path = @@LOG@@/%slog
pid_file_path = @@RUN@@/exim.pid
@@SELECTOR_LINE@@
timezone = UTC

local_interfaces = <; 127.0.0.1
daemon_smtp_ports = @@PORT@@
disable_ipv6 = true
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
@@TLS@@
dsn_advertise_hosts = *
keep_environment =
trusted_users = root
message_size_limit = 50K
smtp_accept_queue_per_connection = 0
smtp_accept_max = 50
queue_run_max = 0
ignore_bounce_errors_after = 2d
timeout_frozen_after = 0s
delay_warning = @@DELAYWARN@@s
delay_warning_condition = ${if match{$h_subject:}{\N\[warn\]\N}}
auth_advertise_hosts = *

acl_smtp_mail = acl_check_mail
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
acl_not_smtp = acl_check_not_smtp
system_filter = @@ETC@@/system_filter

begin acl

acl_check_mail:
  deny    senders = *@blocked-sender.test
          message = Sender domain blocked by local policy
  accept

acl_check_rcpt:
  accept  hosts = :
  deny    domains = +local_domains
          local_parts = ^spamtrap-
          message = Mailbox is a spam trap
  defer   domains = +local_domains
          local_parts = ^greylist-
          message = Greylisted, please try again later
  accept  domains = cut.test
          control = cutthrough_delivery
  accept  domains = +local_domains
  accept  hosts = +relay_from_hosts
  deny    message = relay not permitted

acl_check_not_smtp:
  deny    condition = ${if match{$h_subject:}{NONSMTP-DENY}}
          message = local submission refused by policy
  accept

acl_check_data:
  warn    condition = ${if match{$h_subject:}{LOGWRITE}}
          logwrite = data acl: dkim status pass
  deny    condition = ${if match{$h_subject:}{REJECT-CONTENT}}
          message = Message content rejected by local policy
  warn    condition = ${if match{$h_subject:}{\N\[freeze\]\N}}
          control = freeze
  warn    condition = ${if match{$h_subject:}{\N\[queue\]\N}}
          control = queue
  warn    condition = ${if match{$h_subject:}{\N\[fakereject\]\N}}
          control = fakereject
  warn    log_message = @@SPAM_WARNING@@
  accept

begin routers

virtual_aliases:
  driver = redirect
  domains = +local_domains
  data = ${lookup{$local_part}lsearch{@@ETC@@/aliases}}
  allow_fail
  allow_defer
  pipe_transport = address_pipe
  file_transport = address_file
  qualify_preserve_domain

virtual_user:
  driver = accept
  domains = +local_domains
  local_parts = lsearch;@@ETC@@/users
  transport = dovecot_virtual_delivery

lookuphost:
  driver = manualroute
  domains = ! +local_domains
  route_list = dead.test 127.0.0.2 ; * 127.0.0.1
  transport = remote_smtp
  self = send
  no_more

begin transports

remote_smtp:
  driver = smtp
  port = ${if eq{$domain}{dead.test}{@@DEADPORT@@}{@@SINKPORT@@}}
  allow_localhost
  hosts_avoid_tls = *
  connect_timeout = 5s

dovecot_virtual_delivery:
  driver = appendfile
  directory = @@MAIL@@/$local_part_data
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = @@EXIMUSER@@
  group = @@EXIMGROUP@@
  mode = 0660

address_pipe:
  driver = pipe
  return_output
  user = @@EXIMUSER@@
  group = @@EXIMGROUP@@

address_file:
  driver = appendfile
  delivery_date_add
  envelope_to_add
  return_path_add
  user = @@EXIMUSER@@
  group = @@EXIMGROUP@@

begin retry

dead.test    *   F,@@DEADCUTOFF@@s,1s
*            *   F,1h,15m

begin rewrite

begin authenticators

dovecot_login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = ${if and{{eq{$auth1}{@@AUTHUSER@@}}{eq{$auth2}{@@AUTHPASS@@}}}}
  server_set_id = $auth1
  server_advertise_condition = true

dovecot_plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and{{eq{$auth2}{@@AUTHUSER@@}}{eq{$auth3}{@@AUTHPASS@@}}}}
  server_set_id = $auth2
  server_advertise_condition = true
"""


# --------------------------------------------------------------------------------------------------------
# scenarios


class EximRun:
    def __init__(self, workdir: Path, mode: str) -> None:
        if mode not in LOG_SELECTORS:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.exim = find_exim()
        self.mode = mode
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.expected: list[dict] = []
        self.rejections: list[dict] = []
        self.messages: dict[str, str] = {}
        self.senders: dict[str, str] = {}  # msgid -> envelope sender (lower)
        # parent msgid -> (scenario, kind): messages expected to make Exim generate exactly one message
        # ("bounce", "dsn" = success DSN, "warning" = delay warning)
        self.generated_parents: dict[str, tuple[str, str]] = {}
        # parent msgid -> (type, extra keys) of its generated message when not a plain delivered "success"
        self.generated_outcome: dict[str, tuple[str, dict]] = {}
        self.after_idle: list = []  # callbacks run after the next wait_idle()
        self.scenarios: dict[str, str] = {}
        self.problems: list[str] = []
        self.daemon_pid: int | None = None
        self.sink: Sink | None = None
        self.counter = 0
        self.dead_accepted_at = 0.0
        self.dead_msgid = ""

    # ---------------------------------------------------------------- setup / teardown

    def setup(self) -> None:
        # Exim's receiving and delivery processes run as the Exim user (Debian-exim) and the mailbox
        # transports must not run as root (never_users is fixed to root), so the runtime tree lives in a
        # directory those users can traverse; pytest's tmp dirs (/tmp/pytest-of-root, 0700) are not.
        self.rt = Path(tempfile.mkdtemp(prefix=f"eximtrack-exim-{self.mode}-"))
        os.chmod(self.rt, 0o755)
        try:
            pw = pwd.getpwnam("Debian-exim")
        except KeyError:
            try:
                pw = pwd.getpwnam("exim")
            except KeyError:
                pw = pwd.getpwnam("mail")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.eximuser = pw.pw_name
        import grp

        self.eximgroup = grp.getgrgid(pw.pw_gid).gr_name
        for sub in ("spool", "log", "mail", "etc", "bin", "run"):
            (self.rt / sub).mkdir()
        for sub in ("spool", "log", "mail", "run"):
            os.chown(self.rt / sub, self.uid, self.gid)
            os.chmod(self.rt / sub, 0o775)
        etc, binp = self.rt / "etc", self.rt / "bin"
        (binp / "pipe-ok.sh").write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
        (binp / "pipe-fail.sh").write_text(
            "#!/bin/sh\ncat >/dev/null\necho 'pipe-fail: mailbox unavailable' >&2\nexit 69\n"
        )
        for p in binp.iterdir():
            os.chmod(p, 0o755)
        (etc / "users").write_text("".join(f"{u}: {u}\n" for u in LOCAL_USERS))
        (etc / "system_filter").write_text(
            '# Exim filter\nif $h_subject: contains "SYSFILTER" then\n  deliver bob@local.test\nendif\n'
        )
        (etc / "aliases").write_text(
            "list: ok-list1@remote.test, ok-list2@remote.test, alice@local.test\n"
            "devnull: :blackhole:\n"
            f"pipe-ok: |{binp}/pipe-ok.sh\n"
            f"pipe-fail: |{binp}/pipe-fail.sh\n"
            "closed: :fail: Account closed by administrator\n"
            "onhold: :defer: Mailbox migration in progress\n"
        )
        tls_line = self._make_cert(etc)
        self.sink = Sink().start()
        self.port = free_port()
        self.deadport = free_port()
        sel = LOG_SELECTORS[self.mode]
        subst = {
            "SPOOL": str(self.rt / "spool"),
            "LOG": str(self.rt / "log"),
            "RUN": str(self.rt / "run"),
            "MAIL": str(self.rt / "mail"),
            "ETC": str(etc),
            "PORT": str(self.port),
            "SINKPORT": str(self.sink.port),
            "DEADPORT": str(self.deadport),
            "DEADCUTOFF": str(DEAD_RETRY_CUTOFF),
            "DELAYWARN": str(DELAY_WARNING),
            "TLS": tls_line,
            "SELECTOR_LINE": f"log_selector = {sel}" if sel else "# no log_selector (Exim's default set)",
            "SPAM_WARNING": SPAM_WARNING,
            "AUTHUSER": AUTH_USER,
            "AUTHPASS": AUTH_PASSWORD,
            "EXIMUSER": self.eximuser,
            "EXIMGROUP": self.eximgroup,
        }
        text = CONFIG_TEMPLATE
        for k, v in subst.items():
            text = text.replace(f"@@{k}@@", v)
        self.cfg = etc / "exim.conf"
        self.cfg.write_text(text)
        os.chmod(self.cfg, 0o644)
        os.chmod(etc, 0o755)
        ver = subprocess.run([self.exim, "-C", str(self.cfg), "-bV"], capture_output=True, text=True)
        if ver.returncode != 0:
            raise HarnessError(f"exim -bV failed: {ver.stdout}{ver.stderr}")
        self.exim_version = ver.stdout.splitlines()[0] if ver.stdout else ""

    def _make_cert(self, etc: Path) -> str:
        """A self-signed certificate for STARTTLS (openssl); without openssl Exim makes its own."""
        openssl = shutil.which("openssl")
        cert, key = etc / "cert.pem", etc / "key.pem"
        if openssl:
            r = subprocess.run(
                [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-days", "3650", "-subj", "/CN=realexim.test", "-keyout", str(key), "-out", str(cert)],
                capture_output=True,
            )  # fmt: skip
            if r.returncode == 0:
                os.chmod(cert, 0o644)
                os.chown(key, self.uid, self.gid)
                os.chmod(key, 0o600)
                return f"tls_advertise_hosts = *\ntls_certificate = {cert}\ntls_privatekey = {key}"
        return "tls_advertise_hosts = *"

    def start_daemon(self) -> None:
        """Start the daemon on self.port. free_port() only names a port that was free: another process (a
        broker or a server of the other test process) can take it before Exim binds. Exim then logs the
        bind failure and keeps retrying, and the probe may reach the other listener. So the daemon counts
        as started once its pid file is written and it answers; otherwise it is killed, its log line
        dropped (the log is the test input) and it starts again on another port."""
        for _ in range(DAEMON_START_TRIES):
            if self._start_daemon_on_port():
                return
            for pid in self._our_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            (self.rt / "log" / "mainlog").write_text("")
            self.port = free_port()
        raise HarnessError(f"exim daemon did not start on any of {DAEMON_START_TRIES} ports")

    def _start_daemon_on_port(self) -> bool:
        pidfile = self.rt / "run" / "daemon.pid"
        r = subprocess.run(
            [self.exim, "-C", str(self.cfg), "-bd", "-oX", str(self.port), "-oP", str(pidfile)],
            cwd=self.rt,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0:
            raise HarnessError(f"exim daemon failed to start: {r.stdout}{r.stderr}")
        mainlog = self.rt / "log" / "mainlog"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if f"bind() to port {self.port} ".encode() in mainlog.read_bytes():
                    return False  # taken by another process: Exim waits 30 s to retry
            if pidfile.exists():
                with contextlib.suppress(OSError):
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                        s.recv(512)
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                    # that probe connection is in the log too ("SMTP connection ... lost"/no MAIL): harmless
                    self.daemon_pid = int(pidfile.read_text().split()[0])
                    return True
            time.sleep(0.05)
        raise HarnessError("exim daemon does not accept connections")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.wait_idle(timeout=10)
        if self.daemon_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.daemon_pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(self.daemon_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.daemon_pid, signal.SIGKILL)
            self.daemon_pid = None
        # anything else still running with our config (should be nothing)
        for pid in self._our_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.sink:
            self.sink.stop()
            self.sink = None

    def _our_pids(self) -> list[int]:
        needle = str(self.cfg).encode()
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if needle in cmd.split(b"\0"):
                pids.append(int(d))
        return pids

    def run_after_idle(self) -> None:
        todo, self.after_idle = self.after_idle, []
        for fn in todo:
            fn()

    def wait_idle(self, timeout: float = IDLE_TIMEOUT, settle: float = 0.3) -> None:
        """Wait until no Exim process of ours runs except the daemon (deliveries, bounces, SMTP children)."""
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            busy = [p for p in self._our_pids() if p != self.daemon_pid]
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
            time.sleep(0.05)
        raise HarnessError(f"exim did not become idle within {timeout}s: {busy}")

    # ---------------------------------------------------------------- command line

    def exim_cmd(
        self, *args: str, input_: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [self.exim, "-C", str(self.cfg), *args],
            input=input_,
            cwd=self.rt,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and r.returncode != 0:
            raise HarnessError(f"exim {' '.join(args)} -> {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def queue_ids(self) -> list[str]:
        r = self.exim_cmd("-bp", check=False)
        return re.findall(r"^\s*\S+\s+\S+\s+(" + ID_RE + r")\b", r.stdout, re.M)

    # ---------------------------------------------------------------- SMTP

    def message(
        self, scenario: str, subject: str, sender: str, rcpts: list[str], size_pad: int = 0
    ) -> EmailMessage:
        self.counter += 1
        m = EmailMessage()
        m["From"] = sender
        m["To"] = ", ".join(rcpts)
        m["Subject"] = subject
        m["Date"] = formatdate(usegmt=True)
        m["Message-ID"] = f"<{self.mode}-{scenario.lower()}-{self.counter}@client.example>"
        body = f"Scenario {scenario} ({self.mode}).\n"
        if size_pad:
            body += ("x" * 76 + "\n") * (size_pad // 77 + 1)
        m.set_content(body)
        return m

    def smtp(self, helo: str = "client.example") -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname=helo, timeout=30)
        s.ehlo(helo)
        return s

    def send(
        self,
        scenario: str,
        subject: str,
        sender: str,
        rcpts: list[str],
        *,
        auth: bool | str = False,
        s: smtplib.SMTP | None = None,
        tls: bool = False,
        rcpt_options: dict[str, list[str]] | None = None,
    ) -> dict:
        """One SMTP transaction. Returns {"msgid", "accepted": [rcpt], "data_reply": (code, text)}."""
        own = s is None
        if own:
            s = self.smtp()
        try:
            if tls:
                s.starttls(context=ssl._create_unverified_context())
                s.ehlo("client.example")
            if auth:
                s.user, s.password = AUTH_USER, AUTH_PASSWORD
                if auth == "PLAIN":
                    code, resp = s.auth("PLAIN", s.auth_plain)
                else:
                    code, resp = s.auth("LOGIN", s.auth_login)
                if code != 235:
                    raise HarnessError(f"AUTH failed: {code} {resp!r}")
            code, resp = s.mail(sender)
            if code != 250:
                raise HarnessError(f"{scenario}: MAIL {sender} -> {code} {resp!r}")
            accepted = []
            for r in rcpts:
                code, resp = s.rcpt(r, (rcpt_options or {}).get(r, []))
                if code == 250:
                    accepted.append(r)
                else:
                    self.rejections.append(
                        {
                            "recipient": r.lower(),
                            "sender": sender.lower(),
                            "temporary": 400 <= code < 500,
                            "scenario": scenario,
                            "kind": "RCPT",
                            "code": code,
                        }
                    )
            msgid = None
            data_reply = None
            message_id = None
            if accepted:
                msg = self.message(scenario, subject, sender, rcpts)
                message_id = msg["Message-ID"]
                code, resp = s.data(msg.as_bytes())
                text = resp.decode("utf-8", "replace")
                data_reply = (code, text)
                if code == 250:
                    m = REPLY_ID_RE.search(text)
                    msgid = m.group(1) if m else None
            else:
                s.rset()
            return {"msgid": msgid, "accepted": accepted, "data_reply": data_reply, "message_id": message_id}
        finally:
            if own:
                with contextlib.suppress(Exception):
                    s.quit()

    def register(self, scenario: str, msgid: str, sender: str) -> None:
        if msgid in self.messages:
            raise HarnessError(f"{scenario}: msgid {msgid} already used by {self.messages[msgid]}")
        self.messages[msgid] = scenario
        self.senders[msgid] = sender.lower()

    def add_expected(self, scenario: str, msgid: str, recipient: str, type_: str, **extra) -> None:
        rec = {"msgid": msgid, "recipient": recipient.lower(), "type": type_, "scenario": scenario}
        for k, v in extra.items():
            rec[k] = v.lower() if k == "deliveredto" and isinstance(v, str) else v
        self.expected.append(rec)

    def accept(self, scenario: str, subject: str, sender: str, rcpts: list[str], **kw) -> str:
        """Send and require acceptance with a msgid from the DATA reply."""
        self.scenarios.setdefault(scenario, subject)
        r = self.send(scenario, subject, sender, rcpts, **kw)
        if not r["msgid"]:
            raise HarnessError(f"{scenario}: no message id in DATA reply {r['data_reply']!r}")
        self.register(scenario, r["msgid"], sender)
        return r["msgid"]

    def mailbox_id(self, user: str, message_id: str) -> str | None:
        """The Exim id of a message delivered to a local mailbox (from its Received: header)."""
        for p in sorted((self.rt / "mail" / user).glob("*/*")):
            text = p.read_text(encoding="utf-8", errors="replace")
            head = text.split("\n\n", 1)[0]
            if message_id in head:
                m = RECEIVED_ID_RE.search(head)
                return m.group(1) if m else None
        return None

    # ---------------------------------------------------------------- generated messages

    def find_bounces(self) -> dict[str, str]:
        """child id -> parent id, from `<= <> R=<parent>` lines (the only log reading the harness does)."""
        out = {}
        with open(self.rt / "log" / "mainlog", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                m = BOUNCE_RE.search(line)
                if m:
                    out[m.group(1)] = m.group(2)
        return out


# Every scenario: name, then a function (run) that does its phase-1 part, and optionally later phases.
# Phases: 1 = immediate submissions; 2 = after the first queue run (sleep + exim -qf);
# 3 = after the last queue run (messages that must stay queued).

ALICE = "alice@local.test"
BOB = "bob@local.test"


def s01_local(r: EximRun) -> None:
    sc = "S01"
    mid = r.accept(sc, "S01 local delivery", ALICE, [BOB])
    r.add_expected(sc, mid, BOB, "success")


def s02_multi(r: EximRun) -> None:
    sc = "S02"
    rcpts = ["ok-a@remote.test", "ok-b@remote.test", "carol@local.test"]
    mid = r.accept(sc, "S02 several recipients", ALICE, rcpts)
    for rc in rcpts:
        r.add_expected(sc, mid, rc, "success")


def s03_forward(r: EximRun) -> None:
    sc = "S03"
    mid = r.accept(sc, "S03 forwarder expansion", BOB, ["list@local.test"])
    for d in ("ok-list1@remote.test", "ok-list2@remote.test", "alice@local.test"):
        r.add_expected(sc, mid, "list@local.test", "success", deliveredto=d)


def s04_remote_ok(r: EximRun) -> None:
    sc = "S04"
    mid = r.accept(sc, "S04 remote 250", ALICE, ["ok-remote@remote.test"])
    r.add_expected(sc, mid, "ok-remote@remote.test", "success")


def s05_tempfail_once(r: EximRun) -> None:
    sc = "S05"
    mid = r.accept(sc, "S05 remote 451 then 250", ALICE, ["tempfail-once@remote.test"])
    r.add_expected(sc, mid, "tempfail-once@remote.test", "success", first="defer")


def s06_tempfail_always(r: EximRun) -> None:
    sc = "S06"
    mid = r.accept(sc, "S06 remote always 451", ALICE, ["tempfail-always@remote.test"])
    r.add_expected(sc, mid, "tempfail-always@remote.test", "defer")


def s07_remote_550(r: EximRun) -> None:
    sc = "S07"
    mid = r.accept(sc, "S07 remote 550", ALICE, ["bad-user@remote.test"])
    r.add_expected(sc, mid, "bad-user@remote.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


def s08_unknown_local(r: EximRun) -> None:
    sc = "S08"
    mid = r.accept(sc, "S08 unknown local user", ALICE, ["ghost@local.test"])
    r.add_expected(sc, mid, "ghost@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


def s09_blackhole(r: EximRun) -> None:
    sc = "S09"
    mid = r.accept(sc, "S09 blackhole", ALICE, ["devnull@local.test"])
    r.add_expected(sc, mid, "devnull@local.test", "filtered")


def s10_pipe_ok(r: EximRun) -> None:
    sc = "S10"
    mid = r.accept(sc, "S10 pipe ok", ALICE, ["pipe-ok@local.test"])
    r.add_expected(sc, mid, "pipe-ok@local.test", "success")


def s11_pipe_fail(r: EximRun) -> None:
    sc = "S11"
    mid = r.accept(sc, "S11 pipe fail", ALICE, ["pipe-fail@local.test"])
    r.add_expected(sc, mid, "pipe-fail@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


def s12_fail(r: EximRun) -> None:
    sc = "S12"
    mid = r.accept(sc, "S12 redirect :fail:", ALICE, ["closed@local.test"])
    r.add_expected(sc, mid, "closed@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


def s13_defer(r: EximRun) -> None:
    sc = "S13"
    mid = r.accept(sc, "S13 redirect :defer:", ALICE, ["onhold@local.test"])
    r.add_expected(sc, mid, "onhold@local.test", "defer")


def s14_cutthrough(r: EximRun) -> None:
    sc = "S14"
    subject = "S14 cutthrough delivery"
    r.scenarios[sc] = subject
    before = len(r.sink.messages)
    res = r.send(sc, subject, ALICE, ["ok-cut@cut.test"])
    if not res["accepted"] or not res["data_reply"] or res["data_reply"][0] != 250:
        raise HarnessError(f"{sc}: not accepted: {res!r}")
    mid = res["msgid"]
    if not mid:
        # with cutthrough the client gets the downstream reply; the Exim id is in the Received: header the
        # sink got (" with esmtp id <msgid>")
        got = [m for m in r.sink.messages[before:] if "ok-cut@cut.test" in m["rcpts"]]
        ids = got[-1]["exim_ids"] if got else []
        if not ids:
            raise HarnessError(f"{sc}: no message id (reply {res['data_reply']!r}, sink {got!r})")
        mid = ids[0]
    r.register(sc, mid, ALICE)
    r.add_expected(sc, mid, "ok-cut@cut.test", "success")


def s15_rcpt_reject(r: EximRun) -> None:
    sc = "S15"
    # one transaction: spam trap (550), greylist (451), then a good recipient that is delivered
    mid = r.accept(
        sc,
        "S15 rcpt rejections",
        ALICE,
        ["spamtrap-1@local.test", "greylist-1@local.test", "carol@local.test"],
    )
    r.add_expected(sc, mid, "carol@local.test", "success")
    kinds = {x["recipient"]: x for x in r.rejections if x["scenario"] == sc}
    if set(kinds) != {"spamtrap-1@local.test", "greylist-1@local.test"}:
        raise HarnessError(f"{sc}: unexpected rejections {kinds}")


def s16_mail_reject(r: EximRun) -> None:
    sc = "S16"
    r.scenarios[sc] = "S16 MAIL rejection"
    s = r.smtp()
    try:
        code, resp = s.mail("spammer@blocked-sender.test")
        if code < 400:
            raise HarnessError(f"{sc}: MAIL accepted: {code} {resp!r}")
        r.rejections.append(
            {
                "recipient": "",
                "sender": "spammer@blocked-sender.test",
                "temporary": code < 500,
                "scenario": sc,
                "kind": "MAIL",
                "code": code,
            }
        )
    finally:
        with contextlib.suppress(Exception):
            s.quit()


def s17_data_reject(r: EximRun) -> None:
    sc = "S17"
    subject = "S17 REJECT-CONTENT data rejection"
    r.scenarios[sc] = subject
    res = r.send(sc, subject, ALICE, [BOB])
    code = res["data_reply"][0] if res["data_reply"] else 0
    if code < 400:
        raise HarnessError(f"{sc}: DATA not rejected: {res!r}")
    r.rejections.append(
        {
            "recipient": "",
            "sender": ALICE,
            "temporary": code < 500,
            "scenario": sc,
            "kind": "DATA",
            "code": code,
        }
    )


def s18_too_big(r: EximRun) -> None:
    sc = "S18"
    r.scenarios[sc] = "S18 message too big"
    s = r.smtp()
    try:
        code, resp = s.mail(BOB, ["SIZE=80000"])
        if code < 400:
            raise HarnessError(f"{sc}: MAIL SIZE=80000 accepted: {code} {resp!r}")
        r.rejections.append(
            {
                "recipient": "",
                "sender": BOB,
                "temporary": code < 500,
                "scenario": sc,
                "kind": "SIZE",
                "code": code,
            }
        )
    finally:
        with contextlib.suppress(Exception):
            s.quit()


def s19_frozen(r: EximRun) -> None:
    sc = "S19"
    mid = r.accept(sc, "S19 frozen by ACL [freeze]", ALICE, ["dave@local.test"])
    r.add_expected(sc, mid, "dave@local.test", "inprogress", frozen=True)


def s20_queued(r: EximRun) -> None:  # phase 3
    sc = "S20"
    mid = r.accept(sc, "S20 queued only [queue]", ALICE, ["carol@local.test"])
    r.add_expected(sc, mid, "carol@local.test", "inprogress")


def s21_removed(r: EximRun) -> None:  # phase 3
    sc = "S21"
    mid = r.accept(sc, "S21 removed by -Mrm [queue]", ALICE, ["bob@local.test"])
    r.exim_cmd("-Mrm", mid)
    r.add_expected(sc, mid, "bob@local.test", "failure", how="removed")


def s22_cancelled(r: EximRun) -> None:  # phase 3
    sc = "S22"
    mid = r.accept(sc, "S22 cancelled by -Mg [queue]", ALICE, ["ok-cancel@remote.test"])
    r.exim_cmd("-Mg", mid)
    r.add_expected(sc, mid, "ok-cancel@remote.test", "failure", how="cancelled")
    r.generated_parents[mid] = (sc, "bounce")


def s23_dead_host(r: EximRun) -> None:
    sc = "S23"
    mid = r.accept(sc, "S23 dead host retry timeout", ALICE, ["user@dead.test"])
    r.dead_accepted_at = time.monotonic()
    r.dead_msgid = mid
    r.add_expected(sc, mid, "user@dead.test", "failure", first="defer", how="retry timeout")
    r.generated_parents[mid] = (sc, "bounce")


def s24_auth(r: EximRun) -> None:
    sc = "S24"
    rcpts = ["ok-auth@remote.test", "carol@local.test"]
    mid = r.accept(sc, "S24 authenticated submission", ALICE, rcpts, auth=True)
    for rc in rcpts:
        r.add_expected(sc, mid, rc, "success")


def _submit_and_deliver(r: EximRun, sc: str, subject: str) -> str:
    """dave submits a message to alice on the command line (-odq: queued; its id read from `exim -bp`),
    then it is delivered (-M); returns its id."""
    r.scenarios[sc] = subject
    before = set(r.queue_ids())
    msg = r.message(sc, subject, "dave@local.test", [ALICE])
    r.exim_cmd("-odq", "-f", "dave@local.test", ALICE, input_=msg.as_string())
    new = [i for i in r.queue_ids() if i not in before]
    if len(new) != 1:
        raise HarnessError(f"{sc}: expected one new queued message, got {new}")
    mid = new[0]
    r.register(sc, mid, "dave@local.test")
    r.exim_cmd("-M", mid)
    return mid


def s25_local_cli(r: EximRun) -> None:
    mid = _submit_and_deliver(r, "S25", "S25 local command-line submission")
    r.add_expected("S25", mid, ALICE, "success")


def s26_auth_fail(r: EximRun) -> None:
    """Noise: a failed AUTH and a connection without MAIL (no message, no rejection record)."""
    sc = "S26"
    r.scenarios[sc] = "S26 failed AUTH (noise)"
    s = r.smtp()
    try:
        s.user, s.password = AUTH_USER, "wrong-password"
        with contextlib.suppress(smtplib.SMTPAuthenticationError):
            s.auth("LOGIN", s.auth_login)
    finally:
        with contextlib.suppress(Exception):
            s.quit()


def s27_mixed_case(r: EximRun) -> None:
    sc = "S27"
    mid = r.accept(sc, "S27 mixed-case recipient", ALICE, ["Carol@Local.TEST"])
    r.add_expected(sc, mid, "carol@local.test", "success")


def s28_mixed_outcome(r: EximRun) -> None:
    sc = "S28"
    mid = r.accept(sc, "S28 one delivered one failed", ALICE, [BOB, "ghost2@local.test"])
    r.add_expected(sc, mid, BOB, "success")
    r.add_expected(sc, mid, "ghost2@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


TRICKY_SUBJECT = (
    'S29 tricky "quoted" \\ subject for bob@local.test R=fake T=fake S=1 <= x ünïcødé '
    "and long enough to pass the hundred characters Exim keeps in T= ........ END"
)


def s29_tricky_subject(r: EximRun) -> None:
    sc = "S29"
    mid = r.accept(sc, TRICKY_SUBJECT, ALICE, [BOB])
    r.add_expected(sc, mid, BOB, "success")


def s30_quoted_local_part(r: EximRun) -> None:
    sc = "S30"
    rc = '"ok quoted"@remote.test'
    mid = r.accept(sc, "S30 quoted local part", ALICE, [rc])
    r.add_expected(sc, mid, rc, "success")


def s31_success_dsn(r: EximRun) -> None:
    sc = "S31"
    rc = "carol@local.test"
    mid = r.accept(sc, "S31 success DSN requested", ALICE, [rc], rcpt_options={rc: ["NOTIFY=SUCCESS"]})
    r.add_expected(sc, mid, rc, "success")
    r.generated_parents[mid] = (sc, "dsn")


def s32_notify_never(r: EximRun) -> None:
    sc = "S32"
    rc = "bad-never@remote.test"
    mid = r.accept(sc, "S32 failure with NOTIFY=NEVER", ALICE, [rc], rcpt_options={rc: ["NOTIFY=NEVER"]})
    r.add_expected(sc, mid, rc, "failure", how="error ignored")


def s33_delay_warning(r: EximRun) -> None:
    sc = "S33"
    rc = "tempfail-warn@remote.test"
    mid = r.accept(sc, "S33 delay warning [warn]", "dave@local.test", [rc])
    r.add_expected(sc, mid, rc, "defer")
    r.generated_parents[mid] = (sc, "warning")


def s34_thawed(r: EximRun) -> None:  # phase 3
    sc = "S34"
    mid = r.accept(sc, "S34 frozen, thawed by -Mt, delivered by -M [freeze]", ALICE, ["carol@local.test"])
    r.exim_cmd("-Mt", mid)
    r.exim_cmd("-M", mid)
    r.add_expected(sc, mid, "carol@local.test", "success", first="inprogress")


def s35_suppressed(r: EximRun) -> None:  # phase 3
    sc = "S35"
    mid = r.accept(sc, "S35 delivery suppressed by -N [queue]", ALICE, [BOB])
    r.exim_cmd("-N", "-M", mid)
    r.add_expected(sc, mid, BOB, "success", how="suppressed")


def s36_two_in_one_connection(r: EximRun) -> None:
    sc = "S36"
    s = r.smtp()
    try:
        m1 = r.accept(sc, "S36 first of two in one connection", ALICE, [BOB], s=s)
        m2 = r.accept(
            sc, "S36 second of two in one connection", BOB, ["spamtrap-2@local.test", "carol@local.test"], s=s
        )
    finally:
        with contextlib.suppress(Exception):
            s.quit()
    r.add_expected(sc, m1, BOB, "success")
    r.add_expected(sc, m2, "carol@local.test", "success")


def s37_tls_auth(r: EximRun) -> None:
    sc = "S37"
    rcpts = ["ok-tls@remote.test", BOB]
    mid = r.accept(sc, "S37 STARTTLS and AUTH PLAIN", ALICE, rcpts, tls=True, auth="PLAIN")
    for rc in rcpts:
        r.add_expected(sc, mid, rc, "success")


def s38_fakereject(r: EximRun) -> None:
    sc = "S38"
    subject = "S38 fakereject [fakereject]"
    r.scenarios[sc] = subject
    res = r.send(sc, subject, ALICE, [BOB])
    code = res["data_reply"][0] if res["data_reply"] else 0
    if code < 500:
        raise HarnessError(f"{sc}: expected a (fake) 5xx reply to DATA, got {res['data_reply']!r}")

    def resolve() -> None:
        # the client was told 5xx, but the message was kept and delivered: its id is in the mailbox
        mid = res["msgid"] or r.mailbox_id("bob", res["message_id"])
        if not mid:
            r.problems.append(f"{sc}: fakereject message not found in bob's mailbox")
            return
        r.register(sc, mid, ALICE)
        r.add_expected(sc, mid, BOB, "success", fakereject=True)

    r.after_idle.append(resolve)


def s39_protocol_noise(r: EximRun) -> None:
    """Noise without messages: a pipelining sync error, a syntax error, a transaction dropped after RCPT,
    and a connection lost in the middle of DATA. Nothing is accepted, nothing is expected."""
    sc = "S39"
    r.scenarios[sc] = "S39 SMTP protocol noise (no messages)"

    def talk(helo: str, chunks: list[bytes], pause: float = 0.15) -> None:
        with socket.create_connection(("127.0.0.1", r.port), timeout=10) as so:
            so.recv(4096)
            so.sendall(f"HELO {helo}\r\n".encode())
            so.recv(4096)
            so.settimeout(0.3)  # no reply is due in the middle of DATA
            for c in chunks:
                so.sendall(c)
                time.sleep(pause)
                with contextlib.suppress(OSError):
                    so.recv(4096)

    # HELO (no PIPELINING advertised), then MAIL and RCPT in one packet
    talk("early.example", [b"MAIL FROM:<alice@local.test>\r\nRCPT TO:<bob@local.test>\r\n", b"QUIT\r\n"])
    talk("idle.example", [b"FOOBAR\r\n", b"QUIT\r\n"])
    talk("dropper.example", [b"MAIL FROM:<alice@local.test>\r\n", b"RCPT TO:<bob@local.test>\r\n"])
    talk(
        "halfway.example",
        [
            b"MAIL FROM:<alice@local.test>\r\n",
            b"RCPT TO:<bob@local.test>\r\n",
            b"DATA\r\n",
            b"Subject: cut\r\n",
        ],
    )


def s40_remote_sender_bounce(r: EximRun) -> None:
    sc = "S40"
    mid = r.accept(sc, "S40 bounce to a remote sender", "ext-sender@remote.test", ["ghost3@local.test"])
    r.add_expected(sc, mid, "ghost3@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")


def s41_failed_bounce(r: EximRun) -> None:
    sc = "S41"
    mid = r.accept(sc, "S41 bounce that fails", "bad-sender@remote.test", ["ghost4@local.test"])
    r.add_expected(sc, mid, "ghost4@local.test", "failure")
    r.generated_parents[mid] = (sc, "bounce")
    # the bounce is refused by the sender's server: `** … F=<>`, then frozen on the queue
    r.generated_outcome[mid] = ("failure", {"frozen": True})


def _local_rejection(r: EximRun, sc: str, subject: str, sender: str, kind: str, size_pad: int = 0) -> None:
    """A command-line submission Exim refuses before queueing it: logged with its message id, outside SMTP.
    With a sender, -oep sends the error to the submitter, so no error report message is generated; the null
    sender has nobody to tell, and Exim says so in a second line of the same id."""
    r.scenarios[sc] = subject
    msg = r.message(sc, subject, sender or "nobody@local.test", [ALICE], size_pad=size_pad)
    errors = ["-oep"] if sender else []
    res = r.exim_cmd("-odi", *errors, "-f", sender or "<>", ALICE, input_=msg.as_string(), check=False)
    if res.returncode == 0:
        raise HarnessError(f"{sc}: the submission was accepted")
    r.rejections.append(
        {"recipient": "", "sender": sender, "temporary": False, "scenario": sc, "kind": kind, "code": None}
    )


def s42_local_too_big(r: EximRun) -> None:
    # `<id> rejected from <dave@local.test> U=root: message too big: read=51201 max=51200`
    _local_rejection(r, "S42", "S42 local submission too big", "dave@local.test", "LOCAL_SIZE", 60_000)


def s43_non_smtp_acl(r: EximRun) -> None:
    # `<id> F=<dave@local.test> rejected by non-SMTP ACL: local submission refused by policy`
    _local_rejection(r, "S43", "S43 NONSMTP-DENY local submission", "dave@local.test", "LOCAL_ACL")


def s44_non_smtp_acl_null_sender(r: EximRun) -> None:
    # `<id> F=<> rejected by non-SMTP ACL: …` then `<id> Error while reading message with no usable sender
    # address: rejected by non-SMTP ACL: …` (nobody to tell)
    _local_rejection(r, "S44", "S44 NONSMTP-DENY from the null sender", "", "LOCAL_ACL")


def s45_acl_logwrite(r: EximRun) -> None:
    # `<id> data acl: dkim status pass` (an ACL's logwrite): a line of the message, no outcome
    sc = "S45"
    mid = r.accept(sc, "S45 LOGWRITE in the DATA ACL", ALICE, [BOB])
    r.add_expected(sc, mid, BOB, "success")


def s46_system_filter(r: EximRun) -> None:
    # `<id> original recipients ignored (system filter)`, `<id> => bob <system-filter> R=virtual_user …`
    sc = "S46"
    mid = _submit_and_deliver(r, sc, "S46 SYSFILTER redirect")
    r.add_expected(sc, mid, ALICE, "filtered", how="system filter")
    r.add_expected(sc, mid, "system-filter", "success", deliveredto=BOB)


PHASE1 = [
    s23_dead_host,  # first: its retry cutoff must pass before the queue run
    s33_delay_warning,  # early: it must be older than delay_warning at the queue run
    s01_local,
    s02_multi,
    s03_forward,
    s04_remote_ok,
    s05_tempfail_once,
    s06_tempfail_always,
    s07_remote_550,
    s08_unknown_local,
    s09_blackhole,
    s10_pipe_ok,
    s11_pipe_fail,
    s12_fail,
    s13_defer,
    s14_cutthrough,
    s15_rcpt_reject,
    s16_mail_reject,
    s17_data_reject,
    s18_too_big,
    s19_frozen,
    s24_auth,
    s25_local_cli,
    s26_auth_fail,
    s27_mixed_case,
    s28_mixed_outcome,
    s29_tricky_subject,
    s30_quoted_local_part,
    s31_success_dsn,
    s32_notify_never,
    s36_two_in_one_connection,
    s37_tls_auth,
    s38_fakereject,
    s39_protocol_noise,
    s40_remote_sender_bounce,
    s41_failed_bounce,
    s42_local_too_big,
    s43_non_smtp_acl,
    s44_non_smtp_acl_null_sender,
    s45_acl_logwrite,
    s46_system_filter,
]
PHASE3 = [s20_queued, s21_removed, s22_cancelled, s34_thawed, s35_suppressed]
SCENARIOS = PHASE1 + PHASE3


# --------------------------------------------------------------------------------------------------------


def _self_check(r: EximRun) -> None:
    """Compare the truth with the queue at the end and with the bounce children found."""
    q = set(r.queue_at_end)
    by_msg: dict[str, set[str]] = {}
    for e in r.expected:
        by_msg.setdefault(e["msgid"], set()).add("frozen" if e.get("frozen") else e["type"])
    for mid, types in by_msg.items():
        pending = bool(types & {"defer", "inprogress", "frozen"})
        if pending != (mid in q):
            r.problems.append(f"{mid} ({r.messages.get(mid)}): types {sorted(types)} but on queue={mid in q}")
    for mid in q:
        if mid not in by_msg:
            r.problems.append(f"{mid} on the queue but not expected")


def run_exim_scenarios(workdir: Path, mode: str) -> HarnessResult:
    """Run every scenario against a fresh Exim in `mode`; return the real main log and the truth."""
    t0 = time.monotonic()
    workdir = Path(workdir)
    r = EximRun(workdir, mode)
    try:
        r.setup()
        r.start_daemon()
        daemon_pid = r.daemon_pid
        # phase 1: immediate submissions (first delivery attempts run in the background)
        for fn in PHASE1:
            fn(r)
        r.wait_idle()
        r.run_after_idle()
        # phase 2: let the dead host's retry cutoff pass, then force a queue run: tempfail-once delivers,
        # tempfail-always and :defer: defer again, the dead host times out (failure + bounce)
        wait = max(DEAD_RETRY_CUTOFF, DELAY_WARNING) + 1.5
        time.sleep(max(0.0, r.dead_accepted_at + wait - time.monotonic()))
        r.exim_cmd("-qf")
        r.wait_idle()
        # on a loaded machine the first attempt of S23 may have come late, so its retry cutoff had not
        # passed at the queue run: retry only that message (nothing else changes)
        for _ in range(5):
            if r.dead_msgid not in r.queue_ids():
                break
            time.sleep(1.5)
            r.exim_cmd("-M", r.dead_msgid)
            r.wait_idle()
        # phase 3: messages that must stay queued, or that are removed/cancelled by the admin
        for fn in PHASE3:
            fn(r)
        r.wait_idle()
        r.run_after_idle()
        # messages generated by Exim (bounces, success DSNs, delay warnings): recipient = the parent's
        # envelope sender (always a local mailbox here), delivered at once
        children = r.find_bounces()
        seen: Counter[str] = Counter()
        for child, parent in children.items():
            if parent not in r.messages:
                r.problems.append(f"generated message {child} of unknown parent {parent}")
                continue
            sc = r.messages[parent]
            seen[parent] += 1
            r.messages[child] = sc
            kind = r.generated_parents.get(parent, (sc, "unexpected"))[1]
            type_, extra = r.generated_outcome.get(parent, ("success", {}))
            r.add_expected(sc, child, r.senders[parent], type_, parent=parent, generated=kind, **extra)
        for parent, (sc, kind) in r.generated_parents.items():
            if seen[parent] != 1:
                r.problems.append(f"{sc}: expected one {kind} of {parent}, found {seen[parent]}")
        for parent in set(seen) - set(r.generated_parents):
            r.problems.append(f"{r.messages[parent]}: unexpected generated message of {parent}")
        r.queue_at_end = r.queue_ids()
        _self_check(r)
    finally:
        r.stop()
        if (
            getattr(r, "rt", None)
            and os.environ.get("EXIMTRACK_KEEP_EXIM_RUNTIME") is None
            and not (r.rt / "log" / "mainlog").exists()
        ):
            shutil.rmtree(r.rt, ignore_errors=True)
    # copy the logs out of the runtime tree into workdir/log
    logdir = workdir / "log"
    logdir.mkdir(parents=True, exist_ok=True)
    for name in ("mainlog", "rejectlog", "paniclog"):
        src = r.rt / "log" / name
        if src.exists():
            shutil.copyfile(src, logdir / name)
    shutil.copyfile(r.cfg, workdir / "exim.conf")
    if not os.environ.get("EXIMTRACK_KEEP_EXIM_RUNTIME"):
        shutil.rmtree(r.rt, ignore_errors=True)
    res = HarnessResult(
        mainlog=logdir / "mainlog",
        expected=r.expected,
        rejections=r.rejections,
        log_selector=LOG_SELECTORS[mode],
        mode=mode,
        workdir=workdir,
        rejectlog=(logdir / "rejectlog") if (logdir / "rejectlog").exists() else None,
        paniclog=(logdir / "paniclog") if (logdir / "paniclog").exists() else None,
        messages=r.messages,
        scenarios=r.scenarios,
        queue_at_end=r.queue_at_end,
        problems=r.problems,
        runtime=time.monotonic() - t0,
        exim_version=r.exim_version,
        daemon_pid=daemon_pid,
    )
    return res


def run_all_modes(base: Path, modes=MODES, parallel: bool = True) -> dict[str, HarnessResult]:
    base = Path(base)
    if not parallel:
        return {m: run_exim_scenarios(base / m, m) for m in modes}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(modes)) as ex:
        futs = {m: ex.submit(run_exim_scenarios, base / m, m) for m in modes}
        return {m: f.result() for m, f in futs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, required=True, help="directory for mainlog-<mode>.log / expected-<mode>.json"
    )
    ap.add_argument("--mode", action="append", choices=MODES, help="default: all three")
    ap.add_argument("--serial", action="store_true", help="run the modes one after another")
    a = ap.parse_args(argv)
    modes = tuple(a.mode or MODES)
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eximtrack-harness-") as tmp:
        results = run_all_modes(Path(tmp), modes, parallel=not a.serial)
        rc = 0
        for m, res in results.items():
            shutil.copyfile(res.mainlog, a.out / f"mainlog-{m}.log")
            (a.out / f"expected-{m}.json").write_text(
                json.dumps(res.to_json(), indent=1, sort_keys=False) + "\n"
            )
            print(
                f"{m}: {len(res.expected)} expected, {len(res.rejections)} rejections, "
                f"{len(res.mainlog.read_bytes().splitlines())} log lines, {res.runtime:.1f}s"
            )
            for p in res.problems:
                print(f"  PROBLEM: {p}")
                rc = 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
