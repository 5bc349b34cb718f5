"""Stored records as OpenTelemetry (OTLP) logs and per-edge metrics: the mapping, pure.

The wire format is OpenTelemetry's own (the `opentelemetry-proto` package owns it); what this
module owns is how an l7scope record maps onto it (docs/otlp.md):
- one LogRecord per stored record: `time_unix_nano` = the record's `end_time`, observed time =
  when the server stored it, severity from the status class (5xx and no response ERROR, 4xx WARN,
  else INFO), body `"<method> <url> <code> x<count>"`, and every record field as an
  attribute `l7scope.<field>` (integers as ints), plus the semantic-convention names
  `http.request.method`, `http.response.status_code` (when the code is numeric), `url.original`,
  `user_agent.original`, `k8s.namespace.name` (the destination's);
- one delta Sum `l7scope.requests` data point per namespace-level edge and status class of the
  batch (the same edges as the server's `/metrics`), with `source`, `target` and `class`.
- one Span per kept request (request detail, contracts/detail.py) that carries a trace id: the
  call as l7scope saw it leave the caller (kind CLIENT), in the caller's trace (`trace_id`; a
  64-bit B3 id is zero-padded to 128 bits), a child of the caller's span (`parent_span_id` = the
  request's span id), with its own span id (a hash of the request's identity, so a re-export is
  the same span), the request's start and duration, status ERROR for 4xx and 5xx (a client span),
  no response or a gRPC status other than 0, and the semantic-convention HTTP attributes plus `l7scope.*`.
The resource carries `service.name = l7scope-server` and the configured extra attributes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from l7scope import __version__
from l7scope.contracts.detail import DetailRecord
from l7scope.contracts.fields import COLUMNS, HIST_FIELD
from l7scope.server.columns import ColumnBatch, batch_len
from l7scope.server.metrics import EdgeCounts

SERVICE_NAME: Final = "l7scope-server"
SCOPE: Final = InstrumentationScope(name="l7scope", version=__version__)
ATTR_PREFIX: Final = "l7scope."
REQUESTS_METRIC: Final = "l7scope.requests"
_NS: Final = 1_000_000_000
_TEXT: Final = tuple(c for c, k in COLUMNS.items() if k == "text")
_INTS: Final = tuple(c for c, k in COLUMNS.items() if k == "int")
#: Semantic-convention attribute -> record field (string values; the status code is an int).
_SEMCONV: Final = (("http.request.method", "method"), ("url.original", "url"),
                   ("user_agent.original", "user_agent"), ("k8s.namespace.name", "dest_namespace"))
_ERROR: Final = logs_pb2.SeverityNumber.SEVERITY_NUMBER_ERROR
_WARN: Final = logs_pb2.SeverityNumber.SEVERITY_NUMBER_WARN
_INFO: Final = logs_pb2.SeverityNumber.SEVERITY_NUMBER_INFO


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def resource(extra: Mapping[str, str]) -> Resource:
    attrs = {"service.name": SERVICE_NAME, "service.version": __version__, **extra}
    return Resource(attributes=[_kv(k, v) for k, v in attrs.items()])


def severity(code: str) -> tuple[logs_pb2.SeverityNumber.ValueType, str]:
    if len(code) == 3 and code[0] == "4":
        return _WARN, "WARN"
    if len(code) == 3 and code[0] in "123":
        return _INFO, "INFO"
    return _ERROR, "ERROR"  # 5xx, and requests with no response


def _status_code(code: str) -> int | None:
    return int(code) if len(code) == 3 and code.isdigit() else None


def log_records(cols: ColumnBatch, observed_s: float) -> list[logs_pb2.LogRecord]:
    """One LogRecord per record of the batch (server.columns.ColumnBatch)."""
    observed = int(observed_s * _NS)
    out: list[logs_pb2.LogRecord] = []
    for i in range(batch_len(cols)):
        attrs = [_kv(ATTR_PREFIX + c, cols[c][i]) for c in _TEXT]
        attrs += [_kv(ATTR_PREFIX + c, int(cols[c][i])) for c in _INTS]
        hist: dict[str, int] = cols[HIST_FIELD][i]
        if hist:
            attrs.append(KeyValue(key=ATTR_PREFIX + HIST_FIELD, value=AnyValue(
                kvlist_value=KeyValueList(values=[_kv(k, int(v)) for k, v in hist.items()]))))
        attrs += [_kv(name, cols[field][i]) for name, field in _SEMCONV]
        code = str(cols["response_code"][i])
        status = _status_code(code)
        if status is not None:
            attrs.append(_kv("http.response.status_code", status))
        number, text = severity(code)
        body = f'{cols["method"][i]} {cols["url"][i]} {code} x{cols["count"][i]}'
        out.append(logs_pb2.LogRecord(
            time_unix_nano=int(cols["end_time"][i]) * _NS, observed_time_unix_nano=observed,
            severity_number=number, severity_text=text, body=AnyValue(string_value=body),
            attributes=attrs))
    return out


def logs_request(cols: ColumnBatch, observed_s: float, res: Resource) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=res, scope_logs=[logs_pb2.ScopeLogs(scope=SCOPE,
                                                      log_records=log_records(cols, observed_s))])])


def metrics_request(edges: EdgeCounts, start_s: float, end_s: float,
                    res: Resource) -> ExportMetricsServiceRequest:
    """The batch's requests per namespace-level edge and class as one delta Sum."""
    local = edges[0]
    points = [metrics_pb2.NumberDataPoint(
        start_time_unix_nano=int(start_s * _NS), time_unix_nano=int(end_s * _NS), as_int=n,
        attributes=[_kv("source", s), _kv("target", t), _kv("class", k)])
        for (s, t, k), n in sorted(local.items())]
    metric = metrics_pb2.Metric(
        name=REQUESTS_METRIC, unit="{request}",
        description="Requests in stored records, by namespace-level edge and status class.",
        sum=metrics_pb2.Sum(data_points=points, is_monotonic=True,
                            aggregation_temporality=metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA))
    return ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=res, scope_metrics=[metrics_pb2.ScopeMetrics(scope=SCOPE, metrics=[metric])])])


