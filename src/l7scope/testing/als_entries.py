"""Hand-built Envoy gRPC Access Log Service entries (HTTPAccessLogEntry) for the collector's tests."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import duration_pb2, timestamp_pb2  # type: ignore[import-untyped]


def addr(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def dur(us: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def http_entry(path: str = "/pkg.Svc/Call", code: int | None = 200, total_us: int = 1_250_000,
               grpc_status: str | None = "14") -> accesslog_pb2.HTTPAccessLogEntry:
    cp = accesslog_pb2.AccessLogCommon(
        downstream_remote_address=addr("10.0.0.7", 41000),
        downstream_local_address=addr("10.96.0.20", 8080),
        upstream_remote_address=addr("10.244.1.9", 8080),
        start_time=timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=123_000_000),
        time_to_first_upstream_tx_byte=dur(1_000),
        time_to_first_upstream_rx_byte=dur(1_201_000),
        time_to_last_downstream_tx_byte=dur(total_us),
    )
    cp.response_flags.upstream_connection_failure = False
    req = accesslog_pb2.HTTPRequestProperties(
        request_method=base_pb2.RequestMethod.Value("POST"), authority="svc.ns:8080",
        path=path, user_agent="grpc-python/1.85", request_id="abc", request_body_bytes=33,
        request_headers_bytes=400)
    resp = accesslog_pb2.HTTPResponseProperties(response_body_bytes=77, response_headers_bytes=90)
    if code is not None:
        resp.response_code.value = code
    if grpc_status is not None:
        resp.response_trailers["grpc-status"] = grpc_status
    return accesslog_pb2.HTTPAccessLogEntry(
        common_properties=cp, request=req, response=resp,
        protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP2)
