"""The `LogStorage` resource (`l7scope.io/v1`, cluster-scoped, one per cluster named `default`):
where and how the server keeps the L7 logs, and how the server's workload is shaped from it.
Pure: no I/O.

    checked = check("default", {"engine": "clickhouse", "clickhouse": {"url": "clickhouse://ch:9000"}})
    checked.errors   # [] or messages naming the field
    checked.spec     # the typed spec (defaults from the model; None when invalid)
    shape(deployment, checked.spec)   # the server's workload for it (see below)

Absent LogStorage = `LogStorageSpec()`: embedded DuckDB, 1 day retention, 10Gi on the cluster's
default StorageClass.

- `engine: duckdb` (embedded): a StatefulSet of one replica whose data directory is a
  PersistentVolumeClaim from `volumeClaimTemplates` (`storageClassName`, `storageSize`), so
  deleting, evicting or rolling the pod keeps every acknowledged record. The claim outlives the
  StatefulSet (Kubernetes' default `Retain` policy): switching engine and back finds the data.
- `engine: clickhouse`: the server is stateless: a Deployment of `server.replicas` behind the
  Service; the credentials come from the Secret `clickhouse.credentialsSecret` as environment
  variables which the kubelet substitutes into the URL argument (`$(VAR)`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from l7scope.operator.spec import API_VERSION, Resources, error_path

KIND: Final = "LogStorage"
PLURAL: Final = "logstorages"
REQUIRED_NAME: Final = "default"
PATH: Final = f"/apis/{API_VERSION}/{PLURAL}/{REQUIRED_NAME}"

DATA_DIR: Final = "/var/lib/l7scope"
DATA_VOLUME: Final = "data"
CH_USER_ENV: Final = "L7SCOPE_CLICKHOUSE_USER"
CH_PASSWORD_ENV: Final = "L7SCOPE_CLICKHOUSE_PASSWORD"

_SIZE_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Retention(_Model):
    l7_logs: int = Field(default=1, alias="l7Logs", ge=1, le=3650,
                         description="Days L7 logs are kept (as Calico's LogStorage). Default 1.")


class SecretRef(_Model):
    name: str = Field(min_length=1, max_length=253, description="Secret in the operator's namespace.")
    user_key: str = Field(default="username", alias="userKey", min_length=1, description="Default username.")
    password_key: str = Field(default="password", alias="passwordKey", min_length=1,
                              description="Default password.")


class ClickHouseSpec(_Model):
    url: str = Field(pattern=r"^clickhouses?://[^/@\s]+$",
                     description="Native-protocol address, clickhouse://HOST:PORT (no user, no path).")
    database: str = Field(default="default", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                          description="Database of the l7 tables. Default default.")
    cluster: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="ClickHouse cluster name: tables ON CLUSTER + Distributed.")
    credentials_secret: SecretRef | None = Field(default=None, alias="credentialsSecret")


class ServerSpec(_Model):
    replicas: int = Field(default=1, ge=1, le=64,
                          description="Server replicas; more than 1 only with engine clickhouse. Default 1.")
    resources: Resources | None = Field(default=None, description="Replaces the server's requests and limits.")


class LogStorageSpec(_Model):
    engine: Literal["duckdb", "clickhouse"] = Field(default="duckdb", description="duckdb: embedded, on a PersistentVolumeClaim (default); clickhouse.")
    retention: Retention = Field(default_factory=Retention)
    storage_class_name: str | None = Field(default=None, alias="storageClassName", min_length=1,
        description="StorageClass of the embedded store's claim; unset: the cluster's default.")
    storage_size: str = Field(default="10Gi", alias="storageSize", pattern=_SIZE_PATTERN,
                              description="Size of the embedded store's claim. Default 10Gi.")
    clickhouse: ClickHouseSpec | None = None
    server: ServerSpec = Field(default_factory=ServerSpec)

    @property
    def retention_arg(self) -> str:
        return f"{self.retention.l7_logs}d"


#: what an absent LogStorage means
DEFAULT: Final = LogStorageSpec.model_validate({})


class LogStorageStatus(_Model):
    state: str | None = Field(default=None, description="Ready, Progressing or Degraded.")
    conditions: list[dict[str, Any]] | None = Field(default=None, description="metav1.Condition list: Ready, Progressing, Degraded.",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


@dataclass(frozen=True)
class Checked:
    spec: LogStorageSpec | None
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors


def check(name: str, raw_spec: Mapping[str, Any] | None) -> Checked:
    """Parse and validate one LogStorage. The CRD's schema checks each field; the cross-field
    rules (clickhouse needs its URL, duckdb one replica) are checked here only: CEL
    `x-kubernetes-validations` would need Kubernetes 1.25, and the tested API server is 1.20."""
    errors: list[str] = []
    if name != REQUIRED_NAME:
        errors.append(f"resource name must be '{REQUIRED_NAME}' (got '{name}')")
    try:
        spec = LogStorageSpec.model_validate(dict(raw_spec or {}))
    except ValidationError as e:
        return Checked(None, errors + [f"{error_path(err['loc'])}: {err['msg']}" for err in e.errors()])
    if spec.engine == "clickhouse" and spec.clickhouse is None:
        errors.append("spec.clickhouse.url: engine clickhouse needs it")
    if spec.engine == "duckdb" and spec.server.replicas != 1:
        errors.append(f"spec.server.replicas: the embedded duckdb store has one writer: must be 1 "
                      f"(got {spec.server.replicas})")
    return Checked(None if errors else spec, errors)


def clickhouse_url(ch: ClickHouseSpec) -> str:
    scheme, _, hostport = ch.url.partition("://")
    auth = f"$({CH_USER_ENV}):$({CH_PASSWORD_ENV})@" if ch.credentials_secret else ""
    return f"{scheme}://{auth}{hostport}/{ch.database}"


def workload_kind(spec: LogStorageSpec) -> str:
    return "StatefulSet" if spec.engine == "duckdb" else "Deployment"


def stale_kind(spec: LogStorageSpec) -> str:
    """The server workload kind the other engine uses (deleted when switching)."""
    return "Deployment" if spec.engine == "duckdb" else "StatefulSet"


def shape(deployment: Mapping[str, Any], spec: LogStorageSpec) -> dict[str, Any]:
    """The server's workload for `spec`, from the plain Deployment render.py builds (one
    container `server` with `--data-dir DATA_DIR` on the volume `data`)."""
    obj = copy.deepcopy(dict(deployment))
    pod = obj["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "server")
    command: list[str] = container["command"]
    command += ["--retention", spec.retention_arg]
    if spec.server.resources is not None:
        container["resources"] = {k: {q: str(v) for q, v in vals.items()} for k, vals in
                                  spec.server.resources.model_dump(exclude_none=True).items()}
    if spec.engine == "clickhouse":
        assert spec.clickhouse is not None
        ch = spec.clickhouse
        command += ["--store", "clickhouse", "--clickhouse-url", clickhouse_url(ch)]
        if ch.cluster:
            command += ["--clickhouse-cluster", ch.cluster]
        if ch.credentials_secret is not None:
            ref = ch.credentials_secret
            container["env"] = [*container.get("env", []),
                                {"name": CH_USER_ENV, "valueFrom": {"secretKeyRef": {
                                    "name": ref.name, "key": ref.user_key}}},
                                {"name": CH_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {
                                    "name": ref.name, "key": ref.password_key}}}]
        obj["spec"]["replicas"] = spec.server.replicas
        # stateless: roll one replica at a time, never below the wanted count
        obj["spec"]["strategy"] = {"type": "RollingUpdate",
                                   "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        return obj
    # embedded DuckDB: one writer on a claim that outlives the pod
    obj["kind"] = "StatefulSet"
    obj["spec"].pop("strategy", None)
    obj["spec"]["replicas"] = 1
    obj["spec"]["serviceName"] = obj["metadata"]["name"]
    obj["spec"]["podManagementPolicy"] = "OrderedReady"
    obj["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != DATA_VOLUME]
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": spec.storage_size}}}
    if spec.storage_class_name:
        claim["storageClassName"] = spec.storage_class_name
    obj["spec"]["volumeClaimTemplates"] = [{
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": DATA_VOLUME, "labels": dict(obj["spec"]["selector"]["matchLabels"])},
        "spec": claim}]
    return obj


def workload_state(obj: Mapping[str, Any] | None, spec: LogStorageSpec) -> tuple[str, str]:
    """(state, message) of the server's StatefulSet or Deployment."""
    kind = workload_kind(spec)
    if obj is None:
        return "Progressing", f"{kind} not created yet"
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    want = spec.server.replicas
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    if int(st.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return "Progressing", f"{kind}: update not observed yet"
    if ready >= want and updated >= want:
        return "Ready", f"{kind} ({spec.engine}): {ready}/{want} replicas ready"
    return "Progressing", f"{kind} ({spec.engine}): {ready}/{want} replicas ready, {updated} updated"
