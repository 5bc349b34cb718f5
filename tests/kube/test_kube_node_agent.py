"""`l7scope node --kube` against the real API server: the agent's metadata cache is fed by the
watches (a pod and an annotated Service appear in /stats, enrichment resolves them through
`node aggregate`-equivalent Reports) and the NodeAgentConfiguration `default` replaces the
settings file live. tproxyMode stays Disabled: this test touches no network namespace."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from kubeharness import ControlPlane, wait_for

from l7scope.contracts import nodeconfig, policysync
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts import policysync_pb2_grpc as pb_grpc
from l7scope.kube.client import Kube
from l7scope.operator import chart

pytestmark = pytest.mark.kube


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_agent_fed_by_watches_and_cluster_settings(control_plane: ControlPlane, kube: Kube,
                                                    tmp_path: Path, host_dir: Path) -> None:
    crds = [d for d in chart.render() if d["kind"] == "CustomResourceDefinition"]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crds))
    control_plane.kubectl("wait", "--for", "condition=established", "--timeout=60s",
                          *[f"crd/{d['metadata']['name']}" for d in crds])
    ns = f"agent-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "web-0", "namespace": ns, "labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "web", "image": "web:1"}]}})
    kube.create({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "web", "namespace": ns,
                              "annotations": {"projectcalico.org/l7-logging": "true"}},
                 "spec": {"selector": {"app": "web"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({"policySyncPathPrefix": str(host_dir / "ps"),
                                        "l7LogsFileDirectory": str(host_dir / "logs")}))
    status = f"127.0.0.1:{_free_port()}"
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "l7scope", "node", "--settings", str(settings), "--kube",
             "--kubeconfig", str(control_plane.kubeconfig), "--node-name", "n1",
             "--status-addr", status, "--data-dir", str(tmp_path / "data")],
            stdout=out, stderr=out)
    try:
        def stats() -> dict[str, Any] | None:
            try:
                return dict(httpx.get(f"http://{status}/stats", timeout=2).json())
            except httpx.HTTPError:
                return None

        wait_for(lambda: (s := stats()) and s["metadata"].get("services", 0) >= 1, 30, 0.2,
                 "services from the watch in /stats")
        pod_ip = wait_for(lambda: (kube.get(f"/api/v1/namespaces/{ns}/pods/web-0")
                                   .get("status") or {}).get("podIP"), 30, 0.1, "pod IP")
        svc_ip = kube.get(f"/api/v1/namespaces/{ns}/services/web")["spec"]["clusterIP"]
        time.sleep(1.0)  # the pod's IP reaches the agent's watch right after the API has it

        # the NodeAgentConfiguration replaces the file's settings
        kube.create({**nodeconfig.empty(),
                     "spec": {"l7LogsFlushInterval": "3s",
                              "policySyncPathPrefix": str(host_dir / "ps"),
                              "l7LogsFileDirectory": str(host_dir / "logs")}})
        wait_for(lambda: (s := stats()) and s["settings"]["l7LogsFlushInterval"] == 3.0, 30, 0.2,
                 "cluster settings in /stats")

        # a Report from the pod to the Service is enriched with the watched objects
        with grpc.insecure_channel(policysync.dial_target(host_dir / "ps" / "socket")) as ch:
            pb_grpc.PolicySyncStub(ch).Report(pb.DataplaneStats(
                src_ip=pod_ip, dst_ip=svc_ip, src_port=40000, dst_port=80,
                http_data=[pb.HTTPData(request_path="/x", request_method="GET", count=2,
                                       response_code=200, domain=f"web.{ns}", type="HTTP/1.1")],
                stats=[pb.Statistic(relativity=pb.Statistic.DELTA, kind=pb.Statistic.HTTP_DATA,
                                    value=2)]), timeout=5)
        logfile = host_dir / "logs" / "l7.log"

        def records() -> list[dict[str, Any]]:
            if not logfile.exists():
                return []
            return [yaml.safe_load(x) for x in logfile.read_text().splitlines()]

        recs = wait_for(lambda: records() or None, 15, 0.2, "a record in l7.log")
        (r,) = recs
        assert (r["src_name_aggr"], r["src_namespace"], r["dest_service_name"],
                r["dest_service_namespace"], r["count"]) == ("web-0", ns, "web", ns, 2)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        kube.delete(nodeconfig.PATH)
        kube.delete(f"/api/v1/namespaces/{ns}/pods/web-0", grace_period_seconds=0)
        kube.delete(f"/api/v1/namespaces/{ns}")
        print(log.read_text()[-2000:])
