"""The embedded default store: one DuckDB file owned by the server process.

Batches go in as Arrow tables (`INSERT ... SELECT` from a registered Arrow table), never
row-by-row. Queries use a cursor per call, so request threads run concurrently; writes are
serialised by a lock. Batch ids live in a table next to the records, in the same transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import duckdb

from l7scope.contracts.fields import COLUMNS
from l7scope.server import cancel
from l7scope.server.columns import ColumnBatch, batch_len, row_to_record
from l7scope.server.fields import HIST_BUCKETS, HIST_COUNTS, TABLE_COLUMNS, int_width
from l7scope.server.store import detail_sql, graph_ids, sql
from l7scope.server.store.arrow_batch import to_arrow
from l7scope.server.store.base import (
    MERGED_CLASS,
    MERGED_ROUTE,
    MERGED_TOTAL,
    MERGED_TOTAL_ROUTE,
    Filter,
    GroupKey,
    GroupRow,
    MergedRow,
    SearchQuery,
    SearchResult,
    StoreError,
    StoreStats,
)

TABLE = "l7"
BATCHES = "l7_batches"
CHECKPOINT_WAL = "64MB"

_DUCK_INT = {"u16": "USMALLINT", "u32": "UINTEGER", "u64": "UBIGINT"}


def _column_types() -> dict[str, str]:
    out = {c: ("VARCHAR" if k == "text" else _DUCK_INT[int_width(c)]) for c, k in COLUMNS.items()}
    out[HIST_BUCKETS] = "USMALLINT[]"
    out[HIST_COUNTS] = "UBIGINT[]"
    return out


def _sat(expr: str) -> str:
    """A HUGEINT sum as UBIGINT, saturating at 2^64 - 1 instead of failing the query (the bounds
    of contracts.record keep realistic sums far below it)."""
    return f"least({expr}, {(1 << 64) - 1})::UBIGINT"


class _Params:
    """DuckDB named parameters ($p0, $p1, ...)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def add(self, value: object) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"

    def regex(self, column_sql: str, placeholder: str) -> str:
        return f"regexp_matches({column_sql}, {placeholder})"

    def text_match(self, kind: str, column_sql: str, placeholder: str) -> str:
        fn = {"prefix": "starts_with", "suffix": "ends_with", "contains": "contains"}[kind]
        return f"{fn}({column_sql}, {placeholder})"

    def int_div(self, expr: str, divisor: int) -> str:
        return f"({expr} // {int(divisor)})"

    def wide_sum(self, expr: str) -> str:
        return f"sum({expr})"  # DuckDB sums integers as HUGEINT (128 bits)


