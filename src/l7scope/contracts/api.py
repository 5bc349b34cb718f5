"""The server's query API (docs/api.md): its paths, the default port and URL, the error shape.

The one owner of these: the server (`server/api.py`) routes them, the CLI (`observe/client.py`),
the operator (`operator/render.py`, the server's port and probe) and the demo read them here.
The page (`server/ui/js/api.js`) cannot import Python; it writes the same paths and the same
error shape, and `tests/browser` checks it against the running server. The bulk ingest path is
part of the shipping contract (`contracts/bulk.py`).

Every error answer (4xx/5xx) is one JSON object:
    {"error": {"code": str, "message": str, "position": int (optional), "field": str (optional)}}
`position` (0-based character) and `field` are set for selector problems.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

DEFAULT_PORT: Final = 8686
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_URL: Final = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"

SEARCH_PATH: Final = "/api/v1/l7/logs/search"
AGGREGATION_PATH: Final = "/api/v1/l7/logs/aggregation"
SERVICEGRAPH_PATH: Final = "/api/v1/servicegraph"
EXPORT_PATH: Final = "/api/v1/l7/logs/export"
STATUS_PATH: Final = "/api/v1/status"
HEALTHZ_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"
OPENAPI_PATH: Final = "/openapi.json"


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    position: int | None = None
    field: str | None = None


class ErrorAnswer(msgspec.Struct):
    error: ErrorDetail


def error_body(code: str, message: str, position: int | None = None, field: str | None = None) -> dict[str, Any]:
    """The JSON object of an error answer."""
    body: dict[str, Any] = msgspec.to_builtins(ErrorAnswer(ErrorDetail(code, message, position, field)))
    return body


def decode_error(data: object) -> ErrorDetail | None:
    """The error of a decoded answer body, or None when it is not in the error shape."""
    try:
        return msgspec.convert(data, ErrorAnswer).error
    except msgspec.ValidationError:
        return None
