"""The workshop's five steps against a real control plane (kube-apiserver 1.20.2 + kcm +
scheduler, two registered nodes, kubeharness's API-only pod-status writer instead of a kubelet),
with `l7scope operator` running as a
child process under the service account and RBAC that deploy/install.yaml creates.

The tests in this module run in order and share one installation; each checks one acceptance
point of the workshop flow.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeharness
import pytest
import yaml
from kubeharness import ControlPlane, OperatorProcess, wait_for

from l7scope.contracts import nodeconfig
from l7scope.kube.client import Kube, KubeError
from l7scope.operator import chart, render
from l7scope.testing.workshop import AL_PATH, WORKSHOP_AL

pytestmark = [pytest.mark.kube, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


class Scenario:
    def __init__(self, cp: ControlPlane, kube: Kube, ns: str, sa_kubeconfig: Path, tmp: Path) -> None:
        self.cp, self.kube, self.ns = cp, kube, ns
        self.sa_kubeconfig = sa_kubeconfig
        self.tmp = tmp
        self.operators: list[OperatorProcess] = []
        self.operator: OperatorProcess | None = None

    def start_operator(self) -> None:
        """Run `l7scope operator` with the service-account credentials, not the admin ones."""
        log = self.tmp / f"operator-{len(self.operators)}.log"
        self.operator = OperatorProcess(self.sa_kubeconfig, self.ns, log).start()
        self.operators.append(self.operator)

    def al(self) -> dict[str, Any]:
        return self.kube.get(AL_PATH)

    def ds(self) -> dict[str, Any]:
        return self.kube.get(f"/apis/apps/v1/namespaces/{self.ns}/daemonsets/{render.DAEMONSET}")

    def collector_pods(self) -> list[dict[str, Any]]:
        items, _ = self.kube.list(f"/api/v1/namespaces/{self.ns}/pods",
                                  labelSelector=f"app.kubernetes.io/name={render.DAEMONSET}")
        return [p for p in items if not (p.get("metadata") or {}).get("deletionTimestamp")]

    def state(self) -> str:
        return str((self.al().get("status") or {}).get("state") or "")

    def wait_state(self, want: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            al = self.al()
            return al if (al.get("status") or {}).get("state") == want else None
        try:
            return wait_for(check, timeout, 0.2, f"ApplicationLayer state {want}")  # type: ignore[no-any-return]
        except AssertionError:
            assert self.operator is not None
            self.operator.assert_alive()
            raise AssertionError(f"state is {self.al().get('status')}\noperator log:\n"
                                 f"{self.operator.log_tail()}") from None


@pytest.fixture(scope="module")
def scenario(control_plane: ControlPlane, kube: Kube, tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Iterator[Scenario]:
    with kubeharness.restoring_node_config(kube):
        yield from _installed(control_plane, kube, tmp_path_factory, request)


def _installed(control_plane: ControlPlane, kube: Kube, tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[Scenario]:
    ns = f"l7scope-{uuid.uuid4().hex[:6]}"
    docs = chart.render(namespace=ns)
    # CRDs first (and established), then everything else but the operator's own Deployment
    # (its image cannot run here: the operator runs as a child process instead).
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    rest = [d for d in docs if d["kind"] not in ("CustomResourceDefinition", "Deployment")]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rest))
    tmp = tmp_path_factory.mktemp("operator")
    sa_kc = kubeharness.service_account_kubeconfig(control_plane, kube, ns, "l7scope-operator", tmp / "sa.kubeconfig")
    sc = Scenario(control_plane, kube, ns, sa_kc, tmp)
    sc.start_operator()
    try:
        yield sc
    finally:
        for op in sc.operators:
            op.stop()
        if request.session.testsfailed:
            for op in sc.operators:
                print(f"--- {op.log_path} ---\n{op.log_tail(150)}")
        control_plane.kubectl("delete", "applicationlayer", "tigera-secure", "--ignore-not-found",
                              "--wait=false", check=False)
        with contextlib.suppress(KubeError):  # kopf's finalizer, if the operator could not
            kube.merge_patch(AL_PATH, {"metadata": {"finalizers": None}})
        control_plane.kubectl("delete", "ns", ns, "--wait=false", check=False)


def test_step1_patch_node_agent_configuration(scenario: Scenario) -> None:
    scenario.cp.kubectl("patch", "nodeagentconfiguration", "default", "--type=merge",
                        "-p", '{"spec":{"policySyncPathPrefix":"/var/run/nodeagent"}}')
    spec = scenario.kube.get(nodeconfig.PATH)["spec"]
    assert spec["policySyncPathPrefix"] == "/var/run/nodeagent"


def test_step2_3_workshop_application_layer_makes_a_collector_pod_per_node(scenario: Scenario) -> None:
    cp = scenario.cp
    cp.kubectl("apply", "-f", "-", input=WORKSHOP_AL)
    t0 = time.monotonic()
    al = scenario.wait_state("Ready", timeout=90)
    ready_after = time.monotonic() - t0
    pods = scenario.collector_pods()
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-a", "node-b"]
    # what the workshop's step 3 shows, as the API shows it: one l7-log-collector pod per node
    # with three containers. "3/3 Running" here is the pod-status writer's status, not running
    # containers (no kubelet): tests/cluster/test_cluster_workshop.py has the real pods.
    out = cp.kubectl("get", "pod", "-n", scenario.ns, "--no-headers").stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("l7-log-collector-")]
    assert len(rows) == 2, out
    for row in rows:
        assert row[1] == "3/3" and row[2] == "Running", out
    # status and defaults written back
    conds = {c["type"]: c["status"] for c in al["status"]["conditions"]}
    assert conds == {"Ready": "True", "Progressing": "False", "Degraded": "False"}
    assert al["spec"]["envoy"] == {"xffNumTrustedHops": 0, "useRemoteAddress": False}
    assert al["spec"]["logCollection"] == {"collectLogs": "Enabled", "logIntervalSeconds": 5,
                                           "logRequestsPerInterval": -1}
    # the operator enabled capture on the node agents, keeping the prefix of step 1
    spec = scenario.kube.get(nodeconfig.PATH)["spec"]
    assert (spec["policySyncPathPrefix"], spec["tproxyMode"]) == ("/var/run/nodeagent", "Enabled")
    # everything rendered exists and is owned by the ApplicationLayer
    uid = al["metadata"]["uid"]
    for api_version, kind, name, namespaced in render.OWNED:
        if (kind, name) == ("Deployment", render.SERVER):
            continue  # the chart's LogStorage keeps the embedded store: a StatefulSet
        res = scenario.kube.resource(api_version, kind)
        obj = scenario.kube.get(res.path(scenario.ns if namespaced else None, name))
        assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == [uid], (kind, name)
    cm = scenario.kube.get(f"/api/v1/namespaces/{scenario.ns}/configmaps/{render.CONFIGMAP}")
    assert "static_resources" in yaml.safe_load(cm["data"][render.CONFIGMAP_KEY])
    print(f"ApplicationLayer Ready {ready_after:.1f}s after kubectl apply")


def test_changing_log_interval_rolls_the_daemonset(scenario: Scenario) -> None:
    before = scenario.ds()
    old_hash = before["spec"]["template"]["metadata"]["annotations"][render.HASH_ANNOTATION]
    old_pods = {p["metadata"]["name"] for p in scenario.collector_pods()}
    scenario.cp.kubectl("patch", "applicationlayer", "tigera-secure", "--type=merge",
                        "-p", '{"spec":{"logCollection":{"logIntervalSeconds":10}}}')

    def rolled() -> bool:
        ds = scenario.ds()
        h = ds["spec"]["template"]["metadata"]["annotations"][render.HASH_ANNOTATION]
        pods = scenario.collector_pods()
        return h != old_hash and len(pods) == 2 and all(
            p["metadata"]["annotations"][render.HASH_ANNOTATION] == h
            and p["metadata"]["name"] not in old_pods for p in pods)

    wait_for(rolled, 90, 0.3, "every collector pod replaced with the new template")
    al = scenario.wait_state("Ready", timeout=60)
    assert al["status"]["observedGeneration"] == al["metadata"]["generation"]
    env = {e["name"]: e.get("value") for e in
           scenario.ds()["spec"]["template"]["spec"]["containers"][1]["env"]}
    assert env["ENVOY_LOG_INTERVAL_SECONDS"] == "10"


def test_invalid_spec_shows_a_clear_status_message(scenario: Scenario) -> None:
    assert scenario.operator is not None
    generation = scenario.ds()["metadata"]["generation"]
    scenario.cp.kubectl("patch", "applicationlayer", "tigera-secure", "--type=merge",
                        "-p", '{"spec":{"logCollection":{"logIntervalSeconds":0}}}')
    al = scenario.wait_state("Degraded", timeout=30)
    degraded = next(c for c in al["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert degraded["message"] == ("invalid ApplicationLayer: spec.logCollection.logIntervalSeconds "
                                   "must be at least 1 (got 0)")
    out = scenario.cp.kubectl("get", "applicationlayer", "tigera-secure", "--no-headers").stdout
    assert "Degraded" in out
    assert scenario.ds()["metadata"]["generation"] == generation  # running pods left alone
    scenario.operator.assert_alive()


def test_operator_restart_resumes(scenario: Scenario) -> None:
    assert scenario.operator is not None
    scenario.operator.stop()
    # fixed while the operator is down: it must pick this up when it comes back
    scenario.cp.kubectl("patch", "applicationlayer", "tigera-secure", "--type=merge",
                        "-p", '{"spec":{"logCollection":{"logIntervalSeconds":5}}}')
    scenario.start_operator()
    scenario.wait_state("Ready", timeout=90)
    env = {e["name"]: e.get("value") for e in
           scenario.ds()["spec"]["template"]["spec"]["containers"][1]["env"]}
    assert env["ENVOY_LOG_INTERVAL_SECONDS"] == "5"


def test_delete_removes_everything_and_disables_tproxy(scenario: Scenario) -> None:
    scenario.cp.kubectl("delete", "applicationlayer", "tigera-secure", "--timeout=60s")
    for api_version, kind, name, namespaced in render.OWNED:
        if (kind, name) == ("Deployment", render.SERVER):
            continue  # the chart's LogStorage keeps the embedded store: a StatefulSet
        res = scenario.kube.resource(api_version, kind)
        path = res.path(scenario.ns if namespaced else None, name)
        wait_for(lambda p=path: not scenario.kube.exists(p), 30, 0.2, f"{kind} {name} deleted")  # type: ignore[misc]
    spec = scenario.kube.get(nodeconfig.PATH)["spec"]
    assert spec["tproxyMode"] == "Disabled"
    assert spec["policySyncPathPrefix"] == "/var/run/nodeagent"  # left as is, like Calico
    wait_for(lambda: not scenario.collector_pods(), 60, 0.3, "collector pods gone")
    with pytest.raises(KubeError) as e:
        scenario.al()
    assert e.value.status == 404
    print(json.dumps({"deleted": [k for _, k, _, _ in render.OWNED]}))
