"""`l7scope server --auth kubernetes` against the real kube-apiserver: real ServiceAccounts,
TokenRequest tokens, Roles and bindings; the server runs as its own ServiceAccount with the
ClusterRole the operator renders (TokenReview, SubjectAccessReview, list namespaces).

Shown: the node agents' token (audience "l7scope") writes but cannot read; the same account's
API-audience token cannot write; a reader bound in namespace A sees only A (search, aggregation,
graph, the page login's cookie); a cluster-wide reader sees all; a forged, expired, deleted
account's or garbage token gets 401; a reader with no binding at all gets 403."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubeharness
import pytest
from kubeharness import ControlPlane

from l7scope.contracts.auth import SESSION_COOKIE, TOKEN_AUDIENCE, WHOAMI_PATH, bearer
from l7scope.contracts.bulk import BULK_PATH
from l7scope.contracts.record import L7Record, encode_records
from l7scope.kube.client import Kube
from l7scope.operator import render

pytestmark = pytest.mark.kube

L7SCOPE = str(Path(sys.executable).parent / "l7scope")
NDJSON = {"Content-Type": "application/x-ndjson"}
SEARCH = "/api/v1/l7/logs/search"
AGG = "/api/v1/l7/logs/aggregation"
GRAPH = "/api/v1/servicegraph"
ISSUER = "https://kubernetes.default.svc.cluster.local"  # kubeharness' --service-account-issuer


def token_for(kube: Kube, ns: str, sa: str, audiences: list[str] | None = None, seconds: int = 600) -> str:
    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if audiences is not None:
        spec["audiences"] = audiences
    r = kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                     body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
    return str(r["status"]["token"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(key: Path, claims: dict[str, Any]) -> str:
    """A JWT signed (RS256) with the control plane's ServiceAccount key: only its claims are off."""
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)], input=f"{head}.{body}".encode(),
                         capture_output=True, check=True).stdout
    return f"{head}.{body}.{_b64(sig)}"


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, kube: Kube) -> Iterator[dict[str, Any]]:
    tag = uuid.uuid4().hex[:5]
    system, shop, bank, tools = (f"auth-{n}-{tag}" for n in ("system", "shop", "bank", "tools"))
    made: list[str] = []

    def create(obj: dict[str, Any]) -> None:
        kube.create(obj)
        res = kube.resource(obj["apiVersion"], obj["kind"])
        made.append(res.path(obj["metadata"].get("namespace"), obj["metadata"]["name"]))

    for ns in (system, shop, bank, tools):
        create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for ns, sa in ((system, "collector"), (system, "l7scope-server"), (tools, "shop-viewer"),
                   (tools, "all-viewer"), (tools, "stranger"), (tools, "gone")):
        create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}})
    # the server's own rights: exactly the ClusterRole the operator renders
    ctx = render.RenderContext(namespace=system)
    role = dict(render.server_cluster_role(ctx))
    role["metadata"] = {"name": f"l7scope-server-{tag}"}
    create(role)
    create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"l7scope-server-{tag}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"l7scope-server-{tag}"},
            "subjects": [{"kind": "ServiceAccount", "name": "l7scope-server", "namespace": system}]})
    pods_rule = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-viewer", "namespace": shop}, "rules": pods_rule})
    create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "shop-viewer", "namespace": shop},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-viewer"},
            "subjects": [{"kind": "ServiceAccount", "name": "shop-viewer", "namespace": tools}]})
    create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": f"pod-viewer-{tag}"}, "rules": pods_rule})
    create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"all-viewer-{tag}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"pod-viewer-{tag}"},
            "subjects": [{"kind": "ServiceAccount", "name": "all-viewer", "namespace": tools}]})
    try:
        yield {"system": system, "shop": shop, "bank": bank, "tools": tools, "tag": tag}
    finally:
        for path in reversed(made):
            kube.delete(path)


