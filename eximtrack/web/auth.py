"""API tokens and the accounts they stand for: root, reseller, cPanel user, webmail address.

The tokens file is JSON: {"tokens": [{"id", "name", "role", "user"|"reseller"|"address", "hash", "created"}]}.
A token is 256 random bits ("et_" + urlsafe base64) shown once by `eximtrack token add`; the file keeps only
its SHA-256 ("sha256:<hex>"). With 256-bit random secrets a fast hash is enough (nothing to brute-force, no
dictionary); the lookup compares digests in constant time. The file is re-read when it changes, so a revoke
takes effect on the next request without restarting `eximtrack serve`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from eximtrack.search import Scope

ROLES = ("root", "reseller", "user", "webmail")
TOKEN_PREFIX = "et_"


class AuthError(ValueError):
    """A tokens-file or account problem meant for the user."""


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    role: str
    user: str = ""
    reseller: str = ""
    address: str = ""
    hash: str = ""
    created: str = ""

    def scope(self) -> Scope | None:
        """The tenant scope of the account (None = root, everything)."""
        if self.role == "root":
            return None
        if self.role == "reseller":
            return Scope(reseller=self.reseller)
        if self.role == "user":
            return Scope(user=self.user)
        if self.role == "webmail":
            return Scope(address=self.address)
        raise AuthError(f"unknown role {self.role!r}")

    def public(self) -> dict:
        d = {"id": self.id, "name": self.name, "role": self.role, "created": self.created}
        for key in ("user", "reseller", "address"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def _validate(role: str, user: str | None, reseller: str | None, address: str | None) -> dict:
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    need = {"root": None, "reseller": "reseller", "user": "user", "webmail": "address"}[role]
    given = {k: (v or "").strip() for k, v in (("user", user), ("reseller", reseller), ("address", address))}
    extra = [k for k, v in given.items() if v and k != need]
    if extra:
        raise AuthError(
            f"role {role} takes {'no account' if need is None else '--' + need}, not --{extra[0]}"
        )
    if need and not given[need]:
        raise AuthError(f"role {role} needs --{need}")
    if need == "address" and "@" not in given["address"]:
        raise AuthError(f"--address must be an email address, not {given['address']!r}")
    return {need: given[need]} if need else {}


class TokenStore:
    """The tokens file: add / list / revoke, and `authenticate(token) -> Account | None`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple, list[Account]] | None = None

    # -- file --------------------------------------------------------------------------------------
    def _stat_key(self) -> tuple:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> list[Account]:
        with self._lock:
            key = self._stat_key()
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
            if not key:
                accounts: list[Account] = []
            else:
                try:
                    with open(self.path, encoding="utf-8") as fh:
                        data = json.load(fh)
                    accounts = [Account(**t) for t in data.get("tokens", [])]
                except (OSError, ValueError, TypeError) as exc:
                    raise AuthError(f"cannot read the tokens file {self.path}: {exc}") from exc
            self._cache = (key, accounts)
            return accounts

    def _save(self, accounts: list[Account]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"tokens": [a.__dict__ for a in accounts]}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, self.path)
        with self._lock:
            self._cache = None

    # -- management --------------------------------------------------------------------------------
    def add(
        self,
        role: str,
        name: str,
        user: str | None = None,
        reseller: str | None = None,
        address: str | None = None,
    ) -> tuple[str, Account]:
        """Create a token; returns (the token — shown once, never stored —, its account)."""
        fields = _validate(role, user, reseller, address)
        if not name or not name.strip():
            raise AuthError("a token needs a --name")
        accounts = self.load()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        ids = {a.id for a in accounts}
        tid = secrets.token_hex(4)
        while tid in ids:
            tid = secrets.token_hex(4)
        account = Account(
            id=tid,
            name=name.strip(),
            role=role,
            hash=hash_token(token),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **fields,
        )
        self._save([*accounts, account])
        return token, account

    def revoke(self, ident: str) -> Account:
        """Remove the token with this id (or this unique name)."""
        accounts = self.load()
        hits = [a for a in accounts if a.id == ident] or [a for a in accounts if a.name == ident]
        if not hits:
            raise AuthError(f"no token with id or name {ident!r}")
        if len(hits) > 1:
            raise AuthError(f"{len(hits)} tokens are named {ident!r}: revoke by id")
        self._save([a for a in accounts if a is not hits[0]])
        return hits[0]

    # -- checking ------------------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Account | None:
        if not token:
            return None
        digest = hash_token(token.strip())
        found = None
        for account in self.load():
            if hmac.compare_digest(account.hash, digest):
                found = account
        return found


def default_tokens_path() -> str:
    return os.environ.get("EXIMTRACK_TOKENS") or os.path.join(os.getcwd(), ".eximtrack", "tokens.json")


__all__ = ["ROLES", "Account", "AuthError", "TokenStore", "default_tokens_path", "hash_token"]
