"""Configuration: where the store lives and how long data is kept.

Store URL resolution: ``--store URL`` > ``$EXIMTRACK_STORE`` > ``chdb://./data``.

Accepted store URLs (see ``parse_store_url``):

* ``chdb:///abs/path`` or ``chdb://relative/path`` (``chdb://./data``): an embedded chDB engine in that
  directory; relative paths are made absolute against the current directory. Only one process may open a
  store directory at a time, and one process may use only one chDB path.
* ``http://[user:password@]host:8123[/database]`` or ``https://…``: a ClickHouse server. User and password
  may come from the URL or from ``$EXIMTRACK_CH_USER`` / ``$EXIMTRACK_CH_PASSWORD`` (never put them in the
  repository).

Both forms take the database as ``?database=NAME`` (for http also as the path); the default database is
``eximtrack``. A server URL may name a ClickHouse cluster, ``?cluster=NAME`` (a ``remote_servers`` entry):
the store then uses the replicated, sharded layout of sinks/clickhouse/cluster.py (docs/DEPLOY.md). The
store creates the database if it does not exist. Tests use one chDB path per process and a fresh
``?database=test_<uuid>`` per test.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_STORE = "chdb://./data"
DEFAULT_DATABASE = "eximtrack"
DEFAULT_RETENTION_DAYS = 90
STORE_ENV = "EXIMTRACK_STORE"
RETENTION_ENV = "EXIMTRACK_RETENTION_DAYS"
USER_ENV = "EXIMTRACK_CH_USER"
PASSWORD_ENV = "EXIMTRACK_CH_PASSWORD"
CACHE_ENV = "EXIMTRACK_CHDB_CACHE_MB"
DEFAULT_CACHE_MB = 1024

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class ConfigError(ValueError):
    """A bad store URL or setting (reported to the user, exit code 2)."""


@dataclass(frozen=True)
class StoreURL:
    backend: str  # "chdb" or "http"
    database: str = DEFAULT_DATABASE
    path: str = ""  # chdb: absolute directory, or ":memory:"
    host: str = ""
    port: int = 8123
    secure: bool = False
    username: str | None = None
    password: str | None = None
    cluster: str | None = None  # http only: the ClickHouse cluster the schema is laid out on

    def display(self) -> str:
        """The URL without the password, for messages and logs."""
        if self.backend == "chdb":
            return f"chdb://{self.path}?database={self.database}"
        scheme = "https" if self.secure else "http"
        user = f"{self.username}@" if self.username else ""
        where = f"{scheme}://{user}{self.host}:{self.port}/{self.database}"
        return where + (f"?cluster={self.cluster}" if self.cluster else "")


def valid_identifier(name: str) -> bool:
    return bool(_IDENT.match(name or ""))


def resolve_store_url(cli_value: str | None = None, environ: dict | None = None) -> str:
    """--store > $EXIMTRACK_STORE > chdb://./data."""
    env = os.environ if environ is None else environ
    if cli_value:
        return cli_value
    if env.get(STORE_ENV):
        return env[STORE_ENV]
    return DEFAULT_STORE


def _database(name: str | None) -> str:
    name = name or DEFAULT_DATABASE
    if not valid_identifier(name):
        raise ConfigError(f"invalid database name {name!r} (letters, digits and _ only)")
    return name


def parse_store_url(url: str, environ: dict | None = None, cwd: str | None = None) -> StoreURL:
    env = os.environ if environ is None else environ
    if not url or not isinstance(url, str):
        raise ConfigError("empty store URL")
    if url.startswith("chdb:"):
        rest = url[len("chdb:") :]
        if rest.startswith("//"):
            rest = rest[2:]
        rest, _, fragment = rest.partition("#")
        rest, _, query = rest.partition("?")
        params = parse_qs(query)
        if params.get("cluster"):
            raise ConfigError(
                "?cluster= needs ClickHouse servers (http://…): an embedded chDB store is one node"
            )
        database = params.get("database", [None])[0] or (fragment or None)
        path = unquote(rest)
        if path in ("", "memory", ":memory:"):
            path = ":memory:"
        else:
            if not os.path.isabs(path):
                path = os.path.join(cwd or os.getcwd(), path)
            path = os.path.normpath(path)
        return StoreURL(backend="chdb", path=path, database=_database(database))
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "clickhouse"):
        if not parts.hostname:
            raise ConfigError(f"store URL {url!r} has no host")
        params = parse_qs(parts.query)
        db_from_path = unquote(parts.path.strip("/").split("/")[0]) if parts.path.strip("/") else None
        database = params.get("database", [None])[0] or db_from_path
        secure = parts.scheme == "https"
        try:
            port = parts.port or (8443 if secure else 8123)
        except ValueError as exc:
            raise ConfigError(f"bad port in store URL: {exc}") from None
        username = unquote(parts.username) if parts.username else env.get(USER_ENV) or None
        password = unquote(parts.password) if parts.password else env.get(PASSWORD_ENV) or None
        cluster = params.get("cluster", [None])[0] or None
        if cluster is not None and not valid_identifier(cluster):
            raise ConfigError(f"cluster name {cluster!r} in the store URL is not an identifier")
        return StoreURL(
            backend="http",
            host=parts.hostname,
            port=port,
            secure=secure,
            username=username,
            password=password,
            database=_database(database),
            cluster=cluster,
        )
    raise ConfigError(f"unsupported store URL {url!r}: use chdb:///path or http://host:8123[/database]")


def resolve_retention_days(cli_value: int | None = None, environ: dict | None = None) -> int | None:
    """--retention-days > $EXIMTRACK_RETENTION_DAYS > None (leave the store as it is; new stores get 90)."""
    env = os.environ if environ is None else environ
    value = cli_value
    if value is None and env.get(RETENTION_ENV, "").strip():
        try:
            value = int(env[RETENTION_ENV])
        except ValueError:
            raise ConfigError(f"{RETENTION_ENV} must be a whole number of days") from None
    if value is not None and value < 0:
        raise ConfigError("retention days must be >= 0 (0 = keep forever)")
    return value


def resolve_cache_mb(environ: dict | None = None) -> int:
    """$EXIMTRACK_CHDB_CACHE_MB > 1024: MiB of decompressed blocks the embedded engine keeps (0 = none)."""
    env = os.environ if environ is None else environ
    text = env.get(CACHE_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_MB
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{CACHE_ENV} must be a whole number of MiB") from None
    if value < 0:
        raise ConfigError(f"{CACHE_ENV} must be >= 0 (0 = no cache)")
    return value
