"""Tail-based request detail (issue 17): which single requests are kept, and the record's shape.

The one owner of the detail contract, shared by four processes:

* Envoy writes the detail keys of `envoy_format()` (trace headers and the allowlisted request and
  response headers, every value cut to a fixed length) inside the access-log line's `detail`
  object (`contracts/envoy_log.py`);
* the collector decides per line with `Picker` (error, slow, sampled: cheap for the common
  2xx case), builds a `DetailRecord` from the line with `from_line()` and sends it, JSON-encoded,
  in `DataplaneStats.request_details` (`policysync.proto`, field 101);
* the node agent applies the Service's mode (annotation `l7scope.io/detail`, `mode_of()`), fills
  in the enriched key fields of the aggregated record the request was counted in, bounds the
  records per flush, and ships them as NDJSON to `DETAIL_BULK_PATH`;
* the server validates them with `decode_record()` (bounds below), stores and answers them at
  `REQUESTS_PATH` (drill-down by an aggregated record's key, or search by request / trace id).

Modes (per Service, cumulative): `off` < `errors` < `slow` < `sampled`. A request's `reason` is
the first that applies: `error` (5xx; 4xx when `include4xx`; an Envoy response flag; gRPC status
not 0), `slow` (duration >= `slowThresholdMs`), `sampled` (one in `sampleOneIn` of the rest, by
a CRC-32 of the request id, so every process and test picks the same requests). `sample_rate`
is 1 for `error`/`slow` and `sampleOneIn` for `sampled`: the sum of `sample_rate` over the kept
records of a key estimates the requests of that key that were neither errors nor slow, plus the
errors and slow ones exactly (the aggregated record keeps counting every request).

Redaction: `REDACTED` headers (authorization, proxy-authorization, cookie, set-cookie) are
removed from the allowlists by `DetailSettings`, never put in Envoy's format, and dropped again
by `decode_record()` if a record names them anyway.
"""

from __future__ import annotations

import re
import zlib
from typing import Annotated, Any, Final, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

DETAIL_BULK_PATH: Final = "/api/v1/l7/detail/bulk"
REQUESTS_PATH: Final = "/api/v1/l7/requests"
ANNOTATION: Final = "l7scope.io/detail"

Mode = Literal["off", "errors", "slow", "sampled"]
MODES: Final[tuple[str, ...]] = ("off", "errors", "slow", "sampled")
REASON_ERROR: Final = "error"
REASON_SLOW: Final = "slow"
REASON_SAMPLED: Final = "sampled"
#: The lowest mode that keeps a reason.
_MODE_OF_REASON: Final = {REASON_ERROR: 1, REASON_SLOW: 2, REASON_SAMPLED: 3}

#: Headers never stored, whatever the allowlist says (lower case).
REDACTED: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

MAX_HEADERS: Final = 16  # per allowlist
MAX_HEADER_VALUE: Final = 256  # characters Envoy logs of one header value
MAX_PATH: Final = 1024
MAX_ID: Final = 128  # request id, b3 header
MAX_RECORD_BYTES: Final = 16 * 1024

_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")


class DetailSettings(BaseModel):
    """The cluster-wide detail settings (`l7Detail` of NodeAgentConfiguration; the collector
    and Envoy's format take the same model). Unknown keys are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    default_mode: Mode = Field(default="errors", alias="defaultMode")
    """Mode of a Service without a valid `l7scope.io/detail` annotation."""
    include_4xx: bool = Field(default=False, alias="include4xx")
    """4xx answers count as errors."""
    slow_threshold_ms: int = Field(default=1000, alias="slowThresholdMs", ge=1, le=3_600_000)
    sample_one_in: int = Field(default=100, alias="sampleOneIn", ge=0, le=1_000_000)
    """Keep one in N of the other requests (0: none); recorded as `sample_rate`."""
    max_per_interval: int = Field(default=500, alias="maxPerInterval", ge=0, le=100_000)
    """Detail records per node per interval (collector interval, node flush); the rest is
    dropped and counted (`details_dropped`)."""
    request_headers: tuple[str, ...] = Field(default=(), alias="requestHeaders")
    response_headers: tuple[str, ...] = Field(default=(), alias="responseHeaders")

    @field_validator("request_headers", "response_headers")
    @classmethod
    def _headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return allowed_headers(v)


def allowed_headers(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated allowlist without the REDACTED names; a bad name raises."""
    out: list[str] = []
    for n in names:
        n = n.strip().lower()
        if not _HEADER_NAME.match(n):
            raise ValueError(f"not a header name (a-z, 0-9, '-', up to 64): {n!r}")
        if n not in REDACTED and n not in out:
            out.append(n)
    if len(out) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers per allowlist, got {len(out)}")
    return tuple(out)


