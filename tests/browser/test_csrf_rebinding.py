"""Cross-site request forgery and DNS rebinding in a real Chromium, against a real server with a
logged-in page. A second HTTP server on another port plays the attacker's site, under two
names: `127.0.0.1:<other port>` (same site as the victim: the SameSite=Strict cookie IS sent,
so the Origin and Content-Type checks must stop it) and `attacker.test:<other port>` (another
site). `rebind.test` resolves to 127.0.0.1 too (Chromium's `--host-resolver-rules`), as a
re-bound name would: it reaches the victim's port under a Host that is not on the allow-list.
Each attack fails, nothing is stored, and the logged-in page keeps working; a legitimate bulk
POST afterwards is stored, so the empty store is not an accident of the setup."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from browser_data import shop_records
from browser_support import CHROMIUM, CHROMIUM_ARGS, Server, chromium_available, open_app

from l7scope.contracts.api import SEARCH_PATH, STATUS_PATH
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import encode_records

pytestmark = pytest.mark.browser

RESOLVER = "MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """This module's Chromium: the shared arguments plus the two names resolving to loopback."""
    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM,
                           args=[*CHROMIUM_ARGS, f"--host-resolver-rules={RESOLVER}"])
    try:
        yield b
    finally:
        b.close()
        pw.stop()


class Attacker:
    """The attacker's site: serves the pages in `pages`."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    a = Attacker()
    try:
        yield a
    finally:
        a.close()


def _forged(now: int) -> str:
    return encode_records(shop_records(now)[:1]).decode()


def _hits(srv: Server) -> int:
    total: int = srv.post(SEARCH_PATH, {})["total_hits"]
    return total


def _form_page(target: str, ndjson: str) -> str:
    # enctype text/plain sends `name=value`: the classic way to post JSON-ish text cross-site
    name, value = ndjson[:20], ndjson[21:]
    return f"""<!doctype html><body>
<form id=f method=POST action="{target}{BULK_PATH}" enctype="text/plain">
<input type=hidden name='{name}' value='{value}'></form>
<script>document.getElementById('f').submit()</script></body>"""


def _fetch_page(target: str, ndjson: str) -> str:
    return f"""<!doctype html><body><script>
const body = {json.dumps(ndjson)};
async function attempt(name, init) {{
  try {{
    const r = await fetch({json.dumps(target + BULK_PATH)}, init);
    return {{name, type: r.type, status: r.status}};
  }} catch (e) {{ return {{name, error: String(e)}}; }}
}}
(async () => {{
  const out = [];
  // a simple request (no preflight): the browser sends it with the cookie, the answer is opaque
  out.push(await attempt("no-cors text/plain", {{method: "POST", mode: "no-cors",
    credentials: "include", headers: {{"Content-Type": "text/plain"}}, body}}));
  // the real content type needs a CORS preflight, which the server does not grant
  out.push(await attempt("cors x-ndjson", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/x-ndjson"}}, body}}));
  // and a read of the API with the cookie
  try {{
    const r = await fetch({json.dumps(target + STATUS_PATH)}, {{credentials: "include"}});
    out.push({{name: "read status", status: r.status, text: (await r.text()).slice(0, 80)}});
  }} catch (e) {{ out.push({{name: "read status", error: String(e)}}); }}
  window.attackDone = out;
}})();
</script></body>"""


def test_cross_site_forms_and_fetches_store_nothing(browser: Any, empty_server: Server,
                                                    attacker: Attacker) -> None:
    srv = empty_server
    context = browser.new_context(bypass_csp=True)  # Playwright evaluates strings; the page has a CSP
    responses: list[Any] = []
    context.on("response", lambda r: responses.append(r) if BULK_PATH in r.url else None)
    try:
        victim = context.new_page()
        open_app(victim, srv)  # the victim is logged in (session cookie for 127.0.0.1)
        forged = _forged(int(time.time()))
        attacker.pages["/form"] = _form_page(srv.url, forged)
        attacker.pages["/fetch"] = _fetch_page(srv.url, forged)
        reports: list[list[dict[str, Any]]] = []
        for host in ("127.0.0.1", "attacker.test"):
            evil = context.new_page()
            with evil.expect_response(lambda r: BULK_PATH in r.url):
                evil.goto(f"http://{host}:{attacker.port}/form")
            evil.goto(f"http://{host}:{attacker.port}/fetch")
            evil.wait_for_function("window.attackDone !== undefined", timeout=20_000)
            reports.append(evil.evaluate("window.attackDone"))
        seen = [(r.url, r.status, r.request.all_headers().get("cookie")) for r in responses]
        # the form posts reached the server and were refused: from 127.0.0.1:<other port> with
        # the session cookie (same site), from attacker.test without it (SameSite=Strict)
        print(f"\nbulk answers seen by the browser: {[(s[1], bool(s[2])) for s in seen]}; "
              f"scripts: {reports}")
        forms = [s for s in seen if s[1] in (403, 415)]
        assert len(forms) >= 2, seen
        assert not [s for s in seen if 200 <= s[1] < 300], seen
        cookies = {s[2] is not None and "l7scope_session" in s[2] for s in seen}
        assert cookies == {True, False}, seen  # both cases really happened
        for report in reports:
            by = {r["name"]: r for r in report}
            assert by["no-cors text/plain"]["type"] == "opaque"  # sent, answer unreadable
            assert "error" in by["cors x-ndjson"], by  # preflight refused: never sent
            assert "error" in by["read status"], by  # no CORS: the answer cannot be read
        assert _hits(srv) == 0, "a forged record was stored"
        # the logged-in page still works
        victim.reload()
        victim.wait_for_function("window.l7scope && window.l7scope.ready === true", timeout=30_000)
        assert victim.is_hidden("#login")
    finally:
        context.close()
    srv.load(shop_records(int(time.time()))[:1])  # the legitimate path stores
    assert _hits(srv) == 1


def test_rebound_host_name_is_refused(browser: Any, empty_server: Server) -> None:
    """A name that resolves to the server's address but is not on the allow-list: the page,
    the API (even with the right bearer token, so it is the Host check, not authentication)
    and the bulk route all answer 403 host_not_allowed; nothing is read or stored."""
    srv = empty_server
    srv.load(shop_records(int(time.time()))[:1])
    context = browser.new_context(bypass_csp=True)  # Playwright evaluates strings; the page has a CSP
    try:
        page = context.new_page()
        rebound = f"http://rebind.test:{srv.port}"
        r = page.goto(rebound + "/")
        assert r is not None and r.status == 403
        assert "host_not_allowed" in page.content()
        # the attacker's script runs on the rebound origin: same-origin requests, readable
        results = page.evaluate("""async ([token, search, bulk, body]) => {
          const h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"};
          const s = await fetch(search, {method: "POST", headers: h, body: "{}"});
          const b = await fetch(bulk, {method: "POST", body,
            headers: {"Authorization": "Bearer " + token, "Content-Type": "application/x-ndjson"}});
          return [[s.status, await s.text()], [b.status, await b.text()]];
        }""", [srv.token, SEARCH_PATH, BULK_PATH, _forged(int(time.time()))])
        for status, text in results:
            assert status == 403 and "host_not_allowed" in text, results
        assert "hits" not in results[0][1]
        print(f"\nrebound host answers: {results}")
        # the same server under its own address answers (the check can pass)
        legit = context.new_page()
        open_app(legit, srv)
        assert legit.evaluate("window.l7scope.graph.cy.nodes().length") > 0
    finally:
        context.close()
    assert _hits(srv) == 1  # only the legitimate record
