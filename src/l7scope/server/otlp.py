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
The resource carries `service.name = l7scope-server` and the configured extra attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from l7scope import __version__
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
