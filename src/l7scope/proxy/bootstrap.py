"""Render Envoy's bootstrap for the per-node transparent proxy.

One listener on `listen_address:tproxy_port` with `transparent: true` receives the connections
the TPROXY rules (`l7scope.capture.tproxy`) hand it. Listener filters recover the original
destination (`original_dst`) and sniff the first bytes (`tls_inspector`, `http_inspector`).
Filter chains, in Calico's order (spec section 4):

1. TLS (transport_protocol `tls`): passed through untouched (`tcp_proxy`), log type `tls`,
   the SNI lands in `requested_server_name`.
2. HTTP/1.0 and HTTP/1.1: `http_connection_manager` -> `original_dst` cluster, type %PROTOCOL%.
3. h2c (HTTP/2 with prior knowledge, e.g. gRPC without TLS): HCM -> an HTTP/2 `original_dst`
   cluster, type %PROTOCOL%.
4. anything else: `tcp_proxy`, log type `tcp`.

NodePorts (optional, `nodeport_original_src_mark`): a second listener `l7scope_nodeports` on
`tproxy_port + 1`, same filter chains, takes the NodePort connections of annotated Services
(Calico's `nodeports` listener). Its `original_src` mark carries kube-proxy's masquerade bit, so
kube-proxy masquerades Envoy's upstream connection to `<node>:<nodePort>` as it would the
client's own (the endpoint may sit on another node; its replies must come back here).

Self-loop guard: a connection whose (restored) destination port is the listener's own port was
not TPROXYed to us but dialled directly (`node:16001`); forwarding it to its "original
destination" would make Envoy connect to itself, again and again, until its file descriptors run
out. The inspectors are disabled for that port and the first filter chain (`self_loop_guard`,
no network filters) matches it, so Envoy closes such a connection as soon as it is accepted,
without waiting for data and without a log line.

Every access-log `json_format` comes from `l7scope.contracts.envoy_log.json_format()`; this
module never names a log key. The proxy must be invisible to clients: no retries, no route
timeout, Host, header case and the upstream's `server` header are kept, websockets upgrade,
and the circuit breakers are set far above what a node carries (`max_connections` etc. =
`upstream_limit`) so the proxy does not answer 503 for overload on its own, yet finite: a flood
ends at the limit, not at the process's fd limit. The overload manager caps all downstream
connections at `max_downstream_connections` (the admin endpoint is exempt, so it answers even
then).

`render()` is pure (settings -> dict); `render_yaml()` dumps it for `envoy -c`.
"""

from __future__ import annotations

import ipaddress
import posixpath
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from l7scope.contracts import detail, envoy_log

#: Calico's l7-collector tails this path by default (ENVOY_LOG_PATH); we keep it so a Calico
#: collector and ours read the same file without configuration. In a pod it lives on an emptyDir
#: shared by the Envoy and collector containers.
DEFAULT_ACCESS_LOG_PATH: Final = "/tmp/envoy.log"
DEFAULT_ADMIN_ADDRESS: Final = "127.0.0.1:9901"
#: Envoy's `--file-flush-interval-msec` wherever l7scope starts it (its own default is 10 s: the
#: collector would see a request up to 10 s late, past the freshness target of interval + 1 s)
FILE_FLUSH_INTERVAL_MS: Final = 200
DEFAULT_TPROXY_PORT: Final = 16001

LISTENER_NAME: Final = "l7scope_tproxy"
NODEPORT_LISTENER_NAME: Final = "l7scope_nodeports"
KUBE_PROXY_MASQUERADE_MARK: Final = 0x4000
CLUSTER_HTTP1: Final = "original_dst"
CLUSTER_H2C: Final = "original_dst_h2c"
CLUSTER_ALS: Final = "l7scope_als"

DEFAULT_UPSTREAM_LIMIT: Final = 65_536  # per original_dst cluster: connections, pending, requests
DEFAULT_MAX_DOWNSTREAM_CONNECTIONS: Final = 100_000
GUARD_CHAIN: Final = "self_loop_guard"
ADMIN_SOCKET_MODE: Final = 0o660
_PRESERVE_CASE: Final = {
    "stateful_formatter": {
        "name": "preserve_case",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.header_formatters"
            ".preserve_case.v3.PreserveCaseFormatterConfig"
        },
    }
}


