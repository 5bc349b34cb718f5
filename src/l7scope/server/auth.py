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
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


class _Expiring:
    """A bounded map of random keys to principals, each with its own expiry time."""

    def __init__(self, ttl_s: float, limit: int, clock: Callable[[], float]) -> None:
        self.ttl_s, self.limit, self.clock = ttl_s, limit, clock
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def add(self, principal: Principal) -> str:
        self._expire()
        while len(self._items) >= self.limit:
            self._items.popitem(last=False)  # the oldest goes first
        key = secrets.token_urlsafe(32)
        self._items[key] = (self.clock() + self.ttl_s, principal)
        return key

    def get(self, key: str, *, pop: bool = False) -> Principal | None:
        self._expire()
        item = self._items.pop(key, None) if pop else self._items.get(key)
        return None if item is None else item[1]

    def remove(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def _expire(self) -> None:
        now = self.clock()
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires > now:
                break
            del self._items[key]


class Sessions:
    """Page sessions (cookie value -> principal) and one-time login codes."""

    def __init__(self, *, session_ttl_s: float = 12 * 3600, code_ttl_s: float = 300,
                 max_sessions: int = 1024, max_codes: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session_ttl_s = session_ttl_s
        self.code_ttl_s = code_ttl_s
        self._sessions = _Expiring(session_ttl_s, max_sessions, clock)
        self._codes = _Expiring(code_ttl_s, max_codes, clock)

    def open(self, principal: Principal) -> str:
        return self._sessions.add(principal)

    def lookup(self, session_id: str) -> Principal | None:
        return self._sessions.get(session_id)

    def close(self, session_id: str) -> None:
        self._sessions.remove(session_id)

    def mint_code(self, principal: Principal) -> str:
        return self._codes.add(principal)

    def redeem(self, code: str) -> Principal | None:
        """The principal of a one-time code; the code is gone afterwards, used or not."""
        return self._codes.get(code, pop=True)

    def counts(self) -> tuple[int, int]:
        return len(self._sessions), len(self._codes)
