"""The decisions and caches of `--auth kubernetes` (server/kubeauth.py) over a scripted API;
tests/kube/test_kube_auth.py runs the same against a real kube-apiserver and RBAC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from l7scope.kube.client import KubeError
from l7scope.server.auth import AuthUnavailable, Principal
from l7scope.server.kubeauth import KubernetesAuth

WRITER = ("l7scope-system", "l7-log-collector")
WRITER_USER = "system:serviceaccount:l7scope-system:l7-log-collector"


class FakeAPI:
    """Tokens -> (username, audiences it is valid for); RBAC: user -> namespaces ('' = all)."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, set[str]]] = {}
        self.rbac: dict[str, set[str]] = {}
        self.namespaces = ["a", "b", "c"]
        self.calls: list[str] = []
        self.down = False

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        kind = body["kind"]
        self.calls.append(kind)
        if self.down:
            raise KubeError(0, "ConnectionError", "refused")
        if kind == "TokenReview":
            want = set(body["spec"].get("audiences") or ["api"])
            user, auds = self.tokens.get(body["spec"]["token"], ("", set()))
            ok = bool(user) and bool(auds & want)
            return {"status": {"authenticated": ok, "user": {"username": user, "groups": ["g"]},
                               "audiences": sorted(auds & want)} if ok else {"authenticated": False}}
        spec = body["spec"]
        ns = spec["resourceAttributes"]["namespace"]
        granted = self.rbac.get(spec["user"], set())
        return {"status": {"allowed": "" in granted or (ns != "" and ns in granted)}}

    def list(self, path: str, *, page_size: int = 500, **query: Any) -> tuple[list[dict[str, Any]], str]:
        self.calls.append("list")
        if self.down:
            raise KubeError(0, "ConnectionError", "refused")
        return [{"metadata": {"name": n}} for n in self.namespaces], "1"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api() -> FakeAPI:
    a = FakeAPI()
    a.tokens = {"w-l7": (WRITER_USER, {"l7scope"}), "w-api": (WRITER_USER, {"api"}),
                "admin": ("admin", {"api"}), "alice": ("alice", {"api"}),
                "bob": ("bob", {"l7scope"}), "nobody": ("nobody", {"api"})}
    a.rbac = {"admin": {""}, "alice": {"a", "c"}, "bob": {"b"}, WRITER_USER: {""}}
    return a


def test_decisions(api: FakeAPI) -> None:
    auth = KubernetesAuth(api, writer=WRITER, clock=Clock())
    assert auth.authenticate("w-l7") == Principal(WRITER_USER, can_read=False, can_write=True)
    # the writer's ServiceAccount with a token for the API server's audience is only a reader
    # (here RBAC lets it read all; the write needs the l7scope audience)
    assert auth.authenticate("w-api") == Principal(WRITER_USER, can_read=True, can_write=False)
    assert auth.authenticate("admin") == Principal("admin", can_read=True, can_write=False)
    assert auth.authenticate("alice") == Principal("alice", can_read=True, can_write=False,
                                                   namespaces=frozenset({"a", "c"}))
    assert auth.authenticate("bob") == Principal("bob", can_read=True, can_write=False,
                                                 namespaces=frozenset({"b"}))
    nobody = auth.authenticate("nobody")
    assert nobody is not None and not nobody.can_read and not nobody.can_write
    assert auth.authenticate("forged") is None


def test_results_are_cached_for_a_short_time(api: FakeAPI) -> None:
    clock = Clock()
    auth = KubernetesAuth(api, writer=WRITER, clock=clock, token_ttl_s=60, sar_ttl_s=30)
    auth.authenticate("alice")
    n = len(api.calls)
    assert n == 2 + 1 + 1 + 3  # two reviews (l7scope, then api audience), SAR all, list, 3 SARs
    auth.authenticate("alice")
    assert auth.authenticate("forged") is None
    m = len(api.calls)
    assert auth.authenticate("forged") is None
    assert len(api.calls) == m  # a refused token is cached too (no API call per attempt)
    assert m == n + 2
    clock.t += 61
    api.rbac["alice"] = {"b"}  # RBAC changed: seen after the TTL
    assert auth.authenticate("alice") == Principal("alice", can_read=True, can_write=False,
                                                   namespaces=frozenset({"b"}))


def test_peek_answers_only_from_the_cache(api: FakeAPI) -> None:
    from l7scope.server.auth import CachingAuthenticator

    auth = KubernetesAuth(api, writer=WRITER, clock=Clock())
    assert isinstance(auth, CachingAuthenticator)
    assert auth.peek("alice") == (False, None) and api.calls == []
    principal = auth.authenticate("alice")
    calls = len(api.calls)
    assert auth.peek("alice") == (True, principal)
    assert auth.peek("forged") == (False, None)
    assert len(api.calls) == calls


def test_the_cache_is_bounded_and_keyed_by_a_hash(api: FakeAPI) -> None:
    auth = KubernetesAuth(api, writer=WRITER, clock=Clock(), max_tokens=8)
    for i in range(100):
        auth.authenticate(f"forged-{i}")
    assert len(auth._tokens) == 8
    assert all(isinstance(k, bytes) and len(k) == 32 for k in auth._tokens._items)


def test_an_unreachable_api_refuses_and_caches_nothing(api: FakeAPI) -> None:
    auth = KubernetesAuth(api, writer=WRITER, clock=Clock())
    api.down = True
    with pytest.raises(AuthUnavailable, match="did not answer the TokenReview"):
        auth.authenticate("admin")
    api.down = False
    assert auth.authenticate("admin") is not None  # not cached as refused
    api.tokens["carol"] = ("carol", {"api"})
    api.rbac["carol"] = {"a"}
    calls = len(api.calls)
    api.down = True
    with pytest.raises(AuthUnavailable):
        auth.authenticate("carol")
    assert len(api.calls) > calls
    api.down = False
    assert auth.authenticate("carol") == Principal("carol", can_read=True, can_write=False,
                                                   namespaces=frozenset({"a"}))