def mode_of(annotation: str | None, default: str) -> str:
    """A Service's mode: its annotation when valid, else the default."""
    if annotation is not None:
        a = annotation.strip().lower()
        if a in MODES:
            return a
    return default


def keeps(mode: str, reason: str) -> bool:
    """Whether a Service in `mode` keeps a request picked for `reason`."""
    return MODES.index(mode) >= _MODE_OF_REASON.get(reason, 99) if mode in MODES else False


def sampled(request_id: str | None, one_in: int) -> bool:
    """Deterministic sampling: CRC-32 of the request id modulo `one_in` is 0."""
    if one_in <= 0 or not request_id:
        return False
    return one_in == 1 or zlib.crc32(request_id.encode("utf-8", "replace")) % one_in == 0


# --- Envoy's side of the format ------------------------------------------------------------

#: detail key -> the request header Envoy logs for trace context.
TRACE_HEADERS: Final[dict[str, str]] = {
    "traceparent": "TRACEPARENT",
    "b3_trace": "X-B3-TRACEID",
    "b3_span": "X-B3-SPANID",
    "b3": "B3",
}
REQ_PREFIX: Final = "req:"
RESP_PREFIX: Final = "resp:"


def envoy_format(request_headers: tuple[str, ...] = (),
                 response_headers: tuple[str, ...] = ()) -> dict[str, str]:
    """The `detail` object of the HTTP chains' `json_format`: trace headers and the allowlisted
    headers (REDACTED ones removed again here), every value bounded."""
    out = {k: f"%REQ({h}):{MAX_ID}%" for k, h in TRACE_HEADERS.items()}
    for h in allowed_headers(request_headers):
        out[REQ_PREFIX + h] = f"%REQ({h.upper()}):{MAX_HEADER_VALUE}%"
    for h in allowed_headers(response_headers):
        out[RESP_PREFIX + h] = f"%RESP({h.upper()}):{MAX_HEADER_VALUE}%"
    return out


def parse_trace(detail: dict[str, Any]) -> tuple[str, str, str]:
    """(trace id, span id, format) from W3C `traceparent`, else B3 (multi or single header);
    ("", "", "") when none parses. Ids are lower-case hex; a 64-bit B3 trace id is left-padded
    to 128 bits (as the W3C form)."""
    tp = detail.get("traceparent")
    if isinstance(tp, str):
        m = _TRACEPARENT.match(tp.strip().lower())
        if m and m.group(1) != "ff" and set(m.group(2)) != {"0"} and set(m.group(3)) != {"0"}:
            return m.group(2), m.group(3), "w3c"
    tid, sid = detail.get("b3_trace"), detail.get("b3_span")
    if not isinstance(tid, str) or not isinstance(sid, str):
        single = detail.get("b3")
        if isinstance(single, str) and single.count("-") >= 1:
            tid, sid = single.split("-")[:2]
        else:
            return "", "", ""
    tid, sid = tid.strip().lower(), sid.strip().lower()
    if len(tid) == 16:
        tid = "0" * 16 + tid
    if _HEX32.match(tid) and _HEX16.match(sid) and set(tid) != {"0"}:
        return tid, sid, "b3"
    return "", "", ""


def headers_of(detail: dict[str, Any], prefix: str) -> dict[str, str]:
    """The logged headers with `prefix` (`req:`/`resp:`), without nulls and REDACTED names."""
    out: dict[str, str] = {}
    for k, v in detail.items():
        if k.startswith(prefix) and isinstance(v, str):
            name = k[len(prefix):]
            if name not in REDACTED and len(out) < MAX_HEADERS:
                out[name[:64]] = v[:MAX_HEADER_VALUE]
    return out


