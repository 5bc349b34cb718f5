"""OTLP export of stored records (server/otlp.py maps them): a bounded queue and one sender thread.

The server hands each stored batch (after the store accepted it, so a duplicate batch is never
exported twice) to `OtlpExporter.submit`. The queue is bounded in records; a batch that does not
fit is dropped and counted (`otlp_records_dropped`), never blocking ingest. The sender exports
logs and then the batch's per-edge metric points, over gRPC (`LogsService/Export`,
`MetricsService/Export`) or HTTP (`POST /v1/logs`, `/v1/metrics`, protobuf bodies), and the kept
requests (request detail) that carry a trace id as spans (`TraceService/Export`, `/v1/traces`;
`submit_details`, in the same bounded queue, counted as `otlp_spans_*`), and retries
what OTLP calls retryable (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED; HTTP
429, 502, 503, 504, and connection errors) with exponential backoff for up to `retry_s`; then
the batch is dropped and counted. Counters land in server.metrics (`/metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from l7scope.contracts.detail import DetailRecord
from l7scope.server import otlp
from l7scope.server.columns import ColumnBatch, batch_len
from l7scope.server.config import OtlpConfig
from l7scope.server.metrics import EdgeCounts, Metrics

log = logging.getLogger(__name__)


class Retryable(Exception):
    pass


class Transport(Protocol):
    def logs(self, body: bytes) -> None: ...
    def metrics(self, body: bytes) -> None: ...
    def traces(self, body: bytes) -> None: ...
    def close(self) -> None: ...


class GrpcTransport:
    _RETRY = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED")

    def __init__(self, cfg: OtlpConfig) -> None:
        import grpc

        self._grpc = grpc
        if cfg.insecure:
            self._channel = grpc.insecure_channel(cfg.endpoint)
        else:
            ca = cfg.ca_file.read_bytes() if cfg.ca_file else None
            self._channel = grpc.secure_channel(cfg.endpoint, grpc.ssl_channel_credentials(ca))
        self._meta = tuple((k.lower(), v) for k, v in cfg.headers.items())
        self._timeout = cfg.timeout_s
        ident = lambda b: b  # noqa: E731  (bodies are serialised by the caller)
        self._logs = self._channel.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=ident, response_deserializer=ident)
        self._metrics = self._channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request_serializer=ident, response_deserializer=ident)
        self._traces = self._channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=ident, response_deserializer=ident)

    def _call(self, fn: Any, body: bytes) -> None:
        try:
            fn(body, timeout=self._timeout, metadata=self._meta)
        except self._grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            if code in self._RETRY:
                raise Retryable(f"gRPC {code}") from None
            raise RuntimeError(f"gRPC {code}: {e.details() if hasattr(e, 'details') else e}") from None

    def logs(self, body: bytes) -> None:
        self._call(self._logs, body)

    def metrics(self, body: bytes) -> None:
        self._call(self._metrics, body)

    def traces(self, body: bytes) -> None:
        self._call(self._traces, body)

    def close(self) -> None:
        self._channel.close()


class HttpTransport:
    _RETRY = (429, 502, 503, 504)

    def __init__(self, cfg: OtlpConfig) -> None:
        import httpx

        self._httpx = httpx
        verify: Any = str(cfg.ca_file) if cfg.ca_file else True
        self._client = httpx.Client(base_url=cfg.endpoint.rstrip("/"), timeout=cfg.timeout_s,
                                    verify=verify, headers={**cfg.headers,
                                                            "Content-Type": "application/x-protobuf"})

    def _post(self, path: str, body: bytes) -> None:
        try:
            r = self._client.post(path, content=body)
        except self._httpx.TransportError as e:
            raise Retryable(f"{type(e).__name__}: {e}") from None
        if r.status_code in self._RETRY:
            raise Retryable(f"HTTP {r.status_code}")
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")

    def logs(self, body: bytes) -> None:
        self._post("/v1/logs", body)

    def metrics(self, body: bytes) -> None:
        self._post("/v1/metrics", body)

    def traces(self, body: bytes) -> None:
        self._post("/v1/traces", body)

    def close(self) -> None:
        self._client.close()


class OtlpExporter:
    def __init__(self, cfg: OtlpConfig, metrics: Metrics, *,
                 transport: Transport | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self._transport = transport
        self._resource = otlp.resource(cfg.resource)
        # (stored records and their edges, or kept requests; when stored)
        self._queue: deque[tuple[ColumnBatch | list[DetailRecord], EdgeCounts | None, float]] = deque()
        self._queued_records = 0
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread: threading.Thread | None = None

    def submit(self, cols: ColumnBatch, edges: EdgeCounts) -> bool:
        """Queue a stored batch; False (and counted) when the queue has no room for it."""
        n = batch_len(cols)
        if n == 0:
            return True
        with self._cv:
            if self._queued_records + n > self.cfg.queue_records:
                self.metrics.inc("otlp_records_dropped", n)
                return False
            self._queue.append((cols, edges, self.clock()))
            self._queued_records += n
            self._cv.notify()
        return True

    def submit_details(self, details: list[DetailRecord]) -> bool:
        """Queue stored kept requests; those with a trace id are exported as spans. False (and
        counted in `otlp_spans_dropped`) when the queue has no room."""
        traced = [d for d in details if d.trace_id]
        if not traced:
            return True
        with self._cv:
            if self._queued_records + len(traced) > self.cfg.queue_records:
                self.metrics.inc("otlp_spans_dropped", len(traced))
                return False
            self._queue.append((traced, None, self.clock()))
            self._queued_records += len(traced)
            self._cv.notify()
        return True

    def start(self) -> None:
        if self._transport is None:
            self._transport = GrpcTransport(self.cfg) if self.cfg.protocol == "grpc" else HttpTransport(self.cfg)
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Export what is queued for up to `timeout` seconds, then stop (the rest is counted)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue and time.monotonic() < deadline:
                self._cv.wait(0.05)
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        with self._cv:
            left_spans = sum(len(i) for i, _, _ in self._queue if isinstance(i, list))
            left = self._queued_records - left_spans
            self._queue.clear()
            self._queued_records = 0
        if left:
            self.metrics.inc("otlp_records_dropped", left)
        if left_spans:
            self.metrics.inc("otlp_spans_dropped", left_spans)
        if self._transport is not None:
            self._transport.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._cv:
                while not self._queue and not self._stopping.is_set():
                    self._cv.wait(1.0)
                if self._stopping.is_set():
                    return
                item, edges, stored_at = self._queue[0]
            if isinstance(item, list):  # kept requests
                n = len(item)
                ok = self._export_spans(item)
                counter = "otlp_spans_exported" if ok else "otlp_spans_dropped"
            else:
                assert edges is not None
                n = batch_len(item)
                ok = self._export(item, edges, stored_at)
                counter = "otlp_records_exported" if ok else "otlp_records_dropped"
            with self._cv:
                self._queue.popleft()
                self._queued_records -= n
                self._cv.notify_all()
            self.metrics.inc(counter, n)

    def _export(self, cols: ColumnBatch, edges: EdgeCounts, stored_at: float) -> bool:
        assert self._transport is not None
        logs = otlp.logs_request(cols, stored_at, self._resource).SerializeToString()
        if not self._with_retry(self._transport.logs, logs):
            return False
        start = min(cols["start_time"], default=int(stored_at))
        points = otlp.metrics_request(edges, start, stored_at, self._resource).SerializeToString()
        self._with_retry(self._transport.metrics, points)  # the logs went: the records count as exported
        return True

    def _export_spans(self, details: list[DetailRecord]) -> bool:
        assert self._transport is not None
        req = otlp.traces_request(details, self._resource)
        return req is None or self._with_retry(self._transport.traces, req.SerializeToString())

    def _with_retry(self, send: Callable[[bytes], None], body: bytes) -> bool:
        deadline = time.monotonic() + self.cfg.retry_s
        delay = 0.25
        while True:
            try:
                send(body)
                return True
            except Retryable as e:
                self.metrics.inc("otlp_export_retries")
                if time.monotonic() + delay > deadline or self._stopping.is_set():
                    log.warning("OTLP export to %s gave up after retries: %s", self.cfg.endpoint, e)
                    self.metrics.inc("otlp_export_failures")
                    return False
                self._sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as e:  # not retryable: a bad request or a refused credential
                log.warning("OTLP export to %s failed: %s", self.cfg.endpoint, e)
                self.metrics.inc("otlp_export_failures")
                return False