class EnvoySettings(BaseModel):
    """Everything that varies between Envoy deployments. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tproxy_port: int = Field(default=DEFAULT_TPROXY_PORT, ge=1, le=65535,
                             description="port of the transparent listener (TPROXY target)")
    listen_address: str = Field(default="0.0.0.0", description="address of the transparent listener")
    listen_address_v6: str | None = Field(
        default=None, description="an IPv6 address the listeners also bind (`::` for IPv6 and"
                                  " dual-stack nodes; a v6-only socket next to the IPv4 one)")
    access_log_path: str = Field(default=DEFAULT_ACCESS_LOG_PATH, min_length=1,
                                 description="JSON access log file the collector tails")
    admin_address: str = Field(
        default=DEFAULT_ADMIN_ADDRESS,
        description="admin endpoint: unix:/absolute/path (a socket, mode 0660), or ip:port on"
                    " loopback")
    xff_num_trusted_hops: int = Field(default=0, ge=0, le=16)
    use_remote_address: bool = False
    als_socket: str | None = Field(
        default=None, description="unix socket of the collector's gRPC Access Log Service (optional)")
    als_log_name: str = Field(default="l7scope", min_length=1,
                              description="log_name sent on each ALS stream")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300,
                                     description="upstream connect timeout, seconds")
    listener_filters_timeout_s: float = Field(
        default=2.0, gt=0, le=60,
        description="how long the inspectors wait for a client's first bytes; after that the"
                    " connection continues on the plain TCP chain (server-first protocols)")
    node_id: str = Field(default="l7scope", min_length=1, description="Envoy node id")
    original_src_mark: int | None = Field(
        default=None, ge=1, le=0xFFFFFFFF,
        description="keep the client's source IP on upstream connections (listener filter"
                    " original_src) and mark them with this value (tproxyUpstreamConnMark); the"
                    " capture rules route their replies back to Envoy (capture/tproxy.py)")
    nodeport_original_src_mark: int | None = Field(
        default=None, ge=1, le=0xFFFFFFFF,
        description="a second transparent listener on tproxy_port + 1 for the NodePorts the"
                    " capture rules hand it, whose upstream connections keep the client's IP and"
                    " carry this mark: kube-proxy's masquerade bit (0x4000) OR-ed with"
                    " tproxyUpstreamConnMark, as Calico's `nodeports` listener (docs/capture.md)")
    upstream_limit: int = Field(
        default=DEFAULT_UPSTREAM_LIMIT, ge=1, le=10_000_000,
        description="circuit breakers of each original_dst cluster: max_connections,"
                    " max_pending_requests and max_requests")
    max_downstream_connections: int = Field(
        default=DEFAULT_MAX_DOWNSTREAM_CONNECTIONS, ge=1, le=10_000_000,
        description="overload manager: accepted connections over all listeners (admin exempt)")

    detail_log: bool = Field(
        default=True, description="log the `detail` object (trace headers, allowlisted headers)"
                                  " on HTTP chains, for request detail (docs/detail.md)")
    detail_request_headers: tuple[str, ...] = Field(
        default=(), description="request headers logged for request detail (authorization,"
                                " proxy-authorization, cookie, set-cookie are never logged)")
    detail_response_headers: tuple[str, ...] = Field(
        default=(), description="response headers logged for request detail (same exclusions)")

    @field_validator("detail_request_headers", "detail_response_headers")
    @classmethod
    def _detail_headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return detail.allowed_headers(v)

    @field_validator("listen_address")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))

    @field_validator("listen_address_v6")
    @classmethod
    def _ipv6(cls, v: str | None) -> str | None:
        return None if v is None else str(ipaddress.IPv6Address(v))

    @field_validator("admin_address")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v.startswith("unix:"):
            path = v.removeprefix("unix:")
            path = "/" + path.lstrip("/") if path.startswith("//") else path
            if not path.startswith("/") or posixpath.normpath(path) != path:
                raise ValueError(f"admin socket must be an absolute, normalized path, got {v!r}")
            return f"unix:{path}"
        host, port = split_host_port(v)
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"admin address must be a unix socket or on loopback, got {host}")
        return f"{host}:{port}"

    @field_validator("als_socket")
    @classmethod
    def _als_path(cls, v: str | None) -> str | None:
        if v is None:
            return None
        path = v.removeprefix("unix://").removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError(f"als_socket must be an absolute unix socket path, got {v!r}")
        return path

    @property
    def admin_socket(self) -> str | None:
        """The admin socket's path when admin is a unix socket."""
        return self.admin_address.removeprefix("unix:") if self.admin_address.startswith(
            "unix:") else None