@pytest.fixture(scope="module")
def server(control_plane: ControlPlane, kube: Kube, cluster: dict[str, Any]) -> Iterator[str]:
    """`l7scope server --auth kubernetes`, its kubeconfig holding the l7scope-server account's
    token (so every TokenReview and SAR it makes is checked against the rendered ClusterRole)."""
    with tempfile.TemporaryDirectory(prefix="l7auth-") as d:
        tok = token_for(kube, cluster["system"], "l7scope-server", seconds=3600)
        kc = Path(d) / "kubeconfig"
        kc.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: t\n  cluster:\n    server: {control_plane.server}\n"
            f"    certificate-authority: {control_plane.workdir / 'certs' / 'apiserver.crt'}\n"
            f"users:\n- name: s\n  user:\n    token: {tok}\n"
            "contexts:\n- name: t\n  context:\n    cluster: t\n    user: s\ncurrent-context: t\n")
        from contract.harness import free_port

        port = free_port()
        env = {**os.environ, "KUBECONFIG": ""}
        log = open(Path(d) / "server.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen([L7SCOPE, "server", "--port", str(port), "--data-dir", str(Path(d) / "data"),
                                 "--auth", "kubernetes", "--kubeconfig", str(kc),
                                 "--writer-serviceaccount", f"{cluster['system']}:collector"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + (Path(d) / "server.log").read_text())
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(20)


@pytest.fixture(scope="module")
def tokens(kube: Kube, cluster: dict[str, Any]) -> dict[str, str]:
    s, t = cluster["system"], cluster["tools"]
    return {
        "writer": token_for(kube, s, "collector", [TOKEN_AUDIENCE]),
        "writer_api": token_for(kube, s, "collector"),
        "shop": token_for(kube, t, "shop-viewer"),
        "shop_l7": token_for(kube, t, "shop-viewer", [TOKEN_AUDIENCE]),
        "all": token_for(kube, t, "all-viewer"),
        "stranger": token_for(kube, t, "stranger"),
    }


@pytest.fixture(scope="module")
def stored(server: str, cluster: dict[str, Any], tokens: dict[str, str]) -> str:
    now = int(time.time())
    shop, bank = cluster["shop"], cluster["bank"]

    def rec(url: str, src: str, dst: str) -> L7Record:
        return L7Record(start_time=now - 10, end_time=now - 5, count=2, url=url, method="GET",
                        response_code="200", type="HTTP/1.1", src_type="wep", dest_type="wep",
                        src_namespace=src, src_name_aggr="client-*", dest_namespace=dst,
                        dest_name_aggr="api-*", dest_service_namespace=dst, dest_service_name="api",
                        dest_service_port=80)

    body = encode_records([rec("/in-shop", shop, shop), rec("/in-bank", bank, bank),
                           rec("/shop-to-bank", shop, bank)])
    r = httpx.post(server + BULK_PATH, content=body, headers=bearer(tokens["writer"]) | NDJSON)
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    return server


