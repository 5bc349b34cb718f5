"""Export through the authenticated API on a real uvicorn server, with DuckDB and with the
ClickHouse store (on chDB's current engine, and on the real 18.16 server): the Parquet (or JSON
lines) file read back by DuckDB equals the search API's answer for the same selector; a reader
limited to one namespace gets no record naming another; no token, no file."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from contract import chserver
from contract.harness import serve
from scope_support import ADMIN, SHOP, WRITER, Table

from l7scope.contracts.auth import bearer
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import encode_records
from l7scope.server.api import create_app
from l7scope.server.store.base import Store
from l7scope.testing import record_gen

NOW = 1_790_000_000
TR = {"from": NOW - 3600, "to": NOW}
EXPORT = "/api/v1/l7/logs/export"
SEARCH = "/api/v1/l7/logs/search"
NS_COLS = ("src_namespace", "dest_namespace", "dest_service_namespace")


@pytest.fixture(scope="module", params=["duckdb", "chdb", "clickhouse"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = Path(tmp_path_factory.mktemp("export"))
    servers: list[chserver.Server] = []
    store: Store
    if request.param == "duckdb":
        from l7scope.server.store.duckdb import DuckDBStore

        store = DuckDBStore(d / "l7.duckdb")
    else:
        from l7scope.server.store.clickhouse import ClickHouseStore

        if request.param == "chdb":
            store = ClickHouseStore(f"chdb://{d / 'chdb'}")
        else:
            if chserver.binary() is None:
                pytest.skip("clickhouse-server is not installed")
            servers = chserver.start(Path(tempfile.mkdtemp(prefix="l7ch-", dir=d)), count=1)
            store = ClickHouseStore(f"clickhouse://127.0.0.1:{servers[0].tcp_port}/e_{uuid.uuid4().hex[:8]}")
    app = create_app(store, auth=Table(), retention_s=86400, clock=lambda: NOW, ui_dir=None)
    topo = record_gen.topology(namespaces=4, services_per_ns=3, edges=20, seed=3)
    recs = record_gen.records(topo, 500, NOW - 3000, NOW - 10, seed=3, unlogged_share=0.03)
    try:
        with serve(app) as u:
            r = httpx.post(u + BULK_PATH, content=encode_records(recs),
                           headers=bearer(WRITER) | {"Content-Type": "application/x-ndjson"})
            assert r.status_code == 200 and r.json()["accepted"] == len(recs), r.text
            yield u
    finally:
        store.close()
        chserver.stop(servers)


def _search_all(url: str, token: str, selector: str) -> list[dict[str, object]]:
    hits: list[dict[str, object]] = []
    page = 0
    while True:
        r = httpx.post(url + SEARCH, json={"time_range": TR, "selector": selector, "page_size": 1000,
                                           "page_num": page}, headers=bearer(token))
        assert r.status_code == 200, r.text
        hits += r.json()["hits"]
        if page + 1 >= r.json()["num_pages"]:
            return hits
        page += 1


def _export(url: str, token: str, selector: str, fmt: str, out: Path) -> list[dict[str, object]]:
    with httpx.stream("POST", url + EXPORT, json={"time_range": TR, "selector": selector, "format": fmt},
                      headers=bearer(token)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith(
            "application/vnd.apache.parquet" if fmt == "parquet" else "application/x-ndjson")
        with out.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
    reader = "read_parquet" if fmt == "parquet" else "read_json_auto"
    cur = duckdb.sql(f"SELECT * FROM {reader}('{out}')")
    names = [c[0] for c in cur.description]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for r in rows:
        r["duration_hist"] = {str(b): int(c) for b, c in zip(r.pop("hist_b"), r.pop("hist_c"), strict=True)}
    return rows


def _key(d: dict[str, object]) -> str:
    return json.dumps(d, sort_keys=True)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("selector", ["", 'dest_namespace = "shop" OR response_code =~ "5.."'])
def test_export_equals_search(url: str, tmp_path: Path, fmt: str, selector: str) -> None:
    want = _search_all(url, ADMIN, selector)
    got = _export(url, ADMIN, selector, fmt, tmp_path / f"x.{fmt}")
    assert len(want) > 20
    assert sorted(map(_key, got)) == sorted(map(_key, want))


def test_a_scoped_readers_export_names_no_other_namespace(url: str, tmp_path: Path) -> None:
    everything = _export(url, ADMIN, "", "parquet", tmp_path / "all.parquet")
    assert any(r[c] not in ("shop", "", "-") for r in everything for c in NS_COLS)
    got = _export(url, SHOP, 'src_namespace != "nothing" OR dest_namespace = "payments"', "parquet",
                  tmp_path / "shop.parquet")
    assert got, "the shop reader sees its own records"
    for r in got:
        assert {r[c] for c in NS_COLS} <= {"shop", "", "-"} and r["type"] != "unlogged", r
    want = [r for r in everything if {r[c] for c in NS_COLS} <= {"shop", "", "-"} and r["type"] != "unlogged"]
    assert sorted(map(_key, got)) == sorted(map(_key, want))


def test_export_needs_a_token_and_a_valid_body(url: str) -> None:
    assert httpx.post(url + EXPORT, json={"time_range": TR}).status_code == 401
    r = httpx.post(url + EXPORT, json={"time_range": TR, "format": "csv"}, headers=bearer(ADMIN))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = httpx.post(url + EXPORT, json={"time_range": TR, "selector": "url = "}, headers=bearer(ADMIN))
    assert r.status_code == 400
    r = httpx.post(url + EXPORT, json={"time_range": TR, "selector": 'url =~ "("'}, headers=bearer(ADMIN))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_value", r.text


def test_the_cli_export_writes_the_servers_file(url: str, tmp_path: Path) -> None:
    """`l7scope export` (a real process) against the server: its Parquet file equals search."""
    import subprocess
    import sys

    token = tmp_path / "token"
    token.write_text(ADMIN)
    out = tmp_path / "cli.parquet"
    sel = 'dest_namespace = "shop"'
    p = subprocess.run([sys.executable, "-m", "l7scope", "export", "--server", url, "--token-file", str(token),
                        "--since", str(TR["from"]), "--until", str(TR["to"]), "--selector", sel, "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stderr and out.exists() and not (tmp_path / "cli.parquet.part").exists()
    cur = duckdb.sql(f"SELECT * FROM read_parquet('{out}')")
    names = [c[0] for c in cur.description]
    got = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for r in got:
        r["duration_hist"] = {str(b): int(c) for b, c in zip(r.pop("hist_b"), r.pop("hist_c"), strict=True)}
    assert sorted(map(_key, got)) == sorted(map(_key, _search_all(url, ADMIN, sel)))
    bad = subprocess.run([sys.executable, "-m", "l7scope", "export", "--server", url, "--token-file", str(token),
                          "--since", "1h", "--selector", "url = ", "-o", str(tmp_path / "bad.parquet")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "server:" in bad.stderr and not (tmp_path / "bad.parquet").exists()
    assert not (tmp_path / "bad.parquet.part").exists()
