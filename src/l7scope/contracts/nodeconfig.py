"""The node-agent configuration: the `NodeAgentConfiguration` resource (cluster-scoped, one object
named `default`: group, version, plural, path) and its `spec` model, `NodeSettings`.

The one owner of both: the operator creates and patches the object (`operator/reconcile.py`,
`operator/crd.py` generates its CRD from the model), the node agents watch it
(`node/cluster_feed.py`) or read the same spec from a local file (`node/settings.py`, which keeps
the file loader and its live reload), and the capture's defaults (`capture/tproxy.py`) are the
model's.

The spec: Felix's FelixConfiguration fields for L7, same names, values and defaults.

The YAML keys are Felix's (`policySyncPathPrefix`, `tproxyMode`, `l7LogsFile*`, ...); the Python
attribute names are their snake_case forms. A settings file is either the bare `spec` mapping or a
whole FelixConfiguration-shaped object (`apiVersion`, `kind`, `metadata`, `spec`). Unknown keys
are rejected, and every error names the offending key.

One deliberate difference from Felix: `l7LogsFlushInterval` defaults to 1 s instead of Felix's
5 min, so that a request is visible in the server within `logIntervalSeconds + 2 s` (Felix's
default is the main reason Calico's L7 logs "appear after a few minutes"). Set `5m0s` for Felix's
behaviour.

Beyond Felix's L7 fields, the capture's marks (`tproxyMark`, `tproxyUpstreamConnMark`; Felix
allocates its proxy mark from `iptablesMarkMask`, we have no such mask) and checks Felix does not
make (docs/node.md, "Marks, ports and host paths"):

- marks: `tproxyMark` one bit, `tproxyUpstreamConnMark` a non-zero mask, disjoint from each
  other and from the bits other node components own (RESERVED_MARKS: Felix's default
  `iptablesMarkMask` 0xffff0000, kube-proxy's masquerade 0x4000 and drop 0x8000 bits);
- `tproxyPort` and `tproxyPort + 1` (Calico's NodePort listener) in 1024..29999: below the
  default NodePort range (30000-32767) and Linux's ephemeral ports (32768-60999), so no
  NodePort or outgoing connection can share the transparent port the port guard protects;
- host paths (`policySyncPathPrefix`, `l7LogsFileDirectory`) absolute and normalized (no `.`
  or `..`, no trailing `/`) and, from the cluster (`NodeAgentConfiguration`, the operator),
  strictly below one of CLUSTER_PATH_ROOTS (`/run`, `/var/run`, `/var/lib`, `/var/log`):
  the DaemonSet mounts them from the host. A local settings file (`node.settings.load()`,
  tests, the demo, a user running `l7scope node` by hand) may name any absolute normalized path.
"""


from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from l7scope.contracts import policysync
from l7scope.contracts.detail import DetailSettings
from l7scope.contracts.routes import RouteSettings

TproxyMode = Literal["Disabled", "Enabled", "EnabledAllServices"]
HTTPHeaderInfo = Literal["IncludeL7HTTPHeaderInfo", "ExcludeL7HTTPHeaderInfo"]
HTTPMethod = Literal["IncludeL7HTTPMethod", "ExcludeL7HTTPMethod"]
ServiceInfo = Literal["IncludeL7ServiceInfo", "ExcludeL7ServiceInfo"]
DestinationInfo = Literal["IncludeL7DestinationInfo", "ExcludeL7DestinationInfo"]
SourceInfo = Literal["IncludeL7SourceInfo", "IncludeL7SourceInfoNoPort", "ExcludeL7SourceInfo"]
ResponseCode = Literal["IncludeL7ResponseCode", "ExcludeL7ResponseCode"]
TrimURL = Literal["IncludeL7FullURL", "TrimURLQuery", "TrimURLQueryAndPath", "ExcludeL7URL"]

FELIX_MARK_MASK: Final = 0xFFFF0000
"""Felix's default `iptablesMarkMask`: the bits Calico allocates its own marks from."""
KUBE_PROXY_MASQUERADE_MARK: Final = 0x4000
"""kube-proxy's `--iptables-masquerade-bit` 14 (KUBE-MARK-MASQ)."""
KUBE_PROXY_DROP_MARK: Final = 0x8000
"""kubelet/kube-proxy's KUBE-MARK-DROP bit 15."""
RESERVED_MARKS: Final = FELIX_MARK_MASK | KUBE_PROXY_MASQUERADE_MARK | KUBE_PROXY_DROP_MARK

