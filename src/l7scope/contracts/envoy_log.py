"""The Envoy access-log contract: the JSON keys Envoy writes and how the collector reads them.

This module is the single owner of the format. `l7scope.proxy.bootstrap` renders Envoy's
`json_format` from `json_format()`, and the collector decodes each line into `EnvoyLogLine`
with `decode_line()` / `decode_lines()`. Both sides import it; nothing else defines a key.

Keys follow Calico's l7-collector format (spec section 4) plus `protocol`, `response_flags`,
`requested_server_name` (TLS SNI), `grpc_status`, `upstream_service_time` and `duration_us`.
Envoy writes missing values as JSON null (or "-" for response flags); every field is optional.
HTTP chains also log a nested `detail` object (trace headers, allowlisted headers, every value
cut to a fixed length; its keys are owned by `contracts/detail.py`): it is kept undecoded
(`msgspec.Raw`) and decoded only for the few lines kept as request detail.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

#: `reporter` value for lines written by the per-node transparent proxy.
REPORTER_DESTINATION: Final = "destination"

#: Log `type` values for the non-HTTP filter chains. HTTP chains log Envoy's %PROTOCOL%.
TYPE_TLS: Final = "tls"
TYPE_TCP: Final = "tcp"
#: `type` for entries that arrive through the gRPC Access Log Service.
TYPE_ALS_HTTP: Final = "http"

# key -> Envoy command operator. `type` is filled per filter chain by json_format().
_FORMAT: Final[dict[str, str]] = {
    "reporter": REPORTER_DESTINATION,
    "start_time": "%START_TIME%",
    "duration": "%DURATION%",
    "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_sent": "%BYTES_SENT%",
    "bytes_received": "%BYTES_RECEIVED%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "request_method": "%REQ(:METHOD)%",
    "request_id": "%REQ(X-REQUEST-ID):128%",
    "protocol": "%PROTOCOL%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "domain": "%REQ(HOST?:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
}

#: Every key a line may carry, in format order.
KEYS: Final[tuple[str, ...]] = (*_FORMAT, "type")


def json_format(log_type: str, detail: dict[str, str] | None = None) -> dict[str, Any]:
    """The Envoy `json_format` dict for one filter chain.

    `log_type` is `"tls"`, `"tcp"` or `"%PROTOCOL%"` (HTTP chains: HTTP/1.1, HTTP/2, ...).
    `detail`: the nested `detail` object of HTTP chains (`contracts.detail.envoy_format()`).
    """
    out: dict[str, Any] = {**_FORMAT, "type": log_type}
    if detail:
        out["detail"] = dict(detail)
    return out


class EnvoyLogLine(msgspec.Struct, gc=False, omit_defaults=True):
    """One access-log line as Envoy writes it. Unknown keys are ignored; all keys optional."""

    reporter: str | None = None
    start_time: str | None = None
    duration: int | None = None  # milliseconds
    duration_us: int | None = None  # microseconds, downstream first byte in -> last byte out
    response_code: int | None = None
    response_flags: str | None = None
    bytes_sent: int | None = None  # response bytes sent to the client
    bytes_received: int | None = None  # request bytes received from the client
    user_agent: str | None = None
    request_path: str | None = None
    request_method: str | None = None
    request_id: str | None = None
    protocol: str | None = None
    type: str | None = None
    downstream_remote_address: str | None = None  # client ip:port (source of the tuple)
    downstream_local_address: str | None = None  # original destination ip:port
    domain: str | None = None
    upstream_host: str | None = None
    upstream_local_address: str | None = None
    upstream_service_time: str | None = None  # a header value: milliseconds as text
    requested_server_name: str | None = None
    grpc_status: int | str | None = None
    # contracts.detail keys, decoded only for kept requests; empty when the line has none
    detail: msgspec.Raw = msgspec.Raw(b"")


_line_decoder: Final = msgspec.json.Decoder(EnvoyLogLine)
_lines_decoder: Final = msgspec.json.Decoder(list[EnvoyLogLine])
_encoder: Final = msgspec.json.Encoder()


class DecodeError(ValueError):
    """A line is not a JSON object of the access-log shape."""


#: What msgspec raises for bad input: its own errors, UnicodeDecodeError (overlong UTF-8 forms,
#: UTF-8-coded surrogates in a string) and RecursionError (nesting deeper than the interpreter's
#: recursion limit, e.g. inside an ignored key).
_BAD_INPUT: Final = (ValueError, RecursionError)


def decode_line(line: bytes | str) -> EnvoyLogLine:
    """Decode one line. Raises DecodeError for anything that is not a valid log object."""
    try:
        return _line_decoder.decode(line)
    except _BAD_INPUT as e:
        raise DecodeError(str(e) or type(e).__name__) from e


def decode_lines(lines: list[bytes]) -> tuple[list[EnvoyLogLine], int]:
    """Decode many complete lines (no trailing newline) in one call.

    The fast path joins the lines into one JSON array and decodes it at once; when that fails,
    it falls back to line by line. Empty lines are ignored. Returns (decoded, number of bad lines).
    """
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return [], 0
    try:
        decoded = _lines_decoder.decode(b"[" + b",".join(lines) + b"]")
        if len(decoded) == len(lines):  # a line such as `{},{}` would otherwise count twice
            return decoded, 0
    except _BAD_INPUT:
        pass
    good: list[EnvoyLogLine] = []
    bad = 0
    for ln in lines:
        try:
            good.append(_line_decoder.decode(ln))
        except _BAD_INPUT:
            bad += 1
    return good, bad


def encode_line(entry: EnvoyLogLine) -> bytes:
    """Encode one line (for tests, fixtures and benchmarks): the same shape Envoy writes."""
    return _encoder.encode(entry)


def split_address(addr: str | None) -> tuple[str, int]:
    """`"10.0.0.1:8080"` -> ("10.0.0.1", 8080); `"[::1]:80"` -> ("::1", 80); bad -> ("", 0)."""
    if not addr:
        return "", 0
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, 0
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return host, int(port)
    except ValueError:
        return host, 0
