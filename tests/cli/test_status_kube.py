"""`l7scope status --kubeconfig` against a real kube-apiserver (tests/kube/kubeharness.py): the
operator's rendered DaemonSet and server, pods marked running in the API by the pod-status writer (nothing runs), annotated
Services. Healthy first; then a collector container that is not ready is reported (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import L7SCOPE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kube"))
import kubeharness

from l7scope.operator import render
from l7scope.operator.spec import check

pytestmark = [pytest.mark.kube, pytest.mark.slow,
              # the test control plane's kubeconfig skips TLS verification (self-signed)
              pytest.mark.filterwarnings("ignore:Unverified HTTPS request")]


@pytest.fixture(scope="module")
def cp() -> Iterator[kubeharness.ControlPlane]:
    why = kubeharness.missing_parts()
    if why:
        pytest.skip(f"no test control plane: {why}")
    plane = kubeharness.start()
    try:
        yield plane
    finally:
        plane.stop()


def status(cp: kubeharness.ControlPlane, ns: str) -> tuple[int, dict[str, Any], str]:
    res = subprocess.run([L7SCOPE, "status", "--kubeconfig", str(cp.kubeconfig), "--namespace", ns,
                          "-o", "json"], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout) if res.stdout.strip() else {}, res.stderr


def test_status_from_the_kubernetes_api(cp: kubeharness.ControlPlane) -> None:
    kube = cp.kube()
    ns = f"st-{uuid.uuid4().hex[:6]}"
    checked = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    assert checked.spec is not None, checked.errors
    for obj in render.render(checked.spec, render.RenderContext(namespace=ns)):
        kube.create(obj)
    # the server is a StatefulSet on a claim (the default LogStorage); the harness has no
    # provisioner: a volume bound to its claim in advance
    kube.create({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-data"},
                 "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                          "persistentVolumeReclaimPolicy": "Delete",
                          "hostPath": {"path": f"/tmp/{ns}-data", "type": "DirectoryOrCreate"},
                          "claimRef": {"namespace": ns, "name": f"data-{render.SERVER}-0"}}})
    for name, ann in (("cart", {"projectcalico.org/l7-logging": "true"}), ("web", {"l7scope.io/logging": "true"}),
                      ("db", {})):
        kube.create({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": ns, "annotations": ann},
                     "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})

    deadline = time.monotonic() + 90
    while True:
        code, report, err = status(cp, ns)
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code == 0, (report, err)
    parts = sorted((p["node"], p["part"]) for p in report["parts"])
    assert parts == sorted([("-", "server"), *[(n.name, part) for n in cp.nodes
                                               for part in ("envoy", "collector", "node-agent")]])
    assert report["annotated_services"]["*"] == [f"{ns}/cart", f"{ns}/web"]
    assert any("counters are not available" in n for n in report["notes"])

    # the pod-status writer would mark it ready again: stop it, then a collector turns not ready
    assert cp.pod_status_writer is not None
    cp.pod_status_writer.stop()
    pods, _ = kube.list(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app.kubernetes.io/name={render.DAEMONSET}")
    victim = pods[0]
    statuses = victim["status"]["containerStatuses"]
    for c in statuses:
        if c["name"] == "l7-collector":
            c["ready"] = False
            c["restartCount"] = 2
            c["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    kube.merge_patch(f"/api/v1/namespaces/{ns}/pods/{victim['metadata']['name']}/status",
                     {"status": {"containerStatuses": statuses}})
    code, report, _ = status(cp, ns)
    assert code == 1
    bad = [(p["node"], p["part"], p["state"]) for p in report["parts"] if not p["healthy"]]
    assert bad == [(victim["spec"]["nodeName"], "collector", "waiting: CrashLoopBackOff")]
    kube.close()


def test_status_context_and_kubeconfig_env(cp: kubeharness.ControlPlane) -> None:
    """`--context` picks the kubeconfig's context (an unknown one is a clear error, exit 1),
    and `--context` alone reads $KUBECONFIG, as kubectl does."""
    import yaml

    ctx = yaml.safe_load(cp.kubeconfig.read_text())["current-context"]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    ok = subprocess.run([L7SCOPE, "status", "--context", ctx, "-n", "no-such-ns", "-o", "json"],
                        capture_output=True, text=True, timeout=60,
                        env={**env, "KUBECONFIG": str(cp.kubeconfig)})
    assert "Traceback" not in ok.stderr, ok.stderr
    body = json.loads(ok.stdout)  # the API answered: nothing installed in that namespace
    assert body["healthy"] is False and ok.returncode == 1
    bad = subprocess.run([L7SCOPE, "status", "--kubeconfig", str(cp.kubeconfig), "--context",
                          "nope", "-o", "json"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