class DuckDBStore:
    kind = "duckdb"

    def __init__(self, path: Path | str, *, memory_limit: str | None = None,
                 threads: int | None = None) -> None:
        self.location = str(path)
        if self.location != ":memory:":
            Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        # Checkpoint (compress the WAL's rows into the file) every 64 MB of WAL instead of
        # DuckDB's 16 MB: ~160k records, more than a row group (122,880 rows), so a row group
        # is compressed about once instead of being re-compressed at every checkpoint while it
        # fills. Costs up to 64 MB of WAL to replay after a crash.
        config: dict[str, Any] = {"checkpoint_threshold": CHECKPOINT_WAL}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if threads:
            config["threads"] = threads
        try:
            self._con = duckdb.connect(self.location, config=config)
        except duckdb.Error as e:
            raise StoreError(f"cannot open DuckDB store {self.location}: {e}") from e
        self._write_lock = threading.Lock()
        self._names = count()
        self._migrate()

    # --- schema -------------------------------------------------------------------------

    def _migrate(self) -> None:
        types = _column_types()
        cols = ", ".join(f'"{c}" {types[c]}' for c in TABLE_COLUMNS)
        with self._write_lock:
            self._con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
            self._con.execute(
                f"CREATE TABLE IF NOT EXISTS {BATCHES} (batch_id VARCHAR PRIMARY KEY, received_at UBIGINT)"
            )
            dcols = ", ".join(f'"{c}" {"VARCHAR" if k == "text" else "UBIGINT"}'
                              for c, k in detail_sql.COLUMNS.items())
            self._con.execute(f"CREATE TABLE IF NOT EXISTS {detail_sql.TABLE} ({dcols})")
            have = {r[0] for r in self._con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [TABLE]
            ).fetchall()}
            for c in TABLE_COLUMNS:
                if c not in have:  # a newer schema added a column: add it with its default
                    default = "''" if types[c] == "VARCHAR" else ("[]" if types[c].endswith("[]") else "0")
                    self._con.execute(f'ALTER TABLE {TABLE} ADD COLUMN "{c}" {types[c]} DEFAULT {default}')

    # --- writes -------------------------------------------------------------------------

    def _insert_locked(self, con: duckdb.DuckDBPyConnection, batch: ColumnBatch) -> None:
        name = f"_batch_{next(self._names)}"
        con.register(name, to_arrow(batch))
        try:
            cols = sql.select_columns()
            # RETURNING (its rows are never fetched) makes DuckDB plan a plain insert: without
            # it, with threads > 1 it plans its batch-index insert, which for a 5,000-row batch
            # costs an extra copy (measured: ~15% less CPU for the whole insert + commit).
            con.execute(f"INSERT INTO {TABLE} ({cols}) SELECT {cols} FROM {name} RETURNING 0")
        finally:
            con.unregister(name)

    def insert(self, batch: ColumnBatch) -> None:
        if batch_len(batch) == 0:
            return
        try:
            with self._write_lock:
                self._insert_locked(self._con, batch)
        except duckdb.Error as e:
            raise StoreError(f"insert failed: {e}") from e

    def insert_once(self, batch_id: str, batch: ColumnBatch, now: int) -> bool:
        return self.insert_batches(batch_id, [batch], now)

    def insert_batches(self, batch_id: str | None, batches: Iterable[ColumnBatch], now: int) -> bool:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            for batch in batches:
                if batch_len(batch):
                    self._insert_locked(con, batch)
        return self._once(batch_id, now, write)

    def _once(self, batch_id: str | None, now: int,
              write: Callable[[duckdb.DuckDBPyConnection], None]) -> bool:
        """Run `write` and remember `batch_id` in one transaction, unless the id was stored before."""
        try:
            with self._write_lock:
                con = self._con
                con.execute("BEGIN TRANSACTION")
                try:
                    # One statement both checks and remembers the id (no SELECT first: a
                    # parameterised statement costs about 2 ms); a known id inserts no row.
                    # fetchall, not fetchone: a result left unfinished on the shared connection
                    # made every later plain insert fail ("connection has an unfinished result").
                    if batch_id is not None and not con.execute(
                            f"INSERT INTO {BATCHES} VALUES (?, ?) ON CONFLICT DO NOTHING "
                            "RETURNING 1", [batch_id, now]).fetchall():
                        con.execute("ROLLBACK")
                        return False
                    write(con)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                return True
        except duckdb.Error as e:
            raise StoreError(f"insert failed: {e}") from e

    def insert_details(self, batch_id: str | None, columns: dict[str, list[Any]], now: int) -> bool:
        """Request detail rows (store/detail_sql.py), columnar: one INSERT of unnested lists."""
        names = list(detail_sql.COLUMNS)
        unnest = ", ".join(f"unnest(${i}) AS \"{c}\"" for i, c in enumerate(names, 1))
        cols = ", ".join(f'"{c}"' for c in names)

        def write(con: duckdb.DuckDBPyConnection) -> None:
            if columns[names[0]]:
                con.execute(f"INSERT INTO {detail_sql.TABLE} ({cols}) SELECT {unnest}",
                            [columns[c] for c in names])
        return self._once(batch_id, now, write)

    def details(self, q: detail_sql.DetailQuery) -> list[dict[str, Any]]:
        p = _Params()
        return [detail_sql.from_row(r) for r in self._query(detail_sql.select(detail_sql.TABLE, q, p), p)]

    def delete_before(self, cutoff: int) -> None:
        try:
            with self._write_lock:
                self._con.execute(f'DELETE FROM {TABLE} WHERE "end_time" < ?', [cutoff])
                self._con.execute(f'DELETE FROM {detail_sql.TABLE} WHERE "end_time" < ?', [cutoff])
                self._con.execute(f"DELETE FROM {BATCHES} WHERE received_at < ?", [cutoff])
        except duckdb.Error as e:
            raise StoreError(f"retention failed: {e}") from e

    # --- reads --------------------------------------------------------------------------

    def _query(self, text: str, params: _Params) -> list[tuple[Any, ...]]:
        try:
            # A cancelled request (statement timeout, client gone: server.cancel) interrupts
            # this cursor's statement from the event loop's thread.
            with self._con.cursor() as cur, cancel.on_cancel(cur.interrupt) as token:
                try:
                    return cur.execute(text, params.values).fetchall()
                except duckdb.InterruptException:
                    if token is not None and token.reason is not None:
                        raise cancel.QueryCancelled(token.reason, "query cancelled") from None
                    raise
        except duckdb.InvalidInputException as e:
            raise ValueError(str(e)) from e
        except duckdb.Error as e:
            raise StoreError(f"query failed: {e}") from e

    def export(self, flt: Filter, fmt: str, path: str) -> None:
        """COPY ... TO path: DuckDB writes the Parquet (or newline-delimited JSON) file itself."""
        option = {"parquet": "FORMAT PARQUET", "jsonl": "FORMAT JSON"}[fmt]
        p = _Params()
        select = sql.export_select(TABLE, flt, p)
        target = "'" + path.replace("'", "''") + "'"  # a path the server chose, quoted
        try:
            with self._con.cursor() as cur, cancel.on_cancel(cur.interrupt):
                cur.execute(f"COPY ({select}) TO {target} ({option})", p.values)
        except duckdb.InvalidInputException as e:
            raise ValueError(str(e)) from e
        except duckdb.Error as e:
            raise StoreError(f"export failed: {e}") from e

    def search(self, q: SearchQuery) -> SearchResult:
        p = _Params()
        total = self._query(sql.search_total(TABLE, q, p), p)[0]
        p = _Params()
        rows = self._query(sql.search_page(TABLE, q, p), p) if total[0] else []
        return SearchResult(int(total[0]), int(total[1] or 0), [row_to_record(r) for r in rows])

    def group(self, flt: Filter, keys: Sequence[GroupKey], with_hist: bool) -> list[GroupRow]:
        p = _Params()
        n = len(keys)
        # With histograms, each group also gets a hash of its key values so the (exploded)
        # histogram query can group on one integer instead of n text columns.
        text = sql.group_sums(TABLE, flt, keys, p)
        if with_hist:
            ks = ", ".join(f"k{i}" for i in range(n))
            text = f"SELECT *, {f'hash({ks})' if keys else '0'} AS n_hash FROM ({text})"
        rows = self._query(text, p)
        out: dict[Any, GroupRow] = {}
        for r in rows:
            if not r[n]:
                continue
            out[r[n + 8] if with_hist else tuple(r[:n])] = GroupRow(
                key=tuple(r[:n]), records=int(r[n]), count=int(r[n + 1] or 0),
                bytes_in=int(r[n + 2] or 0), bytes_out=int(r[n + 3] or 0),
                duration_weighted_sum=int(r[n + 4] or 0), duration_min=int(r[n + 5] or 0),
                duration_max=int(r[n + 6] or 0), errors=int(r[n + 7] or 0),
            )
        if with_hist and out:
            p = _Params()
            hash_sql = f"hash({', '.join(sql.key_sql(k, p) for k in keys)})" if keys else "0"
            text = (
                f"SELECT hk, b, sum(c) FROM (SELECT {hash_sql} AS hk, unnest(\"{HIST_BUCKETS}\") AS b, "
                f"unnest(\"{HIST_COUNTS}\") AS c FROM {TABLE} WHERE {sql.where(flt, p)}) GROUP BY hk, b"
            )
            for hk, b, c in self._query(text, p):  # (hk, b) is unique: one row per bucket
                g = out.get(hk)
                if g is not None and b is not None:
                    g.hist[b] = int(c)
        return list(out.values())

    def graph_stats(self, flt: Filter, expanded: Collection[str], top_routes: int) -> list[MergedRow]:
        """The service graph summed in one statement (GraphStore): rows in store.base's MergedRow layout.

        Records are summed per distinct raw key (grouped on its 64-bit hash, the key the
        histograms are joined back on); node ids (graph_ids.source_id_sql / dest_id_sql) are
        computed on those few groups, and backend edges are the groups of an expanded service
        again, keyed by service and answering workload. From these groups come the sums per edge, per edge and
        class (only for edges with several classes: otherwise the edge's row names its one class)
        and per route (only each edge's `top_routes` busiest, by count, then method and url, in
        that order; an edge's only route is named on the edge's row). Histograms are summed per
        (raw-key hash, bucket) from the exploded integer columns, joined back to integer group
        keys, and summed per class, per edge with several classes and per kept route of an edge
        with several routes; p50/p99 are the first buckets whose running count (a window sum)
        reaches the rank (contracts.latency's rule)."""
        p = _Params()
        exp = frozenset(expanded)
        w = sql.where(flt, p)
        raw = ", ".join(f'"{c}"' for c in (
            "src_type", "src_namespace", "src_name_aggr", "dest_type", "dest_namespace", "dest_name_aggr",
            "dest_service_namespace", "dest_service_name", "response_code", "method", "url"))
        any_raw = ", ".join(f"any_value({c}) AS {c}" for c in raw.split(", "))
        # A group's response code is part of its key: its errors are all or none of its requests.
        errors = "CASE WHEN substring(\"response_code\", 1, 1) IN ('4', '5') THEN n ELSE 0 END"
        cols = "n, bi, bo, ws, dmin, dmax, er"
        sums = ("sum(n) AS n, sum(bi) AS bi, sum(bo) AS bo, sum(ws) AS ws, min(dmin) AS dmin, "
                "max(dmax) AS dmax, sum(er) AS er")
        ends = f"SELECT gk, hash(0, s, d) AS eid, s AS a, d AS b, 0 AS kind, cls, m, u, {cols} FROM ids0"
        if exp:  # a backend edge per expanded service and answering workload
            ends += (f" UNION ALL SELECT gk, hash(1, d, bk), d, bk, 1, cls, m, u, {cols} FROM ids0 "
                     "WHERE bk != '' AND starts_with(d, 'svc/')")
        ids0 = (f"SELECT gk, {graph_ids.source_id_sql(exp, p)} AS s, {graph_ids.dest_id_sql(exp, p)} AS d, "
                f"{graph_ids.backend_edge_sql(exp, p) if exp else chr(39) * 2} AS bk, "
                f"{sql.RESPONSE_CLASS_SQL} AS cls, \"method\" AS m, \"url\" AS u, n, bi, bo, ws, dmin, dmax, "
                f"{errors} AS er FROM grp")
        top = int(top_routes)
        if top:
            route_ctes = f"""
), rs AS (
  SELECT eid, m, u, any_value(rg) AS rg, {sums} FROM ids WHERE kind = 0 GROUP BY eid, m, u
), rtop AS (
  SELECT eid, count(*) AS nr, min_by(rg, {{'n': -n, 'm': m, 'u': u}}, {top}) AS keep,
         any_value(m) AS m1, any_value(u) AS u1
  FROM rs GROUP BY eid"""
            edge_rows = (f"SELECT CASE WHEN nr = 1 THEN {MERGED_TOTAL_ROUTE} ELSE {MERGED_TOTAL} END, "
                         f"pg, eid, a, b, kind, cls1, CASE WHEN nr = 1 THEN m1 END, CASE WHEN nr = 1 THEN u1 END, "
                         f"{cols} FROM et LEFT JOIN rtop USING (eid)")
            route_rows = f"""
  UNION ALL
  SELECT {MERGED_ROUTE}, rg, eid, NULL, NULL, 0, NULL, m, u, n, NULL, NULL, NULL, NULL, NULL, er
  FROM rs JOIN rtop USING (eid) WHERE nr > 1 AND list_contains(keep, rg)"""  # (the columns a route shows)
            route_hist = f"""
  UNION ALL
  SELECT rg, hbk, sum(c) FROM hf WHERE rg IN (SELECT pg FROM sums WHERE lv = {MERGED_ROUTE})
  GROUP BY rg, hbk"""
        else:
            route_ctes = route_rows = route_hist = ""
            edge_rows = f"SELECT {MERGED_TOTAL}, pg, eid, a, b, kind, cls1, NULL, NULL, {cols} FROM et"
        w2 = sql.where(flt, p)
        # gk/eid/cg/rg: 64-bit hashes of the raw key, the edge's ends, (edge, class), (edge, route),
        # as `group` matches groups. pg: the group whose histogram gives a row's percentiles.
        text = f"""
WITH grp AS (
  SELECT gk, {any_raw}, sum("count"::BIGINT) AS n, sum("bytes_in"::BIGINT) AS bi,
         sum("bytes_out"::BIGINT) AS bo, sum("duration_mean" * "count") AS ws, min("duration_mean") AS dmin,
         max("duration_max") AS dmax
  FROM (SELECT *, hash({raw}) AS gk FROM {TABLE} WHERE {w}) GROUP BY gk
), ids0 AS (
  {ids0}
), ids AS MATERIALIZED (
  SELECT *, hash(0, eid, cls) AS cg, hash(2, eid, m, u) AS rg FROM ({ends})
), et AS MATERIALIZED (
  SELECT eid, any_value(a) AS a, any_value(b) AS b, any_value(kind) AS kind,
         CASE WHEN min(cls) = max(cls) THEN any_value(cg) ELSE hash(1, eid) END AS pg,
         CASE WHEN min(cls) = max(cls) THEN any_value(cls) END AS cls1, {sums}
  FROM ids GROUP BY eid{route_ctes}
), sums AS MATERIALIZED (
  SELECT {MERGED_CLASS} AS lv, cg AS pg, eid, NULL AS a, NULL AS b, any_value(kind) AS kind, cls,
         NULL AS m, NULL AS u, {sums}
  FROM ids WHERE eid IN (SELECT eid FROM et WHERE cls1 IS NULL) GROUP BY eid, cls, cg
  UNION ALL
  {edge_rows}{route_rows}
), gh AS (
  SELECT gk, hbk, sum(c) AS c FROM (
    SELECT hash({raw}) AS gk, unnest("{HIST_BUCKETS}") AS hbk, unnest("{HIST_COUNTS}") AS c
    FROM {TABLE} WHERE {w2}) WHERE c > 0 GROUP BY gk, hbk
), hf AS MATERIALIZED (
  SELECT cg, eid, rg, hbk, c FROM gh JOIN ids ON gh.gk = ids.gk
), hist AS MATERIALIZED (
  SELECT cg AS g, hbk, sum(c) AS c FROM hf GROUP BY cg, hbk
  UNION ALL
  SELECT hash(1, eid), hbk, sum(c) FROM hf
  WHERE eid IN (SELECT eid FROM et WHERE cls1 IS NULL) GROUP BY eid, hbk{route_hist}
), tot AS (
  SELECT g, sum(c) AS t FROM hist GROUP BY g
), cum AS (
  SELECT g, hbk, sum(c) OVER (PARTITION BY g ORDER BY hbk ROWS UNBOUNDED PRECEDING) AS rc FROM hist
), pct AS (
  SELECT g, min(hbk) FILTER (WHERE rc >= 0.5 * t) AS p50, min(hbk) FILTER (WHERE rc >= 0.99 * t) AS p99
  FROM cum JOIN tot USING (g) GROUP BY g
)
SELECT lv, eid, a, b, kind, cls, m, u, {_sat("n")}, {_sat("bi")}, {_sat("bo")},
       CASE WHEN n > 0 THEN {_sat("ws // n")} ELSE 0 END, dmin, dmax, {_sat("er")},
       CASE WHEN lv != {MERGED_ROUTE} THEN p50 END, p99
FROM sums LEFT JOIN pct ON sums.pg = pct.g
ORDER BY lv, eid, n DESC, m, u
"""
        return self._query(text, p)

    def stats(self) -> StoreStats:
        p = _Params()
        n, lo, hi = self._query(f'SELECT count(*), min("end_time"), max("end_time") FROM {TABLE}', p)[0]
        return StoreStats(self.kind, self.location, None, int(n),
                          None if lo is None else int(lo), None if hi is None else int(hi))

    def ping(self) -> None:
        self._query("SELECT 1", _Params())

    def close(self) -> None:
        self._con.close()
