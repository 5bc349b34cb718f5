"""The page with 200 nodes and 1,000 edges becomes interactive in under 1.5 s.

"Interactive" is the page's own performance mark `l7scope:interactive`, set after the first graph
is laid out and drawn and its handlers are bound (js/main.js); its startTime counts from the start
of the navigation, so it includes loading the page, the graph library and the servicegraph query.
Each load uses a fresh browser context (cold HTTP cache). The CPU is shared with other jobs, so
the test takes the median of three loads.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from browser_support import Server, element_point, focus_on, open_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUDGET_MS = 1500.0


def load_once(browser: Any, url: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_app(page, url)
        marks: dict[str, float] = page.evaluate(
            "Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name, m.startTime]))")
        counts = page.evaluate("[window.l7scope.graph.cy.nodes().length, window.l7scope.graph.cy.edges().length]")
        assert counts == [200, 1000]
        # interactive means it: a click on a node selects it and fills the HTTP filter
        focus_on(page, '[id = "namespace/ns000"]')
        pt = element_point(page, '[id = "namespace/ns000"]')
        page.mouse.click(pt["x"], pt["y"])
        page.wait_for_function("document.getElementById('filter').value.includes('ns000')")
        assert not errors, errors
        return marks
    finally:
        context.close()


def test_200_nodes_1000_edges_interactive_under_budget(browser: Any, big_server: Server) -> None:
    answer = big_server.post("/api/v1/servicegraph", {})
    assert (len(answer["nodes"]), len(answer["edges"])) == (200, 1000)
    runs = [load_once(browser, big_server.url) for _ in range(3)]
    interactive = [r["l7scope:interactive"] for r in runs]
    layout = [r["l7scope:graph-drawn"] - r["l7scope:graph-data"] for r in runs]
    print(f"\ninteractive ms: {[round(x) for x in interactive]}, of which layout+draw ms: {[round(x) for x in layout]}")
    assert statistics.median(interactive) < BUDGET_MS, interactive
