"""ALS entries become the same access-log lines as the file; a real gRPC stream feeds a sink."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from pydantic import ValidationError

from l7scope.collector.als import AlsConfigError, entry_to_line, serve, tcp_entry_to_line
from l7scope.collector.batch import Batcher
from l7scope.collector.config import CollectorSettings
from l7scope.contracts.envoy_log import EnvoyLogLine
from l7scope.testing.als_entries import addr, dur, http_entry


def test_http_entry_conversion_full_durations_and_file_direction_bytes() -> None:
    ln = entry_to_line(http_entry())
    assert ln.reporter == "destination" and ln.type == "http" and ln.protocol == "HTTP/2"
    assert ln.downstream_remote_address == "10.0.0.7:41000"
    assert ln.downstream_local_address == "10.96.0.20:8080"
    assert ln.upstream_host == "10.244.1.9:8080"
    assert (ln.duration, ln.duration_us) == (1250, 1_250_000)  # > 1 s: seconds count too
    assert ln.upstream_service_time == "1200"
    assert (ln.bytes_received, ln.bytes_sent) == (33, 77)  # request body in, response body out
    assert (ln.request_method, ln.request_path, ln.domain, ln.user_agent, ln.request_id) == (
        "POST", "/pkg.Svc/Call", "svc.ns:8080", "grpc-python/1.85", "abc")
    assert ln.response_code == 200 and ln.grpc_status == 14 and ln.response_flags == "-"
    assert ln.start_time == "2026-09-21T14:13:20.123Z"


def test_missing_response_and_flags_and_ipv6() -> None:
    e = http_entry(code=None, grpc_status=None)
    e.common_properties.response_flags.upstream_connection_failure = True
    e.common_properties.response_flags.no_healthy_upstream = True
    e.common_properties.downstream_remote_address.CopyFrom(addr("fd00::7", 5000))
    e.request.original_path = "/orig?x=1"
    ln = entry_to_line(e)
    assert ln.response_code == 0 and ln.grpc_status is None
    assert ln.response_flags == "UH,UF"
    assert ln.downstream_remote_address == "[fd00::7]:5000"
    assert ln.request_path == "/orig?x=1"


def test_tcp_entry() -> None:
    e = accesslog_pb2.TCPAccessLogEntry(
        common_properties=accesslog_pb2.AccessLogCommon(
            downstream_remote_address=addr("10.0.0.7", 41001),
            downstream_local_address=addr("10.96.0.21", 5432), duration=dur(2_500_000)),
        connection_properties=accesslog_pb2.ConnectionProperties(received_bytes=10, sent_bytes=20))
    e.common_properties.tls_properties.tls_sni_hostname = "db.example"
    ln = tcp_entry_to_line(e)
    assert (ln.type, ln.duration, ln.bytes_received, ln.bytes_sent, ln.requested_server_name) == (
        "tcp", 2500, 10, 20, "db.example")


def test_converted_entries_batch_like_file_lines() -> None:
    b = Batcher()
    b.add([entry_to_line(http_entry()), entry_to_line(http_entry(grpc_status="0"))])
    res = b.flush()
    (m,) = res.messages
    assert (m.src_ip, m.src_port, m.dst_ip, m.dst_port) == ("10.0.0.7", 41000, "10.96.0.20", 8080)
    assert sorted(hd.grpc_status for hd in m.http_data) == ["0", "14"]
    assert all(hd.type == "http" and hd.duration == 1250 and hd.latency == 50
               for hd in m.http_data)


def test_real_als_stream_over_unix_socket(tmp_path: Path) -> None:
    got: list[EnvoyLogLine] = []
    lock = threading.Lock()

    def sink(lines: list[EnvoyLogLine]) -> None:
        with lock:
            got.extend(lines)

    listen = f"unix:{tmp_path}/als.sock"
    server, svc = serve(listen, sink)
    try:
        channel = grpc.insecure_channel(f"unix://{tmp_path}/als.sock")
        stub = als_pb2_grpc.AccessLogServiceStub(channel)

        def messages():  # type: ignore[no-untyped-def]
            for i in range(3):
                m = als_pb2.StreamAccessLogsMessage()
                if i == 0:
                    m.identifier.log_name = "node-1"
                m.http_logs.log_entry.extend(http_entry(path=f"/p{i}/{j}") for j in range(100))
                yield m

        stub.StreamAccessLogs(messages(), timeout=10)
        deadline = time.monotonic() + 5
        while len(got) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(got) == 300 and svc.counters.entries == 300 and svc.counters.bad_entries == 0
        assert {ln.request_path for ln in got} == {f"/p{i}/{j}" for i in range(3) for j in range(100)}
        assert (tmp_path / "als.sock").stat().st_mode & 0o777 == 0o660  # never world-writable
        channel.close()
    finally:
        server.stop(grace=0).wait()


def test_tcp_als_without_tls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AlsConfigError, match="needs TLS"):
        serve("127.0.0.1:0", lambda lines: None)
    with pytest.raises(ValidationError, match="needs TLS"):
        CollectorSettings(als_listen="0.0.0.0:9000")
    with pytest.raises(ValidationError, match="go together"):
        CollectorSettings(als_listen="0.0.0.0:9000", als_tls_cert=tmp_path / "c.pem")
    assert CollectorSettings(als_listen=f"unix:{tmp_path}/a.sock").als_tls is None


def test_tcp_als_with_tls_takes_only_tls_clients(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=als.test",
                    "-addext", "subjectAltName=DNS:als.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got: list[EnvoyLogLine] = []
    settings = CollectorSettings(als_listen=f"127.0.0.1:{port}", als_tls_cert=cert, als_tls_key=key)
    server, svc = serve(str(settings.als_listen), got.extend, tls=settings.als_tls)
    try:
        m = als_pb2.StreamAccessLogsMessage()
        m.http_logs.log_entry.extend(http_entry(path=f"/t/{j}") for j in range(5))
        plain = grpc.insecure_channel(f"127.0.0.1:{port}")
        with pytest.raises(grpc.RpcError):
            als_pb2_grpc.AccessLogServiceStub(plain).StreamAccessLogs(iter([m]), timeout=3)
        plain.close()
        assert got == []
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        tls = grpc.secure_channel(f"127.0.0.1:{port}", creds,
                                  options=[("grpc.ssl_target_name_override", "als.test")])
        als_pb2_grpc.AccessLogServiceStub(tls).StreamAccessLogs(iter([m]), timeout=10)
        tls.close()
        assert sorted(ln.request_path or "" for ln in got) == [f"/t/{j}" for j in range(5)]
        assert svc.counters.entries == 5
    finally:
        server.stop(grace=0).wait()