DEFAULT_TPROXY_MARK: Final = 0x1000
"""Packets delivered to Envoy: 0x1000 (bit 12). Not in RESERVED_MARKS, nor in Istio's 0x539
or AWS VPC CNI's 0x80, nor in Calico's default tproxyUpstreamConnMark 0x17."""
DEFAULT_TPROXY_UPSTREAM_CONN_MARK: Final = 0x2000
"""Envoy's upstream connections: 0x2000 (bit 13), same reasoning."""
DEFAULT_TPROXY_PORT: Final = 16001
TPROXY_PORT_RANGE: Final = (1024, 29998)
"""tproxyPort and tproxyPort + 1 stay below the NodePort range 30000-32767."""

CLUSTER_PATH_ROOTS: Final = ("/run", "/var/run", "/var/lib", "/var/log")
CLUSTER_PATH_PATTERN: Final = (
    r"^/(run|var/run|var/lib|var/log)(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$")
"""Host paths the cluster may set: strictly below a root, components not starting with `.`
(so no `.`, `..` or hidden directories). The CRD carries the same pattern."""
_CLUSTER_PATH = re.compile(CLUSTER_PATH_PATTERN)
LOCAL_PATHS: Final = "local_paths"
"""Validation context key: any absolute normalized host path is accepted (see `load()`)."""


def check_host_path(value: str, cluster: bool) -> str:
    """The path if acceptable (see module doc), else ValueError saying why."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if posixpath.normpath(value) != value or value.startswith("//") or "/./" in f"{value}/":
        raise ValueError(f"must be normalized (no '.', '..', '//' or trailing '/'), got {value!r}")
    if value == "/":
        raise ValueError("must not be the root directory")
    if cluster and not _CLUSTER_PATH.fullmatch(value):
        roots = ", ".join(f"{r}/" for r in CLUSTER_PATH_ROOTS)
        raise ValueError(f"must be a directory below one of {roots} (components not starting "
                         f"with '.'), got {value!r}")
    return value


def _single_bit(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a Go duration string (`300s`, `5m0s`, `1.5s`, `500ms`) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '1s' or '5m0s'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"not a duration: {value!r} (examples: '1s', '500ms', '5m0s')")
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {value!r}")
    return seconds


class AggregationSettings(BaseModel):
    """The `l7LogsFileAggregation*` and `l7LogsFilePerNodeLimit` settings (what aggregate.py uses)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http_header_info: HTTPHeaderInfo = "ExcludeL7HTTPHeaderInfo"
    http_method: HTTPMethod = "IncludeL7HTTPMethod"
    service_info: ServiceInfo = "IncludeL7ServiceInfo"
    destination_info: DestinationInfo = "IncludeL7DestinationInfo"
    source_info: SourceInfo = "IncludeL7SourceInfoNoPort"
    response_code: ResponseCode = "IncludeL7ResponseCode"
    trim_url: TrimURL = "IncludeL7FullURL"
    num_url_path: int = 5
    url_char_limit: int = Field(default=250, ge=1)
    per_node_limit: int = Field(default=1500, ge=0)
    routes: RouteSettings = RouteSettings()


