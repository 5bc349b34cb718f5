"""The ClickHouse store (scale-out): native protocol via clickhouse-driver.

Layout: a MergeTree table `l7_local` (daily partitions on end_time) on every shard, and, when a
cluster name is configured, a `Distributed` table `l7_dist` over it (sharded by rand(); inserts
with `insert_distributed_sync=1` so an answered batch is queryable). Without a cluster the
MergeTree table is read and written directly. Statements go through `clickhouse_conn` (a server
over the native protocol, or chDB's in-process engine). The SQL stays inside what ClickHouse 18.16
and current releases both accept (docs/server.md): no Map, no server-side parameters (values are
bound client-side with clickhouse-driver's escaping), no positional GROUP BY; what newer servers
add (LowCardinality, insert deduplication tokens, lightweight DELETE) is used by `version()`.
Schema changes are additive: missing columns are added with ALTER TABLE ... ADD COLUMN on every shard.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec

from l7scope.contracts.fields import COLUMNS
from l7scope.server.cancel import QueryCancelled
from l7scope.server.columns import ColumnBatch, batch_len, hist_lists, row_to_record
from l7scope.server.fields import HIST_BUCKETS, HIST_COUNTS, TABLE_COLUMNS, int_width
from l7scope.server.store import detail_sql, sql
from l7scope.server.store.arrow_batch import write_parquet
from l7scope.server.store.base import (
    Filter,
    GroupKey,
    GroupRow,
    SearchQuery,
    SearchResult,
    StoreError,
    StoreStats,
)
from l7scope.server.store.clickhouse_conn import (
    ChdbConnection,
    Connection,
    EngineError,
    NativeConnection,
)

LOCAL = "l7_local"
DIST = "l7_dist"
DETAIL_LOCAL = f"{detail_sql.TABLE}_local"
DETAIL_DIST = f"{detail_sql.TABLE}_dist"
BATCHES = "l7_batches"
_CH_INT = {"u16": "UInt16", "u32": "UInt32", "u64": "UInt64"}
_JSON = msgspec.json.Encoder()
_TIMEOUT_EXCEEDED = 159  # max_execution_time
_BAD_QUERY_CODES = {427}  # CANNOT_COMPILE_REGEXP: a user's regex, not a store failure


def column_types() -> dict[str, str]:
    out = {c: ("String" if k == "text" else _CH_INT[int_width(c)]) for c, k in COLUMNS.items()}
    out[HIST_BUCKETS] = "Array(UInt16)"
    out[HIST_COUNTS] = "Array(UInt64)"
    return out


class _Params:
    """clickhouse-driver client-side parameters: %(p0)s, escaped by the driver."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def add(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"

    def regex(self, column_sql: str, placeholder: str) -> str:
        return f"match({column_sql}, {placeholder})"

    def text_match(self, kind: str, column_sql: str, placeholder: str) -> str:
        if kind == "contains":
            return f"(position({column_sql}, {placeholder}) > 0)"
        fn = {"prefix": "startsWith", "suffix": "endsWith"}[kind]
        return f"{fn}({column_sql}, {placeholder})"

    def int_div(self, expr: str, divisor: int) -> str:
        return f"intDiv({expr}, {int(divisor)})"

    def wide_sum(self, expr: str) -> str:
        # ClickHouse 18.16 has no 128-bit integers and sums UInt64 modulo 2^64: a Float64 sum is
        # exact up to 2^53 ns (104 days of request time) and never wraps above it.
        return f"sum(toFloat64({expr}))"


def _msg(e: BaseException) -> str:
    """An error's text without ClickHouse's server stack trace."""
    return " ".join(str(e).split("Stack trace:")[0].split())[:500]


#: The first version with each improvement the store uses when the server has it (docs/server.md).
V_LOW_CARDINALITY = (19, 0)  # LowCardinality(String) for the few-valued text columns
V_DEDUP_TOKEN = (22, 2)  # insert_deduplication_token + non_replicated_deduplication_window
V_LIGHTWEIGHT_DELETE = (23, 3)  # DELETE FROM (no mutation rewriting every part)

