"""Write docs/img/service-graph.png: the page against a real `l7scope server` loaded with the
generator's realistic shop data, one namespace expanded and an edge selected.

    .venv/bin/python tests/browser/make_screenshot.py [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from browser_support import CHROMIUM, CHROMIUM_ARGS, REPO, Server, element_point, focus_on, open_app

from l7scope.server import gen


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    now = int(time.time())
    topo = gen.topology(namespaces=5, services_per_ns=4, edges=24, seed=4)
    records = gen.records(topo, 4000, now - 880, now, seed=5, unlogged_share=0.01)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        srv = Server(Path(tmp))
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            srv.load(records)
            page = browser.new_page(viewport={"width": 1360, "height": 860}, bypass_csp=True)
            open_app(page, srv.url)
            ns = topo.edges[0].dest_namespace
            focus_on(page, f'[id = "namespace/{ns}"]')
            pt = element_point(page, f'[id = "namespace/{ns}"]')
            page.mouse.dblclick(pt["x"], pt["y"])
            page.wait_for_function("(ns) => window.l7scope.graph.cy.$(`node[type = 'svc']`).length > 0", arg=ns)
            busiest = page.evaluate("window.l7scope.graph.cy.edges('[kind = \"traffic\"]').max((e) => e.data('count')).ele.id()")
            page.click("#fit")
            pt = element_point(page, f'[id = "{busiest}"]')
            page.mouse.click(pt["x"], pt["y"])
            page.wait_for_selector("#side-body table")
            page.wait_for_function("document.querySelectorAll('#http-body tr.rec').length > 0")
            page.click("#http-body tr.rec >> nth=1")
            time.sleep(0.5)
            page.screenshot(path=str(out))
        finally:
            browser.close()
            srv.stop()
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "img" / "service-graph.png")