class NodeSettings(BaseModel):
    """Felix's L7 settings (FelixConfiguration `spec` field names), with Felix's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    policy_sync_path_prefix: str = Field(
        default=policysync.DEFAULT_PREFIX, alias="policySyncPathPrefix",
        json_schema_extra={"pattern": CLUSTER_PATH_PATTERN})
    """Directory of the Policy Sync socket (`<prefix>/socket`). Felix's default is "" (disabled);
    the node agent always serves it, so the default is the operator's `/var/run/nodeagent`.
    A host path: below /run, /var/run, /var/lib or /var/log (docs/node.md)."""
    tproxy_mode: TproxyMode = Field(default="Disabled", alias="tproxyMode")
    """Disabled: no capture rules. Enabled: annotated Services. EnabledAllServices: every Service."""
    tproxy_port: int = Field(default=DEFAULT_TPROXY_PORT, alias="tproxyPort",
                             ge=TPROXY_PORT_RANGE[0], le=TPROXY_PORT_RANGE[1])
    """Envoy's transparent listener port (port + 1 is kept free for NodePorts, as in Calico);
    below the NodePort and ephemeral port ranges."""
    tproxy_mark: int = Field(default=DEFAULT_TPROXY_MARK, alias="tproxyMark", ge=1, le=0xFFFFFFFF)
    """l7scope's own: the one mark bit of packets handed to Envoy (policy route to the local
    stack). Not in 0xffff0000 (Felix), 0x4000 or 0x8000 (kube-proxy)."""
    tproxy_upstream_conn_mark: int = Field(default=DEFAULT_TPROXY_UPSTREAM_CONN_MARK,
                                           alias="tproxyUpstreamConnMark", ge=1, le=0xFFFFFFFF)
    """Calico's name: the mark (mask) of Envoy's upstream connections. Calico's default 0x17
    is fine too; it must not overlap tproxyMark or the reserved bits."""
    ipv6_support: bool = Field(default=False, alias="ipv6Support")
    """Felix's name. On: IPv6 ClusterIPs, endpoints and pods are captured too, and Envoy also
    listens on `::` (every node needs IPv6 enabled, or its Envoy cannot bind). Off (l7scope's
    default; Felix's is on): IPv6 addresses are left out of capture, their traffic untouched,
    so a dual-stack Service is captured on its IPv4 address only."""
    l7_logs_flush_interval: float = Field(default=1.0, alias="l7LogsFlushInterval")
    """Aggregation period in seconds (Go duration text accepted). Felix: 5m0s; see module doc."""
    l7_logs_file_enabled: bool = Field(default=True, alias="l7LogsFileEnabled")
    l7_logs_file_directory: str = Field(default="/var/log/calico/l7logs", alias="l7LogsFileDirectory",
                                        json_schema_extra={"pattern": CLUSTER_PATH_PATTERN})
    """A host path, like policySyncPathPrefix."""
    l7_logs_file_max_files: int = Field(default=5, alias="l7LogsFileMaxFiles", ge=0)
    """Rotated files kept next to `l7.log`."""
    l7_logs_file_max_file_size_mb: int = Field(default=100, alias="l7LogsFileMaxFileSizeMB", ge=1)
    l7_logs_file_aggregation_http_header_info: HTTPHeaderInfo = Field(
        default="ExcludeL7HTTPHeaderInfo", alias="l7LogsFileAggregationHTTPHeaderInfo")
    """Exclude: `user_agent` and `type` are `-`."""
    l7_logs_file_aggregation_http_method: HTTPMethod = Field(
        default="IncludeL7HTTPMethod", alias="l7LogsFileAggregationHTTPMethod")
    l7_logs_file_aggregation_service_info: ServiceInfo = Field(
        default="IncludeL7ServiceInfo", alias="l7LogsFileAggregationServiceInfo")
    l7_logs_file_aggregation_destination_info: DestinationInfo = Field(
        default="IncludeL7DestinationInfo", alias="l7LogsFileAggregationDestinationInfo")
    l7_logs_file_aggregation_source_info: SourceInfo = Field(
        default="IncludeL7SourceInfoNoPort", alias="l7LogsFileAggregationSourceInfo")
    l7_logs_file_aggregation_response_code: ResponseCode = Field(
        default="IncludeL7ResponseCode", alias="l7LogsFileAggregationResponseCode")
    l7_logs_file_aggregation_trim_url: TrimURL = Field(
        default="IncludeL7FullURL", alias="l7LogsFileAggregationTrimURL")
    l7_logs_file_aggregation_num_url_path: int = Field(default=5, alias="l7LogsFileAggregationNumURLPath")
    """Path segments kept with IncludeL7FullURL; negative keeps all."""
    l7_logs_file_aggregation_url_char_limit: int = Field(
        default=250, alias="l7LogsFileAggregationURLCharLimit", ge=1)
    """Maximum length of domain + path."""
    l7_logs_file_per_node_limit: int = Field(default=1500, alias="l7LogsFilePerNodeLimit", ge=0)
    """Maximum records per flush on this node (0: no limit); the rest is counted in one
    `type: unlogged` record."""
    l7_route_templates: RouteSettings = Field(default_factory=RouteSettings, alias="l7RouteTemplates")
    """l7scope's own: route templates of the aggregated URL (`contracts/routes.py`, docs/routes.md)."""
    l7_detail: DetailSettings = Field(default_factory=DetailSettings, alias="l7Detail")
    """l7scope's own: request detail, the default mode and the per-node bound
    (`contracts/detail.py`, docs/detail.md)."""

    @field_validator("l7_logs_flush_interval", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("policy_sync_path_prefix", "l7_logs_file_directory")
    @classmethod
    def _host_path(cls, v: str, info: ValidationInfo) -> str:
        local = bool(info.context and info.context.get(LOCAL_PATHS))
        return check_host_path(v, cluster=not local)

    @field_validator("tproxy_mark")
    @classmethod
    def _one_bit(cls, v: int) -> int:
        if not _single_bit(v):
            raise ValueError(f"must be a single bit (0x1000, 0x2000, ...), got 0x{v:x}")
        return v

    @model_validator(mode="after")
    def _marks_disjoint(self) -> NodeSettings:
        marks = {"tproxyMark": self.tproxy_mark,
                 "tproxyUpstreamConnMark": self.tproxy_upstream_conn_mark}
        for name, mark in marks.items():
            for owner, bits in (("Felix's iptablesMarkMask", FELIX_MARK_MASK),
                                ("kube-proxy's masquerade bit", KUBE_PROXY_MASQUERADE_MARK),
                                ("kube-proxy's drop bit", KUBE_PROXY_DROP_MARK)):
                if mark & bits:
                    raise ValueError(f"{name} 0x{mark:x} overlaps {owner} 0x{bits:x}")
        if self.tproxy_mark & self.tproxy_upstream_conn_mark:
            raise ValueError(f"tproxyMark 0x{self.tproxy_mark:x} and tproxyUpstreamConnMark "
                             f"0x{self.tproxy_upstream_conn_mark:x} overlap")
        return self

    def aggregation(self) -> AggregationSettings:
        return AggregationSettings(
            http_header_info=self.l7_logs_file_aggregation_http_header_info,
            http_method=self.l7_logs_file_aggregation_http_method,
            service_info=self.l7_logs_file_aggregation_service_info,
            destination_info=self.l7_logs_file_aggregation_destination_info,
            source_info=self.l7_logs_file_aggregation_source_info,
            response_code=self.l7_logs_file_aggregation_response_code,
            trim_url=self.l7_logs_file_aggregation_trim_url,
            num_url_path=self.l7_logs_file_aggregation_num_url_path,
            url_char_limit=self.l7_logs_file_aggregation_url_char_limit,
            per_node_limit=self.l7_logs_file_per_node_limit,
            routes=self.l7_route_templates,
        )

    def socket_path(self) -> Path:
        return policysync.socket_path(self.policy_sync_path_prefix)


class SettingsError(ValueError):
    """The settings file is unusable; the message names the file and each offending key."""


def from_mapping(data: Any, source: str = "settings", *, local_paths: bool = False) -> NodeSettings:
    """Validate a `spec` mapping, or a whole FelixConfiguration-shaped object. Host paths must
    be below CLUSTER_PATH_ROOTS unless `local_paths` (a settings file on this machine)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: expected a mapping, got {type(data).__name__}")
    if "spec" in data and ("kind" in data or "apiVersion" in data or "metadata" in data):
        data = data["spec"] or {}
        if not isinstance(data, dict):
            raise SettingsError(f"{source}: `spec` must be a mapping")
    try:
        return NodeSettings.model_validate(data, context={LOCAL_PATHS: local_paths})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{key}: {err['msg']}")
        raise SettingsError(f"{source}: " + "; ".join(problems)) from None


GROUP: Final = "l7scope.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "NodeAgentConfiguration"
PLURAL: Final = "nodeagentconfigurations"
NAME: Final = "default"
PATH: Final = f"/apis/{API_VERSION}/{PLURAL}/{NAME}"


def empty() -> dict[str, Any]:
    """The object with an empty spec (every setting at its default)."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": NAME}, "spec": {}}
