"""Envoy gRPC Access Log Service (ALS) as a second source of access-log lines.

`entry_to_line()` turns an `HTTPAccessLogEntry` (or a `TCPAccessLogEntry`) into the same
`EnvoyLogLine` the file tail produces, so both sources feed the same batcher:

* type `"http"` (as Calico's ALS path), reporter `destination`;
* duration = downstream start to last byte sent downstream, from the full Duration (seconds and
  nanos; Calico's collector reads only the nanos part, which breaks durations >= 1 s);
* bytes in the file format's direction: `bytes_received` = request body bytes from the client,
  `bytes_sent` = response body bytes to the client (Calico's ALS path swaps them);
* no response (no response code) = 0, as the file log writes it;
* `upstream_service_time` = first byte to the upstream -> first byte back, in ms.

`serve()` starts a grpcio server on a unix socket (`unix:/path`, mode 0660: the owner and the
group, never the world, may send records) or on `host:port` with TLS only (a certificate and
key are required: anyone who can reach a plain TCP port could forge access-log lines).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from l7scope.contracts.envoy_log import REPORTER_DESTINATION, TYPE_ALS_HTTP, TYPE_TCP, EnvoyLogLine

log = logging.getLogger(__name__)

Sink = Callable[[list[EnvoyLogLine]], None]

_VERSIONS = {1: "HTTP/1.0", 2: "HTTP/1.1", 3: "HTTP/2", 4: "HTTP/3"}
# ResponseFlags field -> Envoy's short %RESPONSE_FLAGS% code.
_FLAGS = {
    "failed_local_healthcheck": "LH", "no_healthy_upstream": "UH",
    "upstream_request_timeout": "UT", "local_reset": "LR", "upstream_remote_reset": "UR",
    "upstream_connection_failure": "UF", "upstream_connection_termination": "UC",
    "upstream_overflow": "UO", "no_route_found": "NR", "delay_injected": "DI",
    "fault_injected": "FI", "rate_limited": "RL", "rate_limit_service_error": "RLSE",
    "downstream_connection_termination": "DC", "upstream_retry_limit_exceeded": "URX",
    "stream_idle_timeout": "SI", "invalid_envoy_request_headers": "IH",
    "downstream_protocol_error": "DPE", "upstream_max_stream_duration_reached": "UMSDR",
    "response_from_cache_filter": "RFCF", "no_filter_config_found": "NFCF",
    "duration_timeout": "DT", "upstream_protocol_error": "UPE", "no_cluster_found": "NC",
    "overload_manager": "OM", "dns_resolution_failure": "DF", "downstream_remote_reset": "DR",
}


def _addr(a: Any) -> str | None:
    sa = a.socket_address
    if not sa.address:
        return None
    host = f"[{sa.address}]" if ":" in sa.address else sa.address
    return f"{host}:{sa.port_value}"


def _us(d: Any) -> int:
    return int(d.seconds) * 1_000_000 + int(d.nanos) // 1000


def _start_time(cp: Any) -> str | None:
    if not cp.HasField("start_time"):
        return None
    ts = cp.start_time
    t = datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{t}.{ts.nanos // 1_000_000:03d}Z"


def _flags(cp: Any) -> str:
    rf = cp.response_flags
    codes = [code for name, code in _FLAGS.items() if getattr(rf, name, False)]
    return ",".join(codes) if codes else "-"


def _duration_us(cp: Any) -> int | None:
    if cp.HasField("time_to_last_downstream_tx_byte"):
        return _us(cp.time_to_last_downstream_tx_byte)
    if cp.HasField("duration"):
        return _us(cp.duration)
    return None


def _common(cp: Any) -> dict[str, Any]:
    us = _duration_us(cp)
    out: dict[str, Any] = {
        "reporter": REPORTER_DESTINATION,
        "start_time": _start_time(cp),
        "duration": us // 1000 if us is not None else None,
        "duration_us": us,
        "response_flags": _flags(cp),
        "downstream_remote_address": _addr(cp.downstream_remote_address),
        "downstream_local_address": _addr(cp.downstream_local_address),
        "upstream_host": _addr(cp.upstream_remote_address),
        "upstream_local_address": _addr(cp.upstream_local_address),
        "requested_server_name": cp.tls_properties.tls_sni_hostname or None,
    }
    if cp.HasField("time_to_first_upstream_tx_byte") and cp.HasField(
            "time_to_first_upstream_rx_byte"):
        ust = _us(cp.time_to_first_upstream_rx_byte) - _us(cp.time_to_first_upstream_tx_byte)
        out["upstream_service_time"] = str(max(ust, 0) // 1000)
    return out


def _grpc_status(resp: Any) -> int | None:
    for headers in (resp.response_trailers, resp.response_headers):
        v = headers.get("grpc-status")
        if v is not None:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def entry_to_line(e: accesslog_pb2.HTTPAccessLogEntry) -> EnvoyLogLine:
    """One ALS HTTP entry as an access-log line (see the module docstring for the rules)."""
    req, resp = e.request, e.response
    method = base_pb2.RequestMethod.Name(req.request_method) if req.request_method else None
    return EnvoyLogLine(
        **_common(e.common_properties),
        type=TYPE_ALS_HTTP,
        protocol=_VERSIONS.get(e.protocol_version),
        response_code=resp.response_code.value if resp.HasField("response_code") else 0,
        bytes_received=int(req.request_body_bytes),
        bytes_sent=int(resp.response_body_bytes),
        user_agent=req.user_agent or None,
        request_path=req.original_path or req.path or None,
        request_method=method,
        request_id=req.request_id or None,
        domain=req.authority or None,
        grpc_status=_grpc_status(resp),
    )


def tcp_entry_to_line(e: accesslog_pb2.TCPAccessLogEntry) -> EnvoyLogLine:
    """One ALS TCP entry as a `tcp` access-log line."""
    cp = e.connection_properties
    return EnvoyLogLine(**_common(e.common_properties), type=TYPE_TCP,
                        bytes_received=int(cp.received_bytes), bytes_sent=int(cp.sent_bytes))


@dataclass
class AlsCounters:
    streams: int = 0
    entries: int = 0
    bad_entries: int = 0


def convert(entries: Iterable[Any], fn: Callable[[Any], EnvoyLogLine],
            counters: AlsCounters) -> list[EnvoyLogLine]:
    out: list[EnvoyLogLine] = []
    for e in entries:
        try:
            out.append(fn(e))
        except Exception as err:  # one odd entry must not end the stream
            counters.bad_entries += 1
            log.debug("bad ALS entry: %r", err)
    counters.entries += len(out)
    return out


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, sink: Sink, counters: AlsCounters | None = None) -> None:
        self.sink = sink
        self.counters = counters or AlsCounters()

    def StreamAccessLogs(self, request_iterator: Iterator[Any],
                         context: grpc.ServicerContext) -> Any:
        self.counters.streams += 1
        for msg in request_iterator:
            lines = convert(msg.http_logs.log_entry, entry_to_line, self.counters)
            lines += convert(msg.tcp_logs.log_entry, tcp_entry_to_line, self.counters)
            if lines:
                self.sink(lines)
        return als_pb2.StreamAccessLogsResponse()


SOCKET_MODE = 0o660


class AlsConfigError(ValueError):
    """The listen address and TLS settings do not fit together."""


def check_listen(listen: str, tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None
                 ) -> None:
    """Refuse plain TCP: `host:port` needs a TLS certificate and key."""
    if _unix_path(listen) is None and tls is None:
        raise AlsConfigError(
            f"ALS on TCP ({listen}) needs TLS: give a certificate and key (--als-tls-cert, "
            "--als-tls-key), or listen on a unix socket (unix:/path) for an Envoy on this node")


def serve(listen: str, sink: Sink, counters: AlsCounters | None = None, workers: int = 4,
          tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
          ) -> tuple[grpc.Server, AccessLogService]:
    """Start the ALS server on `unix:/path` (or `unix:///path`), or on `host:port` with
    `tls=(cert.pem, key.pem)` (see the module doc)."""
    check_listen(listen, tls)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    svc = AccessLogService(sink, counters)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(svc, server)
    path = _unix_path(listen)
    if path:
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from an earlier run
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        old = os.umask(0o117)  # created 0660: no moment in which the world may connect
        try:
            bound = server.add_insecure_port(listen)
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
    else:
        assert tls is not None
        cert, key = (open(f, "rb").read() for f in tls)  # noqa: SIM115 - read at once
        bound = server.add_secure_port(listen, grpc.ssl_server_credentials([(key, cert)]))
    if bound == 0 and not path:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    log.info("gRPC Access Log Service listening on %s%s", listen, " (TLS)" if tls and not path else "")
    return server, svc


def _unix_path(listen: str) -> str | None:
    if not listen.startswith("unix:"):
        return None
    p = listen[len("unix:"):]
    return "/" + p.lstrip("/") if p.startswith("//") else p
