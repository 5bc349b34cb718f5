"""`--auth kubernetes`: bearer tokens checked by the cluster (TokenReview), reads scoped by RBAC
(SubjectAccessReview), as docs/security.md ("Authentication in a cluster") describes.

- A token is reviewed first for the audience TOKEN_AUDIENCE ("l7scope", the node agents'
  projected token); when that fails, again for the API server's own audiences (a reader's
  kubeconfig token, `kubectl create token`). The writers' ServiceAccount
  (`--writer-serviceaccount`, the node agents') may write, and only with an "l7scope" token;
  it never reads.
- Everyone else is a reader: a SubjectAccessReview `get pods` in all namespaces gives
  `namespaces=None`; otherwise the server lists the namespaces (its own credentials) and asks
  `get pods` in each, and the reader sees the ones allowed; none at all: a principal that may
  do nothing (403).
- Results are cached by the token's sha256 (never the token) and SARs by (user, namespace), each
  for a short time and bounded in number. When the API cannot be reached the request gets
  `AuthUnavailable` (503); nothing is let in and nothing is cached on an error. The middleware
  answers cached tokens on the event loop (`peek`) and sends only misses to the thread pool, so
  a slow API server holds threads only for new tokens.
Pure logic over an injected `KubeAPI` and clock; `l7scope.kube.client.Kube` is the real one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from l7scope.contracts.auth import TOKEN_AUDIENCE
from l7scope.kube.client import KubeError
from l7scope.server.auth import AuthUnavailable, Principal, TTLCache

TOKEN_TTL_S: Final = 60.0
SAR_TTL_S: Final = 30.0
NAMESPACES_TTL_S: Final = 30.0
MAX_TOKENS: Final = 4096
MAX_SARS: Final = 16384
MAX_NAMESPACES: Final = 2000  # more than this are not reviewed one by one (a clear 503)
_TR: Final = "/apis/authentication.k8s.io/v1/tokenreviews"
_SAR: Final = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
_NO_READ: Final = frozenset[str]()



class KubeAPI(Protocol):
    """What this module needs of `l7scope.kube.client.Kube`."""

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]: ...

    def list(self, path: str, *, page_size: int = 500, **query: Any) -> tuple[list[dict[str, Any]], str]: ...


@dataclass(frozen=True)
class User:
    """The identity a TokenReview answered, as a SubjectAccessReview takes it back."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...]
    audiences: frozenset[str]

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> User:
        u = status.get("user") or {}
        extra = u.get("extra") or {}
        return cls(username=str(u.get("username") or ""), uid=str(u.get("uid") or ""),
                   groups=tuple(str(g) for g in u.get("groups") or ()),
                   extra=tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in extra.items())),
                   audiences=frozenset(str(a) for a in status.get("audiences") or ()))

    def subject(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.username, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra}
        return out


def serviceaccount_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


class KubernetesAuth:
    """Bearer tokens checked by the Kubernetes API (see the module docstring)."""

    kind = "kubernetes"
    anonymous: Principal | None = None  # no credential, no access

    def __init__(self, kube: KubeAPI, *, writer: tuple[str, str], audience: str = TOKEN_AUDIENCE,
                 token_ttl_s: float = TOKEN_TTL_S, sar_ttl_s: float = SAR_TTL_S,
                 max_tokens: int = MAX_TOKENS, max_sars: int = MAX_SARS,
                 clock: Callable[[], float] = time.monotonic, timeout_s: float = 10.0) -> None:
        self.kube = kube
        self.writer = serviceaccount_user(*writer)
        self.audience = audience
        self.timeout_s = timeout_s
        self._tokens: TTLCache[bytes, Principal | None] = TTLCache(token_ttl_s, max_tokens, clock)
        self._sars: TTLCache[tuple[User, str], bool] = TTLCache(sar_ttl_s, max_sars, clock)
        self._namespaces: TTLCache[str, tuple[str, ...]] = TTLCache(NAMESPACES_TTL_S, 1, clock)

    def peek(self, token: str) -> tuple[bool, Principal | None]:
        """The cached answer for `token`, if any (no API call: safe on the event loop)."""
        return self._tokens.get(hashlib.sha256(token.encode()).digest())

    def authenticate(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        hit, principal = self._tokens.get(key)
        if hit:
            return principal
        principal = self._decide(token)
        self._tokens.put(key, principal)
        return principal

    # --- the decision -----------------------------------------------------------------------

    def _decide(self, token: str) -> Principal | None:
        user = self._review(token, [self.audience]) or self._review(token, None)
        if user is None:
            return None
        if user.username == self.writer and self.audience in user.audiences:
            return Principal(user.username, can_read=False, can_write=True)
        if self._allowed(user, ""):
            return Principal(user.username, can_read=True, can_write=False)
        readable = frozenset(ns for ns in self._namespace_names() if self._allowed(user, ns))
        if not readable:
            return Principal(user.username, can_read=False, can_write=False, namespaces=_NO_READ)
        return Principal(user.username, can_read=True, can_write=False, namespaces=readable)

    def _review(self, token: str, audiences: list[str] | None) -> User | None:
        spec: dict[str, Any] = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        status = self._call("POST", _TR, body, "TokenReview").get("status") or {}
        if not status.get("authenticated"):
            return None
        user = User.from_status(status)
        return user if user.username else None

    def _allowed(self, user: User, namespace: str) -> bool:
        hit, allowed = self._sars.get((user, namespace))
        if hit and allowed is not None:
            return allowed
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {**user.subject(),
                         "resourceAttributes": {"verb": "get", "resource": "pods", "group": "",
                                                "namespace": namespace}}}
        status = self._call("POST", _SAR, body, "SubjectAccessReview").get("status") or {}
        allowed = bool(status.get("allowed")) and not status.get("denied")
        self._sars.put((user, namespace), allowed)
        return allowed

    def _namespace_names(self) -> tuple[str, ...]:
        hit, names = self._namespaces.get("all")
        if hit and names is not None:
            return names
        try:
            items, _ = self.kube.list("/api/v1/namespaces")
        except KubeError as e:
            raise AuthUnavailable(f"cannot list namespaces to scope the reader ({e})") from None
        found = tuple(sorted(str((i.get("metadata") or {}).get("name") or "") for i in items))
        if len(found) > MAX_NAMESPACES:
            raise AuthUnavailable(f"{len(found)} namespaces are more than the {MAX_NAMESPACES} this server "
                                  "reviews one by one; grant the reader `get pods` cluster-wide")
        self._namespaces.put("all", found)
        return found

    def _call(self, method: str, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            return self.kube.request(method, path, body=body, timeout=self.timeout_s)
        except KubeError as e:
            raise AuthUnavailable(f"the Kubernetes API did not answer the {what} ({e}); "
                                  "the server's ServiceAccount needs `create` on tokenreviews and "
                                  "subjectaccessreviews") from None
