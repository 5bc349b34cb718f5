"""The LogStorage spec and the server workload it shapes (the real API server: tests/kube)."""

from __future__ import annotations

from typing import Any

from test_operator_reconcile import MemoryKube, setup

from l7scope.operator import logstorage, render
from l7scope.operator.reconcile import OperatorConfig, Reconciler
from l7scope.operator.spec import check as al_check


def _server(raw: dict[str, Any] | None) -> dict[str, Any]:
    checked = logstorage.check("default", raw)
    assert checked.valid, checked.errors
    assert checked.spec is not None
    al = al_check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}}).spec
    assert al is not None
    objs = render.render(al, render.RenderContext(storage=checked.spec))
    [w] = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    return w


def _arg(w: dict[str, Any], name: str) -> str:
    cmd = w["spec"]["template"]["spec"]["containers"][0]["command"]
    return str(cmd[cmd.index(name) + 1])


def test_default_is_duckdb_on_a_claim_of_one_replica() -> None:
    w = _server(None)
    assert w["kind"] == "StatefulSet" and w["spec"]["replicas"] == 1
    assert w["spec"]["serviceName"] == render.SERVER
    [claim] = w["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    pod = w["spec"]["template"]["spec"]
    assert "data" not in [v["name"] for v in pod["volumes"]]  # no emptyDir any more
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"] == _arg(w, "--data-dir") == logstorage.DATA_DIR
    assert _arg(w, "--retention") == "1d"
    assert "--store" not in pod["containers"][0]["command"]


def test_storage_class_size_and_retention() -> None:
    w = _server({"storageClassName": "fast", "storageSize": "3Gi", "retention": {"l7Logs": 7}})
    claim = w["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "3Gi"
    assert _arg(w, "--retention") == "7d"


def test_clickhouse_is_a_stateless_deployment_of_n_replicas_with_secret_credentials() -> None:
    w = _server({"engine": "clickhouse", "server": {"replicas": 3,
                                                   "resources": {"limits": {"memory": "1Gi"}}},
                 "clickhouse": {"url": "clickhouse://ch.db:9000", "database": "l7", "cluster": "c1",
                                "credentialsSecret": {"name": "ch-creds"}}})
    assert w["kind"] == "Deployment" and w["spec"]["replicas"] == 3
    assert w["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "volumeClaimTemplates" not in w["spec"]
    c = w["spec"]["template"]["spec"]["containers"][0]
    assert _arg(w, "--store") == "clickhouse"
    assert _arg(w, "--clickhouse-url") == \
        "clickhouse://$(L7SCOPE_CLICKHOUSE_USER):$(L7SCOPE_CLICKHOUSE_PASSWORD)@ch.db:9000/l7"
    assert _arg(w, "--clickhouse-cluster") == "c1"
    env = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert env["L7SCOPE_CLICKHOUSE_PASSWORD"] == {"secretKeyRef": {"name": "ch-creds", "key": "password"}}
    assert c["resources"] == {"limits": {"memory": "1Gi"}}


def test_check_rejects_bad_values_with_field_names() -> None:
    assert logstorage.check("other", {}).errors == ["resource name must be 'default' (got 'other')"]
    errs = logstorage.check("default", {"engine": "clickhouse"}).errors
    assert errs == ["spec.clickhouse.url: engine clickhouse needs it"]
    errs = logstorage.check("default", {"server": {"replicas": 2}}).errors
    assert errs and "must be 1" in errs[0]
    errs = logstorage.check("default", {"retention": {"l7Logs": 0}, "engine": "sqlite"}).errors
    assert {e.split(":")[0] for e in errs} == {"spec.retention.l7Logs", "spec.engine"}
    errs = logstorage.check("default", {"storageSize": "lots"}).errors
    assert errs and errs[0].startswith("spec.storageSize")
    errs = logstorage.check("default", {"engine": "clickhouse",
                                        "clickhouse": {"url": "clickhouse://u:p@h:9000/db"}}).errors
    assert errs and errs[0].startswith("spec.clickhouse.url")


def _ls(kube: MemoryKube, spec: dict[str, Any], generation: int = 1) -> None:
    kube.objects[logstorage.PATH] = {"apiVersion": "l7scope.io/v1", "kind": "LogStorage",
                                     "metadata": {"name": "default", "generation": generation},
                                     "spec": spec}


def test_reconcile_switches_engine_and_replaces_the_other_workload() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled"}})
    sts = "/apis/apps/v1/namespaces/ns1/statefulsets/l7scope-server"
    dep = "/apis/apps/v1/namespaces/ns1/deployments/l7scope-server"
    rec.reconcile(body)
    assert kube.exists(sts) and not kube.exists(dep)
    _ls(kube, {"engine": "clickhouse", "clickhouse": {"url": "clickhouse://ch:9000"},
               "server": {"replicas": 2}})
    rec.storage_changed()
    assert kube.exists(dep) and not kube.exists(sts)
    assert kube.get(dep)["spec"]["replicas"] == 2
    st = kube.get(logstorage.PATH)["status"]
    assert st["state"] == "Progressing" and "0/2" in st["conditions"][1]["message"]
    kube.objects[dep]["metadata"]["generation"] = 1
    kube.objects[dep]["status"] = {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2}
    rec.refresh_storage_status()
    assert kube.get(logstorage.PATH)["status"]["state"] == "Ready"
    # back to the embedded store
    _ls(kube, {"engine": "duckdb"}, generation=2)
    rec.storage_changed()
    assert kube.exists(sts) and not kube.exists(dep)


def test_invalid_log_storage_is_degraded_and_leaves_the_server_alone() -> None:
    kube, rec, body = setup({"logCollection": {"collectLogs": "Enabled"}})
    rec.reconcile(body)
    sts = "/apis/apps/v1/namespaces/ns1/statefulsets/l7scope-server"
    before = kube.get(sts)
    _ls(kube, {"engine": "duckdb", "server": {"replicas": 3}})
    rec.storage_changed()
    st = kube.get(logstorage.PATH)["status"]
    assert st["state"] == "Degraded" and "server.replicas" in st["conditions"][2]["message"]
    assert kube.get(sts) == before


def test_no_log_storage_means_defaults() -> None:
    kube = MemoryKube()
    rec = Reconciler(kube, OperatorConfig(namespace="ns1"))  # type: ignore[arg-type]
    body, spec = rec._log_storage()
    assert body is None and spec == logstorage.DEFAULT
