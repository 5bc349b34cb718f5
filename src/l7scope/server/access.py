"""The server's front door (an ASGI middleware): Host allow-list, browser hardening, who is calling.

Every HTTP request passes, in this order (docs/security.md):
1. the Host check: an IP literal or a name on the allow-list, else 403 `host_not_allowed`
   (a DNS-rebinding page reaches the server under its own name and is turned away);
2. for POST: a browser's `Origin` must be this server's own (else 403 `cross_origin`), and the
   body must be `application/x-ndjson` (bulk) or `application/json` (everything else), else 415:
   a cross-site form or a `text/plain` "simple request" can never reach a handler;
3. for the API (`/api/`, `/metrics`, `/openapi.json`): a bearer token or the page's session
   cookie, else 401; the principal must be allowed the route (write for bulk ingest, read for the
   rest), else 403. An authenticator that cannot decide (AuthUnavailable: the Kubernetes API is
   down) gets 503 `auth_unavailable` with Retry-After, never a pass. `/healthz`, the login routes and the page's static files are open.
Every answer carries `nosniff`, `Referrer-Policy`, `frame-ancestors 'none'` and, for the API,
`Cache-Control: no-store`. The principal is left in `request.state.principal` for the handlers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from l7scope.contracts.api import HEALTHZ_PATH, METRICS_PATH, OPENAPI_PATH, error_body
from l7scope.contracts.auth import (
    CODES_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    SESSION_COOKIE,
    WHOAMI_PATH,
    parse_bearer,
)
from l7scope.contracts.bulk import BULK_PATH, CONTENT_TYPE
from l7scope.contracts.nodestats import NODE_STATS_PATH
from l7scope.server.auth import (
    Authenticator,
    AuthUnavailable,
    CachingAuthenticator,
    Principal,
    Sessions,
)

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'; object-src 'none'; base-uri 'none'"),
]
NO_STORE = (b"cache-control", b"no-store")
DEFAULT_ALLOWED_HOSTS = ("localhost",)
_OPEN_API = frozenset({HEALTHZ_PATH, LOGIN_PATH, LOGOUT_PATH})
#: the routes a writer (a node agent's credential) may call, and only it
WRITE_PATHS = frozenset({BULK_PATH, NODE_STATS_PATH})
_encoder = msgspec.json.Encoder()


def host_name(host_header: str) -> str:
    """The name part of a Host header value (no port, no IPv6 brackets), lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:].partition("]")[0]
    if h.count(":") == 1:
        h = h.partition(":")[0]
    return h.rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """IP literals always pass (they cannot be re-bound); names must be listed. `*` allows all."""

    def __init__(self, names: Iterable[str] = DEFAULT_ALLOWED_HOSTS) -> None:
        self.names = frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())
        self.any = "*" in self.names

    def allows(self, host_header: str | None) -> bool:
        if self.any:
            return True
        if not host_header:
            return False
        name = host_name(host_header)
        return is_ip_literal(name) or name in self.names


def is_protected(path: str) -> bool:
    """Routes that need a credential: the API, metrics and the schema; not the page's files."""
    if path in _OPEN_API:
        return False
    return path.startswith("/api/") or path in (METRICS_PATH, OPENAPI_PATH)


def wanted_content_type(path: str) -> str:
    return CONTENT_TYPE if path == BULK_PATH else "application/json"


def media_type(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def same_origin(origin: str, host_header: str | None) -> bool:
    if origin == "null" or not host_header:
        return False
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == host_header.strip().lower()


def session_id(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def may(principal: Principal, method: str, path: str) -> bool:
    if path in WRITE_PATHS:
        return principal.can_write
    if path in (CODES_PATH, WHOAMI_PATH):
        return principal.can_read or principal.can_write
    return principal.can_read


class AccessMiddleware:
    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, sessions: Sessions,
                 hosts: HostPolicy, blocking_auth: bool = False) -> None:
        self.app = app
        self.authenticator = authenticator
        self.sessions = sessions
        self.hosts = hosts
        self.blocking_auth = blocking_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope["path"]
        method: str = scope["method"]
        protected = is_protected(path)
        send = _with_headers(send, protected)

        if not self.hosts.allows(headers.get("host")):
            await _answer(send, 403, "host_not_allowed",
                          f"Host {headers.get('host', '')!r} is not on this server's allow-list "
                          "(see --allowed-host)")
            return
        if method == "POST":
            origin = headers.get("origin")
            if origin is not None and not same_origin(origin, headers.get("host")):
                await _answer(send, 403, "cross_origin",
                              f"cross-origin request from {origin!r} refused")
                return
            want = wanted_content_type(path)
            got = media_type(headers.get("content-type"))
            if (protected or path == LOGIN_PATH) and got != want:
                await _answer(send, 415, "unsupported_media_type",
                              f"{path} takes Content-Type: {want}, not {got or 'none'!r}")
                return
        principal: Principal | None = None
        token = parse_bearer(headers.get("authorization"))
        if token is not None:
            try:
                principal = await self._authenticate(token)
            except AuthUnavailable as e:
                await _answer(send, 503, "auth_unavailable", f"cannot check the credential now: {e}",
                              retry_after=5)
                return
            if principal is None and protected:
                await _answer(send, 401, "unauthorized", "the bearer token was not accepted",
                              challenge=True)
                return
        else:
            sid = session_id(headers.get("cookie"))
            if sid is not None:
                principal = self.sessions.lookup(sid)
            if principal is None:
                principal = self.authenticator.anonymous
        if protected:
            if principal is None:
                await _answer(send, 401, "unauthorized",
                              "this route needs a credential: Authorization: Bearer <token>, or "
                              "log in on the page", challenge=True)
                return
            if not may(principal, method, path):
                await _answer(send, 403, "forbidden",
                              f"{principal.name} may not {'write' if path in WRITE_PATHS else 'read'} here")
                return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _authenticate(self, token: str) -> Principal | None:
        if self.blocking_auth:
            if isinstance(self.authenticator, CachingAuthenticator):
                hit, principal = self.authenticator.peek(token)  # no thread for a cached token
                if hit:
                    return principal
            return await run_in_threadpool(self.authenticator.authenticate, token)
        return self.authenticator.authenticate(token)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def _with_headers(send: Send, protected: bool) -> Send:
    extra = SECURITY_HEADERS + ([NO_STORE] if protected else [])

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = list(message.get("headers", [])) + extra
        await send(message)

    return wrapped


async def _answer(send: Send, status: int, code: str, message: str, *, challenge: bool = False,
                  retry_after: int | None = None) -> None:
    body = _encoder.encode(error_body(code, message))
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="l7scope"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
