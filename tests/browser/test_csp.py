"""The page under its own Content-Security-Policy (the other browser tests bypass it): the one
inline script, admitted by its hash, sends the first servicegraph query; the page uses that
answer instead of asking again; nothing is blocked."""

from __future__ import annotations

from typing import Any

import pytest
from browser_support import Server

pytestmark = [pytest.mark.browser]


def test_page_runs_under_its_policy_and_uses_the_early_query(browser: Any, shop_server: Server) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # CSP enforced
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        graph_queries: list[str] = []
        page.on("request", lambda r: graph_queries.append(r.method) if r.url.endswith("/api/v1/servicegraph") else None)
        shop_server.log_in(context)
        page.goto(shop_server.url)
        page.wait_for_selector("html[data-ready='1']", state="attached", timeout=30_000)
        # the early query went out first, and the page used its answer (one query in all)
        assert graph_queries == ["POST"]
        assert page.evaluate("'l7scopePrefetch' in window && window.l7scopePrefetch === null")
        assert page.evaluate("window.l7scope.graph.cy.nodes().length") > 0
        assert not errors, errors
    finally:
        context.close()
