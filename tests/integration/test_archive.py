"""The scheduled archive on real stores (DuckDB, and the ClickHouse store on chDB): closed
intervals become Parquet files the engine writes, which together hold exactly the stored records
of those intervals; a second run writes nothing; an open interval waits; a failure is counted and
leaves no partial file. The schedule's arithmetic (`due`) is checked against a direct rule."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from l7scope.contracts.record import L7Record
from l7scope.server.archive import Archiver, due, file_name
from l7scope.server.columns import to_columns
from l7scope.server.store.base import Store
from l7scope.testing import record_gen

H = 3600
T0 = 1_790_000_000 - 1_790_000_000 % H  # an hour boundary


@pytest.fixture(params=["duckdb", "chdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "duckdb":
        from l7scope.server.store.duckdb import DuckDBStore

        s = DuckDBStore(tmp_path / "l7.duckdb")
    else:
        from l7scope.server.store.clickhouse import ClickHouseStore

        s = ClickHouseStore(f"chdb://{tmp_path / 'chdb'}")
    yield s
    s.close()


def test_due_lists_every_closed_aligned_interval() -> None:
    for oldest in (T0, T0 + 1, T0 + H - 1, T0 + 5 * H + 17):
        for now in (T0 + 3 * H + 299, T0 + 3 * H + 300, T0 + 7 * H + 5):
            got = due(oldest, now, H, 300)
            want = [(s, s + H) for s in range(T0 - 2 * H, T0 + 10 * H, H)
                    if s + H > oldest and s + H <= now - 300]
            assert got == want, (oldest, now)


def _read(paths: list[Path]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for p in paths:
        rows += duckdb.sql(f"SELECT end_time, url, count, src_namespace FROM read_parquet('{p}')").fetchall()
    return sorted(rows)


def test_archive_writes_closed_intervals_once(store: Store, tmp_path: Path) -> None:
    topo = record_gen.topology(namespaces=3, services_per_ns=2, edges=10, seed=5)
    recs = record_gen.records(topo, 600, T0 + 10, T0 + 3 * H - 10, seed=5)
    # Records exactly on the interval edges: end_time == T0 + H belongs to [T0 + H, T0 + 2H).
    recs += [L7Record(start_time=T0 + H - 1, end_time=T0 + H, count=1, url="/edge"),
             L7Record(start_time=T0 + H - 2, end_time=T0 + H - 1, count=1, url="/edge-before")]
    store.insert(to_columns(recs))
    now = [float(T0 + 2 * H + 400)]  # [T0, T0+H) and [T0+H, T0+2H) are closed (lag 300 s)
    out = tmp_path / "archive"
    a = Archiver(store, out, H, lag_s=300, clock=lambda: now[0])
    assert a.run_once() == 2
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [file_name(T0, T0 + H), file_name(T0 + H, T0 + 2 * H)]
    want = sorted((r.end_time, r.url, r.count, r.src_namespace) for r in recs if r.end_time < T0 + 2 * H)
    assert _read(files) == want
    [first] = duckdb.sql(f"SELECT max(end_time), min(end_time) FROM read_parquet('{files[0]}')").fetchall()
    assert first[0] == T0 + H - 1 and first[1] >= T0
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert a.run_once() == 0  # idempotent: nothing new is due
    a2 = Archiver(store, out, H, lag_s=300, clock=lambda: now[0])  # a restarted server
    assert a2.run_once() == 0 and [f.stat().st_mtime_ns for f in files] == mtimes
    now[0] = T0 + 3 * H + 300
    assert a2.run_once() == 1
    assert _read(sorted(out.iterdir())) == sorted((r.end_time, r.url, r.count, r.src_namespace) for r in recs)
    assert a.counters.files_written == 2 and a2.counters.files_written == 1 and a2.counters.errors == 0
    assert not [f for f in out.iterdir() if f.name.endswith(".part")]


def test_empty_intervals_get_no_file_and_failures_are_counted(store: Store, tmp_path: Path) -> None:
    store.insert(to_columns([L7Record(start_time=T0, end_time=T0 + 5, count=1),
                             L7Record(start_time=T0 + 3 * H, end_time=T0 + 3 * H + 5, count=1)]))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    a = Archiver(store, blocked, H, lag_s=0, clock=lambda: T0 + 4 * H)
    assert a.run_once() == 0
    assert a.counters.errors == 1 and "cannot" in (a.counters.last_error or "")
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:  # root ignores directory permissions: the write failure is shown above
        out.chmod(0o500)
        assert Archiver(store, out, H, lag_s=0, clock=lambda: T0 + 4 * H).run_once() == 0
        out.chmod(0o700)
    a = Archiver(store, out, H, lag_s=0, clock=lambda: T0 + 4 * H)
    assert a.run_once() == 2
    assert sorted(f.name for f in out.iterdir()) == [file_name(T0, T0 + H), file_name(T0 + 3 * H, T0 + 4 * H)]
    assert a.counters.intervals_empty == 2


def test_a_store_error_is_counted_and_leaves_no_partial_file(store: Store, tmp_path: Path) -> None:
    store.insert(to_columns([L7Record(start_time=T0, end_time=T0 + 5, count=1)]))
    out = tmp_path / "a"
    a = Archiver(store, out, H, lag_s=0, clock=lambda: T0 + H)
    store.close()  # the store is gone: the export fails
    assert a.run_once() == 0
    assert a.counters.errors == 1 and a.counters.files_written == 0
    assert not out.exists() or not list(out.iterdir())
