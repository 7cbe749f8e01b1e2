"""`eximtrack token add/list/revoke` and the tokens file (no store needed)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from eximtrack import cli
from eximtrack.web.auth import AuthError, TokenStore, hash_token


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_add_list_revoke(tmp_path, capsys):
    f = tmp_path / "t" / "tokens.json"
    rc, out, err = run(
        capsys, "token", "add", "--role", "user", "--user", "localacct", "--name", "support", "--tokens", f
    )
    assert rc == 0, err
    token = out.strip()
    assert token.startswith("et_") and len(token) > 40
    assert "shown only now" in err
    data = json.loads(f.read_text())
    assert token not in f.read_text()
    assert data["tokens"][0]["hash"] == hash_token(token)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    account = TokenStore(str(f)).authenticate(token)
    assert account and account.role == "user" and account.scope().user == "localacct"
    assert TokenStore(str(f)).authenticate(token + "x") is None

    rc, out, _ = run(
        capsys,
        "token",
        "add",
        "--role",
        "webmail",
        "--address",
        "bob@local.test",
        "--name",
        "bob",
        "--tokens",
        f,
    )
    assert rc == 0
    rc, out, _ = run(capsys, "token", "list", "--tokens", f)
    assert rc == 0 and "localacct" in out and "bob@local.test" in out and "et_" not in out
    rc, out, _ = run(capsys, "token", "list", "--format", "json", "--tokens", f)
    listed = [json.loads(line) for line in out.splitlines()]
    assert [x["name"] for x in listed] == ["support", "bob"] and all("hash" not in x for x in listed)
    rc, out, _ = run(capsys, "token", "revoke", "support", "--tokens", f)
    assert rc == 0 and "revoked" in out
    assert TokenStore(str(f)).authenticate(token) is None
    rc, _, err = run(capsys, "token", "revoke", "support", "--tokens", f)
    assert rc == 2 and "no token" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--role", "user", "--name", "x"], "needs --user"),
        (["--role", "reseller", "--name", "x"], "needs --reseller"),
        (["--role", "webmail", "--name", "x", "--address", "nobody"], "email address"),
        (["--role", "root", "--name", "x", "--user", "u"], "takes no account"),
        (["--role", "user", "--name", "x", "--user", "u", "--address", "a@b"], "not --address"),
    ],
)
def test_bad_accounts_are_refused(tmp_path, capsys, args, message):
    rc, _, err = run(capsys, "token", "add", *args, "--tokens", tmp_path / "tokens.json")
    assert rc == 2 and message in err
    assert not (tmp_path / "tokens.json").exists()


def test_a_broken_tokens_file_is_an_error_not_a_crash(tmp_path):
    f = tmp_path / "tokens.json"
    f.write_text("{not json")
    with pytest.raises(AuthError):
        TokenStore(str(f)).authenticate("et_x")


def test_token_without_an_action_is_a_usage_error(capsys):
    rc, _, err = run(capsys, "token")
    assert rc == 2 and "add,list,revoke" in err