#: Text columns with few distinct values (namespaces, kinds, methods, codes).
LOW_CARDINALITY_COLUMNS = frozenset({
    "src_namespace", "src_type", "dest_namespace", "dest_type", "dest_service_namespace",
    "method", "response_code", "type", "host",
})


def parse_version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0", "0"])[:2]
    return (int(parts[0]), int(parts[1])) if all(x.isdigit() for x in parts) else (0, 0)


def parse_url(url: str) -> dict[str, Any]:
    """`clickhouse://[user[:password]@]host[:port][/database]` -> Client keyword arguments;
    `chdb:///path/to/dir` -> {"chdb": path} (chDB's embedded engine, database `default`)."""
    u = urlparse(url)
    if u.scheme == "chdb":
        if not u.path:
            raise ValueError(f"not a chDB URL (chdb:///path/to/dir): {url!r}")
        return {"chdb": unquote(u.path), "database": "default", "host": "chdb", "port": 0}
    if u.scheme not in ("clickhouse", "tcp") or not u.hostname:
        raise ValueError(f"not a ClickHouse URL (clickhouse://host:9000/db): {url!r}")
    return {
        "host": u.hostname,
        "port": u.port or 9000,
        "database": (u.path or "/default").lstrip("/") or "default",
        "user": unquote(u.username) if u.username else "default",
        "password": unquote(u.password) if u.password else "",
    }


