"""The OTLP exporter's queue and retry logic (server/otlp_export.py) with a fake transport;
the real gRPC and HTTP paths are tests/integration/test_server_otlp.py."""

from __future__ import annotations

import time

from l7scope.server.config import OtlpConfig
from l7scope.server.metrics import Metrics
from l7scope.server.otlp_export import OtlpExporter, Retryable


def _cols(n: int) -> dict[str, list[object]]:
    from l7scope.contracts.record import L7Record
    from l7scope.server.columns import to_columns

    return to_columns([L7Record(start_time=1, end_time=2, count=1, method="GET", url="/x",
                                response_code="200") for _ in range(n)])


class Fake:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.log_bodies: list[bytes] = []
        self.metric_bodies: list[bytes] = []

    def logs(self, body: bytes) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.log_bodies.append(body)

    def metrics(self, body: bytes) -> None:
        self.metric_bodies.append(body)

    def close(self) -> None:
        pass


def _run(ex: OtlpExporter, m: Metrics, want: dict[str, int]) -> None:
    ex.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(m.counters[k] < v for k, v in want.items()):
        time.sleep(0.01)
    ex.stop(1.0)
    assert {k: m.counters[k] for k in want} == want


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    m = Metrics()
    ex = OtlpExporter(OtlpConfig(endpoint="x:1", queue_records=10), m, transport=Fake([]))
    assert ex.submit(_cols(6), ({}, 0, {}))
    assert not ex.submit(_cols(6), ({}, 0, {}))  # 12 > 10: not queued
    assert ex.submit(_cols(4), ({}, 0, {}))
    _run(ex, m, {"otlp_records_exported": 10, "otlp_records_dropped": 6})


def test_retryable_errors_are_retried_then_given_up_and_counted() -> None:
    m = Metrics()
    fake = Fake([Retryable("UNAVAILABLE")] * 2)
    ex = OtlpExporter(OtlpConfig(endpoint="x:1", retry_s=5), m, transport=fake, sleep=lambda s: None)
    ex.submit(_cols(3), ({}, 0, {}))
    _run(ex, m, {"otlp_records_exported": 3, "otlp_export_retries": 2, "otlp_export_failures": 0})
    assert len(fake.log_bodies) == 1 and len(fake.metric_bodies) == 1

    m = Metrics()
    fake = Fake([Retryable("UNAVAILABLE")] * 100)
    ex = OtlpExporter(OtlpConfig(endpoint="x:1", retry_s=0), m, transport=fake, sleep=lambda s: None)
    ex.submit(_cols(3), ({}, 0, {}))
    _run(ex, m, {"otlp_records_dropped": 3, "otlp_export_failures": 1, "otlp_records_exported": 0})


def test_a_refused_export_is_not_retried() -> None:
    m = Metrics()
    fake = Fake([RuntimeError("gRPC UNAUTHENTICATED")])
    ex = OtlpExporter(OtlpConfig(endpoint="x:1"), m, transport=fake, sleep=lambda s: None)
    ex.submit(_cols(2), ({}, 0, {}))
    ex.submit(_cols(5), ({}, 0, {}))
    _run(ex, m, {"otlp_records_dropped": 2, "otlp_records_exported": 5, "otlp_export_failures": 1,
                 "otlp_export_retries": 0})
