"""cPanel account maps of one server: which account owns a domain, which reseller owns an account.

`/etc/userdomains` has lines `domain: user` (`*: nobody` for the catch-all), `/etc/trueuserowners` has
`user: owner`. Pure: parsing takes text; `from_files` is the only place that reads files.
"""

from __future__ import annotations

from pathlib import Path


def parse_colon_map(text: str) -> dict[str, str]:
    """`key: value` lines -> dict (keys lower-cased; comments, blanks and `*` entries skipped)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if not sep or not key or key == "*" or not value:
            continue
        out[key] = value
    return out


class AccountMap:
    """Domain -> cPanel user and user -> owner (reseller) of one server."""

    __slots__ = ("domains", "owners")

    def __init__(self, domains: dict[str, str] | None = None, owners: dict[str, str] | None = None) -> None:
        self.domains = domains or {}
        self.owners = owners or {}

    @classmethod
    def from_text(cls, userdomains: str = "", trueuserowners: str = "") -> AccountMap:
        return cls(parse_colon_map(userdomains), parse_colon_map(trueuserowners))

    @classmethod
    def from_files(
        cls, userdomains: str | Path | None = None, trueuserowners: str | Path | None = None
    ) -> AccountMap:
        ud = Path(userdomains).read_text(encoding="utf-8", errors="replace") if userdomains else ""
        to = Path(trueuserowners).read_text(encoding="utf-8", errors="replace") if trueuserowners else ""
        return cls.from_text(ud, to)

    def user_of_domain(self, domain: str) -> str:
        return self.domains.get(domain.lower(), "") if domain else ""

    def owner_of(self, user: str) -> str:
        return self.owners.get(user, "") if user else ""

    def __bool__(self) -> bool:
        return bool(self.domains or self.owners)
