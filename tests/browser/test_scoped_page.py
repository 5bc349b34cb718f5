"""The page for a namespace-scoped reader, in a real Chromium against a real server (DuckDB):
logged in with a reader of `shop` only, neither the graph nor the HTTP tab nor any text on the
page names `bank`, though the store holds bank's records and a cluster-wide reader's page shows
them. The principals come from a token table (the scoping is under test here; real RBAC gives
the same principals in tests/kube/test_kube_auth.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import graph_ids
from contract.harness import serve

from l7scope.contracts.auth import bearer
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import L7Record, encode_records
from l7scope.server.api import UI_DIR, create_app
from l7scope.server.auth import Principal
from l7scope.server.store.duckdb import DuckDBStore

pytestmark = pytest.mark.browser

TOKENS = {
    "writer-" + "w" * 40: Principal("writer", can_read=False, can_write=True),
    "admin-" + "a" * 40: Principal("admin", can_read=True, can_write=False),
    "shop-" + "s" * 40: Principal("shop-reader", can_read=True, can_write=False, namespaces=frozenset({"shop"})),
}
WRITER, ADMIN, SHOP = TOKENS


class Table:
    kind = "test"
    anonymous: Principal | None = None

    def authenticate(self, token: str) -> Principal | None:
        return TOKENS.get(token)


def rec(now: int, url: str, src: str, dst: str) -> L7Record:
    return L7Record(start_time=now - 20, end_time=now - 10, count=5, url=url, method="GET",
                    response_code="200", type="HTTP/1.1", src_type="wep", dest_type="wep",
                    src_namespace=src, src_name_aggr=f"{src}-web-*", dest_namespace=dst,
                    dest_name_aggr=f"{dst}-api-*", dest_service_namespace=dst,
                    dest_service_name=f"{dst}-api", dest_service_port=80)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[str]:
    store = DuckDBStore(Path(tmp_path_factory.mktemp("scoped")) / "l7.duckdb")
    app = create_app(store, auth=Table(), ui_dir=UI_DIR)
    now = int(time.time())
    with serve(app) as u:
        body = encode_records([rec(now, "shop-api/cart", "shop", "shop"),
                               rec(now, "bank-api/ledger", "bank", "bank"),
                               rec(now, "bank-api/pay", "shop", "bank"),
                               L7Record(start_time=now - 20, end_time=now - 10, count=9, type="unlogged",
                                        host="node-1")])
        r = httpx.post(u + BULK_PATH, content=body,
                       headers=bearer(WRITER) | {"Content-Type": "application/x-ndjson"})
        assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
        yield u
    store.close()


def log_in(page: Any, url: str, token: str) -> None:
    page.goto(url)
    page.wait_for_selector("#login", state="visible", timeout=30_000)
    page.fill("#login-token", token)
    # the login page itself was drawn (ready) behind the overlay; a successful login reloads it,
    # and waiting for `ready` before that reload would find the old page's
    with page.expect_navigation(timeout=30_000):
        page.click("#login-submit")
    page.wait_for_function("window.l7scope && window.l7scope.ready === true", timeout=30_000)


def test_a_scoped_reader_sees_only_its_namespace_on_the_page(page: Any, url: str) -> None:
    log_in(page, url, SHOP)
    nodes = graph_ids(page, "node")
    assert nodes and not [n for n in nodes if "bank" in n], nodes
    page.wait_for_selector("#http-body tr.rec")
    rows = page.locator("#http-body tr.rec").all_inner_texts()
    assert rows and all("shop-api/cart" in r for r in rows), rows
    # the page's own API client asking for both namespaces expanded: nothing of bank
    page.evaluate("(async () => { const a = await window.l7scope.api.serviceGraph("
                  "{ timeRange: { from: 'now-1h', to: 'now' }, expand: ['shop', 'bank'] });"
                  " window.__answer = JSON.stringify(a); })()")
    page.wait_for_function("window.__answer !== undefined")
    answer = page.evaluate("window.__answer")
    assert '"nodes"' in answer and "shop" in answer and "bank" not in answer, answer[:300]
    assert "bank" not in page.inner_text("body")


def test_a_cluster_wide_reader_sees_both(page: Any, url: str) -> None:
    log_in(page, url, ADMIN)
    nodes = graph_ids(page, "node")
    assert any("bank" in n for n in nodes) and any("shop" in n for n in nodes), nodes