def q(url: str, headers: dict[str, str], path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(url + path, json={"time_range": {"from": "now-1h", "to": "now"}, **(body or {})},
                      headers=headers, timeout=30)


def test_the_node_agents_token_writes_but_cannot_read(stored: str, tokens: dict[str, str]) -> None:
    h = bearer(tokens["writer"])
    for path in (SEARCH, AGG, GRAPH):
        r = q(stored, h, path)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (path, r.text)
    # the same account's token for the API server's audience does not write
    r = httpx.post(stored + BULK_PATH, content=b"", headers=bearer(tokens["writer_api"]) | NDJSON)
    assert r.status_code == 403
    # nor does a reader's token for the l7scope audience
    r = httpx.post(stored + BULK_PATH, content=b"", headers=bearer(tokens["shop_l7"]) | NDJSON)
    assert r.status_code == 403


def test_a_reader_bound_in_one_namespace_sees_only_it(stored: str, cluster: dict[str, Any],
                                                      tokens: dict[str, str]) -> None:
    shop, bank = cluster["shop"], cluster["bank"]
    for tok in (tokens["shop"], tokens["shop_l7"]):  # either audience reads
        h = bearer(tok)
        r = q(stored, h, SEARCH)
        assert r.status_code == 200, r.text
        assert {x["url"] for x in r.json()["hits"]} == {"/in-shop"}
        assert r.json()["total_requests"] == 2
        r = q(stored, h, SEARCH, {"selector": f'dest_namespace = "{bank}" OR url =~ ".*"'})
        assert {x["url"] for x in r.json()["hits"]} == {"/in-shop"}
        for path, extra in ((AGG, {"group_by": ["dest_namespace", "url"]}), (GRAPH, {"expand": [f"ns/{bank}"]})):
            r = q(stored, h, path, extra)
            assert r.status_code == 200 and bank not in r.text and shop in r.text, (path, r.text)
        assert httpx.get(stored + "/api/v1/status", headers=h).status_code == 403
        assert httpx.get(stored + "/metrics", headers=h).status_code == 403
        who = httpx.get(stored + WHOAMI_PATH, headers=h).json()
        assert who["auth"] == "kubernetes" and who["user"]["namespaces"] == [shop]
        assert who["user"]["name"] == f"system:serviceaccount:{cluster['tools']}:shop-viewer"


def test_a_cluster_wide_reader_sees_every_namespace(stored: str, cluster: dict[str, Any],
                                                    tokens: dict[str, str]) -> None:
    h = bearer(tokens["all"])
    r = q(stored, h, SEARCH)
    assert {x["url"] for x in r.json()["hits"]} == {"/in-shop", "/in-bank", "/shop-to-bank"}
    assert cluster["bank"] in q(stored, h, GRAPH).text
    assert httpx.get(stored + "/api/v1/status", headers=h).status_code == 200
    assert httpx.get(stored + "/metrics", headers=h).status_code == 200
    assert httpx.get(stored + WHOAMI_PATH, headers=h).json()["user"]["namespaces"] is None
    # a user of the API server's static token file (not a ServiceAccount; group system:masters):
    # reviewed for the API server's audience, its groups carried into the SubjectAccessReview
    who = httpx.get(stored + WHOAMI_PATH, headers=bearer(kubeharness.TOKEN)).json()
    assert who["user"] == {"name": "admin", "read": True, "write": False, "namespaces": None}


def test_a_reader_without_any_binding_is_forbidden(stored: str, tokens: dict[str, str]) -> None:
    r = q(stored, bearer(tokens["stranger"]), SEARCH)
    assert r.status_code == 403
    r = httpx.post(stored + "/login", json={"token": tokens["stranger"]})
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


def test_wrong_expired_and_dead_tokens_get_401(stored: str, control_plane: ControlPlane, kube: Kube,
                                               cluster: dict[str, Any]) -> None:
    t = cluster["tools"]
    gone = token_for(kube, t, "gone")
    kube.delete(f"/api/v1/namespaces/{t}/serviceaccounts/gone")
    now = int(time.time())
    sa = kube.get(f"/api/v1/namespaces/{t}/serviceaccounts/all-viewer")
    claims = {"iss": ISSUER, "aud": [ISSUER], "sub": f"system:serviceaccount:{t}:all-viewer",
              "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
              "kubernetes.io": {"namespace": t, "serviceaccount": {"name": "all-viewer",
                                                                   "uid": sa["metadata"]["uid"]}}}
    expired = signed_jwt(control_plane.workdir / "sa.key", claims)
    forged = expired.rsplit(".", 1)[0] + "." + _b64(b"x" * 256)
    # the same claims with a live expiry are accepted: the expired one fails for its `exp` alone
    live = signed_jwt(control_plane.workdir / "sa.key", {**claims, "exp": now + 600})
    assert q(stored, bearer(live), SEARCH).status_code == 200
    for tok in (expired, forged, gone, "not-a-token", "a" * 4000):
        r = q(stored, bearer(tok), SEARCH)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
        assert "hits" not in r.json()
        r = httpx.post(stored + "/login", json={"token": tok})
        assert r.status_code == 401 and SESSION_COOKIE not in r.cookies


def test_the_page_login_with_a_reader_token_carries_the_scope(stored: str, cluster: dict[str, Any],
                                                              tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=stored) as page:
        r = page.post("/login", json={"token": tokens["shop"]})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["namespaces"] == [cluster["shop"]]
        assert SESSION_COOKIE in page.cookies
        r = page.post(SEARCH, json={"time_range": {"from": "now-1h", "to": "now"}})
        assert r.status_code == 200 and {x["url"] for x in r.json()["hits"]} == {"/in-shop"}
        r = page.post(GRAPH, json={"time_range": {"from": "now-1h", "to": "now"}})
        assert r.status_code == 200 and cluster["bank"] not in r.text
        assert page.get("/metrics").status_code == 403


def test_reviews_are_cached_cost_measured(stored: str, kube: Kube, cluster: dict[str, Any]) -> None:
    """A new token of a namespace-scoped reader costs the reviews once (TokenReview x2, SAR
    cluster-wide, the namespace list, one SAR per namespace); later calls use the cache and cost
    about what an open route (/healthz) costs."""
    tok = token_for(kube, cluster["tools"], "shop-viewer")  # never seen by the server

    def timed(c: httpx.Client, path: str, headers: dict[str, str]) -> float:
        t0 = time.perf_counter()
        assert c.get(path, headers=headers).status_code == 200
        return time.perf_counter() - t0

    with httpx.Client(base_url=stored) as c:
        timed(c, "/healthz", {})  # the connection
        cold = timed(c, WHOAMI_PATH, bearer(tok))
        warm = sorted(timed(c, WHOAMI_PATH, bearer(tok)) for _ in range(50))
        open_ = sorted(timed(c, "/healthz", {}) for _ in range(50))
    n_ns = len(kube.list("/api/v1/namespaces")[0])
    print(f"\nwhoami, new scoped token: {cold * 1000:.1f} ms ({n_ns} namespaces reviewed); cached: "
          f"median {warm[25] * 1000:.2f} ms; /healthz (no auth, a store ping): median {open_[25] * 1000:.2f} ms")
    assert warm[25] < cold


def _kubeconfig(path: Path, control_plane: ControlPlane, user: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: t\n  cluster:\n    server: {control_plane.server}\n"
        f"    certificate-authority: {control_plane.workdir / 'certs' / 'apiserver.crt'}\n"
        f"users:\n- name: u\n  user:\n{user}"
        "contexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\n")
    return path


def test_the_cli_reads_with_the_kubeconfigs_token(stored: str, control_plane: ControlPlane,
                                                  tokens: dict[str, str], tmp_path: Path) -> None:
    """`--kube-token`: the CLI sends the kubeconfig user's token; the server scopes it like any
    reader's (shop-viewer sees only its namespace). A user with client certificates only gets a
    usage error, and nothing is sent."""
    kc = _kubeconfig(tmp_path / "kc", control_plane, f"    token: {tokens['shop']}\n")
    env = {**os.environ, "KUBECONFIG": str(kc)}
    env.pop("L7SCOPE_TOKEN", None)
    r = subprocess.run([L7SCOPE, "observe", "--server", stored, "--kube-token", "--since", "1h",
                        "-o", "jsonl"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert {json.loads(line)["url"] for line in r.stdout.splitlines()} == {"/in-shop"}

    certs = _kubeconfig(tmp_path / "certs", control_plane,
                        "    client-certificate-data: bm90LWEtY2VydA==\n"
                        "    client-key-data: bm90LWEta2V5\n")
    r = subprocess.run([L7SCOPE, "observe", "--server", stored, "--kube-token"], capture_output=True,
                       text=True, timeout=60, env={**env, "KUBECONFIG": str(certs)})
    assert r.returncode == 2 and "no bearer token" in r.stderr, r.stderr
    r = subprocess.run([L7SCOPE, "observe", "--server", stored, "--kube-token", "--token-file",
                        str(kc)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "exclude each other" in r.stderr, r.stderr