# --- the record ------------------------------------------------------------------------------

Short = Annotated[str, msgspec.Meta(max_length=256)]
Long = Annotated[str, msgspec.Meta(max_length=4096)]
Id = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
NonNeg = Annotated[int, msgspec.Meta(ge=0, le=(1 << 53) - 1)]
Rate = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Headers = Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=MAX_HEADER_VALUE)]],
                    msgspec.Meta(max_length=MAX_HEADERS)]


class DetailRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One kept request. The collector fills the request part; the node agent the key part (the
    same values as the aggregated record the request was counted in) and the interval."""

    # --- interval and key (node agent) -------------------------------------------------------
    start_time: NonNeg = 0  # the aggregated record's interval, epoch seconds
    end_time: NonNeg = 0
    host: Short = ""
    src_name_aggr: Short = "-"
    src_namespace: Short = "-"
    src_type: Short = "-"
    dest_name_aggr: Short = "-"
    dest_namespace: Short = "-"
    dest_type: Short = "-"
    dest_service_name: Short = ""
    dest_service_namespace: Short = ""
    dest_service_port: NonNeg = 0
    url: Long = ""  # the aggregated record's url (templated)
    # --- the request (collector) -------------------------------------------------------------
    time: Short = ""  # Envoy's START_TIME (ISO 8601)
    reason: Short = REASON_SAMPLED  # error | slow | sampled
    sample_rate: Rate = 1
    method: Short = ""
    path: Annotated[str, msgspec.Meta(max_length=MAX_PATH)] = ""  # raw path (no query)
    domain: Short = ""
    response_code: Short = ""
    response_flags: Short = ""
    grpc_status: Short = ""
    protocol: Short = ""
    type: Short = ""
    user_agent: Long = ""
    upstream_host: Short = ""
    duration_us: NonNeg = 0
    bytes_in: NonNeg = 0
    bytes_out: NonNeg = 0
    request_id: Id = ""
    trace_id: Annotated[str, msgspec.Meta(max_length=32)] = ""
    span_id: Annotated[str, msgspec.Meta(max_length=16)] = ""
    trace_format: Short = ""  # w3c | b3 | ""
    request_headers: Headers = msgspec.field(default_factory=dict)
    response_headers: Headers = msgspec.field(default_factory=dict)


FIELDS: Final[tuple[str, ...]] = DetailRecord.__struct_fields__
#: The fields of an aggregated record (contracts/record.py) a drill-down matches.
DRILL_FIELDS: Final[tuple[str, ...]] = (
    "end_time", "host", "src_name_aggr", "src_namespace", "dest_service_name",
    "dest_service_namespace", "url", "method", "response_code", "grpc_status")
#: Namespace fields of a record (the reader's scope applies to each).
NAMESPACE_FIELDS: Final = ("src_namespace", "dest_namespace", "dest_service_namespace")
HEADER_FIELDS: Final = ("request_headers", "response_headers")

_decoder: Final = msgspec.json.Decoder(DetailRecord)
_encoder: Final = msgspec.json.Encoder()


class DetailError(ValueError):
    """A detail record does not match the schema."""


def decode_record(data: bytes | str) -> DetailRecord:
    """Validate one record; REDACTED headers are dropped (never stored)."""
    if len(data) > MAX_RECORD_BYTES:
        raise DetailError(f"detail record over {MAX_RECORD_BYTES} bytes")
    try:
        rec = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DetailError(str(e)) from e
    except UnicodeDecodeError as e:
        raise DetailError(f"invalid UTF-8 in a string: {e.reason}") from e
    for hf in (rec.request_headers, rec.response_headers):
        for k in [k for k in hf if k.lower() in REDACTED]:
            del hf[k]
    return rec


def encode_record(rec: DetailRecord) -> bytes:
    return _encoder.encode(rec)


def encode_records(recs: list[DetailRecord]) -> bytes:
    return b"".join(_encoder.encode(r) + b"\n" for r in recs)
