"""The `ApplicationLayer` resource: its spec model (Calico's field names, types and defaults),
validation and the defaults the operator writes back. Pure: no I/O.

    checked = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    checked.errors      # [] or clear messages naming the field
    checked.defaulted   # the spec with defaults filled in (what is written back)
    checked.spec        # the typed spec (None when invalid)

Defaults, as Calico's operator sets them: `logCollection.collectLogs: Disabled`; when Enabled,
`logIntervalSeconds: 5` and `logRequestsPerInterval: -1` (negative: no limit);
`envoy: {xffNumTrustedHops: 0, useRemoteAddress: false}`.

Calico's resource must be named `tigera-secure`; so is ours. Differences, on purpose:
`logIntervalSeconds` must be at least 1 (Calico passes 0 to its collector, which reads it as 5);
`xffNumTrustedHops` is limited to what our Envoy configuration accepts; the Web Application
Firewall, Application Layer Policy and sidecar injection are accepted in the spec (so Calico
manifests apply) but not implemented: enabling them gives a warning condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l7scope.contracts.detail import DetailSettings
from l7scope.proxy.bootstrap import EnvoySettings, nodeport_mark

GROUP: Final = "l7scope.io"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ApplicationLayer"
PLURAL: Final = "applicationlayers"
REQUIRED_NAME: Final = "tigera-secure"

DEFAULT_LOG_INTERVAL_SECONDS: Final = 5
DEFAULT_LOG_REQUESTS_PER_INTERVAL: Final = -1

#: containers of the l7-log-collector DaemonSet that `l7LogCollectorDaemonSet` can tune
CONTAINER_NAMES: Final = ("envoy-proxy", "l7-collector", "l7-node-agent")

EnabledDisabled = Literal["Enabled", "Disabled"]
INT32_MAX: Final = 2_147_483_647

_QUANTITY: Final[dict[str, Any]] = {"x-kubernetes-int-or-string": True,
                    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class LogCollection(_Model):
    """L7 log collection: the per-node Envoy and l7-collector."""

    collect_logs: EnabledDisabled | None = Field(
        None, alias="collectLogs",
        description="Enabled runs the l7-log-collector DaemonSet (Envoy + collector + node agent). Default Disabled.")
    log_interval_seconds: int | None = Field(
        None, alias="logIntervalSeconds",
        description="Interval in seconds for sending L7 log information for processing. Default 5.")
    log_requests_per_interval: int | None = Field(
        None, alias="logRequestsPerInterval",
        description="Maximum number of unique L7 logs sent per logIntervalSeconds; negative: no limit. Default -1.")


class EnvoySpec(_Model):
    xff_num_trusted_hops: int | None = Field(
        None, alias="xffNumTrustedHops", ge=0, le=INT32_MAX,
        description="Number of trusted hops in X-Forwarded-For (Envoy xff_num_trusted_hops). Default 0.")
    use_remote_address: bool | None = Field(
        None, alias="useRemoteAddress",
        description="Envoy use_remote_address: the client address is the connection's source. Default false.")


class Probe(_Model):
    """Probe timings; the handler itself cannot be overridden."""

    initial_delay_seconds: int | None = Field(None, alias="initialDelaySeconds", ge=0)
    period_seconds: int | None = Field(None, alias="periodSeconds", ge=1)
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", ge=1)
    success_threshold: int | None = Field(None, alias="successThreshold", ge=1)
    failure_threshold: int | None = Field(None, alias="failureThreshold", ge=1)


class Resources(_Model):
    limits: dict[str, int | str] | None = Field(
        None, json_schema_extra={"additionalProperties": _QUANTITY})
    requests: dict[str, int | str] | None = Field(
        None, json_schema_extra={"additionalProperties": _QUANTITY})


class ContainerOverride(_Model):
    name: Literal["envoy-proxy", "l7-collector", "l7-node-agent"]
    resources: Resources | None = None
    readiness_probe: Probe | None = Field(None, alias="readinessProbe")
    liveness_probe: Probe | None = Field(None, alias="livenessProbe")


class InitContainerOverride(_Model):
    name: str
    resources: Resources | None = None


class PodSpecOverride(_Model):
    containers: list[ContainerOverride] | None = None
    init_containers: list[InitContainerOverride] | None = Field(None, alias="initContainers")


class PodTemplateOverride(_Model):
    spec: PodSpecOverride | None = None


class DaemonSetSpecOverride(_Model):
    template: PodTemplateOverride | None = None


class DaemonSetOverride(_Model):
    """Overrides for the l7-log-collector DaemonSet (container resources and probe timings)."""

    spec: DaemonSetSpecOverride | None = None


class ApplicationLayerSpec(_Model):
    log_collection: LogCollection | None = Field(None, alias="logCollection")
    envoy: EnvoySpec | None = None
    l7_log_collector_daemon_set: DaemonSetOverride | None = Field(None, alias="l7LogCollectorDaemonSet")
    web_application_firewall: EnabledDisabled | None = Field(
        None, alias="webApplicationFirewall", description="Not implemented by l7scope.")
    application_layer_policy: EnabledDisabled | None = Field(
        None, alias="applicationLayerPolicy", description="Not implemented by l7scope.")
    sidecar_injection: EnabledDisabled | None = Field(
        None, alias="sidecarInjection", description="Not implemented by l7scope.")

    # ---- resolved values (defaults applied) ------------------------------------------------
    @property
    def collect_logs(self) -> bool:
        return self.log_collection is not None and self.log_collection.collect_logs == "Enabled"

    @property
    def log_interval_seconds(self) -> int:
        lc = self.log_collection
        v = lc.log_interval_seconds if lc else None
        return DEFAULT_LOG_INTERVAL_SECONDS if v is None else v

    @property
    def log_requests_per_interval(self) -> int:
        lc = self.log_collection
        v = lc.log_requests_per_interval if lc else None
        return DEFAULT_LOG_REQUESTS_PER_INTERVAL if v is None else v

    @property
    def xff_num_trusted_hops(self) -> int:
        return (self.envoy.xff_num_trusted_hops if self.envoy else None) or 0

    @property
    def use_remote_address(self) -> bool:
        return bool(self.envoy.use_remote_address) if self.envoy else False

    def container_override(self, name: str) -> ContainerOverride | None:
        ds = self.l7_log_collector_daemon_set
        pod = ds.spec.template.spec if ds and ds.spec and ds.spec.template else None
        for c in (pod.containers if pod else None) or []:
            if c.name == name:
                return c
        return None


class ApplicationLayerStatus(_Model):
    """Written by the operator only."""

    state: str | None = Field(None, description="Ready when the DaemonSet is fully available; "
                                                "Progressing, Degraded or Disabled otherwise.")
    conditions: list[dict[str, Any]] | None = Field(
        None, description="metav1.Condition list: Ready, Progressing, Degraded.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    observed_generation: int | None = Field(None, alias="observedGeneration")
    nodes_ready: str | None = Field(None, alias="nodesReady",
                                    description="l7-log-collector pods available / desired, e.g. 3/3.")


@dataclass(frozen=True)
class Checked:
    spec: ApplicationLayerSpec | None
    defaulted: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the field path users wrote (`spec.a[0].b`)."""
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def with_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` (a spec mapping) with Calico's defaults filled in; other keys untouched."""
    out: dict[str, Any] = {k: v for k, v in raw.items()}
    lc = dict(out.get("logCollection") or {})
    lc.setdefault("collectLogs", "Disabled")
    if lc["collectLogs"] == "Enabled":
        lc.setdefault("logIntervalSeconds", DEFAULT_LOG_INTERVAL_SECONDS)
        lc.setdefault("logRequestsPerInterval", DEFAULT_LOG_REQUESTS_PER_INTERVAL)
    out["logCollection"] = lc
    envoy = dict(out.get("envoy") or {})
    envoy.setdefault("xffNumTrustedHops", 0)
    envoy.setdefault("useRemoteAddress", False)
    out["envoy"] = envoy
    return out


def check(name: str, raw_spec: Mapping[str, Any] | None) -> Checked:
    """Parse, validate and default one ApplicationLayer (see module doc)."""
    raw = dict(raw_spec or {})
    defaulted = with_defaults(raw) if isinstance(raw.get("logCollection") or {}, Mapping) \
        and isinstance(raw.get("envoy") or {}, Mapping) else raw
    errors: list[str] = []
    warnings: list[str] = []
    if name != REQUIRED_NAME:
        errors.append(f"resource name must be '{REQUIRED_NAME}' (got '{name}')")
    try:
        spec = ApplicationLayerSpec.model_validate(defaulted)
    except ValidationError as e:
        for err in e.errors():
            errors.append(f"{error_path(err['loc'])}: {err['msg']}")
        return Checked(None, defaulted, errors, warnings)
    if spec.log_interval_seconds < 1:
        errors.append("spec.logCollection.logIntervalSeconds must be at least 1 "
                      f"(got {spec.log_interval_seconds})")
    try:
        envoy_settings(spec)
    except ValidationError as e:
        for err in e.errors():
            field_name = {"xff_num_trusted_hops": "xffNumTrustedHops"}.get(str(err["loc"][0]), str(err["loc"][0]))
            errors.append(f"spec.envoy.{field_name}: {err['msg']}")
    for key, value in (("webApplicationFirewall", spec.web_application_firewall),
                       ("applicationLayerPolicy", spec.application_layer_policy),
                       ("sidecarInjection", spec.sidecar_injection)):
        if value == "Enabled":
            warnings.append(f"spec.{key}: Enabled is not supported by l7scope and is ignored")
    return Checked(None if errors else spec, defaulted, errors, warnings)


def envoy_settings(spec: ApplicationLayerSpec, *, tproxy_port: int = 16001,
                   admin_address: str = "unix:/var/run/l7scope/sockets/envoy-admin.sock",
                   original_src_mark: int | None = None, ipv6: bool = False,
                   detail: DetailSettings | None = None) -> EnvoySettings:
    """The Envoy settings this spec asks for (raises pydantic's ValidationError).
    `original_src_mark`: the node settings' tproxyUpstreamConnMark (client IP kept upstream);
    `ipv6`: the node settings' ipv6Support (the listeners also bind `::`); `detail`: the node
    settings' l7Detail (the headers Envoy logs for request detail)."""
    d = detail or DetailSettings()
    return EnvoySettings(tproxy_port=tproxy_port, admin_address=admin_address,
                         xff_num_trusted_hops=spec.xff_num_trusted_hops,
                         use_remote_address=spec.use_remote_address,
                         original_src_mark=original_src_mark,
                         nodeport_original_src_mark=None if original_src_mark is None
                         else nodeport_mark(original_src_mark),
                         listen_address_v6="::" if ipv6 else None,
                         detail_request_headers=d.request_headers,
                         detail_response_headers=d.response_headers)
