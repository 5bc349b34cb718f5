"""Request detail on a real uvicorn server with DuckDB (docs/detail.md): the bulk route takes
writers only and stores a batch once, drops redacted headers, rejects records outside the
bounds line by line; the requests route needs a reader, lists one aggregated record's requests
(drill-down) and finds requests by request id and trace id, and a reader limited to `shop` never
sees a request naming another namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contract.harness import serve
from scope_support import ADMIN, SHOP, WRITER, Table

from l7scope.contracts import detail as dc
from l7scope.contracts.auth import bearer
from l7scope.contracts.bulk import BATCH_ID_HEADER
from l7scope.server.api import create_app
from l7scope.server.store.duckdb import DuckDBStore

NOW = 1_790_000_000
NDJSON = {"Content-Type": "application/x-ndjson"}


def rec(i: int, svc_ns: str, **kw: object) -> dc.DetailRecord:
    base: dict[str, object] = dict(
        start_time=NOW - 2, end_time=NOW - 1, host="node-a", src_name_aggr="web-*",
        src_namespace="shop", src_type="wep", dest_name_aggr="api-*", dest_namespace=svc_ns,
        dest_type="wep", dest_service_name="api", dest_service_namespace=svc_ns,
        dest_service_port=80, url="api/items/{int}", method="GET", response_code="503",
        reason="error", request_id=f"rid-{i}", trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}",
        trace_format="w3c", path=f"/items/{i}", duration_us=1000 + i)
    base.update(kw)
    return dc.DetailRecord(**base)  # type: ignore[arg-type]


RECORDS = [rec(0, "shop"), rec(1, "shop"), rec(2, "bank"), rec(3, "shop", response_code="200",
                                                              reason="sampled", sample_rate=10)]
KEY = {f: getattr(RECORDS[0], f) for f in dc.DRILL_FIELDS}


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    store = DuckDBStore(tmp_path / "l7.duckdb")
    app = create_app(store, auth=Table(), clock=lambda: NOW, ui_dir=None)  # type: ignore[arg-type]
    with serve(app) as u:
        yield u
    store.close()


def post(url: str, token: str | None, path: str, **kw: object) -> httpx.Response:
    headers = bearer(token) if token else {}
    headers.update(kw.pop("headers", {}))  # type: ignore[call-overload]
    return httpx.post(url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def ship(url: str, body: bytes, batch: str = "node-a.b1", token: str = WRITER) -> httpx.Response:
    return post(url, token, dc.DETAIL_BULK_PATH, content=body, headers={**NDJSON, BATCH_ID_HEADER: batch})


def requests(url: str, token: str, body: dict[str, object]) -> httpx.Response:
    return post(url, token, dc.REQUESTS_PATH, json=body)


def test_writers_store_once_and_bad_lines_are_named(url: str) -> None:
    body = dc.encode_records(RECORDS)
    assert ship(url, body, token="").status_code == 401
    assert ship(url, body, token=ADMIN).status_code == 403  # a reader cannot write
    r = ship(url, body)
    assert r.status_code == 200 and r.json()["accepted"] == 4
    assert ship(url, body).json()["duplicate"] is True
    hostile = (b'{"request_id": "rid-h", "end_time": %d, "request_headers": {"Authorization": "Bearer s",'
               b' "cookie": "c=1", "x-tenant": "acme"}, "response_headers": {"Set-Cookie": "a=b"}}\n'
               % (NOW - 1)) + b'{"request_id": "' + b"x" * 500 + b'"}\n{"nope": 1}\n'
    r = ship(url, hostile, batch="node-a.b2")
    assert r.status_code == 200
    assert r.json()["accepted"] == 1 and [x["line"] for x in r.json()["rejected"]] == [2, 3]
    (h,) = requests(url, ADMIN, {"request_id": "rid-h", "time_range": {"from": NOW - 60, "to": NOW}}).json()["requests"]
    assert h["request_headers"] == {"x-tenant": "acme"} and h["response_headers"] == {}


def test_drill_down_search_and_scope(url: str) -> None:
    assert ship(url, dc.encode_records(RECORDS)).status_code == 200
    assert requests(url, "", {"record": KEY}).status_code == 401
    assert requests(url, WRITER, {"record": KEY}).status_code == 403  # a writer cannot read
    drill = requests(url, ADMIN, {"record": KEY}).json()
    assert {r["request_id"] for r in drill["requests"]} == {"rid-0", "rid-1"} and not drill["truncated"]
    one = requests(url, ADMIN, {"record": KEY, "limit": 1}).json()
    assert len(one["requests"]) == 1 and one["truncated"]
    tr = {"from": NOW - 60, "to": NOW}
    (by_trace,) = requests(url, ADMIN, {"trace_id": f"{3:032X}", "time_range": tr}).json()["requests"]
    assert by_trace["request_id"] == "rid-2" and by_trace["dest_namespace"] == "bank"
    assert requests(url, SHOP, {"trace_id": f"{3:032x}", "time_range": tr}).json()["requests"] == []
    assert requests(url, SHOP, {"request_id": "rid-2", "time_range": tr}).json()["requests"] == []
    bank_key = {**KEY, "dest_service_namespace": "bank"}
    assert requests(url, SHOP, {"record": bank_key}).json()["requests"] == []
    assert {r["request_id"] for r in requests(url, SHOP, {"record": KEY}).json()["requests"]} == {"rid-0", "rid-1"}
    (sampled,) = requests(url, SHOP, {"request_id": "rid-3", "time_range": tr}).json()["requests"]
    assert sampled["sample_rate"] == 10 and sampled["reason"] == "sampled"
    for bad in ({}, {"request_id": "a", "trace_id": "b"}, {"record": {"end_time": 1}}, {"limit": 0, "request_id": "a"}):
        r = requests(url, ADMIN, bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
