"""Write the screenshots of docs/ui.md, one per main state of the page, into docs/img/:

- first-view.png: the page as it opens (the demo's one namespace, already expanded);
- layered.png: the same with the layered (left-to-right) layout;
- service-graph.png: the busiest edge selected, the side panel and the HTTP tab with a record
  expanded.

    .venv/bin/python tests/browser/make_screenshot.py [--url URL] [OUT_DIR]

With --url (e.g. a running `l7scope demo`), it shoots that page; otherwise it starts a real
`l7scope server` loaded with records shaped like the demo's (tests/browser/demo_data.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from browser_support import CHROMIUM, CHROMIUM_ARGS, REPO, Server, element_point, focus_on, open_app
from demo_data import demo_records

SETTLED = "!window.l7scope.api.inflight.size"


def settle(page: Any) -> None:
    page.wait_for_function(SETTLED)
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    time.sleep(0.3)


def shoot(browser: Any, url: Server | str, out_dir: Path) -> list[Path]:
    page = browser.new_page(viewport={"width": 1440, "height": 1020}, bypass_csp=True)
    open_app(page, url)
    page.select_option("#autorefresh", "0")
    if not page.evaluate("window.l7scope.state.expanded.length"):  # more than one namespace: open the busiest
        ns = page.evaluate("window.l7scope.graph.cy.nodes('[type = \"namespace\"]').max((n) => n.data('count')).ele.data('namespace')")
        focus_on(page, f'[id = "namespace/{ns}"]')
        pt = element_point(page, f'[id = "namespace/{ns}"]')
        page.mouse.dblclick(pt["x"], pt["y"])
        page.wait_for_function("window.l7scope.graph.cy.$(`node[type = 'svc']`).length > 0")
    settle(page)
    written = [out_dir / "first-view.png", out_dir / "layered.png", out_dir / "service-graph.png"]
    page.screenshot(path=str(written[0]))
    page.select_option("#layout", "layered")
    page.wait_for_function("window.l7scope.graph.layoutName === 'layered'")
    settle(page)
    page.screenshot(path=str(written[1]))
    busiest = page.evaluate("window.l7scope.graph.cy.edges('[kind = \"traffic\"]').max((e) => e.data('count')).ele.id()")
    pt = element_point(page, f'[id = "{busiest}"]')
    page.mouse.click(pt["x"], pt["y"])
    page.wait_for_selector("#side-body table")
    page.click("#fit")
    page.wait_for_function("document.querySelectorAll('#http-body tr.rec').length > 1")
    page.click("#http-body tr.rec >> nth=1")
    settle(page)
    page.screenshot(path=str(written[2]))
    page.close()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="page to shoot (default: a server with demo-shaped data)")
    ap.add_argument("out_dir", nargs="?", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        srv = None
        try:
            url: Server | str | None = args.url
            if url is None:
                srv = Server(Path(tmp))
                srv.load(demo_records(int(time.time())))
                url = srv
            written = shoot(browser, url, args.out_dir)
        finally:
            browser.close()
            if srv is not None:
                srv.stop()
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
