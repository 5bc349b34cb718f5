"""The LogStorage against a real kube-apiserver: its CRD's schema rejects bad values, and the
operator (a child process with the chart's service account and RBAC) re-shapes the server when
the LogStorage changes: StatefulSet + claim for duckdb, a Deployment of N replicas for
clickhouse, and back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import kubeharness
import pytest
from kubeharness import ControlPlane, wait_for
from test_kube_operator import Scenario, _installed

from l7scope.kube.client import Kube, KubeError
from l7scope.operator import logstorage, render
from l7scope.testing.workshop import WORKSHOP_AL

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, kube: Kube, tmp_path_factory: pytest.TempPathFactory,
              request: pytest.FixtureRequest) -> Iterator[Scenario]:
    with kubeharness.restoring_node_config(kube):
        yield from _installed(control_plane, kube, tmp_path_factory, request)


def _apply(cp: ControlPlane, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    doc = {"apiVersion": "l7scope.io/v1", "kind": "LogStorage", "metadata": {"name": "default"},
           "spec": spec}
    # --validate=false: the API server's own check of our schema, not kubectl's
    return cp.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(doc), check=False)


@pytest.mark.parametrize(("spec", "field"), [
    ({"engine": "sqlite"}, "spec.engine"),
    ({"retention": {"l7Logs": 0}}, "spec.retention.l7Logs"),
    ({"storageSize": "lots"}, "spec.storageSize"),
    ({"server": {"replicas": 0}}, "spec.server.replicas"),
    ({"engine": "clickhouse", "clickhouse": {"url": "clickhouse://u:pw@h:9000/db"}}, "spec.clickhouse.url"),
    ({"clickhouse": {"database": "l7"}}, "spec.clickhouse.url"),  # required
])
def test_schema_rejects_bad_values(installed: Scenario, spec: dict[str, Any], field: str) -> None:
    before = installed.kube.get(logstorage.PATH)["spec"]
    out = _apply(installed.cp, spec)
    assert out.returncode != 0, out.stdout
    assert field in out.stderr, out.stderr
    assert installed.kube.get(logstorage.PATH)["spec"] == before  # nothing stored


def _workload(sc: Scenario, kind: str) -> dict[str, Any] | None:
    try:
        return sc.kube.get(sc.kube.resource("apps/v1", kind).path(sc.ns, render.SERVER))
    except KubeError as e:
        if e.status == 404:
            return None
        raise


def _wait_kind(sc: Scenario, kind: str, gone: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        w = _workload(sc, kind)
        return w if w is not None and _workload(sc, gone) is None else None
    try:
        return wait_for(check, timeout, 0.3, f"server {kind}")  # type: ignore[no-any-return]
    except AssertionError:
        assert sc.operator is not None
        raise AssertionError(f"operator log:\n{sc.operator.log_tail()}") from None


def _degraded(sc: Scenario) -> dict[str, Any] | None:
    ls = sc.kube.get(logstorage.PATH)
    return ls if (ls.get("status") or {}).get("state") == "Degraded" else None


def _arg(w: dict[str, Any], name: str) -> str:
    cmd = w["spec"]["template"]["spec"]["containers"][0]["command"]
    return str(cmd[cmd.index(name) + 1])


def test_log_storage_changes_reshape_the_server(installed: Scenario) -> None:
    sc = installed
    sc.cp.kubectl("apply", "-f", "-", input=WORKSHOP_AL)
    # the chart's LogStorage (spec {}): the embedded store on a claim
    sts = _wait_kind(sc, "StatefulSet", "Deployment")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert _arg(sts, "--retention") == "1d"
    # the StatefulSet controller made the claim
    pvc = wait_for(lambda: sc.kube.exists(f"/api/v1/namespaces/{sc.ns}/persistentvolumeclaims/"
                                          f"data-{render.SERVER}-0"), 30, 0.3, "claim")
    assert pvc
    # to ClickHouse with 2 stateless replicas
    out = _apply(sc.cp, {"engine": "clickhouse", "retention": {"l7Logs": 3},
                         "clickhouse": {"url": "clickhouse://ch.example:9000", "database": "l7",
                                        "credentialsSecret": {"name": "ch-creds"}},
                         "server": {"replicas": 2}})
    assert out.returncode == 0, out.stderr
    dep = _wait_kind(sc, "Deployment", "StatefulSet")
    assert dep["spec"]["replicas"] == 2
    assert _arg(dep, "--store") == "clickhouse" and _arg(dep, "--retention") == "3d"
    assert _arg(dep, "--clickhouse-url").endswith("@ch.example:9000/l7")
    # the claim outlives the StatefulSet (Retain): the data is still there to come back to
    assert sc.kube.exists(f"/api/v1/namespaces/{sc.ns}/persistentvolumeclaims/data-{render.SERVER}-0")
    # replicas change applied
    sc.cp.kubectl("patch", "logstorage", "default", "--type=merge", "-p", '{"spec":{"server":{"replicas":3}}}')
    wait_for(lambda: (_workload(sc, "Deployment") or {}).get("spec", {}).get("replicas") == 3,
             60, 0.3, "3 replicas")
    # a combination the schema cannot refuse (duckdb with 3 replicas; cross-field rules are
    # the operator's) gives a Degraded status, and the running server is left alone
    sc.cp.kubectl("patch", "logstorage", "default", "--type=merge", "-p", '{"spec":{"engine":"duckdb"}}')
    ls = wait_for(lambda: _degraded(sc), 60, 0.3, "Degraded")
    assert "server.replicas" in ls["status"]["conditions"][2]["message"]
    assert _workload(sc, "Deployment") is not None and _workload(sc, "StatefulSet") is None
    # back to the embedded store
    out = _apply(sc.cp, {"engine": "duckdb"})  # apply: server.replicas goes away
    assert out.returncode == 0, out.stderr
    sts = _wait_kind(sc, "StatefulSet", "Deployment")
    assert "--store" not in sts["spec"]["template"]["spec"]["containers"][0]["command"]
    status = wait_for(lambda: sc.kube.get(logstorage.PATH).get("status"), 30, 0.3, "status")
    assert status["state"] in ("Progressing", "Ready")
