"""The HTTP tab's drill-down lists a record's kept requests (docs/detail.md) in a real Chromium
against a real `l7scope server`: the requests of exactly that record, their request ids, trace
ids and headers, hostile values shown as text (no script runs), and a record without kept
requests says so."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import Server, open_app

from l7scope.contracts import detail as dc
from l7scope.contracts.bulk import BATCH_ID_HEADER, CONTENT_TYPE
from l7scope.contracts.record import L7Record

pytestmark = pytest.mark.browser

HOSTILE = '<img src=x onerror="window.__pwned=1"><b>bold</b>'


def _record(now: int, url: str, code: str) -> L7Record:
    return L7Record(start_time=now - 2, end_time=now - 1, count=40, url=url, method="GET",
                    response_code=code, type="HTTP/1.1", protocol="HTTP/1.1", host="node-a",
                    src_name_aggr="frontend-*", src_namespace="shop", src_type="wep",
                    dest_name_aggr="cart-*", dest_namespace="shop", dest_type="wep",
                    dest_service_name="cart", dest_service_namespace="shop", dest_service_port=80)


@pytest.fixture(scope="module")
def detail_server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    now = int(time.time())
    srv = Server(tmp_path_factory.mktemp("detail"))
    try:
        failing, quiet = _record(now, "cart/items/{int}", "503"), _record(now, "cart/health", "200")
        srv.load([failing, quiet])
        keys = {f: getattr(failing, f) for f in dc.DRILL_FIELDS if hasattr(failing, f)}
        details = [dc.DetailRecord(**keys, start_time=now - 2, src_type="wep", dest_name_aggr="cart-*",
                                   dest_namespace="shop", dest_type="wep", dest_service_port=80,
                                   time=f"2026-12-04T20:00:0{i}Z", reason="error", path=f"/items/{i}",
                                   request_id=f"rid-{i}", trace_id=f"{i + 1:032x}", span_id=f"{i + 1:016x}",
                                   duration_us=1500, request_headers={"x-tenant": HOSTILE if i == 0 else "acme"})
                   for i in range(3)]
        r = srv.client.post(dc.DETAIL_BULK_PATH, content=dc.encode_records(details),
                            headers={"Content-Type": CONTENT_TYPE, BATCH_ID_HEADER: uuid.uuid4().hex})
        r.raise_for_status()
        assert r.json()["accepted"] == 3
        yield srv
    finally:
        srv.stop()


def _expand(page: Any, code: str) -> Any:
    page.fill("#filter", f'response_code = "{code}"')
    page.press("#filter", "Enter")
    page.wait_for_function("document.getElementById('showing-range')?.textContent === 'Showing 1 - 1 of 1 records'")
    page.click("#http-body tr.rec >> nth=0")
    return page.locator("#http-body tr.detail .requests")


def test_drill_down_lists_the_records_requests_as_text(page: Any, detail_server: Server) -> None:
    open_app(page, detail_server)
    box = _expand(page, "503")
    page.wait_for_selector("#http-body tr.detail table.requests-table")
    ids = [r.get_attribute("data-request-id") for r in box.locator("tr.req").all()]
    assert sorted(ids) == ["rid-0", "rid-1", "rid-2"]
    assert "Requests (3 kept)" in box.inner_text()
    row0 = box.locator('tr.req[data-request-id="rid-0"]')
    text = row0.inner_text()
    assert f"{1:032x} / {1:016x}" in text and "/items/0" in text and "error" in text
    assert f"> x-tenant: {HOSTILE}" in text  # the hostile header value is text
    assert box.locator("img, b, script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_a_record_without_kept_requests_says_so(page: Any, detail_server: Server) -> None:
    open_app(page, detail_server)
    box = _expand(page, "200")
    page.wait_for_selector("#http-body tr.detail .requests-empty")
    assert "No requests kept for this record" in box.inner_text()


def test_find_a_request_by_request_id_and_by_trace_id(page: Any, detail_server: Server) -> None:
    open_app(page, detail_server)
    out = page.locator("#find-request-result")
    page.fill("#find-request", "rid-2")
    page.press("#find-request", "Enter")
    page.wait_for_selector("#find-request-result tr.req")
    assert [r.get_attribute("data-request-id") for r in out.locator("tr.req").all()] == ["rid-2"]
    page.fill("#find-request", f"{1:032X}")  # a trace id, any case
    page.press("#find-request", "Enter")
    page.wait_for_selector('#find-request-result tr.req[data-request-id="rid-0"]')
    assert out.locator("tr.req").count() == 1 and out.locator("img, b, script").count() == 0
    page.fill("#find-request", "no-such-request")
    page.press("#find-request", "Enter")
    page.wait_for_selector("#find-request-result .requests-empty")
    assert "No kept request with request id no-such-request" in out.inner_text()
