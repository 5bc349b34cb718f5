"""Who may call the server, and what they may do: principals, authenticators, page sessions.

Pure logic with an injected clock; the HTTP side is `server/access.py` (the middleware) and
`server/login.py` (the login routes). docs/security.md describes the model:

- a `Principal` may write (ingest), read (queries), or both; `namespaces` is None for a reader
  who may see every namespace;
- an `Authenticator` turns a bearer token into a Principal (or None: not a valid credential);
  `SharedToken` is the standalone server's single token (read and write), `NoAuth` lets every
  call in (only allowed on a loopback bind, see `server/cli.py`);
- `Sessions` keeps the page's logins (an opaque cookie value -> Principal) and one-time login
  codes, both bounded in number and time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable


@dataclass(frozen=True)
class Principal:
    name: str
    can_read: bool
    can_write: bool
    namespaces: frozenset[str] | None = None  # None: every namespace

    def public(self) -> dict[str, object]:
        return {"name": self.name, "read": self.can_read, "write": self.can_write,
                "namespaces": None if self.namespaces is None else sorted(self.namespaces)}


class AuthUnavailable(RuntimeError):
    """The authenticator could not decide (e.g. the Kubernetes API did not answer): the request
    is refused with 503 and nothing is cached, never let in."""


class Authenticator(Protocol):
    kind: str
    #: who a request without any credential is (None: nobody, 401)
    anonymous: Principal | None

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None. May block (thread pool); raises
        AuthUnavailable when it cannot decide."""


@runtime_checkable
class CachingAuthenticator(Authenticator, Protocol):
    """An authenticator that blocks on a miss but answers cached tokens at once: the middleware
    asks `peek` on the event loop first and uses the thread pool only on a miss."""

    def peek(self, token: str) -> tuple[bool, Principal | None]:
        """(True, the cached answer) when `token` is cached, else (False, None). Never blocks."""


class SharedToken:
    """The standalone server: one secret token that may read and write."""

    kind = "token"
    anonymous: Principal | None = None

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def authenticate(self, token: str) -> Principal | None:
        if hmac.compare_digest(token.encode(), self._token):
            return Principal("token", can_read=True, can_write=True)
        return None


class NoAuth:
    """Every call is let in as `anonymous` (`--auth none`, loopback binds only)."""

    kind = "none"
    anonymous: Principal | None = Principal("anonymous", can_read=True, can_write=True)

    def authenticate(self, token: str) -> Principal | None:
        return self.anonymous


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A bounded map whose entries expire `ttl_s` after they were put; the oldest go first.
    Thread-safe (the page sessions and the Kubernetes caches are read from the thread pool)."""

    def __init__(self, ttl_s: float, limit: int, clock: Callable[[], float]) -> None:
        self.ttl_s, self.limit, self.clock = ttl_s, limit, clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, *, pop: bool = False) -> tuple[bool, V | None]:
        """(found, value); with `pop` the entry is gone afterwards, found or expired."""
        with self._lock:
            item = self._items.pop(key, None) if pop else self._items.get(key)
            if item is None:
                return False, None
            if item[0] <= self.clock():
                self._items.pop(key, None)
                return False, None
            return True, item[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items.pop(key, None)
            while len(self._items) >= self.limit:
                self._items.popitem(last=False)
            self._items[key] = (self.clock() + self.ttl_s, value)

    def remove(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


class Sessions:
    """Page sessions (cookie value -> principal) and one-time login codes."""

    def __init__(self, *, session_ttl_s: float = 12 * 3600, code_ttl_s: float = 300,
                 max_sessions: int = 1024, max_codes: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session_ttl_s = session_ttl_s
        self.code_ttl_s = code_ttl_s
        self._sessions: TTLCache[str, Principal] = TTLCache(session_ttl_s, max_sessions, clock)
        self._codes: TTLCache[str, Principal] = TTLCache(code_ttl_s, max_codes, clock)

    def open(self, principal: Principal) -> str:
        key = secrets.token_urlsafe(32)
        self._sessions.put(key, principal)
        return key

    def lookup(self, session_id: str) -> Principal | None:
        return self._sessions.get(session_id)[1]

    def close(self, session_id: str) -> None:
        self._sessions.remove(session_id)

    def mint_code(self, principal: Principal) -> str:
        code = secrets.token_urlsafe(32)
        self._codes.put(code, principal)
        return code

    def redeem(self, code: str) -> Principal | None:
        """The principal of a one-time code; the code is gone afterwards, used or not."""
        return self._codes.get(code, pop=True)[1]
