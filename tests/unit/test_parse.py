"""Parser: one test per line shape of the Exim main log (see ../shared/exim-log-format.md)."""

import pytest

from stream.parse import is_msgid, parse_line, unquote

RX = "2026-11-27 01:35:56.492 [18569] 1xWksW-0004pV-1a "


def test_prefix_variants():
    p = parse_line("2026-11-27 01:35:56.492 +0100 [18569] 1xWksW-0004pV-1a Completed")
    assert (p.kind, p.date, p.time, p.zone, p.pid, p.msgid) == (
        "completed",
        "2026-11-27",
        "01:35:56.492",
        "+0100",
        "18569",
        "1xWksW-0004pV-1a",
    )
    p = parse_line("2002-10-31 09:00:11 16ZCW1-0005MB-00 Completed")
    assert (p.kind, p.time, p.zone, p.pid, p.msgid) == ("completed", "09:00:11", None, "", "16ZCW1-0005MB-00")


def test_both_message_id_formats():
    assert is_msgid("1xWksW-0004pV-1a")
    assert is_msgid("10HmaX-000000005vi-0000")
    assert not is_msgid("10HmaX-00000005vi-0000")
    assert not is_msgid("luggage-1234Bz-Rm")
    p = parse_line("1999-03-02 09:44:33 10HmaX-000000005vi-0000 <= a@b.example U=x P=local S=12")
    assert p.msgid == "10HmaX-000000005vi-0000" and p.kind == "arrival"


def test_arrival_all_fields():
    p = parse_line(
        RX + "<= alice@local.test H=(client.example) [127.0.0.1]:37234 I=[127.0.0.1]:22525 P=esmtpsa L.- "
        "X=TLS1.3:ECDHE_X25519__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no A=dovecot_login:alice@local.test "
        'S=597 M8S=0 RT=0.000s id=all-s02@client.example T="S02 \\"quoted\\" for you from me" '
        "from <alice@local.test> for ok-a@remote.test ok-b@remote.test carol@local.test"
    )
    f = p.fields
    assert p.kind == "arrival" and p.flag == "<=" and p.address == "alice@local.test"
    assert (f["Hhelo"], f["Hip"], f["Hport"]) == ("client.example", "127.0.0.1", "37234")
    assert f["A"] == "dovecot_login:alice@local.test" and f["P"] == "esmtpsa" and f["S"] == "597"
    assert f["T"] == 'S02 "quoted" for you from me'
    assert f["id"] == "all-s02@client.example"
    assert f["from"] == "alice@local.test"
    assert f["for"].split() == ["ok-a@remote.test", "ok-b@remote.test", "carol@local.test"]
    assert "L.-" in f["flags"]


def test_arrival_bounce_and_helo_forms():
    p = parse_line(
        "2014-08-31 08:43:16 1XO5PY-0006SO-GS <= <> R=1XO5PX-0006SC-Qa U=mailnull P=local S=1951 "
        'T="Mail delivery failed: returning message to sender" for aaron@domain.com'
    )
    assert p.address == "<>" and p.fields["R"] == "1XO5PX-0006SC-Qa" and p.fields["for"] == "aaron@domain.com"
    p = parse_line(
        "2017-06-08 11:17:56 1dJ08B-0003oP-5i <= x@y.com H=real.example.com (ehlo.example.com) [192.168.250.101] P=esmtp S=1"
    )
    assert (p.fields["Hname"], p.fields["Hhelo"], p.fields["Hip"]) == (
        "real.example.com",
        "ehlo.example.com",
        "192.168.250.101",
    )
    p = parse_line(
        "2014-09-10 13:06:56 1XRlM6-003yMv-KG <= bob@bob.com H=mail.f.example[10.5.40.204]:46793 P=esmtpsa S=1"
    )
    assert (p.fields["Hname"], p.fields["Hip"], p.fields["Hport"]) == (
        "mail.f.example",
        "10.5.40.204",
        "46793",
    )
    p = parse_line(
        '2011-10-11 20:35:43 1RDnjR-0005ho-Uu <= "tuition portal <teo.jsm"@gmail.com H=(m) [1.2.3.4] P=esmtps S=7617'
    )
    assert p.address == '"tuition portal <teo.jsm"@gmail.com' and p.fields["S"] == "7617"


