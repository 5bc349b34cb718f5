"""How clients prove who they are to the server: the bearer token, its file, the session cookie.

Every API route of `l7scope server` except `/healthz` needs a credential (docs/security.md):
- `Authorization: Bearer <token>`, where the token is either the standalone server's shared
  token (a random string kept in a file, `<data-dir>/token` by default) or, in a cluster, a
  Kubernetes ServiceAccount/user token that the server checks with a TokenReview;
- or, for the page, the session cookie SESSION_COOKIE, set by `POST LOGIN_PATH` (a token in the
  JSON body) or by `GET LOGIN_PATH?code=...` with a one-time code minted by `POST CODES_PATH`.

The token file is shared by the server (which creates it) and the CLI, the node agent and the
demo (which read it), so its rules live here: one line, at least MIN_TOKEN_CHARS characters of
URL-safe text, mode 0600, created atomically.
"""

from __future__ import annotations

import os
import secrets
import ssl
from pathlib import Path
from typing import Final

AUTH_HEADER: Final = "Authorization"
TOKEN_ENV: Final = "L7SCOPE_TOKEN"
CA_FILE_ENV: Final = "L7SCOPE_CA_FILE"
TOKEN_FILE_NAME: Final = "token"
SESSION_COOKIE: Final = "l7scope_session"
LOGIN_PATH: Final = "/login"
LOGOUT_PATH: Final = "/logout"
CODES_PATH: Final = "/api/v1/login/codes"
WHOAMI_PATH: Final = "/api/v1/whoami"
# In a cluster (`--auth kubernetes`): the audience of the node agents' projected ServiceAccount
# token, which the operator renders and the server's TokenReview asks for, and the writers'
# ServiceAccount by default (namespace:name).
TOKEN_AUDIENCE: Final = "l7scope"
DEFAULT_WRITER_SERVICEACCOUNT: Final = "l7scope-system:l7-log-collector"
# 32 random bytes -> 43 URL-safe characters: 256 bits.
TOKEN_BYTES: Final = 32
MIN_TOKEN_CHARS: Final = 32


class TokenFileError(RuntimeError):
    """The token file is missing, unreadable, too open or does not hold a usable token."""


def default_data_dir() -> Path:
    """Where a standalone `l7scope server` keeps its store and token unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "l7scope"


def default_token_file() -> Path:
    return default_data_dir() / TOKEN_FILE_NAME


def bearer(token: str) -> dict[str, str]:
    """The request header that carries `token`."""
    return {AUTH_HEADER: f"Bearer {token}"}


def parse_bearer(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header value, or None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_token_text(text: str, where: str) -> str:
    token = text.strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenFileError(f"{where} does not hold a usable token (one line of at least "
                             f"{MIN_TOKEN_CHARS} characters without spaces)")
    return token


def read_token(path: Path) -> str:
    """The token in `path`; TokenFileError with a message that says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokenFileError(f"no token file at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError(f"cannot read the token file {path}: {e}") from None
    return check_token_text(text, f"the token file {path}")


def ensure_token(path: Path) -> tuple[str, bool]:
    """The token in `path`, creating the file (random token, mode 0600) when absent.

    Returns (token, created). Creation is atomic (O_EXCL), so two processes starting at once
    agree on one token. An existing file readable by every user is refused: the token is a
    password (group-readable is allowed: a Kubernetes Secret volume with fsGroup is 0440).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o007
        if mode:
            raise TokenFileError(f"the token file {path} is readable by others (mode "
                                 f"{oct(path.stat().st_mode & 0o777)}); run `chmod 600 {path}`") from None
        return read_token(path), False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token, True


def find_token(token_file: Path | None = None) -> str | None:
    """The token a client sends: `--token-file`, else $L7SCOPE_TOKEN, else the standalone
    server's default file when it exists (same machine, same user), else None."""
    if token_file is not None:
        return read_token(token_file)
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return check_token_text(env, f"${TOKEN_ENV}")
    default = default_token_file()
    if default.exists():
        return read_token(default)
    return None


def tls_verify(ca_file: Path | None = None) -> ssl.SSLContext | bool:
    """How a client checks an https server: the CA bundle `ca_file`, else $L7SCOPE_CA_FILE, else
    the system's CAs (True). A server over plain http ignores it."""
    path = ca_file or (Path(os.environ[CA_FILE_ENV]) if os.environ.get(CA_FILE_ENV) else None)
    if path is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as e:
        raise TokenFileError(f"cannot use the CA file {path}: {e}") from None
