"""The ClickHouse store: one code path (clickhouse-connect) over two backends, embedded chDB or a server.

    store = Store.open("chdb:///var/lib/eximtrack?database=eximtrack")   # or http://host:8123/eximtrack
    store.insert_events(events); store.insert_rejects(rejects); store.insert_lines(lines)
    result = store.query("SELECT … WHERE recipient = {r:String}", {"r": "a@b"})

Opening applies the migrations (schemas/clickhouse/*.sql) and, when asked, the retention. Inserts are
batched (≤ 50k rows per insert). Idempotency comes from deterministic ids + ReplacingMergeTree: inserting
the same records again changes nothing a `FINAL` query can see. chDB allows one engine path per process and
one process per directory, so chDB clients are cached per process (per path and database).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import clickhouse_connect

from eximtrack.config import (
    ConfigError,
    StoreURL,
    parse_store_url,
    resolve_cache_mb,
    resolve_retention_days,
    resolve_store_url,
)
from eximtrack.search_plan import GRAMS_INDEX
from schemas.records import EVENT_FIELDS
from sinks.clickhouse import cluster as cluster_layout
from sinks.clickhouse import migrations

log = logging.getLogger("eximtrack.store")

BATCH_ROWS = 50_000
# The embedded engine keeps a cache of decompressed blocks ($EXIMTRACK_CHDB_CACHE_MB, default 1 GiB), as
# ClickHouse advises for many short queries: the stats and the dashboards re-read the same small blocks of
# the window and hourly snapshots on every request (1e8 events: stats by domain over 24 h read 40 -> 25 ms),
# and a page or a message shown again skips the decompression of its granules. A ClickHouse server gets the
# same from its `uncompressed_cache_size` and the profile setting (docs/DEPLOY.md).
CHDB_SETTINGS = {"use_uncompressed_cache": 1}
# The read-only session compiles no expressions. ClickHouse compiles an expression with LLVM the 4th time a
# process runs it (min_count_to_compile_expression = 3): a search, a stat or a panel took 30-130 ms more on that
# one run, and no faster afterwards (1e8 events, 18 queries, runs alternating with and without: the same
# medians; docs/BENCHMARKS.md, session 36). A long-lived `eximtrack serve` met one such slow request per query
# shape. The writer's session (the views' expressions on every insert) keeps the default.
# It also chooses the granules a skip index keeps before reading (use_skip_indexes_on_data_read = 0), not while
# reading each one (26.x's default): a read through search_time's text indexes that is not a newest-first round
# took 10-40 % less (`eximtrack search` of a rare address at 1e8 events 117-123 -> 100-104 ms, part of a domain
# 272-291 -> 244-250, the counts of `with_total` 5-10 % less; the queries suite the same within its spread;
# docs/BENCHMARKS.md, session 43). A server's profile sets the same (deploy/clickhouse/users.d/eximtrack.xml).
READ_SETTINGS = {
    "compile_expressions": 0,
    "compile_aggregate_expressions": 0,
    "compile_sort_description": 0,
    "use_skip_indexes_on_data_read": 0,
}
# Every insert runs the materialized views it feeds in parallel instead of one after another (ClickHouse's
# default): `events` feeds seven, `latest` four more, and that chain is most of an insert's cost. Same rows,
# same durability (the insert returns after every view wrote); on the 2-core box an insert of the busy
# cPanel server's events took 30-35 % less time (docs/BENCHMARKS.md, session 16).
INSERT_SETTINGS = {"parallel_view_processing": 1}
# the Null table whose inserts feed the hourly aggregates (migration 020)
ROLLUP_TABLE = "events_rollup"


class StoreError(RuntimeError):
    """The store could not be opened or used (message meant for the user)."""


class StoreLockedError(StoreError):
    """Another process holds the embedded (chDB) store directory."""


_lock = threading.RLock()
# Turns on the embedded engine's writer session within one process: the sink's inserts, snapshot refreshes and
# alert evaluations, and the queries of `eximtrack serve` on a store it opened itself. Reads on the read-only
# session (the sink's query endpoint) take no turn: chDB runs the statements of different sessions at once,
# and clickhouse-connect serializes the calls on one session.
ENGINE_LOCK = threading.RLock()
_chdb_path: str | None = None
_chdb_clients: dict[tuple[str, str], Any] = {}


def _chdb_client(url: StoreURL):
    global _chdb_path
    with _lock:
        key = (url.path, url.database)
        if key in _chdb_clients:
            return _chdb_clients[key]
        if _chdb_path is not None and _chdb_path != url.path:
            raise StoreError(
                f"chDB allows one store path per process: this process already uses {_chdb_path}, "
                f"cannot also open {url.path}"
            )
        try:
            bootstrap = _chdb_clients.get((url.path, ""))
            if bootstrap is None:
                if url.path != ":memory:":
                    os.makedirs(url.path, exist_ok=True)
                    _check_not_locked(url.path)
                cache = resolve_cache_mb() * 1024 * 1024
                bootstrap = clickhouse_connect.get_client(
                    dsn=_chdb_dsn(url.path), chdb_options={"uncompressed_cache_size": cache}
                )
                _chdb_clients[(url.path, "")] = bootstrap
            _chdb_path = url.path
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {url.database}")
            client = clickhouse_connect.get_client(
                dsn=_chdb_dsn(url.path), database=url.database, settings=dict(CHDB_SETTINGS)
            )
        except StoreError:
            raise
        except Exception as exc:  # chDB's lock error, bad directory, …
            raise StoreError(f"cannot open chDB store {url.path}: {_first_line(exc)}") from exc
        _chdb_clients[key] = client
        return client


def _chdb_client_waiting(url: StoreURL, seconds: float):
    """_chdb_client, retried with backoff (0.1 s doubling to 2 s) while another process holds the store,
    for at most `seconds`; then the StoreLockedError."""
    deadline, pause, waited = time.monotonic() + seconds, 0.1, False
    while True:
        try:
            client = _chdb_client(url)
        except StoreLockedError as exc:
            if time.monotonic() + pause > deadline:
                raise
            if not waited:
                log.warning("%s; waiting up to %.0f s for it", exc, seconds)
                waited = True
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if waited:
            log.info("store %s: lock acquired", url.path)
        return client


def _check_not_locked(path: str) -> None:
    """Fail clearly when another process holds the chDB directory (ClickHouse flocks `status`)."""
    import fcntl

    status = os.path.join(path, "status")
    try:
        fh = open(status, "rb")  # noqa: SIM115
    except OSError:
        return  # a new store
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = ""
            try:
                first = fh.read(200).decode(errors="replace").splitlines()
                owner = f" ({first[0].strip()})" if first else ""
            except OSError:
                pass
            raise StoreLockedError(
                f"the chDB store {path} is in use by another process{owner}: an embedded store admits one "
                "process at a time (stop it, or use a ClickHouse server: --store http://host:8123)"
            ) from None
        fcntl.flock(fh, fcntl.LOCK_UN)


def _remote_store(url: StoreURL):
    """A read-only RemoteStore over the query endpoint of the process owning a chDB store, if it serves one."""
    try:
        from sinks.clickhouse.query_server import RemoteStore, find_endpoint
    except ImportError:
        return None
    endpoint = find_endpoint(url.path)
    return RemoteStore(url, endpoint) if endpoint else None


def current_chdb_path() -> str | None:
    """The chDB path this process uses (None before the first chDB store is opened)."""
    return _chdb_path


def _chdb_dsn(path: str) -> str:
    return "chdb://memory" if path == ":memory:" else f"chdb://{path}"


def _http_client(url: StoreURL):
    kwargs = dict(
        host=url.host,
        port=url.port,
        secure=url.secure,
        username=url.username or "default",
        password=url.password or "",
    )
    if url.cluster:  # synchronous Distributed inserts and cluster-wide subqueries (cluster.py)
        kwargs["settings"] = dict(cluster_layout.CLIENT_SETTINGS)
    try:
        client = clickhouse_connect.get_client(**kwargs)
        try:
            on_cluster = f" ON CLUSTER {url.cluster}" if url.cluster else ""  # every node has the database
            client.command(f"CREATE DATABASE IF NOT EXISTS {url.database}{on_cluster}")
        except Exception:
            # no CREATE permission is fine when the database exists already
            exists = client.query(
                "SELECT count() FROM system.databases WHERE name = {d:String}", parameters={"d": url.database}
            ).result_rows[0][0]
            if not exists:
                raise
        client.database = url.database
    except Exception as exc:
        raise StoreError(f"cannot open ClickHouse store {url.display()}: {_first_line(exc)}") from exc
    return client


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _batches(rows: Sequence, size: int):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class Store:
    def __init__(self, client, url: StoreURL):
        self.client = client
        self.url = url
        # the cluster layout when the URL names a cluster (sinks/clickhouse/cluster.py), else None
        self.cluster = migrations.cluster_of(url.cluster) if url.cluster else None
        self.insert_settings = dict(INSERT_SETTINGS)

    def target(self, table: str) -> str:
        """What a DELETE, TRUNCATE or ALTER of `table` names: the table, or on a cluster its local tables
        on every node (`t_local ON CLUSTER c`); reads and inserts keep the table's own name."""
        return cluster_layout.target(table, self.cluster)

    def stored(self, table: str) -> str:
        """The table that holds `table`'s rows on the node this store is connected to (system.parts)."""
        return cluster_layout.stored(table, self.cluster)

    # -- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        url: str | StoreURL | None = None,
        *,
        retention_days: int | None = None,
        migrate: bool = True,
        wait_for_lock: float = 0.0,
    ) -> Store:
        """Open (and migrate) a store. `url` None → $EXIMTRACK_STORE or chdb://./data.

        When another process owns a chDB store and serves its query endpoint
        (sinks/clickhouse/query_server.py), this returns a read-only RemoteStore for it instead.
        A writer (the sink) passes `wait_for_lock` seconds instead: it never gets a RemoteStore, and while
        another process holds the directory (a CLI search that opened it directly, a stopping sink) it
        retries with backoff, then raises StoreLockedError.

        retention_days: None → $EXIMTRACK_RETENTION_DAYS if set, else leave the TTL as it is (90 days on a
        new store); 0 → keep forever; N → TTL of N days on events, latest, rejects and log_lines.
        """
        if not isinstance(url, StoreURL):
            url = parse_store_url(resolve_store_url(url))
        if url.backend == "chdb" and wait_for_lock > 0:
            client = _chdb_client_waiting(url, wait_for_lock)
        elif url.backend == "chdb":
            try:
                client = _chdb_client(url)
            except StoreLockedError:
                # The owner (the sink, the web app) may serve read-only queries for its store.
                remote = _remote_store(url)
                if remote is None:
                    raise
                return remote
        else:
            client = _http_client(url)
        store = cls(client, url)
        if migrate:
            try:
                applied = migrations.migrate(client, cluster=store.cluster)
            except Exception as exc:
                raise StoreError(
                    f"applying migrations to {url.display()} failed: {_first_line(exc)}"
                ) from exc
            days = resolve_retention_days(retention_days)
            # a table a migration laid out anew (022) gets the store's retention, not its CREATE's
            if days is None and applied:
                days = migrations.current_retention(client, "events", store.cluster)
            if days is not None:
                store.set_retention(days)
        return store

    def close(self) -> None:
        """Close a server client. chDB clients stay cached for the life of the process (one engine)."""
        if self.url.backend != "chdb":
            self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retention ---------------------------------------------------------------------------------
    def retention_days(self) -> int:
        return migrations.current_retention(self.client, "events", self.cluster)

    def set_retention(self, days: int) -> list[str]:
        if days < 0:
            raise ConfigError("retention days must be >= 0")
        return migrations.ensure_retention(self.client, days, cluster=self.cluster)

    # -- writing ---------------------------------------------------------------------------------
    def _insert(self, table: str, records: Iterable, batch_rows: int, insert=None) -> int:
        """`records` encoded for `table` in batches of `batch_rows`, each given to `insert(bytes)` (default:
        into `table`); returns how many."""
        # pyarrow only where a command writes: a read against a ClickHouse server starts ~0.14 s sooner
        from sinks.clickhouse import encode

        insert = insert or (lambda data: self.insert_encoded(table, data))
        records = records if isinstance(records, list) else list(records)
        for batch in _batches(records, max(1, batch_rows)):
            insert(encode.arrow_ipc(table, batch))
        return len(records)

    def insert_encoded(self, table: str, data: bytes, rollup: bool = True) -> None:
        """Insert one batch already encoded by `encode.arrow_ipc(table, records)` (Arrow IPC). Events go
        to `events` and, unless `rollup` is False, also to `events_rollup` (the hourly aggregates' feed,
        migration 020): a caller that gathers several batches into one rollup insert (the sink,
        `RollupFeed`) passes False and calls `insert_rollup_encoded` itself."""
        self._raw_insert(table, table, data)
        if table == "events" and rollup:
            self.insert_rollup_encoded(data)

    def _raw_insert(self, table: str, encoded_as: str, data: bytes) -> None:
        """`data` (Arrow IPC of `encode.TABLES[encoded_as]`'s columns) into `table`."""
        from sinks.clickhouse import encode

        fields = encode.TABLES[encoded_as][0]
        self.client.raw_insert(table, list(fields), data, settings=dict(self.insert_settings), fmt="Arrow")

    @contextlib.contextmanager
    def text_index_deferred(self) -> Iterator[None]:
        """Inserts within leave search_time's trigram index (GRAMS_INDEX, the costliest to build) to the
        merges, which build it for every part they write; on leaving without an error, one mutation builds it
        for the parts no merge rewrote, and is waited for (it keeps the parts that have it as they are). For
        a bulk load (`eximtrack ingest`): an insert building it cost 9-10 % of ingest's speed
        (docs/BENCHMARKS.md, session 28), and most of what it built the merges built again. A part without
        the index is read without it: slower, never different."""
        self.insert_settings["exclude_materialize_skip_indexes_on_insert"] = GRAMS_INDEX
        try:
            yield
        finally:
            self.insert_settings.pop("exclude_materialize_skip_indexes_on_insert", None)
        self.command(
            f"ALTER TABLE {self.target('search_time')} MATERIALIZE INDEX {GRAMS_INDEX} SETTINGS mutations_sync = 2"
        )

    def insert_rollup_encoded(self, data: bytes) -> None:
        """Feed the hourly aggregates (`events_rollup`, a Null table read by their views) with events
        encoded as for `events`; they must also be, or have been, inserted into `events`."""
        self._raw_insert(ROLLUP_TABLE, "events", data)

    def insert_rollup(self, events: Iterable, batch_rows: int = BATCH_ROWS) -> int:
        """`insert_rollup_encoded` of DeliveryEvents."""
        return self._insert("events", events, batch_rows, self.insert_rollup_encoded)

    def insert_events(self, events: Iterable, batch_rows: int = BATCH_ROWS, rollup: bool = True) -> int:
        """Insert DeliveryEvents into `events` (its view feeds `latest` and the access paths) and, unless
        `rollup` is False, into `events_rollup` (the hourly aggregates)."""
        return self._insert(
            "events", events, batch_rows, lambda data: self.insert_encoded("events", data, rollup)
        )

    def insert_rejects(self, rejects: Iterable, batch_rows: int = BATCH_ROWS) -> int:
        return self._insert("rejects", rejects, batch_rows)

    def insert_lines(self, lines: Iterable, batch_rows: int = BATCH_ROWS) -> int:
        return self._insert("log_lines", lines, batch_rows)

    # -- reading -----------------------------------------------------------------------------------
    def _readonly_chdb_client(self):
        """A separate chDB session with readonly=2 for the whole session: no writes and no DDL; a query may
        still carry its own SETTINGS (the search planner turns PREWHERE off where it hurts, search_plan.py).
        It compiles no expressions (READ_SETTINGS).

        Per-call readonly=1 is unsafe on the chDB backend: for statements clickhouse-connect treats as
        inserts/commands it applies settings with SET … and restores them with SET … = DEFAULT, which a
        read-only session refuses ("Cannot modify 'readonly' setting in readonly mode"), so the writer's
        session would stay read-only. A dedicated session cannot leak."""
        key = (self.url.path, self.url.database, "readonly")
        with _lock:
            client = _chdb_clients.get(key)
            if client is None:
                client = clickhouse_connect.get_client(
                    dsn=_chdb_dsn(self.url.path),
                    database=self.url.database,
                    settings={"readonly": 2, **CHDB_SETTINGS, **READ_SETTINGS},
                )
                _chdb_clients[key] = client
        return client

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        readonly: bool = False,
        settings: Mapping[str, Any] | None = None,
    ):
        """Run a query with bound parameters ({name:Type} placeholders); returns a clickhouse-connect
        QueryResult (.column_names, .result_rows, .named_results()).

        readonly=True runs it where no write is possible: a read-only session on chDB, the readonly=1
        setting on a server (readonly=2 if the server refuses the settings the client sends itself)."""
        bound = dict(params) if params else None
        settings = dict(settings or {})
        if readonly and self.url.backend == "chdb":
            return self._readonly_chdb_client().query(sql, parameters=bound, settings=settings or None)
        if readonly:
            settings["readonly"] = 1
        try:
            return self.client.query(sql, parameters=bound, settings=settings or None)
        except Exception as exc:
            if readonly and "readonly mode" in str(exc) and "modify" in str(exc).lower():
                settings["readonly"] = 2
                return self.client.query(sql, parameters=bound, settings=settings)
            raise

    def stream(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        readonly: bool = False,
    ) -> tuple[list[str], Iterator[Sequence]]:
        """(column names, row iterator) without holding the whole result in memory."""
        client, settings = self.client, None
        if readonly and self.url.backend == "chdb":
            client = self._readonly_chdb_client()
        elif readonly:
            settings = {"readonly": 1}
        ctx = client.query_row_block_stream(
            sql, parameters=dict(params) if params else None, settings=settings
        )
        stream = ctx.__enter__()
        columns = list(stream.source.column_names)

        def rows() -> Iterator[Sequence]:
            try:
                for block in stream:
                    yield from block
            finally:
                ctx.__exit__(None, None, None)

        return columns, rows()

    def query_dicts(self, sql: str, params: Mapping[str, Any] | None = None, **kwargs) -> list[dict]:
        result = self.query(sql, params, **kwargs)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def command(self, sql: str, params: Mapping[str, Any] | None = None):
        return self.client.command(sql, parameters=dict(params or {}) or None)