@pytest.mark.parametrize(
    "body,address,original,fields",
    [
        (
            "=> bob <bob@local.test> R=virtual_user T=dovecot_virtual_delivery",
            "bob",
            "bob@local.test",
            {"R": "virtual_user"},
        ),
        (
            '-> ok-list2@remote.test <list@local.test> F=<bob@local.test> R=lookuphost T=remote_smtp S=480 H=127.0.0.1 [127.0.0.1]:22526 I=[127.0.0.1]:43624 X=TLS1.3:A:256 CV=no DN="CN=realexim.test" C="250 2.0.0 Ok: queued as SINK00002" QT=0.012s DT=0.004s',
            "ok-list2@remote.test",
            "list@local.test",
            {
                "C": "250 2.0.0 Ok: queued as SINK00002",
                "Hip": "127.0.0.1",
                "QT": "0.012s",
                "DN": "CN=realexim.test",
            },
        ),
        ("=> :blackhole: <devnull@local.test> R=virtual_aliases", ":blackhole:", "devnull@local.test", {}),
        (
            "=> |/srv/mail/bin/pipe-ok.sh <pipe-ok@local.test> R=virtual_aliases T=address_pipe",
            "|/srv/mail/bin/pipe-ok.sh",
            "pipe-ok@local.test",
            {"T": "address_pipe"},
        ),
        (
            "=> /home/c/mail/.Server Status/ <x@c.net> R=virtual_user_filter T=address_directory",
            "/home/c/mail/.Server Status/",
            "x@c.net",
            {},
        ),
        (
            "*> carol <carol@local.test> R=virtual_user T=dovecot_virtual_delivery S=0",
            "carol",
            "carol@local.test",
            {"S": "0"},
        ),
        (
            "=> /dev/null (erice@cpanel.net) <techmgr@cpanel.net> R=virtual_user_filter T=**bypassed**",
            "/dev/null",
            "techmgr@cpanel.net",
            {"T": "**bypassed**"},
        ),
    ],
)
def test_delivery_lines(body, address, original, fields):
    p = parse_line(RX + body)
    assert p.kind == "delivery"
    assert (p.address, p.original) == (address, original)
    for k, v in fields.items():
        assert p.fields[k] == v


@pytest.mark.parametrize(
    "body,address,message,fields",
    [
        (
            "** ghost@local.test F=<alice@local.test>: Unrouteable address DT=0.000s",
            "ghost@local.test",
            "Unrouteable address",
            {"DT": "0.000s"},
        ),
        ("** nonexist@test.ex : Unrouteable address", "nonexist@test.ex", "Unrouteable address", {}),
        ("** a@unknown.ex: retry timeout exceeded", "a@unknown.ex", "retry timeout exceeded", {}),
        (
            "** closed@local.test F=<bob@local.test> R=virtual_aliases: Account closed by administrator DT=0.000s",
            "closed@local.test",
            "Account closed by administrator",
            {"R": "virtual_aliases"},
        ),
        (
            '** bad@remote.test R=lookuphost T=remote_smtp H=127.0.0.1 [127.0.0.1]:22526 X=TLS1.3:B:256 CV=no DN="CN=realexim.test": SMTP error from remote mail server after RCPT TO:<bad@remote.test>: 550 5.1.1 unknown DT=0.000s',
            "bad@remote.test",
            "SMTP error from remote mail server after RCPT TO:<bad@remote.test>: 550 5.1.1 unknown",
            {"T": "remote_smtp", "Hip": "127.0.0.1", "DN": "CN=realexim.test"},
        ),
        (
            "** userz@d.com R=all T=smtp H=127.0.0.1 [127.0.0.1]:1025 I=[127.0.0.1]:10001 : SMTP error: 550 Recipient refused",
            "userz@d.com",
            "SMTP error: 550 Recipient refused",
            {"I": "[127.0.0.1]:10001"},
        ),
        (
            "** x@y.ex R=r1 T=t1 H=127.0.0.1 [127.0.0.1]: SMTP error after DATA: 500 NO",
            "x@y.ex",
            "SMTP error after DATA: 500 NO",
            {"Hip": "127.0.0.1"},
        ),
    ],
)
def test_failure_lines(body, address, message, fields):
    p = parse_line(RX + body)
    assert p.kind == "failure" and p.address == address and p.message == message
    for k, v in fields.items():
        assert p.fields[k] == v


@pytest.mark.parametrize(
    "body,address,message,errno",
    [
        (
            "== later@remote.test R=lookuphost T=remote_smtp defer (-44) H=127.0.0.1 [127.0.0.1]:22526 DT=0.000s: SMTP error: 451 Greylisted",
            "later@remote.test",
            "SMTP error: 451 Greylisted",
            "-44",
        ),
        (
            "== nobody@dead.test R=lookuphost_dead T=remote_smtp_dead defer (111): Connection refused DT=0.000s",
            "nobody@dead.test",
            "Connection refused",
            "111",
        ),
        (
            "== tmp@remote.test routing defer (-52) DT=0.000s: retry time not reached",
            "tmp@remote.test",
            "retry time not reached",
            "-52",
        ),
        (
            "== second@test.ex <first@test.ex> R=first defer (-1): deferred by aliasfile",
            "second@test.ex",
            "deferred by aliasfile",
            "-1",
        ),
    ],
)
def test_defer_lines(body, address, message, errno):
    p = parse_line(RX + body)
    assert p.kind == "defer" and p.address == address and p.message == message and p.fields["errno"] == errno


