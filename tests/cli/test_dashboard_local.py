"""`l7scope dashboard --server URL` (no cluster): against a real standalone server, the one-time
login link it prints (no browser) logs in once; without a token it says how to pass one."""

from __future__ import annotations

import subprocess

import httpx
from cli_support import L7SCOPE, Loaded

from l7scope.contracts.auth import SESSION_COOKIE


def test_dashboard_server_prints_a_one_time_link(loaded_server: Loaded) -> None:
    srv = loaded_server.server
    r = subprocess.run([L7SCOPE, "dashboard", "--server", srv.url, "--no-browser",
                        "--token-file", str(srv.token_file)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    (link,) = r.stdout.split()
    assert link.startswith(srv.url + "/login?code=") and "one-time" in r.stderr
    with httpx.Client(timeout=10) as http:
        first = http.get(link, follow_redirects=False)
        assert first.status_code == 303 and SESSION_COOKIE in first.cookies
        assert http.get(srv.url + "/api/v1/whoami").status_code == 200  # the cookie works
    assert httpx.get(link, follow_redirects=False, timeout=10).status_code == 401  # used


def test_dashboard_server_without_a_token_says_how(loaded_server: Loaded) -> None:
    r = subprocess.run([L7SCOPE, "dashboard", "--server", loaded_server.server.url, "--no-browser"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert r.returncode == 1 and "--token-file" in r.stderr, r.stderr
    assert r.stdout == ""
