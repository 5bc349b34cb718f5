"""The page's login in a real Chromium: no session -> the login overlay and no data; a wrong
token -> an error; the right token -> an HttpOnly cookie the page's script cannot read, and the
graph; the demo's one-time link logs in with one click and works only once."""

from __future__ import annotations

from typing import Any

import httpx
from browser_support import Server

from l7scope.contracts.auth import CODES_PATH, SESSION_COOKIE


def test_token_login_on_the_page(page: Any, shop_server: Server) -> None:
    page.goto(shop_server.url)
    page.wait_for_selector("#login", state="visible", timeout=30_000)
    assert page.locator("#graph canvas").count() == 0 or page.evaluate(
        "window.l7scope.graph === null || window.l7scope.graph.cy.nodes().length === 0")
    assert page.locator("#http-body tr.rec").count() == 0
    page.fill("#login-token", "not-the-token-" + "z" * 30)
    page.click("#login-submit")
    page.wait_for_selector("#login-error", state="visible")
    assert "Login failed" in page.inner_text("#login-error")
    page.fill("#login-token", shop_server.token)
    with page.expect_navigation(timeout=30_000):  # the login reloads the page
        page.click("#login-submit")
    page.wait_for_function("window.l7scope && window.l7scope.ready === true", timeout=30_000)
    assert page.is_hidden("#login")
    assert page.evaluate("window.l7scope.graph.cy.nodes().length") > 0
    page.wait_for_selector("#http-body tr.rec")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies[SESSION_COOKIE]["httpOnly"] and cookies[SESSION_COOKIE]["sameSite"] == "Strict"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")
    assert shop_server.token not in cookies[SESSION_COOKIE]["value"]


def test_one_time_login_link(browser: Any, shop_server: Server) -> None:
    path = shop_server.client.post(CODES_PATH, json={}).json()["path"]
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(shop_server.url + path)
        page.wait_for_function("window.l7scope && window.l7scope.ready === true", timeout=30_000)
        # the code is gone from the address bar (the page's own view state may follow it)
        assert page.url.split("?")[0] == shop_server.url + "/" and "code" not in page.url, page.url
        assert page.is_hidden("#login")
        assert page.evaluate("window.l7scope.graph.cy.nodes().length") > 0
    finally:
        context.close()
    assert httpx.get(shop_server.url + path).status_code == 401  # used up