def attributes(kvs: Any) -> dict[str, Any]:
    """KeyValues back to a dict (for tests and debugging): str, int or nested dict values."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = attributes(v.kvlist_value.values) if kind == "kvlist_value" else getattr(v, kind)
    return out


_HEX: Final = re.compile(r"^[0-9a-f]+$")
#: span attribute -> DetailRecord field (strings, when not empty)
_SPAN_TEXT: Final = (("http.request.method", "method"), ("url.path", "path"),
                     ("server.address", "domain"), ("user_agent.original", "user_agent"),
                     ("network.peer.address", "upstream_host"))
_SPAN_L7: Final = ("request_id", "reason", "response_flags", "protocol", "host", "src_namespace",
                   "src_name_aggr", "dest_namespace", "dest_name_aggr", "dest_service_namespace",
                   "dest_service_name", "url", "trace_format")


def _hex_id(value: str, width: int) -> bytes | None:
    """A lower-case hex id left-padded to `width` hex digits, as bytes; None if not one (or all
    zero, which OTLP calls invalid)."""
    v = value.lower()
    if not v or len(v) > width or not _HEX.match(v) or set(v) == {"0"}:
        return None
    return bytes.fromhex(v.rjust(width, "0"))


def span_id_of(d: DetailRecord) -> bytes:
    """The span's own id: stable for the same request (a retried export is the same span)."""
    key = "\0".join((d.trace_id, d.span_id, d.request_id, d.time, d.host, d.path)).encode()
    sid = hashlib.blake2b(key, digest_size=8).digest()
    return sid if any(sid) else b"\x01" + sid[1:]


def _start_ns(d: DetailRecord) -> int:
    try:
        return int(datetime.fromisoformat(d.time.replace("Z", "+00:00")).timestamp() * _NS)
    except ValueError:  # no START_TIME: end at the record's interval end
        return max(0, d.end_time * _NS - d.duration_us * 1000)


def _failed(d: DetailRecord) -> bool:
    code = d.response_code
    # a CLIENT span: 4xx is an error too (OpenTelemetry's HTTP conventions)
    return not (len(code) == 3 and code.isdigit() and code[0] in "123") or d.grpc_status not in ("", "0")


def span(d: DetailRecord) -> trace_pb2.Span | None:
    """The Span of one kept request, or None when it carries no (valid) trace id."""
    trace_id = _hex_id(d.trace_id, 32)
    if trace_id is None:
        return None
    start = _start_ns(d)
    attrs = [_kv(k, getattr(d, f)) for k, f in _SPAN_TEXT if getattr(d, f)]
    status = _status_code(d.response_code)
    if status is not None:
        attrs.append(_kv("http.response.status_code", status))
    if d.grpc_status.isdigit():
        attrs.append(_kv("rpc.grpc.status_code", int(d.grpc_status)))
    route = d.url.partition("/")[2]
    if route:
        attrs.append(_kv("http.route", "/" + route))
    attrs += [_kv(ATTR_PREFIX + f, getattr(d, f)) for f in _SPAN_L7 if getattr(d, f)]
    attrs += [_kv(ATTR_PREFIX + "sample_rate", int(d.sample_rate)),
              _kv(ATTR_PREFIX + "bytes_in", int(d.bytes_in)),
              _kv(ATTR_PREFIX + "bytes_out", int(d.bytes_out))]
    for side, headers in (("request", d.request_headers), ("response", d.response_headers)):
        attrs += [KeyValue(key=f"http.{side}.header.{name}", value=AnyValue(
            array_value=ArrayValue(values=[AnyValue(string_value=v)]))) for name, v in sorted(headers.items())]
    failed = _failed(d)
    return trace_pb2.Span(
        trace_id=trace_id, span_id=span_id_of(d), parent_span_id=_hex_id(d.span_id, 16) or b"",
        name=f"{d.method} /{route}" if route else (d.method or "request"),
        kind=trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT,
        start_time_unix_nano=start, end_time_unix_nano=start + d.duration_us * 1000,
        attributes=attrs,
        status=trace_pb2.Status(
            code=trace_pb2.Status.StatusCode.STATUS_CODE_ERROR if failed
            else trace_pb2.Status.StatusCode.STATUS_CODE_UNSET,
            message=(f"{d.response_code or 'no response'}"
                     + (f" grpc-status {d.grpc_status}" if d.grpc_status not in ("", "0") else ""))
            if failed else ""))


def traces_request(details: Iterable[DetailRecord], res: Resource) -> ExportTraceServiceRequest | None:
    """The spans of the kept requests that carry a trace id; None when none does."""
    spans = [sp for d in details if (sp := span(d)) is not None]
    if not spans:
        return None
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=res, scope_spans=[trace_pb2.ScopeSpans(scope=SCOPE, spans=spans)])])
