"""Thin kopf wiring around `reconcile.Reconciler` (with `cli.py`, the only modules importing kopf).

- ApplicationLayer resumed (operator start), created or updated -> `reconcile`;
- ApplicationLayer deleted (kopf finalizer `l7scope.io/operator`) -> `teardown`;
- every RENEW_CHECK_S (6 h) -> `reconcile` again, so the TLS certificates renew in time;
- our DaemonSet changed (pods becoming available, rolling) -> `refresh_status`;
- NodeAgentConfiguration changed -> `node_config_changed`;
- a node added, removed or changed -> `node_changed` (re-renders the server's NetworkPolicy
  only when the nodes' InternalIPs differ);
- LogStorage changed or deleted -> `storage_changed` (re-render the server);
- the server's StatefulSet/Deployment changed -> `refresh_storage_status`.

kopf keeps its bookkeeping in annotations under `l7scope.io/` (not in `status`, which is ours),
so handlers are idempotent and an operator restart resumes where it was. Cluster scanning is
off (no list/watch of Namespaces and CRDs, which its least-privilege RBAC does not grant).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import kopf

from l7scope.contracts import nodeconfig
from l7scope.kube.client import Kube, KubeError
from l7scope.operator import logstorage, render
from l7scope.operator import spec as alspec
from l7scope.operator.reconcile import OperatorConfig, Reconciler

log = logging.getLogger(__name__)

RETRY_DELAY = 5.0


#: How often the ApplicationLayer is reconciled without any event (certificate renewal).
RENEW_CHECK_S: Final = 6 * 3600.0


def build_registry(kube: Kube, cfg: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    rec = Reconciler(kube, cfg)
    al = (alspec.GROUP, alspec.VERSION, alspec.PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "l7scope.io/operator"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="l7scope.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="l7scope.io", key="last-handled-configuration")
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 4
        # No cluster scanning: kopf would list/watch every Namespace and CRD to follow new ones.
        # We serve one named namespace, and our CRDs exist before the operator starts (the
        # chart installs them first), so its RBAC grants neither (docs/security.md).
        settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        c = kube.credentials()
        return kopf.ConnectionInfo(
            server=c.server, ca_path=c.ca_file, insecure=c.insecure, token=c.token,
            scheme="Bearer" if c.token else None, certificate_path=c.cert_file,
            private_key_path=c.key_file, default_namespace=cfg.namespace)

    def run(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except KubeError as e:
            log.warning("%s failed: %s (retrying in %.0fs)", what, e, RETRY_DELAY)
            raise kopf.TemporaryError(str(e), delay=RETRY_DELAY) from None

    @kopf.on.resume(*al, registry=registry)
    @kopf.on.create(*al, registry=registry)
    @kopf.on.update(*al, registry=registry)
    def reconcile_application_layer(body: kopf.Body, **_: Any) -> None:
        state = run("reconcile", rec.reconcile, dict(body))
        log.info("ApplicationLayer %s: %s", body.get("metadata", {}).get("name"), state)

    # The TLS certificates renew only when a reconcile runs (operator/tls.py decides): one runs
    # at least every RENEW_CHECK_S, long before the server certificate's last 30 days end.
    @kopf.timer(*al, registry=registry, interval=RENEW_CHECK_S, initial_delay=RENEW_CHECK_S)
    def periodic_reconcile(body: kopf.Body, **_: Any) -> None:
        if not (body.get("metadata") or {}).get("deletionTimestamp"):
            run("periodic reconcile", rec.reconcile, dict(body))

    @kopf.on.delete(*al, registry=registry)
    def delete_application_layer(name: str, **_: Any) -> None:
        run("teardown", rec.teardown, name)

    @kopf.on.event("apps", "v1", "daemonsets", registry=registry,
                   labels={"app.kubernetes.io/name": render.DAEMONSET, **render.MANAGED_BY})
    def daemonset_changed(**_: Any) -> None:
        try:
            rec.refresh_status()
        except KubeError as e:
            log.warning("status refresh failed: %s", e)

    @kopf.on.event(nodeconfig.GROUP, nodeconfig.VERSION, nodeconfig.PLURAL, registry=registry,
                   field="metadata.name", value=nodeconfig.NAME)
    def node_config_event(type: str | None, **_: Any) -> None:
        if type in ("MODIFIED", "ADDED"):
            try:
                rec.node_config_changed()
            except KubeError as e:
                log.warning("re-render after node-config change failed: %s", e)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    def node_event(type: str | None, name: str, body: kopf.Body, **_: Any) -> None:
        try:
            rec.node_changed(name, None if type == "DELETED" else dict(body))
        except KubeError as e:
            log.warning("re-render after a node change failed: %s", e)

    @kopf.on.event(alspec.GROUP, alspec.VERSION, logstorage.PLURAL, registry=registry)
    def log_storage_event(type: str | None, **_: Any) -> None:
        try:
            rec.storage_changed()
        except KubeError as e:
            log.warning("re-render after LogStorage change failed: %s", e)

    @kopf.on.event("apps", "v1", "statefulsets", registry=registry,
                   labels={"app.kubernetes.io/name": render.SERVER, **render.MANAGED_BY})
    @kopf.on.event("apps", "v1", "deployments", registry=registry,
                   labels={"app.kubernetes.io/name": render.SERVER, **render.MANAGED_BY})
    def server_workload_changed(**_: Any) -> None:
        try:
            rec.refresh_storage_status()
        except KubeError as e:
            log.warning("LogStorage status refresh failed: %s", e)

    return registry
