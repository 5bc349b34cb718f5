"""`--auth kubernetes` when the Kubernetes API cannot be reached: a real server and the real
Kubernetes client pointed at a closed port. Every call is refused with 503 `auth_unavailable`
(never let in, never a 500), and the login too. The working cases run against a real
kube-apiserver in tests/kube/test_kube_auth.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from contract.harness import free_port, serve

from l7scope.contracts.auth import SESSION_COOKIE, bearer
from l7scope.contracts.bulk import BULK_PATH
from l7scope.kube.client import connect
from l7scope.server.api import create_app
from l7scope.server.kubeauth import KubernetesAuth
from l7scope.server.store.duckdb import DuckDBStore


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\n"
                  f"clusters:\n- name: t\n  cluster:\n    server: https://127.0.0.1:{free_port()}\n"
                  "    insecure-skip-tls-verify: true\n"
                  "users:\n- name: u\n  user:\n    token: x\n"
                  "contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\n")
    kube = connect(str(kc))
    kube.timeout = 3
    store = DuckDBStore(tmp_path / "l7.duckdb")
    app = create_app(store, auth=KubernetesAuth(kube, writer=("l7scope-system", "l7-log-collector"),
                                                timeout_s=3),
                     ui_dir=None, blocking_auth=True)
    with serve(app) as u:
        yield u
    store.close()
    kube.close()


def test_an_unreachable_api_server_answers_503_and_lets_nobody_in(url: str) -> None:
    tok = "eyJhbGciOiJSUzI1NiJ9." + "x" * 40
    for _ in range(2):  # nothing was cached by the first failure
        r = httpx.post(url + "/api/v1/l7/logs/search", json={}, headers=bearer(tok), timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "auth_unavailable", r.text
        assert r.headers["retry-after"] == "5"
        assert "TokenReview" in r.json()["error"]["message"]
    r = httpx.post(url + BULK_PATH, content=b"{}\n", timeout=30,
                   headers=bearer(tok) | {"Content-Type": "application/x-ndjson"})
    assert r.status_code == 503
    r = httpx.post(url + "/login", json={"token": tok}, timeout=30)
    assert r.status_code == 503 and SESSION_COOKIE not in r.cookies
    # no credential at all is still 401, without asking anyone
    assert httpx.post(url + "/api/v1/l7/logs/search", json={}).status_code == 401
