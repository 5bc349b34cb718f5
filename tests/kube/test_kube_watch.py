"""The node agent's feeds against the real API server: pods, Services, EndpointSlices
(`discovery.k8s.io/v1beta1` on 1.20) and NodeAgentConfiguration changes reach the metadata
cache and the settings callback; watches survive the server ending their streams."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeharness import ControlPlane, restoring_node_config, wait_for

from l7scope.contracts import nodeconfig
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.kube.client import Kube
from l7scope.node.cluster_feed import Watches, endpoint_source, start_watches
from l7scope.node.metadata import MetadataCache
from l7scope.operator import chart

pytestmark = pytest.mark.kube


@pytest.fixture
def app(control_plane: ControlPlane, kube: Kube) -> Iterator[dict[str, Any]]:
    """A namespace with one pod (scheduled, marked Running in the API by the pod-status writer) and its Service."""
    crds = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    ns = f"watch-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "web-0", "namespace": ns, "labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "web", "image": "web:1",
                                          "ports": [{"containerPort": 8080}]}]}})
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                 "spec": {"selector": {"app": "web"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    yield {"ns": ns}
    kube.delete(f"/api/v1/namespaces/{ns}/pods/web-0", grace_period_seconds=0)
    kube.delete(f"/api/v1/namespaces/{ns}")


@pytest.fixture
def feed(kube: Kube) -> Iterator[tuple[MetadataCache, Watches, list[NodeSettings]]]:
    cache = MetadataCache()
    got: list[NodeSettings] = []
    lock = threading.Lock()

    def on_settings(s: NodeSettings) -> None:
        with lock:
            got.append(s)

    # 2 s watch streams: the server ends them often, the loop must keep re-watching
    w = start_watches(kube, cache, on_settings, timeout_seconds=2)
    assert w.wait_synced(15), w.stats()
    yield cache, w, got
    w.stop()


def test_endpoint_slices_v1beta1_on_1_20(kube: Kube) -> None:
    assert kube.server_version().startswith("v1.20.")
    assert endpoint_source(kube) == ("/apis/discovery.k8s.io/v1beta1/endpointslices", "EndpointSlice")


def test_service_endpoints_and_annotation_reach_the_cache(
        control_plane: ControlPlane, kube: Kube, app: dict[str, Any],
        feed: tuple[MetadataCache, Watches, list[NodeSettings]]) -> None:
    cache, watches, _ = feed
    ns = app["ns"]
    pod_ip = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{ns}/pods/web-0").get("status") or {})
                      .get("podIP"), 30, 0.1, "pod running with an IP")
    svc = wait_for(lambda: cache.service_by_endpoint(pod_ip, 8080), 30, 0.05,
                   "the EndpointSlice controller's slice in the cache")
    assert (svc.namespace, svc.name) == (ns, "web")
    assert cache.pod_by_ip(pod_ip) is not None and cache.pod_by_ip(pod_ip).name == "web-0"  # type: ignore[union-attr]
    assert "projectcalico.org/l7-logging" not in svc.annotations
    time.sleep(3)  # outlive at least one 2 s watch stream
    t0 = time.monotonic()
    control_plane.kubectl("annotate", "svc", "-n", ns, "web", "projectcalico.org/l7-logging=true")
    wait_for(lambda: (cache.service(ns, "web").annotations.get("projectcalico.org/l7-logging")  # type: ignore[union-attr]
                      == "true"), 2.0, 0.02, "annotation in the cache within 2 s")
    annotated_after = time.monotonic() - t0
    control_plane.kubectl("annotate", "svc", "-n", ns, "web", "projectcalico.org/l7-logging-")
    wait_for(lambda: "projectcalico.org/l7-logging" not in cache.service(ns, "web").annotations,  # type: ignore[union-attr]
             2.0, 0.02, "annotation removed from the cache within 2 s")
    assert sum(w.stats.restarts for w in watches.watches) > 0, "streams never ended and resumed"
    assert watches.counters()["watch_errors"] == 0, watches.stats()
    print(f"annotation visible in the cache {annotated_after * 1000:.0f} ms after kubectl annotate")


def test_node_agent_configuration_is_read_live(
        control_plane: ControlPlane, kube: Kube,
        feed: tuple[MetadataCache, Watches, list[NodeSettings]]) -> None:
    _, watches, got = feed
    with restoring_node_config(kube):
        _settings_follow_edits(control_plane, kube, watches, got)


def _settings_follow_edits(control_plane: ControlPlane, kube: Kube, watches: Watches,
                           got: list[NodeSettings]) -> None:
    if not kube.exists(nodeconfig.PATH):
        kube.create(nodeconfig.empty())
    control_plane.kubectl("patch", "nodeagentconfiguration", "default", "--type=merge",
                          "-p", '{"spec":{"tproxyMode":"EnabledAllServices","l7LogsFlushInterval":"3s"}}')
    s = wait_for(lambda: next((x for x in reversed(got) if x.tproxy_mode == "EnabledAllServices"), None),
                 2.0, 0.02, "new settings within 2 s")
    assert s.l7_logs_flush_interval == 3.0
    control_plane.kubectl("patch", "nodeagentconfiguration", "default", "--type=merge",
                          "-p", '{"spec":{"tproxyMode":"Disabled","l7LogsFlushInterval":null}}')
    wait_for(lambda: got[-1].tproxy_mode == "Disabled", 2.0, 0.02, "disabled within 2 s")
    assert watches.settings is not None and watches.settings.errors == 0


def test_node_agent_starts_with_the_clusters_policy_sync_prefix(
        control_plane: ControlPlane, kube: Kube, tmp_path: Path, host_dir: Path) -> None:
    """`l7scope node --kube`: settings that only apply at start (the Policy Sync socket's
    directory) come from the NodeAgentConfiguration before the agent starts."""
    crds = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    prefix = host_dir / "nodeagent"
    with restoring_node_config(kube):
        if not kube.exists(nodeconfig.PATH):
            kube.create(nodeconfig.empty())
        kube.merge_patch(nodeconfig.PATH, {"spec": {"policySyncPathPrefix": str(prefix),
                                                    "l7LogsFileEnabled": False, "tproxyMode": "Disabled"}})
        log = tmp_path / "agent.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "l7scope", "node", "--kube", "--kubeconfig",
                 str(control_plane.kubeconfig), "--node-name", "node-a",
                 "--data-dir", str(tmp_path / "data")], stdout=out, stderr=out)
        try:
            wait_for(lambda: (prefix / "socket").exists(), 30, 0.1, f"Policy Sync socket in {prefix}")
            assert proc.poll() is None, log.read_text()
            assert "takes effect after a restart" not in log.read_text()
        finally:
            proc.terminate()
            proc.wait(15)


def test_api_server_refuses_unsafe_host_paths_and_ports(control_plane: ControlPlane,
                                                         kube: Kube) -> None:
    """The CRD's schema (generated from NodeSettings) makes the API server itself refuse a
    host path outside /run, /var/run, /var/lib, /var/log and a tproxyPort in the NodePort
    range, before any node agent or operator sees it."""
    from l7scope.kube.client import KubeError

    crds = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    with restoring_node_config(kube):
        if not kube.exists(nodeconfig.PATH):
            kube.create(nodeconfig.empty())
        for bad in ({"policySyncPathPrefix": "/etc"}, {"policySyncPathPrefix": "/var/run"},
                    {"policySyncPathPrefix": "/var/run/../../etc"},
                    {"l7LogsFileDirectory": "/tmp/logs"}, {"tproxyPort": 30080}):
            with pytest.raises(KubeError) as err:
                kube.merge_patch(nodeconfig.PATH, {"spec": bad})
            assert err.value.status == 422, err.value
            assert next(iter(bad)) in err.value.message
        kube.merge_patch(nodeconfig.PATH, {"spec": {"policySyncPathPrefix": "/run/l7scope-x",
                                                    "tproxyPort": 15001}})
        assert kube.get(nodeconfig.PATH)["spec"]["policySyncPathPrefix"] == "/run/l7scope-x"
