"""The Service Graph page in a real headless Chromium against a real `l7scope server`:
namespaces first, expand + breadcrumb, edge selection filtering the HTTP tab, paging, sorting,
row drill-down with copy-as-JSON, hostile URLs/user agents shown as text, selector errors inline,
completeness, empty state, time range + auto-refresh, search, hide-unrelated, thresholds, zoom."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from browser_data import HOSTILE_METHOD, HOSTILE_UA, HOSTILE_URL, shop_records
from browser_support import Server, element_point, focus_on, graph_ids, open_app

pytestmark = pytest.mark.browser

GRAPH = "/api/v1/servicegraph"
SEARCH = "/api/v1/l7/logs/search"
FRONTEND_TO_CART = 'edge[source = "wep/shop/frontend-6b7c-*"][target = "svc/shop/cartservice"]'


def showing(page: Any) -> str:
    text: str = page.inner_text("#showing-range")
    return text


def wait_showing(page: Any, text: str) -> None:
    page.wait_for_function("(t) => document.getElementById('showing-range')?.textContent === t", arg=text)


def expand(page: Any, ns: str) -> None:
    focus_on(page, f'[id = "namespace/{ns}"]')
    pt = element_point(page, f'[id = "namespace/{ns}"]')
    page.mouse.dblclick(pt["x"], pt["y"])
    page.wait_for_function("(ns) => window.l7scope.graph.cy.$(`node[type = 'svc'][namespace = '${ns}']`).length > 0", arg=ns)


def click_graph(page: Any, selector: str, button: str = "left") -> None:
    focus_on(page, selector)
    pt = element_point(page, selector)
    page.mouse.click(pt["x"], pt["y"], button=button)


def test_namespaces_first_then_expand_and_breadcrumb_back(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    assert sorted(graph_ids(page, "node[type = 'namespace']")) == ["namespace/catalog", "namespace/payments", "namespace/shop"]
    assert graph_ids(page, "node[type = 'svc'], node[type = 'wep']") == []
    assert page.inner_text("#breadcrumb") == "Namespaces"

    expand(page, "shop")
    assert re.sub(r"\s+", " ", page.inner_text("#breadcrumb")) == "Namespaces › shop"
    svcs = graph_ids(page, "node[type = 'svc']")
    assert {"svc/shop/cartservice", "svc/shop/checkout"} <= set(svcs)
    assert "wep/shop/frontend-6b7c-*" in graph_ids(page, "node[type = 'wep']")
    # the other namespaces stay collapsed; the expanded one is drawn as a box around its inside
    assert {"namespace/payments", "namespace/catalog"} <= set(graph_ids(page, "node[type = 'namespace']"))
    assert page.evaluate("window.l7scope.graph.cy.$id('svc/shop/cartservice').parent().id()") == "namespace/shop"

    page.click("#breadcrumb a")
    page.wait_for_function("window.l7scope.graph.cy.$('node[type = \"svc\"]').length === 0")
    assert page.inner_text("#breadcrumb") == "Namespaces"


def test_selecting_an_edge_filters_the_http_tab_and_fills_the_side_panel(page: Any, shop_server: Server) -> None:
    graph = shop_server.post(GRAPH, {})
    edge = next(e for e in graph["edges"] if e["id"] == "namespace/shop->namespace/payments")
    total = shop_server.post(SEARCH, {"selector": edge["selector"]})["total_hits"]
    assert total == 30  # checkout -> payment in browser_data.SHOP_EDGES

    open_app(page, shop_server)
    click_graph(page, '[id = "namespace/shop->namespace/payments"]')
    page.wait_for_function("(s) => document.getElementById('filter').value === s", arg=edge["selector"])
    wait_showing(page, "Showing 1 - 30 of 30 records")
    dests = page.locator("#http-body td[data-col=dest]").all_inner_texts()
    assert len(dests) == 30 and all(d == "payments/payment-9c1d-*" for d in dests)

    assert page.inner_text("#side-title") == "shop → payments"
    side = page.text_content("#side-body")
    assert "By status class" in side and "2xx" in side and "Top routes" in side
    assert "payment.payments:50051/charge" in side
    assert f"{edge['totals']['count']:,}" in side
    # thickest edge = most requests
    widest = page.evaluate("window.l7scope.graph.cy.edges().max((e) => e.data('width')).ele.id()")
    busiest = max(graph["edges"], key=lambda e: e["totals"]["count"])["id"]
    assert widest == busiest

    # Escape (or a click on the background) clears the selection and the filter it set
    page.keyboard.press("Escape")
    page.wait_for_function("document.getElementById('filter').value === ''")
    assert page.is_hidden("#side")


def test_paging_and_sorting_in_the_http_tab(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    expand(page, "shop")
    click_graph(page, FRONTEND_TO_CART)
    wait_showing(page, "Showing 1 - 50 of 131 records")  # 130 records + the hostile one

    page.click("#next")
    wait_showing(page, "Showing 51 - 100 of 131 records")
    page.click("#next")
    wait_showing(page, "Showing 101 - 131 of 131 records")
    assert page.is_disabled("#next")
    page.click("#prev")
    wait_showing(page, "Showing 51 - 100 of 131 records")

    selector = page.input_value("#filter")
    page.click("#http-head th[data-key=count]")
    wait_showing(page, "Showing 1 - 50 of 131 records")
    page.wait_for_selector("#http-head th.sorted[data-key=count]")
    counts = [int(c.replace(",", "")) for c in page.locator("#http-body td[data-col=count]").all_inner_texts()]
    expected = shop_server.post(SEARCH, {"selector": selector, "page_size": 50,
                                         "sort_by": [{"field": "count", "descending": True}]})
    assert counts == sorted(counts, reverse=True)
    assert counts == [h["count"] for h in expected["hits"]]

    page.click("#http-head th[data-key=count]")
    page.wait_for_function("document.querySelector('#http-head th.sorted').textContent.endsWith('▲')")
    page.wait_for_function("""() => { const v = [...document.querySelectorAll('#http-body td[data-col=count]')]
        .map((td) => Number(td.textContent.replace(/,/g, ''))); return v.length === 50 && v[0] <= v[49]; }""")
    counts = [int(c.replace(",", "")) for c in page.locator("#http-body td[data-col=count]").all_inner_texts()]
    assert counts == sorted(counts)


def test_expanding_a_row_shows_the_whole_record_and_copies_it_as_json(page: Any, shop_server: Server) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=shop_server.url)
    open_app(page, shop_server)
    page.fill("#filter", 'dest_service_name = "checkout"')
    page.press("#filter", "Enter")
    wait_showing(page, "Showing 1 - 40 of 40 records")
    first = shop_server.post(SEARCH, {"selector": 'dest_service_name = "checkout"', "page_size": 1})["hits"][0]

    page.click("#http-body tr.rec >> nth=0")
    detail = page.locator("#http-body tr.detail")
    assert detail.count() == 1
    fields = dict(zip(detail.locator(".f .k").all_inner_texts(), detail.locator(".f .v").all_inner_texts(), strict=True))
    assert set(fields) == set(first)  # every field of the record
    assert fields["url"] == first["url"]
    assert fields["response_code"] == first["response_code"]
    assert fields["count"] == str(first["count"])
    assert fields["duration_max"].startswith(str(first["duration_max"]))

    detail.locator("button.copy-json").click()
    page.wait_for_function("document.querySelector('#http-body .copy-status').textContent === 'copied'")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == first

    page.click("#http-body tr.rec >> nth=0")  # collapses again
    assert page.locator("#http-body tr.detail").count() == 0


def test_hostile_url_and_user_agent_are_shown_as_text_and_no_script_runs(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    page.fill("#filter", f'method = "{HOSTILE_METHOD}"')
    page.press("#filter", "Enter")
    wait_showing(page, "Showing 1 - 1 of 1 records")
    assert page.inner_text("#http-body td[data-col=url]") == HOSTILE_URL
    page.click("#http-body tr.rec >> nth=0")
    ua = page.locator("#http-body .f[data-field=user_agent] .v").inner_text()
    url = page.locator("#http-body .f[data-field=url] .v").inner_text()
    assert (ua, url) == (HOSTILE_UA, HOSTILE_URL)

    # the route list in the side panel shows the same URL as text
    expand(page, "shop")
    click_graph(page, '[id = "svc/shop/cartservice"]')
    page.wait_for_function("(u) => document.getElementById('side-body').textContent.includes(u)", arg=HOSTILE_URL)

    assert page.locator("#http-body img, #http-body script, #http-body b, #side img, #side script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_selector_errors_are_shown_inline_at_the_server_position(page: Any, shop_server: Server) -> None:
    bad = 'dest_namespace = "shop" AND bogus_field = 1'
    r = shop_server.client.post(SEARCH, json={"selector": bad})
    assert r.status_code == 400
    err = r.json()["error"]

    open_app(page, shop_server)
    page.fill("#filter", bad)
    page.press("#filter", "Enter")
    page.wait_for_selector("#filter-error", state="visible")
    assert err["message"] in page.inner_text("#filter-error-msg")
    text, caret = page.locator("#filter-error-caret").text_content().split("\n")
    assert text == bad and caret == " " * err["position"] + "^"
    assert page.evaluate("document.getElementById('filter').selectionStart") == err["position"]
    assert page.locator("#http-body tr").count() == 0

    page.fill("#filter", 'dest_namespace = "shop"')
    page.press("#filter", "Enter")
    page.wait_for_selector("#filter-error", state="hidden")


def test_completeness_is_shown_next_to_the_numbers(page: Any, shop_server: Server) -> None:
    c = shop_server.post(GRAPH, {})["completeness"]
    assert c["requests_unlogged"] == 25
    open_app(page, shop_server)
    text = page.inner_text("#completeness")
    assert f"{c['requests_logged']:,} of {c['requests_seen']:,} requests logged" in text
    assert "25 unlogged" in text
    click_graph(page, '[id = "namespace/catalog"]')
    page.wait_for_selector("#side-body .completeness-note")
    assert "25 unlogged" in page.inner_text("#side-body .completeness-note")


def test_empty_state_tells_how_to_opt_a_service_in(page: Any, empty_server: Server) -> None:
    open_app(page, empty_server)
    page.wait_for_selector("#empty", state="visible")
    assert "kubectl annotate svc -n <namespace> <service> projectcalico.org/l7-logging=true" in page.inner_text("#empty")
    page.wait_for_selector("#http-empty", state="visible")
    assert "No HTTP records" in page.inner_text("#http-empty")


def test_time_range_picker_and_auto_refresh(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    with page.expect_request(lambda r: r.url.endswith(GRAPH)) as req:
        page.select_option("#range", "1h")
    assert req.value.post_data_json["time_range"] == {"from": "now-1h", "to": "now"}

    page.select_option("#range", "custom")
    assert page.is_visible("#range-from") and page.is_visible("#range-to")
    page.fill("#range-from", "2026-01-02T03:04:05")
    page.fill("#range-to", "2026-01-02T04:04:05")
    with page.expect_request(lambda r: r.url.endswith(SEARCH)) as req:
        page.click("#range-apply")
    tr = req.value.post_data_json["time_range"]
    assert tr["to"] - tr["from"] == 3600

    page.select_option("#range", "15m")
    page.select_option("#autorefresh", "5")
    with page.expect_request(lambda r: r.url.endswith(GRAPH), timeout=9000) as req:
        pass  # no user action: the timer fires
    assert req.value.post_data_json["time_range"] == {"from": "now-15m", "to": "now"}


def test_search_hide_unrelated_legend_and_zoom(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    assert all(w in page.inner_text("#legend") for w in ("healthy", "degraded", "failing", "namespace", "workload"))
    page.fill("#search", "paym")
    assert graph_ids(page, ".match") == ["namespace/payments"]
    assert set(graph_ids(page, "node.faded")) == {"namespace/shop", "namespace/catalog"}
    page.fill("#search", "")
    assert graph_ids(page, ".faded") == []

    expand(page, "shop")
    click_graph(page, '[id = "svc/shop/checkout"]', button="right")
    page.wait_for_selector("#show-all", state="visible")
    visible = set(graph_ids(page, "node"))
    assert visible == {"svc/shop/checkout", "wep/shop/frontend-6b7c-*", "wep/shop/checkout-55aa-*", "namespace/shop"}
    with page.expect_response(lambda r: r.url.endswith(GRAPH)):
        page.click("#refresh")  # a refresh keeps the view as it is
    page.wait_for_timeout(200)
    assert set(graph_ids(page, "node")) == visible
    page.click("#show-all")
    assert "namespace/catalog" in graph_ids(page, "node")

    zoom = page.evaluate("window.l7scope.graph.cy.zoom()")
    page.click("#zoom-in")
    assert page.evaluate("window.l7scope.graph.cy.zoom()") > zoom
    page.click("#fit")
    page.click("#zoom-out")
    assert page.evaluate("window.l7scope.graph.cy.zoom()") < zoom * 1.25


def test_health_thresholds_recolour_the_graph(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    colours = "window.l7scope.graph.cy.edges().map((e) => e.data('health'))"
    page.click("#settings-btn")
    for sel, value in (("#th-err-warn", "100"), ("#th-err-fail", "100"), ("#th-p99-warn", "100000"), ("#th-p99-fail", "100000")):
        page.fill(sel, value)
    page.click("#th-save")
    assert set(page.evaluate(colours)) == {"ok"}
    page.click("#settings-btn")
    page.fill("#th-err-warn", "0.01")
    page.fill("#th-err-fail", "0.01")
    page.click("#th-save")
    health = page.evaluate(colours)
    assert "fail" in health  # every shop edge has some 5xx (browser_data: ~6 % errors)
    assert "100000 ms" in page.inner_text("#legend")
    page.click("#settings-btn")
    page.click("#th-reset")


def test_column_chooser_adds_and_removes_columns_and_remembers_them(page: Any, shop_server: Server) -> None:
    open_app(page, shop_server)
    page.wait_for_selector("#http-body tr.rec")
    assert page.locator("#http-head th[data-key=user_agent]").count() == 0
    page.click("#columns-btn")
    page.check("#columns input[data-key=user_agent]")
    page.uncheck("#columns input[data-key=url]")
    assert page.locator("#http-head th[data-key=user_agent]").count() == 1
    assert page.locator("#http-head th[data-key=url]").count() == 0
    assert page.locator("#http-body td[data-col=user_agent]").count() > 0
    assert page.locator("#http-body td[data-col=url]").count() == 0

    page.keyboard.press("Escape")
    assert page.is_hidden("#columns")

    page.reload()
    page.wait_for_function("window.l7scope && window.l7scope.ready === true")
    page.wait_for_selector("#http-body tr.rec")
    assert page.locator("#http-head th[data-key=user_agent]").count() == 1
    assert page.locator("#http-head th[data-key=url]").count() == 0


def test_missing_front_end_packages_are_explained_and_the_http_tab_still_works(
        page: Any, tmp_path: Any, browser: Any) -> None:
    srv = Server(tmp_path, env={"L7SCOPE_UI_NODE_MODULES": str(tmp_path / "no-such-dir")})
    try:
        srv.load(shop_records(int(time.time()))[:10])
        assert srv.client.get("/vendor/cytoscape.js").status_code == 404
        open_app(page, srv)
        assert page.is_visible("#vendor-missing")
        assert "npm ci" in page.inner_text("#vendor-missing")
        wait_showing(page, "Showing 1 - 10 of 10 records")
    finally:
        srv.stop()