@pytest.mark.parametrize(
    "body,kind",
    [
        ("Completed QT=0.2s", "completed"),
        ("frozen by ACL", "frozen"),
        ("Frozen (delivery error message)", "frozen"),
        ("Message is frozen", "frozen"),
        ("unfrozen by root", "unfrozen"),
        ("Unfrozen by forced delivery", "unfrozen"),
        ("removed by root", "removed"),
        ("cancelled by root", "cancelled"),
        ("bad-never@remote.test: error ignored: RFC 3461 DSN, failure notify not requested", "error_ignored"),
        ("no immediate delivery: queued by ACL", "queued"),
        ("Spool file for 1xWkt1-0004ra-15 is locked (another process is handling this message)", "locked"),
        ("H=127.0.0.1 [127.0.0.1]:22527 Connection refused", "info"),
        ("SMTP error from remote mail server after end of data: host x [1.2.3.4]: 421 busy", "info"),
        (
            'H=(c) [127.0.0.1]:37234 Warning: "SpamAssassin as cpaneleximscanner detected message as NOT spam (0.4)"',
            "spam",
        ),
        ("Sender identification U=bob D=bob.example S=bob@bob.example", "identification"),
        ("something nobody has ever logged", "note"),
        # lines seen in real configurations (issue 16): kept as notes of their message
        ("data acl: dkim status pass", "note"),
        ("$h_from: '<postmaster@test.ex>'", "note"),
        ("cipher TLS1.3:TLS_AES_256_GCM_SHA384:256", "note"),
        ("peer cert verified 1", "note"),
        ("our cert subject CN=myhost.test.ex", "note"),
        ("Authentication-Results: myhost.test.ex; dkim=pass header.d=test.ex", "note"),
        ("arc_state: <none>", "note"),
        ("signer: test.ex bits: 1024", "note"),
        (
            "DANE attempt failed; TLS connection to ip4.ip4.ip4.ip4 [127.0.0.1]:1225 (certificate verification "
            "failed): certificate invalid",
            "note",
        ),  # fmt: skip
        ("original recipients ignored (system filter)", "recipients_ignored"),
        (
            "Error while reading message with no usable sender address (R=1xWksW-0004pV-1a): message too big "
            "(limit set to 51200)",
            "note",
        ),  # fmt: skip
        ("Child mail process returned status 1", "note"),
        # rejections outside SMTP
        ("rejected from <> U=CALLER: message too big: read=501 max=500", "rejection"),
        ("F=<a@b.test> rejected by non-SMTP ACL: refused", "rejection"),
        ("local_scan() function timed out - message temporarily rejected (size 30)", "rejection"),
        (
            "local_scan() function crashed with signal 11 - message temporarily rejected (size 35)",
            "rejection",
        ),
        ("", "unparsed"),
    ],
)
def test_message_lines_without_flag(body, kind):
    assert parse_line(RX + body).kind == kind


def test_rejections_outside_smtp_carry_sender_user_size_and_reason():
    p = parse_line(RX + "rejected from <> U=CALLER: message too big: read=501 max=500")
    assert (p.msgid, p.fields, p.message) == (
        RX.split()[3],
        {"kind": "SIZE", "temporary": "", "F": "<>", "U": "CALLER", "S": "501"},
        "rejected from <>: message too big: read=501 max=500",
    )
    p = parse_line(RX + "F=<a@b.test> U=alice rejected by non-SMTP ACL: refused by policy")
    assert (p.fields["F"], p.fields["U"], p.fields["kind"], p.message) == (
        "<a@b.test>", "alice", "LOCAL", "rejected by non-SMTP ACL: refused by policy")  # fmt: skip
    p = parse_line(
        RX + "local_scan() function crashed with signal 11 - message temporarily rejected (size 35)"
    )
    assert (p.fields["temporary"], p.fields["S"]) == ("1", "35")
    # not one of those forms: an ordinary note
    assert parse_line(RX + "the word rejected by non-SMTP ACL in free text").kind == "note"


def test_spam_score_and_outgoing_variant():
    p = parse_line(RX + 'H=h [1.2.3.4]:1 Warning: "SpamAssassin as marka22 detected message as spam (11.0)"')
    assert p.fields["score"] == "11.0" and p.fields["Hip"] == "1.2.3.4"
    p = parse_line(
        RX
        + 'H=m[10.5.40.204]:46793 Warning: "SpamAssassin as cpaneleximscanner detected OUTGOING smtp message as NOT spam (-0.1)"'
    )
    assert p.kind == "spam" and p.fields["score"] == "-0.1"


