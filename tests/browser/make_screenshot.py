"""Write docs/img/service-graph.png: the page with one namespace expanded, its busiest edge
selected and a record expanded.

    .venv/bin/python tests/browser/make_screenshot.py [--url URL] [OUT.png]

With --url (e.g. a running `l7scope demo`), it shoots that page; otherwise it starts a real
`l7scope server` loaded with the generator's shop data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from browser_support import CHROMIUM, CHROMIUM_ARGS, REPO, Server, element_point, focus_on, open_app

from l7scope.testing import record_gen


def shoot(browser: Any, url: Server | str, out: Path) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 1020}, bypass_csp=True)
    open_app(page, url)
    page.select_option("#autorefresh", "0")
    ns = page.evaluate("window.l7scope.graph.cy.nodes('[type = \"namespace\"]').max((n) => n.data('count')).ele.data('namespace')")
    focus_on(page, f'[id = "namespace/{ns}"]')
    pt = element_point(page, f'[id = "namespace/{ns}"]')
    page.mouse.dblclick(pt["x"], pt["y"])
    page.wait_for_function("window.l7scope.graph.cy.$(`node[type = 'svc']`).length > 0")
    busiest = page.evaluate("window.l7scope.graph.cy.edges('[kind = \"traffic\"]').max((e) => e.data('count')).ele.id()")
    focus_on(page, f'[id = "{busiest}"]')
    pt = element_point(page, f'[id = "{busiest}"]')
    page.mouse.click(pt["x"], pt["y"])
    page.wait_for_selector("#side-body table")
    page.click("#fit")
    page.wait_for_function("document.querySelectorAll('#http-body tr.rec').length > 1")
    page.click("#http-body tr.rec >> nth=1")
    time.sleep(0.5)
    page.screenshot(path=str(out))
    page.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="page to shoot (default: a server with generated data)")
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "docs" / "img" / "service-graph.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        srv = None
        try:
            url: Server | str | None = args.url
            if url is None:
                now = int(time.time())
                topo = record_gen.topology(namespaces=5, services_per_ns=4, edges=24, seed=4)
                srv = Server(Path(tmp))
                srv.load(record_gen.records(topo, 4000, now - 880, now, seed=5, unlogged_share=0.01))
                url = srv
            shoot(browser, url, args.out)
        finally:
            browser.close()
            if srv is not None:
                srv.stop()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
