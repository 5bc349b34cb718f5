"""Kept requests as OTLP spans (server/otlp.py): which carry a span, ids, status, times."""

from __future__ import annotations

from l7scope.contracts.detail import DetailRecord
from l7scope.server import otlp


def rec(**kw: object) -> DetailRecord:
    base: dict[str, object] = {"method": "GET", "url": "web/api/{int}", "path": "/api/3",
                               "response_code": "200", "time": "2026-12-04T20:00:00Z",
                               "duration_us": 1000, "end_time": 1_780_000_000, "request_id": "r",
                               "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    return DetailRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_only_valid_trace_ids_make_spans() -> None:
    for bad in ("", "00000000000000000000000000000000", "xyz", "4bf92f3577b34da6a3ce929d0e0e47361"):
        assert otlp.span(rec(trace_id=bad)) is None, bad
    assert otlp.traces_request([rec(trace_id="")], otlp.resource({})) is None
    sp = otlp.span(rec(span_id="not-hex"))
    assert sp is not None and sp.parent_span_id == b""  # a root span then


def test_status_follows_the_client_span_rules() -> None:
    code = {c: otlp.span(rec(response_code=c)).status.code for c in ("200", "302", "404", "503", "")}  # type: ignore[union-attr]
    unset, error = 0, 2
    assert code == {"200": unset, "302": unset, "404": error, "503": error, "": error}
    g = otlp.span(rec(grpc_status="14", protocol="HTTP/2"))
    assert g is not None and g.status.code == error and g.status.message == "200 grpc-status 14"
    assert otlp.attributes(g.attributes)["rpc.grpc.status_code"] == 14
    assert otlp.span(rec(grpc_status="0")).status.code == unset  # type: ignore[union-attr]


def test_span_id_is_stable_and_times_fall_back_to_the_interval() -> None:
    a, b = otlp.span(rec()), otlp.span(rec())
    assert a is not None and b is not None and a.span_id == b.span_id and len(a.span_id) == 8
    assert otlp.span(rec(request_id="other")).span_id != a.span_id  # type: ignore[union-attr]
    sp = otlp.span(rec(time="", duration_us=2_000_000))
    assert sp is not None
    assert (sp.start_time_unix_nano, sp.end_time_unix_nano) == (
        1_780_000_000 * 10**9 - 2 * 10**9, 1_780_000_000 * 10**9)