def events_insert_statements(select: str) -> list[str]:
    """The statements that store events a SELECT makes (its columns: EVENT_FIELDS, in order) as the sink
    stores them: into `events_rollup` for the hourly aggregates (migration 020), and into `events`. For SQL
    that generates or copies events inside ClickHouse (the benchmark's fill, tests). The SELECT runs twice:
    the rollup's first, since it changes no table a SELECT of events reads (an insert into `events` changes
    `latest`, which a copy of latest rows reads: it would read its own copies the second time)."""
    columns = ", ".join(EVENT_FIELDS)
    return [f"INSERT INTO {table} ({columns}) {select}" for table in (ROLLUP_TABLE, "events")]


def store_run(store) -> Callable[[str, dict], tuple[list[str], list]]:
    """`run(sql, params) -> (column names, rows)`, read-only, over a Store or a RemoteStore: the form the
    query builders that orchestrate several statements take (search_plan.run_pages, stats, show)."""

    def run(sql: str, params: dict) -> tuple[list[str], list]:
        result = store.query(sql, params or {}, readonly=True)
        return list(result.column_names), result.result_rows

    return run


__all__ = [
    "BATCH_ROWS",
    "ENGINE_LOCK",
    "ROLLUP_TABLE",
    "Store",
    "StoreError",
    "StoreLockedError",
    "current_chdb_path",
    "events_insert_statements",
    "store_run",
]