def nodeport_mark(upstream_mark: int) -> int:
    """The NodePort listener's `original_src` mark: kube-proxy's masquerade bit and the
    upstream connection mark (the capture rules' connmark save needs the latter)."""
    return upstream_mark | KUBE_PROXY_MASQUERADE_MARK


def split_host_port(addr: str) -> tuple[str, int]:
    """`"127.0.0.1:9901"` -> ("127.0.0.1", 9901); raises ValueError on anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected ip:port, got {addr!r}")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    p = int(port)
    if not 0 < p < 65536:
        raise ValueError(f"port out of range: {p}")
    return host, p


def _seconds(s: float) -> str:
    return f"{s:g}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _file_log(settings: EnvoySettings, log_type: str) -> dict[str, Any]:
    det = (detail.envoy_format(settings.detail_request_headers, settings.detail_response_headers)
           if settings.detail_log and log_type == "%PROTOCOL%" else None)
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": settings.access_log_path,
            "log_format": {"json_format": envoy_log.json_format(log_type, det)},
        },
    }


def _als_log(settings: EnvoySettings) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3"
            ".HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": settings.als_log_name,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": CLUSTER_ALS}},
                "buffer_flush_interval": "1s",
                "buffer_size_bytes": 16384,
            },
        },
    }


def _http_logs(settings: EnvoySettings) -> list[dict[str, Any]]:
    logs = [_file_log(settings, "%PROTOCOL%")]
    if settings.als_socket:
        logs.append(_als_log(settings))
    return logs


def _tcp_proxy(settings: EnvoySettings, stat_prefix: str, log_type: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": CLUSTER_HTTP1,
            "access_log": [_file_log(settings, log_type)],
        },
    }


def _hcm(settings: EnvoySettings, stat_prefix: str, cluster: str, h2c: bool) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "use_remote_address": settings.use_remote_address,
        "xff_num_trusted_hops": settings.xff_num_trusted_hops,
        # Keep the upstream's own `server` header instead of writing `envoy`.
        "server_header_transformation": "PASS_THROUGH",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        # No idle cut-off of a quiet stream (long polls, streaming RPCs); headers up to 1 MiB
        # (Envoy's default 60 KiB would answer 431 where the server itself accepts them).
        "stream_idle_timeout": "0s",
        "max_request_headers_kb": 1024,
        "route_config": {
            "name": stat_prefix,
            "virtual_hosts": [{
                "name": "any",
                "domains": ["*"],
                "routes": [{
                    "match": {"prefix": "/"},
                    # timeout 0s: no route timeout (long polls, streams); no retry_policy: a
                    # request reaches the upstream exactly once; Host is never rewritten.
                    "route": {"cluster": cluster, "timeout": "0s"},
                }],
            }],
        },
        "http_filters": [{
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        }],
        "access_log": _http_logs(settings),
    }
    if h2c:
        hcm["http2_protocol_options"] = {}
    else:
        hcm["http_protocol_options"] = {
            "accept_http_10": True,
            "header_key_format": _PRESERVE_CASE,
        }
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _listener(settings: EnvoySettings, name: str = LISTENER_NAME, port: int | None = None,
              original_src_mark: int | None = None) -> dict[str, Any]:
    if port is None:
        port, original_src_mark = settings.tproxy_port, settings.original_src_mark
    own_port = {"destination_port_range": {"start": port, "end": port + 1}}

    def inspector(name: str, type_url: str, skip_own_port: bool = True) -> dict[str, Any]:
        f: dict[str, Any] = {"name": name, "typed_config": {"@type": type_url}}
        if skip_own_port:  # a direct connection is closed at once, not after the sniff timeout
            f["filter_disabled"] = own_port
        return f

    ext = "type.googleapis.com/envoy.extensions.filters.listener"
    return {
        "name": name,
        "address": _socket_address(settings.listen_address, port),
        **({"additional_addresses": [
            {"address": _socket_address(settings.listen_address_v6, port)}]}
           if settings.listen_address_v6 else {}),
        "transparent": True,
        "listener_filters": [
            inspector("envoy.filters.listener.original_dst",
                      f"{ext}.original_dst.v3.OriginalDst", skip_own_port=False),
            *([inspector("envoy.filters.listener.original_src",
                         f"{ext}.original_src.v3.OriginalSrc") | {
                "typed_config": {"@type": f"{ext}.original_src.v3.OriginalSrc",
                                 "mark": original_src_mark}}]
              if original_src_mark is not None else []),
            inspector("envoy.filters.listener.tls_inspector",
                      f"{ext}.tls_inspector.v3.TlsInspector"),
            inspector("envoy.filters.listener.http_inspector",
                      f"{ext}.http_inspector.v3.HttpInspector"),
        ],
        "listener_filters_timeout": _seconds(settings.listener_filters_timeout_s),
        "continue_on_listener_filters_timeout": True,
        "filter_chains": [
            {
                # not TPROXYed: dialled at the listener itself. No filters: Envoy closes it.
                "name": GUARD_CHAIN,
                "filter_chain_match": {"destination_port": port},
                "filters": [],
            },
            {
                "name": "tls_passthrough",
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": [_tcp_proxy(settings, "tls", envoy_log.TYPE_TLS)],
            },
            {
                "name": "http1",
                "filter_chain_match": {"application_protocols": ["http/1.0", "http/1.1"]},
                "filters": [_hcm(settings, "http1", CLUSTER_HTTP1, h2c=False)],
            },
            {
                "name": "h2c",
                "filter_chain_match": {"application_protocols": ["h2c"]},
                "filters": [_hcm(settings, "h2c", CLUSTER_H2C, h2c=True)],
            },
        ],
        "default_filter_chain": {
            "name": "tcp",
            "filters": [_tcp_proxy(settings, "tcp", envoy_log.TYPE_TCP)],
        },
    }


def _original_dst_cluster(settings: EnvoySettings, name: str, h2c: bool) -> dict[str, Any]:
    http: dict[str, Any] = (
        {"http2_protocol_options": {}} if h2c
        else {"http_protocol_options": {"header_key_format": _PRESERVE_CASE}}
    )
    return {
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": _seconds(settings.connect_timeout_s),
        "circuit_breakers": {"thresholds": [{
            "max_connections": settings.upstream_limit,
            "max_pending_requests": settings.upstream_limit,
            "max_requests": settings.upstream_limit,
            "max_retries": 0,
        }]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": http,
            }
        },
    }


def _als_cluster(settings: EnvoySettings) -> dict[str, Any]:
    assert settings.als_socket
    return {
        "name": CLUSTER_ALS,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": CLUSTER_ALS,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"pipe": {"path": settings.als_socket}}
            }}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def render(settings: EnvoySettings | None = None) -> dict[str, Any]:
    """The whole Envoy bootstrap as a dict (static resources only, no xDS)."""
    s = settings or EnvoySettings()
    clusters = [
        _original_dst_cluster(s, CLUSTER_HTTP1, h2c=False),
        _original_dst_cluster(s, CLUSTER_H2C, h2c=True),
    ]
    if s.als_socket:
        clusters.append(_als_cluster(s))
    listeners = [_listener(s)]
    if s.nodeport_original_src_mark is not None:
        listeners.append(_listener(s, NODEPORT_LISTENER_NAME, s.tproxy_port + 1,
                                   s.nodeport_original_src_mark))
    if s.admin_socket is not None:
        # owner and group only: the pod's containers share the group (see operator.render)
        admin_address: dict[str, Any] = {"pipe": {"path": s.admin_socket, "mode": ADMIN_SOCKET_MODE}}
    else:
        admin_address = _socket_address(*split_host_port(s.admin_address))
    return {
        "node": {"id": s.node_id, "cluster": "l7scope"},
        "admin": {"address": admin_address,
                  "ignore_global_conn_limit": True},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                ".downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": s.max_downstream_connections,
            },
        }]},
    }


def render_yaml(settings: EnvoySettings | None = None) -> str:
    text: str = yaml.safe_dump(render(settings), sort_keys=False, default_flow_style=False)
    return text