@pytest.mark.parametrize(
    "line,address,sender,temporary,kind",
    [
        (
            "2026-11-27 01:36:01.884 [18611] H=(client.example) [127.0.0.1]:52728 I=[127.0.0.1]:22525 F=<alice@local.test> rejected RCPT <spamtrap-1@local.test>: Mailbox is a spam trap",
            "spamtrap-1@local.test",
            "<alice@local.test>",
            "",
            "RCPT",
        ),
        (
            "2026-11-27 01:36:01.885 [18611] H=(client.example) [127.0.0.1]:52728 F=<alice@local.test> temporarily rejected RCPT <greylist-1@local.test>: Greylisted",
            "greylist-1@local.test",
            "<alice@local.test>",
            "1",
            "RCPT",
        ),
        (
            "2026-11-27 01:36:03.108 [18615] H=(client.example) [127.0.0.1]:52740 I=[127.0.0.1]:22525 rejected MAIL <spammer@blocked-sender.test>: Sender domain blocked",
            "",
            "<spammer@blocked-sender.test>",
            "",
            "MAIL",
        ),
        (
            "2026-11-27 01:36:04.937 [18618] rejected MAIL FROM:<bob@local.test> H=(client.example) [127.0.0.1]:52766 I=[127.0.0.1]:22525: message too big: size=80000 max=51200",
            "",
            "<bob@local.test>",
            "",
            "SIZE",
        ),
        (
            "2026-11-27 01:36:03.719 [18616] 1xWksd-0004qG-2J H=(client.example) [127.0.0.1]:52756 F=<alice@local.test> rejected after DATA: Message content rejected",
            "",
            "<alice@local.test>",
            "",
            "DATA",
        ),
    ],
)
def test_rejections(line, address, sender, temporary, kind):
    p = parse_line(line)
    assert p.kind == "rejection"
    assert p.address == address and p.fields["F"] == sender
    assert p.fields["temporary"] == temporary and p.fields["kind"] == kind
    assert p.fields["Hip"] == "127.0.0.1"


@pytest.mark.parametrize(
    "body,rule",
    [
        (
            "SMTP connection from [127.0.0.1]:37230 I=[127.0.0.1]:22525 (TCP/IP connection count = 1)",
            "connection",
        ),
        ("no MAIL in SMTP connection from (c) [127.0.0.1]:54164 D=0.200s C=EHLO,AUTH,QUIT", "connection"),
        (
            "dovecot_login authenticator failed for (c) [127.0.0.1]:54164: 535 Incorrect authentication data",
            "connection",
        ),
        (
            "H=(dropper.example) [127.0.0.1]:43862 incomplete transaction (connection lost) from <a@l.test> for b@l.test",
            "connection",
        ),
        (
            "H=(bad.helo.test) [127.0.0.1]:54172 rejected EHLO or HELO bad.helo.test: HELO not acceptable",
            "connection",
        ),
        ('H=[127.0.0.1] rejected connection in "connect" ACL: 550 client disliked', "connection"),
        (
            "exim 4.96 daemon started: pid=1, no queue runs, listening for SMTP on [127.0.0.1]:22525",
            "process",
        ),
        ("Start queue run: pid=12 -qf", "process"),
        ("cwd=/srv/mail 4 args: /usr/sbin/exim4 -C /etc/exim/test.conf -q", "process"),
        ("Warning: purging the environment.", "process"),
        ("Suggested action: use keep_environment.", "process"),
        ("pid 1234: SIGHUP received: re-exec daemon", "process"),
        ("daemon_smtp_port overridden by -oX:", "process"),
        (
            'ACL "warn" statement skipped: condition test deferred: ratelimit database not available',
            "process",
        ),
    ],
)
def test_connection_level_lines_are_ignored_by_rule(body, rule):
    p = parse_line("2026-11-27 01:36:16.176 [18691] " + body)
    assert p.kind == "ignored" and p.rule == rule


def test_garbage_is_unparsed_with_reason_never_raises():
    for line in [
        "",
        "garbage",
        "2026-13-99 99:99:99 x",
        "2026-11-27 01:36:16",
        "\x00\xff" * 40,
        "2026-11-27 01:36:16 ",
    ]:
        p = parse_line(line)
        assert p.kind in ("unparsed", "ignored")
        if p.kind == "unparsed":
            assert p.reason


def test_unquote():
    assert unquote('"a \\"b\\" \\\\ c"') == 'a "b" \\ c'
    assert unquote('"plain"') == "plain"


def test_crlf_is_tolerated():
    assert parse_line(RX + "Completed\r").kind == "completed"