class ClickHouseStore:
    kind = "clickhouse"

    def __init__(self, url: str, *, cluster: str | None = None, connect_timeout: float = 5.0,
                 query_timeout: float = 60.0, statement_timeout_s: float | None = None) -> None:
        # Reads run at most statement_timeout_s on the server (max_execution_time, whole
        # seconds); the client's socket timeout stays above it.
        self._read_settings = ({"max_execution_time": max(1, round(statement_timeout_s))}
                               if statement_timeout_s else {})
        if statement_timeout_s:
            query_timeout = max(query_timeout, statement_timeout_s + 5)
        parsed = parse_url(url)
        self._chdb: ChdbConnection | None = None
        if "chdb" in parsed:
            if cluster:
                raise ValueError("chDB is one embedded engine: no cluster")
            self._args = parsed
            self.location = f"chdb:{parsed['chdb']}"
        else:
            self._args = parsed | {
                "connect_timeout": connect_timeout,
                "send_receive_timeout": query_timeout,
                "sync_request_timeout": connect_timeout,
            }
            self.location = f"{self._args['host']}:{self._args['port']}/{self._args['database']}"
        self.cluster = cluster
        self.table = DIST if cluster else LOCAL
        self.detail_table = DETAIL_DIST if cluster else DETAIL_LOCAL
        self._local = threading.local()
        self._write_lock = threading.Lock()
        try:
            if "chdb" in parsed:
                self._chdb = ChdbConnection(parsed["chdb"])
            self._shards = self._shard_args() if cluster else [self._args]
            self.version = self._server_version()
            self._migrate()
        except (EngineError, OSError) as e:
            if self._chdb is not None:
                self._chdb.disconnect()
            raise StoreError(f"cannot set up ClickHouse store at {self.location}: {_msg(e)}") from e

    # --- connections --------------------------------------------------------------------

    def _connect(self, args: dict[str, Any]) -> Connection:
        """A new connection (the caller disconnects it); chDB's one in-process engine is shared."""
        if self._chdb is not None:
            return _Shared(self._chdb)
        if "chdb" in args:
            raise EngineError(f"the chDB store at {args['chdb']} is closed")
        return NativeConnection(args)

    def _client(self) -> Connection:
        c: Connection | None = getattr(self._local, "client", None)
        if c is None:
            c = self._connect(self._args)
            self._local.client = c
        return c

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except EngineError as e:
            if e.code in _BAD_QUERY_CODES:
                raise ValueError(e.message.split("\n")[0]) from e
            self._drop_client()
            raise StoreError(f"{what} failed: {_msg(e)}") from e
        except OSError as e:
            self._drop_client()
            raise StoreError(f"{what} failed: {_msg(e)}") from e

    def _drop_client(self) -> None:
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            c.disconnect()

    def _shard_args(self) -> list[dict[str, Any]]:
        boot = self._connect(self._args | {"database": "default"})
        try:
            rows = boot.execute(
                "SELECT host_address, port FROM system.clusters WHERE cluster = %(c)s "
                "ORDER BY shard_num, replica_num", {"c": self.cluster})
        finally:
            boot.disconnect()
        if not rows:
            raise StoreError(f"cluster {self.cluster!r} is not defined in the server's remote_servers")
        return [self._args | {"host": h, "port": int(p)} for h, p in rows]

    def _server_version(self) -> tuple[int, int]:
        boot = self._connect(self._args | {"database": "default"})
        try:
            return parse_version(str(boot.execute("SELECT version()")[0][0]))
        finally:
            boot.disconnect()

    def has(self, since: tuple[int, int]) -> bool:
        """Whether the server (every shard runs one release) has a feature of version `since`."""
        return self.version >= since

    def _dedup_by_token(self) -> bool:
        # A Distributed table with rand() sharding splits a retried batch differently, so its
        # blocks would not match: the token is used on the MergeTree table only.
        return self.cluster is None and self.has(V_DEDUP_TOKEN)

    # --- schema -------------------------------------------------------------------------

    def _types(self) -> dict[str, str]:
        types = column_types()
        if self.has(V_LOW_CARDINALITY):
            for c in LOW_CARDINALITY_COLUMNS & types.keys():
                types[c] = f"LowCardinality({types[c]})"
        return types

    def _migrate(self) -> None:
        types = self._types()
        db = self._args["database"]
        cols = ", ".join(f'"{c}" {types[c]}' for c in TABLE_COLUMNS)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", db):
            raise StoreError(f"database name must be an identifier: {db!r}")
        table_settings = (" SETTINGS non_replicated_deduplication_window = 10000"
                          if self._dedup_by_token() else "")
        for args in self._shards:
            boot = self._connect(args | {"database": "default"})
            try:
                boot.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
            finally:
                boot.disconnect()
            c = self._connect(args)
            try:
                c.execute(
                    f"CREATE TABLE IF NOT EXISTS {LOCAL} ({cols}) ENGINE = MergeTree "
                    'PARTITION BY toYYYYMMDD(toDateTime("end_time")) '
                    'ORDER BY ("dest_service_namespace", "dest_service_name", "end_time")'
                    + table_settings
                )
                if table_settings:  # a table made before the store knew the setting
                    c.execute(f"ALTER TABLE {LOCAL} MODIFY SETTING non_replicated_deduplication_window = 10000")
                have = {r[0] for r in c.execute(
                    "SELECT name FROM system.columns WHERE database = %(d)s AND table = %(t)s",
                    {"d": db, "t": LOCAL})}
                for col in TABLE_COLUMNS:
                    if col not in have:
                        c.execute(f'ALTER TABLE {LOCAL} ADD COLUMN "{col}" {types[col]}')
                dcols = ", ".join(f'"{n}" {"String" if k == "text" else "UInt64"}'
                                  for n, k in detail_sql.COLUMNS.items())
                c.execute(f"CREATE TABLE IF NOT EXISTS {DETAIL_LOCAL} ({dcols}) ENGINE = MergeTree "
                          'PARTITION BY toYYYYMMDD(toDateTime(toUInt32("end_time"))) ORDER BY ("end_time")')
                if self.cluster:
                    # The Distributed tables hold no data: recreate them so they have every column.
                    for dist, local in ((DIST, LOCAL), (DETAIL_DIST, DETAIL_LOCAL)):
                        c.execute(f"DROP TABLE IF EXISTS {dist}")
                        c.execute(f"CREATE TABLE {dist} AS {local} ENGINE = Distributed("
                                  f"%(cl)s, %(db)s, %(t)s, rand())", {"cl": self.cluster, "db": db, "t": local})
            finally:
                c.disconnect()
        # ReplacingMergeTree (every supported version has it): a batch id written twice (a retry
        # after a lost answer) collapses to one row on merge; reads count distinct ids anyway.
        self._client().execute(
            f"CREATE TABLE IF NOT EXISTS {BATCHES} (batch_id String, received_at UInt32) "
            "ENGINE = ReplacingMergeTree ORDER BY batch_id"
        )

    # --- writes -------------------------------------------------------------------------

    def insert(self, batch: ColumnBatch, *, token: str | None = None) -> None:
        if batch_len(batch) == 0:
            return
        settings: dict[str, int | str] = {"insert_distributed_sync": 1}
        if token is not None and self._dedup_by_token():
            settings["insert_deduplication_token"] = token
        with self._errors("insert"):
            self._client().insert_columns(
                f"INSERT INTO {self.table} ({', '.join(TABLE_COLUMNS)}) VALUES",
                [*(batch[c] for c in COLUMNS), *hist_lists(batch)], settings=settings,
            )

    def insert_once(self, batch_id: str, batch: ColumnBatch, now: int) -> bool:
        return self.insert_batches(batch_id, [batch], now)

    def insert_batches(self, batch_id: str | None, batches: Iterable[ColumnBatch], now: int) -> bool:
        # No transactions: records first, then the id. On a server with deduplication tokens
        # (V_DEDUP_TOKEN, MergeTree table) each piece carries "<batch id>/<piece>", so a retry
        # after a crash between the two is dropped by the server: exactly once. On older servers
        # and the Distributed table the retried batch is stored twice, never lost.
        with self._write_lock:
            if self._seen(batch_id):
                return False
            for i, batch in enumerate(batches):
                self.insert(batch, token=None if batch_id is None else f"{batch_id}/{i}")
            self._remember(batch_id, now)
            return True

    def _seen(self, batch_id: str | None) -> bool:
        if batch_id is None:
            return False
        with self._errors("duplicate check"):
            return bool(self._client().execute(
                f"SELECT count() FROM {BATCHES} WHERE batch_id = %(b)s", {"b": batch_id})[0][0])

    def _remember(self, batch_id: str | None, now: int) -> None:
        if batch_id is not None:
            with self._errors("insert"):
                self._client().insert_columns(f"INSERT INTO {BATCHES} (batch_id, received_at) VALUES",
                                              [[batch_id], [now]])

    def insert_details(self, batch_id: str | None, columns: dict[str, list[Any]], now: int) -> bool:
        """Request detail rows (store/detail_sql.py): the id is checked first and written after
        the rows, as `insert_batches` does."""
        with self._write_lock:
            if self._seen(batch_id):
                return False
            names = list(detail_sql.COLUMNS)
            if columns[names[0]]:
                with self._errors("detail insert"):
                    self._client().insert_columns(
                        f"INSERT INTO {self.detail_table} ({', '.join(names)}) VALUES",
                        [columns[n] for n in names], settings={"insert_distributed_sync": 1})
            self._remember(batch_id, now)
            return True

    def details(self, q: detail_sql.DetailQuery) -> list[dict[str, Any]]:
        p = _Params()
        return [detail_sql.from_row(r) for r in self._query(detail_sql.select(self.detail_table, q, p), p)]

    def delete_before(self, cutoff: int) -> None:
        day_start = datetime.fromtimestamp(cutoff, UTC).strftime("%Y%m%d")
        delete = "DELETE FROM {t} WHERE" if self.has(V_LIGHTWEIGHT_DELETE) else "ALTER TABLE {t} DELETE WHERE"
        for args in self._shards:
            c = self._connect(args)
            try:
                with self._errors("retention"):
                    for table in (LOCAL, DETAIL_LOCAL):
                        parts = c.execute(
                            "SELECT DISTINCT partition FROM system.parts WHERE database = %(d)s "
                            "AND table = %(t)s AND active", {"d": args["database"], "t": table})
                        for (part,) in parts:
                            if part.strip("'").isdigit() and part.strip("'") < day_start:
                                c.execute(f"ALTER TABLE {table} DROP PARTITION {int(part.strip(chr(39)))}")
                        old = c.execute(f'SELECT count() FROM {table} WHERE "end_time" < %(c)s', {"c": cutoff})
                        if old[0][0]:
                            c.execute(delete.format(t=table) + ' "end_time" < %(c)s', {"c": cutoff})
            finally:
                c.disconnect()
        with self._errors("retention"):
            if self._client().execute(f"SELECT count() FROM {BATCHES} WHERE received_at < %(c)s",
                                      {"c": cutoff})[0][0]:
                self._client().execute(delete.format(t=BATCHES) + " received_at < %(c)s", {"c": cutoff})

    # --- reads --------------------------------------------------------------------------

    def _query(self, text: str, params: _Params) -> list[tuple[Any, ...]]:
        try:
            with self._errors("query"):
                rows: list[tuple[Any, ...]] = self._client().execute(text, params.values,
                                                                     settings=self._read_settings)
                return rows
        except StoreError as e:
            if isinstance(e.__cause__, EngineError) and e.__cause__.code == _TIMEOUT_EXCEEDED:
                raise QueryCancelled("timeout", "query ran over max_execution_time") from e
            raise

    def export(self, flt: Filter, fmt: str, path: str) -> None:
        """chDB writes the file itself (INTO OUTFILE ... FORMAT Parquet / JSONEachRow). A server
        over the native protocol sends blocks, not formatted output (and 18.16 has no Parquet
        format): its rows are streamed block by block into pyarrow's Parquet writer
        (store/arrow_batch.py) or msgspec JSON lines."""
        p = _Params()
        text = sql.export_select(self.table, flt, p)
        if self._chdb is not None:
            with self._errors("export"):
                self._chdb.into_outfile(text, p.values, path,
                                        {"parquet": "Parquet", "jsonl": "JSONEachRow"}[fmt])
            return
        with self._errors("export"):
            con = self._connect(self._args)
        assert isinstance(con, NativeConnection)
        try:
            with self._errors("export"):
                rows = con.iter_rows(text, p.values, settings=self._read_settings)
                if fmt == "parquet":
                    write_parquet(path, rows, 10_000)
                else:
                    with open(path, "xb") as f:
                        for r in rows:
                            f.write(_JSON.encode(dict(zip(TABLE_COLUMNS, r, strict=True))) + b"\n")
        finally:
            con.disconnect()

    def search(self, q: SearchQuery) -> SearchResult:
        p = _Params()
        total = self._query(sql.search_total(self.table, q, p), p)[0]
        p = _Params()
        rows = self._query(sql.search_page(self.table, q, p), p) if total[0] else []
        return SearchResult(int(total[0]), int(total[1] or 0), [row_to_record(r) for r in rows])

    def group(self, flt: Filter, keys: Sequence[GroupKey], with_hist: bool) -> list[GroupRow]:
        p = _Params()
        extra = f', sumMap("{HIST_BUCKETS}", "{HIST_COUNTS}") AS n_hist' if with_hist else ""
        rows = self._query(sql.group_sums(self.table, flt, keys, p, extra), p)
        n = len(keys)
        out: list[GroupRow] = []
        for r in rows:
            if not r[n]:
                continue
            hist: dict[int, int] = {}
            if with_hist:
                hb, hc = r[n + 8]
                hist = {int(b): int(c) for b, c in zip(hb, hc, strict=False) if c}
            out.append(GroupRow(
                key=tuple(r[:n]), records=int(r[n]), count=int(r[n + 1]), bytes_in=int(r[n + 2]),
                bytes_out=int(r[n + 3]), duration_weighted_sum=int(r[n + 4]),
                duration_min=int(r[n + 5]), duration_max=int(r[n + 6]), errors=int(r[n + 7]),
                hist=hist,
            ))
        return out

    def stats(self) -> StoreStats:
        n, lo, hi = self._query(f'SELECT count(), min("end_time"), max("end_time") FROM {self.table}',
                                _Params())[0]
        return StoreStats(self.kind, self.location, self.cluster, int(n),
                          int(lo) if n else None, int(hi) if n else None)

    def ping(self) -> None:
        self._query("SELECT 1", _Params())

    def close(self) -> None:
        self._drop_client()
        if self._chdb is not None:
            self._chdb.disconnect()
            self._chdb = None


class _Shared:
    """The store's one chDB connection handed out as if new: disconnect leaves it open."""

    def __init__(self, con: ChdbConnection) -> None:
        self._con = con

    def execute(self, text: str, params: dict[str, object] | None = None,
                settings: dict[str, int] | None = None) -> list[tuple[Any, ...]]:
        return self._con.execute(text, params, settings)

    def insert_columns(self, text: str, columns: Sequence[Sequence[Any]],
                       settings: dict[str, int | str] | None = None) -> None:
        self._con.insert_columns(text, columns, settings)

    def disconnect(self) -> None:
        pass
