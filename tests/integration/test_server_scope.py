"""Namespace-scoped reads on a real uvicorn server with DuckDB: a reader limited to namespace
`shop` gets no record, edge, node, group or count that names `bank` (or any other namespace) from
search, aggregation or the service graph, whatever its selector says; `unlogged` counts, /status
and /metrics are for cluster-wide readers only. The authenticator here is a table of tokens (the
scoping is under test; tests/kube/test_kube_auth.py derives the same principals from real RBAC)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contract.harness import serve
from scope_support import ADMIN, SHOP, WRITER, Table

from l7scope.contracts.auth import bearer
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import L7Record, encode_records
from l7scope.server.api import create_app
from l7scope.server.store.duckdb import DuckDBStore

NOW = 1_790_000_000
TR = {"from": NOW - 3600, "to": NOW}
NDJSON = {"Content-Type": "application/x-ndjson"}
SEARCH = "/api/v1/l7/logs/search"
AGG = "/api/v1/l7/logs/aggregation"
GRAPH = "/api/v1/servicegraph"


def rec(url: str, src: str, dst: str, svc_ns: str = "", **kw: object) -> L7Record:
    return L7Record(start_time=NOW - 5, end_time=NOW - 1, count=3, url=url, method="GET",
                    response_code="200", type="HTTP/1.1", src_name_aggr=f"{src}-client-*",
                    src_namespace=src, src_type="wep", dest_name_aggr=f"{dst}-api-*",
                    dest_namespace=dst, dest_type="wep", dest_service_namespace=svc_ns,
                    dest_service_name="api" if svc_ns else "", dest_service_port=80 if svc_ns else 0,
                    **kw)  # type: ignore[arg-type]


RECORDS = [
    rec("/shop-inside", "shop", "shop", "shop"),
    rec("/shop-out", "shop", "-"),  # to the internet: names only shop
    rec("/bank-inside", "bank", "bank", "bank"),
    rec("/shop-to-bank", "shop", "bank", "bank"),
    rec("/bank-to-shop", "bank", "shop", "shop"),
    rec("/via-bank-service", "shop", "shop", "bank"),  # a bank Service, shop backends
    L7Record(start_time=NOW - 5, end_time=NOW - 1, count=7, type="unlogged", host="node-1"),
]
VISIBLE_TO_SHOP = {"/shop-inside", "/shop-out"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = DuckDBStore(Path(tmp_path_factory.mktemp("scope")) / "l7.duckdb")
    app = create_app(store, auth=Table(), retention_s=86400, clock=lambda: NOW, ui_dir=None)
    with serve(app) as u:
        r = httpx.post(u + BULK_PATH, content=encode_records(RECORDS), headers=bearer(WRITER) | NDJSON)
        assert r.status_code == 200 and r.json()["accepted"] == len(RECORDS), r.text
        yield u
    store.close()


def post(url: str, token: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url + path, json={"time_range": TR, **body}, headers=bearer(token))


def urls(url: str, token: str, selector: str | None = None) -> set[str]:
    r = post(url, token, SEARCH, {"selector": selector, "page_size": 1000})
    assert r.status_code == 200, r.text
    return {h["url"] for h in r.json()["hits"]}


def test_a_cluster_wide_reader_sees_everything(url: str) -> None:
    r = post(url, ADMIN, SEARCH, {"page_size": 1000})
    assert r.json()["total_hits"] == len(RECORDS)
    g = post(url, ADMIN, GRAPH, {}).json()
    assert g["completeness"]["requests_unlogged"] == 7
    assert "bank" in json.dumps(g)
    assert httpx.get(url + "/api/v1/status", headers=bearer(ADMIN)).status_code == 200
    assert httpx.get(url + "/metrics", headers=bearer(ADMIN)).status_code == 200


def test_a_scoped_reader_searches_only_its_namespace(url: str) -> None:
    r = post(url, SHOP, SEARCH, {"page_size": 1000})
    assert r.status_code == 200
    body = r.json()
    assert {h["url"] for h in body["hits"]} == VISIBLE_TO_SHOP
    assert body["total_hits"] == 2 and body["total_requests"] == 6  # the counts too
    assert "bank" not in r.text and "unlogged" not in r.text


@pytest.mark.parametrize("selector", [
    'dest_namespace = "bank"',
    'dest_namespace = "bank" OR url =~ ".*"',
    'NOT (dest_namespace = "shop")',
    'src_namespace IN {"bank", "shop"} OR dest_namespace != "x"',
    'type = "unlogged"',
    "dest_namespace = \"bank\") OR (1 = 1",  # an attempt to close the scope's parenthesis
    'dest_namespace = "x" OR src_namespace =~ ".*"',
])
def test_no_selector_widens_the_scope(url: str, selector: str) -> None:
    r = post(url, SHOP, SEARCH, {"selector": selector, "page_size": 1000})
    if r.status_code == 400:  # not a selector at all: refused, nothing answered
        assert "hits" not in r.json()
        return
    assert r.status_code == 200, r.text
    assert {h["url"] for h in r.json()["hits"]} <= VISIBLE_TO_SHOP, selector
    for path, extra in ((AGG, {"group_by": ["dest_namespace", "source_namespace"]}), (GRAPH, {})):
        r = post(url, SHOP, path, {"selector": selector, **extra})
        assert r.status_code == 200, r.text
        assert "bank" not in r.text, (path, selector)


def test_aggregation_groups_and_counts_are_scoped(url: str) -> None:
    r = post(url, SHOP, AGG, {"group_by": ["dest_namespace", "source_namespace", "url", "type"]})
    assert r.status_code == 200
    groups = r.json()["groups"]
    assert {g["key"]["url"] for g in groups} == VISIBLE_TO_SHOP
    assert sum(g["count"] for g in groups) == 6 and sum(g["records"] for g in groups) == 2
    r = post(url, SHOP, AGG, {})  # one group of everything: the totals
    assert [g["count"] for g in r.json()["groups"]] == [6]


def test_the_service_graph_is_scoped(url: str) -> None:
    r = post(url, SHOP, GRAPH, {"expand": ["ns/shop", "ns/bank"]})
    assert r.status_code == 200
    g = r.json()
    text = json.dumps(g)
    assert "bank" not in text
    assert g["completeness"]["requests_unlogged"] == 0  # per-node counts name no namespace, so they are not shown
    assert g["nodes"] and g["edges"]
    admin = post(url, ADMIN, GRAPH, {"expand": ["ns/shop", "ns/bank"]}).json()
    assert len(admin["edges"]) > len(g["edges"])


def test_server_wide_counters_need_a_cluster_wide_reader(url: str) -> None:
    for path in ("/api/v1/status", "/metrics"):
        r = httpx.get(url + path, headers=bearer(SHOP))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
    r = httpx.get(url + "/api/v1/whoami", headers=bearer(SHOP))
    assert r.json()["user"]["namespaces"] == ["shop"]
    # `l7scope status` says why it shows no counters
    from l7scope.status.probe import _probe_server

    part = _probe_server(url, None, SHOP, 10, True)
    assert part.healthy and not part.stats and "may not read them" in part.warnings[0]
    part = _probe_server(url, None, ADMIN, 10, True)
    assert part.stats and not part.warnings


def test_the_writer_cannot_read(url: str) -> None:
    for path in (SEARCH, AGG, GRAPH):
        assert post(url, WRITER, path, {}).status_code == 403
