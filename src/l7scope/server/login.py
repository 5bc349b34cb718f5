"""The page's login routes: a token login (Kiali's "token" strategy), one-time codes, logout.

- `POST /login` `{"token": "..."}` checks the token like a bearer token and answers with the
  session cookie (HttpOnly, SameSite=Strict, Secure over https);
- `GET /login?code=...` trades a one-time code (minted by an authenticated
  `POST /api/v1/login/codes`, e.g. by `l7scope demo`) for the same cookie and redirects to the
  page: one click from the terminal, and the code is dead afterwards;
- `POST /logout` ends the session; `GET /api/v1/whoami` says who the caller is.
The Host, Origin and Content-Type checks of `server/access.py` run before these. The
authenticator and the sessions are on `app.state` (`server/api.py`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from l7scope.contracts.api import error_body
from l7scope.contracts.auth import CODES_PATH, LOGIN_PATH, LOGOUT_PATH, SESSION_COOKIE, WHOAMI_PATH
from l7scope.server.access import session_id
from l7scope.server.auth import Authenticator, AuthUnavailable, Principal, Sessions

_encoder = msgspec.json.Encoder()
MAX_LOGIN_BODY = 16 * 1024


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json(error_body(code, message), status)


def _parts(request: Request) -> tuple[Authenticator, Sessions]:
    st = request.app.state
    return st.authenticator, st.sessions


def _set_cookie(resp: Response, request: Request, sessions: Sessions, principal: Principal) -> None:
    resp.set_cookie(SESSION_COOKIE, sessions.open(principal), max_age=int(sessions.session_ttl_s),
                    path="/", httponly=True, samesite="strict",
                    secure=request.url.scheme == "https")


async def login_with_token(request: Request) -> Response:
    authenticator, sessions = _parts(request)
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        return _error(413, "body_too_large", "login body too large")
    try:
        token = msgspec.json.decode(body).get("token")
    except (msgspec.DecodeError, AttributeError):
        token = None
    if not isinstance(token, str) or not token.strip():
        return _error(400, "bad_request", 'the body must be {"token": "..."}')
    token = token.strip()
    try:
        if request.app.state.blocking_auth:
            principal = await run_in_threadpool(authenticator.authenticate, token)
        else:
            principal = authenticator.authenticate(token)
    except AuthUnavailable as e:
        return _error(503, "auth_unavailable", f"cannot check the token now: {e}")
    if principal is None:
        return _error(401, "unauthorized", "the token was not accepted")
    if not (principal.can_read or principal.can_write):
        return _error(403, "forbidden", f"{principal.name} may not read any namespace here "
                                        "(needs `get pods` in at least one)")
    resp = _json({"user": principal.public()})
    _set_cookie(resp, request, sessions, principal)
    return resp


async def login_with_code(request: Request) -> Response:
    _, sessions = _parts(request)
    code = request.query_params.get("code", "")
    principal = sessions.redeem(code) if code else None
    if principal is None:
        return _error(401, "unauthorized",
                      "this login link is unknown, used or expired; ask for a new one "
                      "(l7scope demo prints one) or log in with the token on the page")
    resp: Response = RedirectResponse("/", status_code=303)
    _set_cookie(resp, request, sessions, principal)
    return resp


async def logout(request: Request) -> Response:
    _, sessions = _parts(request)
    sid = session_id(request.headers.get("cookie"))
    if sid is not None:
        sessions.close(sid)
    resp = _json({"logged_out": True})
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp


async def mint_code(request: Request) -> Response:
    _, sessions = _parts(request)
    principal: Principal = request.state.principal
    code = sessions.mint_code(principal)
    return _json({"code": code, "path": f"{LOGIN_PATH}?code={code}",
                  "expires_in_s": int(sessions.code_ttl_s)})


async def whoami(request: Request) -> Response:
    authenticator, _ = _parts(request)
    principal: Principal = request.state.principal
    return _json({"user": principal.public(), "auth": authenticator.kind})


ROUTES = [
    Route(LOGIN_PATH, login_with_token, methods=["POST"]),
    Route(LOGIN_PATH, login_with_code, methods=["GET"]),
    Route(LOGOUT_PATH, logout, methods=["POST"]),
    Route(CODES_PATH, mint_code, methods=["POST"]),
    Route(WHOAMI_PATH, whoami, methods=["GET"]),
]
