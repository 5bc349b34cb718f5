"""What the operator does, without kopf: reconcile one ApplicationLayer, tear down, refresh the
status. `handlers.py` wires these to kopf events; tests can call them directly.

Reconcile (idempotent; runs on create, update, operator start and node-config changes):
1. validate and default the spec; write the defaults back when they differ;
2. invalid: status Degraded with the reasons, existing objects left as they are;
3. collectLogs Disabled: remove what we made, `tproxyMode: Disabled`, status Disabled;
4. enabled: `tproxyMode`/`policySyncPathPrefix` on the node-agent configuration (created when
   missing), server-side apply of every rendered object (owned by the ApplicationLayer), and
   the status from the DaemonSet: Ready once every node's pod is available.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from l7scope.contracts import nodeconfig
from l7scope.contracts.nodeconfig import NodeSettings, SettingsError, from_mapping
from l7scope.kube.client import JSON, Kube, KubeError
from l7scope.operator import logstorage, netpol, render, status, tls
from l7scope.operator import spec as alspec
from l7scope.operator.nodeconfig import tproxy_patch

log = logging.getLogger(__name__)

FIELD_MANAGER = "l7scope-operator"


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "l7scope-system"
    image: str = "ghcr.io/l7scope/l7scope:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()  # Secrets in the namespace, for the image
    #: (name, kind) of a cert-manager Issuer/ClusterIssuer for the server's certificate; None:
    #: the operator issues its own CA and certificate (operator/tls.py)
    cert_manager_issuer: tuple[str, str] | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def al_path(name: str) -> str:
    return f"/apis/{alspec.API_VERSION}/{alspec.PLURAL}/{name}"


def _is_server_workload(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") in ("Deployment", "StatefulSet") and \
        (obj.get("metadata") or {}).get("name") == render.SERVER


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": alspec.API_VERSION, "kind": alspec.KIND, "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}


class Reconciler:
    def __init__(self, kube: Kube, cfg: OperatorConfig,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.kube = kube
        self.cfg = cfg
        self.clock = clock
        self.node_cidrs: tuple[str, ...] = ()  # last rendered into the NetworkPolicy
        self._nodes: dict[str, tuple[str, ...]] = {}  # node name -> its InternalIP CIDRs
        self._lock = threading.RLock()  # one reconcile at a time

    # ---- entry points --------------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any]) -> str:
        """Bring the cluster in line with this ApplicationLayer; returns the state written."""
        with self._lock:
            meta = body.get("metadata") or {}
            name = str(meta.get("name"))
            generation = int(meta.get("generation") or 0)
            raw = dict(body.get("spec") or {})
            checked = alspec.check(name, raw)
            if checked.defaulted != raw:
                log.info("writing defaults back to %s/%s", alspec.PLURAL, name)
                self.kube.merge_patch(al_path(name), {"spec": checked.defaulted})
            if not checked.valid:
                msg = "invalid ApplicationLayer: " + "; ".join(checked.errors)
                log.warning("%s: %s", name, msg)
                return self._set_status(body, "Degraded", msg, generation, checked.warnings)
            spec = checked.spec
            assert spec is not None
            if not spec.collect_logs:
                self._remove_owned()
                self._patch_node_config(collect_logs=False)
                return self._set_status(body, "Disabled", "logCollection.collectLogs is Disabled",
                                        generation, checked.warnings)
            try:
                node = self._patch_node_config(collect_logs=True)
            except SettingsError as e:
                return self._set_status(body, "Degraded", f"invalid node-agent configuration: {e}",
                                        generation, checked.warnings)
            storage_body, storage = self._log_storage()
            ctx = render.RenderContext(namespace=self.cfg.namespace, image=self.cfg.image,
                                       image_pull_policy=self.cfg.image_pull_policy,
                                       image_pull_secrets=self.cfg.image_pull_secrets, node=node,
                                       owner=owner_reference(body),
                                       cert_manager_issuer=self.cfg.cert_manager_issuer,
                                       storage=storage or logstorage.DEFAULT)
            self._ensure_namespace(render.namespace(ctx))
            self.node_cidrs = self._node_cidrs()
            ctx = replace(ctx, node_cidrs=self.node_cidrs)
            # twice at most: a new Service gets its ClusterIP only once applied, and the
            # certificate names it
            for _ in range(2):
                ips = self._service_ips()
                ctx = replace(ctx, tls=self._ensure_tls(ctx, ips))
                for obj in render.render(spec, ctx)[1:]:
                    if storage is None and _is_server_workload(obj):
                        continue  # invalid LogStorage: the running server is left as it is
                    self._apply(obj)
                if self.cfg.cert_manager_issuer is not None or self._service_ips() == ips:
                    break
            if storage is not None:
                self._delete_server_workload(logstorage.stale_kind(storage))
                self._storage_status(storage_body, storage)
            ds = self._daemonset()
            state, msg = render.daemonset_state(ds)
            return self._set_status(body, state, msg, generation, checked.warnings,
                                    nodes_ready=render.nodes_ready(ds))

    def teardown(self, name: str) -> None:
        """The ApplicationLayer is being deleted: remove what we made, disable capture."""
        with self._lock:
            removed = self._remove_owned()
            self._patch_node_config(collect_logs=False)
            log.info("ApplicationLayer %s deleted: removed %d objects, tproxyMode Disabled",
                     name, removed)

    def refresh_status(self) -> str | None:
        """Recompute the state from the DaemonSet (called on DaemonSet events)."""
        with self._lock:
            try:
                body = self.kube.get(al_path(alspec.REQUIRED_NAME))
            except KubeError as e:
                if e.status == 404:
                    return None
                raise
            if (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            current = body.get("status") or {}
            if current.get("state") not in ("Ready", "Progressing"):
                return None  # Degraded / Disabled come from the spec, not the DaemonSet
            checked = alspec.check(alspec.REQUIRED_NAME, body.get("spec") or {})
            ds = self._daemonset()
            state, msg = render.daemonset_state(ds)
            generation = int((body.get("metadata") or {}).get("generation") or 0)
            return self._set_status(body, state, msg, generation, checked.warnings,
                                    nodes_ready=render.nodes_ready(ds))

    def node_config_changed(self) -> None:
        """The node-agent configuration changed: re-render (prefix, port and log dir are in
        the DaemonSet and the Envoy config)."""
        try:
            body = self.kube.get(al_path(alspec.REQUIRED_NAME))
        except KubeError as e:
            if e.status == 404:
                return
            raise
        if not (body.get("metadata") or {}).get("deletionTimestamp"):
            self.reconcile(body)

    def node_changed(self, name: str, node: Mapping[str, Any] | None) -> None:
        """A node was added, changed (`node`) or deleted (None): re-render when the
        NetworkPolicy's node addresses differ from the last ones rendered. Kept per node from
        the events, so a node's status heartbeat costs no API call."""
        with self._lock:
            if node is None:
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = tuple(netpol.node_addresses([node]))
            if self._union() == self.node_cidrs:
                return
        self.node_config_changed()

    # ---- parts -----------------------------------------------------------------------------
    def _node_cidrs(self) -> tuple[str, ...]:
        nodes, _ = self.kube.list("/api/v1/nodes")
        self._nodes = {str((n.get("metadata") or {}).get("name")): tuple(netpol.node_addresses([n]))
                       for n in nodes}
        return self._union()

    def _union(self) -> tuple[str, ...]:
        return tuple(netpol.sort_cidrs({c for cs in self._nodes.values() for c in cs}))

    def _service_ips(self) -> list[str]:
        try:
            svc = self.kube.get(f"/api/v1/namespaces/{self.cfg.namespace}/services/{render.SERVER}")
        except KubeError as e:
            if e.status == 404:
                return []
            raise
        spec = svc.get("spec") or {}
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        return [str(i) for i in ips if i and i != "None"]

    def _secret(self, name: str, kind: str = "secrets") -> JSON | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/{self.cfg.namespace}/{kind}/{name}")
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def storage_changed(self) -> None:
        """The LogStorage changed (or went away): re-render the server from it."""
        self.node_config_changed()

    def refresh_storage_status(self) -> None:
        """The server's workload changed: recompute the LogStorage's status."""
        with self._lock:
            body, storage = self._log_storage()
            if body is not None and storage is not None:
                self._storage_status(body, storage)

    # ---- parts -----------------------------------------------------------------------------
    def _log_storage(self) -> tuple[JSON | None, logstorage.LogStorageSpec | None]:
        """(body, spec) of the LogStorage; (None, defaults) when there is none; (body, None)
        when it is invalid (its status then says why)."""
        try:
            body = self.kube.get(logstorage.PATH)
        except KubeError as e:
            if e.status == 404:
                return None, logstorage.DEFAULT
            raise
        meta = body.get("metadata") or {}
        checked = logstorage.check(str(meta.get("name")), body.get("spec") or {})
        if not checked.valid:
            msg = "invalid LogStorage: " + "; ".join(checked.errors)
            log.warning("%s", msg)
            self._patch_storage_status(body, "Degraded", msg)
        return body, checked.spec

    def _storage_status(self, body: JSON | None, storage: logstorage.LogStorageSpec) -> None:
        if body is None:
            return
        kind = logstorage.workload_kind(storage)
        state, msg = logstorage.workload_state(self._server_workload(kind), storage)
        self._patch_storage_status(body, state, msg)

    def _patch_storage_status(self, body: JSON, state: str, message: str) -> None:
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        previous = body.get("status") or {}
        new = status.build(state, message, generation=generation, now=_now(), previous=previous)
        if not status.same(previous, new):
            try:
                self.kube.merge_patch(logstorage.PATH + "/status", {"status": new})
            except KubeError as e:
                if e.status != 404:
                    raise

    def _apply(self, obj: Mapping[str, Any]) -> None:
        try:
            self.kube.apply(obj, field_manager=FIELD_MANAGER)
        except KubeError as e:
            if e.status != 422 or obj.get("kind") != "StatefulSet":
                raise
            # storageClassName/storageSize changed: a StatefulSet's claim template is immutable.
            # Replace the StatefulSet; its claim (and data) stays and is reused by the new pod.
            log.info("server StatefulSet cannot be updated in place (%s): replacing it", e)
            self._delete_server_workload("StatefulSet")
            self.kube.apply(obj, field_manager=FIELD_MANAGER)

    def _server_workload(self, kind: str) -> JSON | None:
        res = self.kube.resource("apps/v1", kind)
        try:
            return self.kube.get(res.path(self.cfg.namespace, render.SERVER))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def _ensure_tls(self, ctx: render.RenderContext, ips: list[str]) -> tls.Material | None:
        """Read the CA and server Secrets; issue what is missing, expiring or for other names
        (operator/tls.py decides); write only what changed. With cert-manager, the bundle is
        cert-manager's `ca.crt` (None until it has issued)."""
        server_secret = self._secret(tls.SERVER_SECRET)
        if self.cfg.cert_manager_issuer is not None:
            pair = tls.pair_from_secret(server_secret)
            ca = tls.secret_bytes(server_secret, tls.CA_CERT_KEY) or b""
            return tls.Material(None, pair, ca) if pair else None
        cm = self._secret(tls.CA_CONFIGMAP, "configmaps")
        previous = str(((cm or {}).get("data") or {}).get(tls.CA_CERT_KEY) or "").encode()
        ca_secret = self._secret(tls.CA_SECRET)
        material, reasons = tls.ensure(tls.ca_from_secret(ca_secret), tls.pair_from_secret(server_secret),
                                       previous,
                                       [*render.server_names(ctx), *tls.PORT_FORWARD_NAMES],
                                       [*ips, *tls.PORT_FORWARD_IPS], self.clock())
        meta: dict[str, Any] = {"namespace": ctx.namespace, "labels": {"app.kubernetes.io/part-of": "l7scope",
                                                       **render.MANAGED_BY}}
        if ctx.owner is not None:
            meta["ownerReferences"] = [ctx.owner]
        for reason in reasons:
            log.info("TLS: %s", reason)
        if any(r.startswith("new CA") for r in reasons) or ca_secret is None:
            self.kube.apply(tls.ca_secret(material, meta), field_manager=FIELD_MANAGER)
        if reasons or server_secret is None:
            self.kube.apply(tls.server_secret(material, meta), field_manager=FIELD_MANAGER)
        if cm is None or previous != material.bundle_pem:
            self.kube.apply(tls.ca_configmap(material, meta), field_manager=FIELD_MANAGER)
        return material

    def _delete_server_workload(self, kind: str) -> None:
        path = self.kube.resource("apps/v1", kind).path(self.cfg.namespace, render.SERVER)
        if self.kube.exists(path) and self.kube.delete(path, propagation="Background"):
            log.info("engine changed: removed the server's %s", kind)

    def _daemonset(self) -> JSON | None:
        try:
            return self.kube.get(f"/apis/apps/v1/namespaces/{self.cfg.namespace}/daemonsets/"
                                 f"{render.DAEMONSET}")
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def _ensure_namespace(self, ns_obj: Mapping[str, Any]) -> None:
        if self.kube.exists(f"/api/v1/namespaces/{self.cfg.namespace}"):
            return
        try:
            self.kube.create(ns_obj)
        except KubeError as e:
            if e.status != 409:
                raise

    def _patch_node_config(self, collect_logs: bool) -> NodeSettings:
        try:
            current = self.kube.get(nodeconfig.PATH)
        except KubeError as e:
            if e.status != 404:
                raise
            if not collect_logs:
                return NodeSettings()
            try:
                current = self.kube.create(nodeconfig.empty())
            except KubeError as e2:
                if e2.status != 409:
                    raise
                current = self.kube.get(nodeconfig.PATH)
        spec = dict(current.get("spec") or {})
        patch = tproxy_patch(spec, collect_logs)
        if patch:
            log.info("node-agent configuration: %s", patch)
            current = self.kube.merge_patch(nodeconfig.PATH, {"spec": patch})
            spec = dict(current.get("spec") or {})
        return from_mapping(spec, f"{nodeconfig.PLURAL}/{nodeconfig.NAME}")

    def _remove_owned(self) -> int:
        removed = 0
        for api_version, kind, name, namespaced in render.OWNED:
            res = self.kube.resource(api_version, kind)
            path = res.path(self.cfg.namespace if namespaced else None, name)
            if self.kube.delete(path, propagation="Background"):
                removed += 1
        return removed

    def _set_status(self, body: Mapping[str, Any], state: str, message: str, generation: int,
                    warnings: list[str], *, nodes_ready: str | None = None) -> str:
        name = str((body.get("metadata") or {}).get("name"))
        previous = body.get("status") or {}
        new = status.build(state, message, generation=generation, now=_now(),
                           previous=previous, warnings=warnings, nodes_ready=nodes_ready)
        if not status.same(previous, new):
            try:
                self.kube.merge_patch(al_path(name) + "/status", {"status": new})
            except KubeError as e:
                if e.status != 404:
                    raise
        return state
