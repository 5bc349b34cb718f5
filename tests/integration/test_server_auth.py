"""Authentication and browser hardening on a real uvicorn server, tried as an attacker would:
no token, a wrong token, cross-site writes (text/plain, a foreign Origin), DNS rebinding (a
foreign Host), the page's login (token -> HttpOnly cookie, one-time codes), the security
headers, and the `l7scope server` CLI's token file and `--auth none` rules."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contract.harness import free_port, serve

from l7scope.contracts.auth import CODES_PATH, SESSION_COOKIE, WHOAMI_PATH, bearer
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH
from l7scope.contracts.record import L7Record, encode_records
from l7scope.server.api import UI_DIR, create_app
from l7scope.server.auth import SharedToken
from l7scope.server.store.duckdb import DuckDBStore

NOW = 1_790_000_000
TR = {"from": NOW - 3600, "to": NOW}
TOKEN = "s3cret-" + "t" * 40
NDJSON = {"Content-Type": "application/x-ndjson"}
SEARCH = "/api/v1/l7/logs/search"


def one_record(url: str = "/forged") -> bytes:
    return encode_records([L7Record(start_time=NOW - 5, end_time=NOW, count=1, url=url,
                                    dest_namespace="shop", src_namespace="shop")])




@pytest.fixture
def url(store: DuckDBStore) -> Iterator[str]:
    app = create_app(store, auth=SharedToken(TOKEN), retention_s=86400, clock=lambda: NOW,
                     ui_dir=UI_DIR, allowed_hosts=("localhost", "l7scope-server.l7scope-system"))
    with serve(app) as u:
        yield u


def stored(store: DuckDBStore) -> int:
    return store.stats().records


@pytest.mark.parametrize("headers", [{}, bearer("wrong-" + "x" * 40), {"Authorization": "Basic Zm9vOmJhcg=="},
                                     {"Authorization": "Bearer"}, {"Cookie": f"{SESSION_COOKIE}=made-up"}])
def test_every_api_route_wants_a_credential(url: str, store: DuckDBStore, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=url, headers=headers) as c:
        for method, path, body in [("POST", BULK_PATH, None), ("POST", SEARCH, {"time_range": TR}),
                                   ("POST", "/api/v1/l7/logs/aggregation", {"time_range": TR}),
                                   ("POST", "/api/v1/servicegraph", {"time_range": TR}),
                                   ("GET", "/api/v1/status", None), ("GET", "/metrics", None),
                                   ("GET", "/openapi.json", None), ("GET", WHOAMI_PATH, None),
                                   ("POST", CODES_PATH, {})]:
            if body is None and method == "POST":
                r = c.post(path, content=one_record(), headers=NDJSON)
            else:
                r = c.request(method, path, json=body)
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/healthz").status_code == 200  # the one open route
        assert c.get("/").status_code == 200  # the page's files (it shows a login)
    assert stored(store) == 0


def test_the_token_reads_and_writes(url: str, store: DuckDBStore) -> None:
    with httpx.Client(base_url=url, headers=bearer(TOKEN)) as c:
        r = c.post(BULK_PATH, content=one_record(), headers=NDJSON | {BATCH_ID_HEADER: "b1"})
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = c.post(SEARCH, json={"time_range": TR})
        assert r.status_code == 200 and r.json()["total_hits"] == 1
        assert r.headers["cache-control"] == "no-store"
        assert c.get(WHOAMI_PATH).json()["user"] == {"name": "token", "read": True, "write": True,
                                                     "namespaces": None}


def test_cross_site_writes_are_refused(url: str, store: DuckDBStore) -> None:
    """A page on another site can send a "simple" POST (text/plain, a form) with no preflight;
    none of them may reach a handler, even with a valid session cookie in the browser."""
    with httpx.Client(base_url=url) as c:
        sid = c.post("/login", json={"token": TOKEN}).cookies[SESSION_COOKIE]
    cookie = {"Cookie": f"{SESSION_COOKIE}={sid}"}
    with httpx.Client(base_url=url) as c:
        r = c.post(BULK_PATH, content=one_record(), headers=cookie | {"Content-Type": "text/plain",
                                                                      "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        r = c.post(BULK_PATH, content=one_record(), headers=cookie | {"Content-Type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
            r = c.post(SEARCH, content=b'{"time_range": {}}', headers=cookie | {"Content-Type": ctype})
            assert r.status_code == 415, ctype
        # the bulk route takes NDJSON only, the queries JSON only
        r = c.post(SEARCH, content=b"{}", headers=bearer(TOKEN) | NDJSON)
        assert r.status_code == 415
        r = c.post(BULK_PATH, content=one_record(), headers=bearer(TOKEN) | {"Content-Type": "application/json"})
        assert r.status_code == 415
        # a foreign Origin is refused even with the token (no CORS here)
        r = c.post(SEARCH, json={"time_range": TR}, headers=bearer(TOKEN) | {"Origin": "http://evil.example"})
        assert r.status_code == 403
        # the page's own origin is fine
        host = url.removeprefix("http://")
        r = c.post(SEARCH, json={"time_range": TR}, headers=cookie | {"Origin": f"http://{host}"})
        assert r.status_code == 200
    assert stored(store) == 0


def test_dns_rebinding_names_are_refused(url: str, store: DuckDBStore) -> None:
    port = url.rsplit(":", 1)[1]
    with httpx.Client(base_url=url, headers=bearer(TOKEN)) as c:
        c.post(BULK_PATH, content=one_record(), headers=NDJSON)
        for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example", ""):
            r = c.post(SEARCH, json={"time_range": TR}, headers={"Host": host})
            assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", host
            assert "hits" not in r.text
        r = c.get("/", headers={"Host": "attacker.example"})  # not even the page
        assert r.status_code == 403
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "10.1.2.3",
                     "l7scope-server.l7scope-system", f"L7SCOPE-SERVER.l7scope-system.:{port}"):
            r = c.post(SEARCH, json={"time_range": TR}, headers={"Host": host})
            assert r.status_code == 200, (host, r.text)


def test_page_login_with_the_token_sets_a_strict_httponly_cookie(url: str) -> None:
    with httpx.Client(base_url=url) as c:
        assert c.post("/login", json={"token": "nope-" + "n" * 40}).status_code == 401
        assert c.post("/login", content=b"token=" + TOKEN.encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 415
        r = c.post("/login", json={"token": TOKEN})
        assert r.status_code == 200 and r.json()["user"]["name"] == "token"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert TOKEN.lower() not in cookie  # the cookie is a session id, not the token
        assert c.post(SEARCH, json={"time_range": TR}).status_code == 200  # the jar sends it
        assert c.post("/logout", json={}).status_code == 200
        c.cookies.clear()
        assert c.post(SEARCH, json={"time_range": TR}).status_code == 401


def test_one_time_login_codes(url: str) -> None:
    with httpx.Client(base_url=url, headers=bearer(TOKEN)) as c:
        minted = c.post(CODES_PATH, json={}).json()
    assert minted["expires_in_s"] == 300 and minted["path"].startswith("/login?code=")
    with httpx.Client(base_url=url) as browser:
        r = browser.get(minted["path"])  # follows nothing: look at the redirect itself
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert SESSION_COOKIE in r.cookies
        assert browser.post(SEARCH, json={"time_range": TR}).status_code == 200
    with httpx.Client(base_url=url) as other:
        r = other.get(minted["path"])  # used once: dead
        assert r.status_code == 401 and SESSION_COOKIE not in r.cookies
        assert other.get("/login?code=guess").status_code == 401


def test_security_headers_on_every_answer(url: str) -> None:
    with httpx.Client(base_url=url) as c:
        for r in (c.get("/"), c.get("/healthz"), c.post(SEARCH, json={})):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert r.headers["x-frame-options"] == "DENY"


# --- the CLI ------------------------------------------------------------------------------------

L7SCOPE = str(Path(sys.executable).parent / "l7scope")


def test_auth_none_is_refused_off_loopback(tmp_path: Path) -> None:
    r = subprocess.run([L7SCOPE, "server", "--host", "0.0.0.0", "--port", str(free_port()),
                        "--auth", "none", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "only allowed on a loopback address" in r.stderr
    assert not (tmp_path / "l7.duckdb").exists()


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    tf = tmp_path / "token"
    tf.write_text("a" * 50 + "\n")
    os.chmod(tf, 0o644)
    r = subprocess.run([L7SCOPE, "server", "--port", str(free_port()), "--data-dir", str(tmp_path),
                        "--token-file", str(tf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "readable by others" in r.stderr and "chmod 600" in r.stderr


def test_auth_none_on_loopback_answers_without_a_credential(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([L7SCOPE, "server", "--port", str(port), "--auth", "none",
                             "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        r = httpx.post(url + BULK_PATH, content=one_record(), headers=NDJSON)
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = httpx.post(url + SEARCH, json={"time_range": {"from": 0, "to": "now"}})
        assert r.status_code == 200 and r.json()["total_hits"] == 1
        assert httpx.get(url + WHOAMI_PATH).json()["user"]["name"] == "anonymous"
        # the browser checks still apply
        assert httpx.post(url + BULK_PATH, content=one_record(), headers={"Content-Type": "text/plain"}).status_code == 415
        assert httpx.get(url + "/api/v1/status", headers={"Host": "evil.example"}).status_code == 403
        assert not (tmp_path / "token").exists()  # no token made or needed
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0].decode()
    assert "WARNING: --auth none" in out
