"""ApplicationLayer spec: Calico's defaults, validation messages, node-config patch, status."""

from __future__ import annotations

import yaml

from l7scope.operator import nodeconfig, status
from l7scope.operator.spec import check
from l7scope.testing.workshop import WORKSHOP_AL as WORKSHOP


def test_workshop_manifest_is_valid_and_gets_envoy_defaults() -> None:
    obj = yaml.safe_load(WORKSHOP)
    c = check(obj["metadata"]["name"], obj["spec"])
    assert c.errors == [] and c.warnings == []
    assert c.spec is not None and c.spec.collect_logs
    assert c.spec.log_interval_seconds == 5 and c.spec.log_requests_per_interval == -1
    assert c.defaulted["envoy"] == {"xffNumTrustedHops": 0, "useRemoteAddress": False}
    assert c.defaulted["logCollection"] == obj["spec"]["logCollection"]


def test_defaults_only_when_enabled() -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"}})
    assert c.defaulted["logCollection"] == {"collectLogs": "Enabled", "logIntervalSeconds": 5,
                                            "logRequestsPerInterval": -1}
    off = check("tigera-secure", {})
    assert off.defaulted["logCollection"] == {"collectLogs": "Disabled"}
    assert off.spec is not None and not off.spec.collect_logs


def test_defaults_do_not_override_user_values() -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled", "logIntervalSeconds": 30},
                                "envoy": {"xffNumTrustedHops": 2}})
    assert c.spec is not None
    assert c.spec.log_interval_seconds == 30 and c.spec.xff_num_trusted_hops == 2
    assert c.defaulted["envoy"]["useRemoteAddress"] is False


def test_errors_name_the_field() -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled", "logIntervalSeconds": 0}})
    assert c.errors == ["spec.logCollection.logIntervalSeconds must be at least 1 (got 0)"]
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Yes"}})
    assert len(c.errors) == 1 and c.errors[0].startswith("spec.logCollection.collectLogs:")
    c = check("tigera-secure", {"envoy": {"xffNumTrustedHops": 100}})
    assert c.errors and c.errors[0].startswith("spec.envoy.xffNumTrustedHops:")
    c = check("my-layer", {"logCollection": {"collectLogs": "Enabled"}})
    assert c.errors == ["resource name must be 'tigera-secure' (got 'my-layer')"]
    c = check("tigera-secure", {"l7LogCollectorDaemonSet": {"spec": {"template": {"spec": {
        "containers": [{"name": "dikastes"}]}}}}})
    assert c.errors and "containers[0].name" in c.errors[0]


def test_unsupported_features_warn() -> None:
    c = check("tigera-secure", {"logCollection": {"collectLogs": "Enabled"},
                                "webApplicationFirewall": "Enabled"})
    assert c.valid and c.warnings == [
        "spec.webApplicationFirewall: Enabled is not supported by l7scope and is ignored"]
    # native sidecars are not needed (Envoy runs in the node's DaemonSet pod): accepted, warned
    c = check("tigera-secure", {"sidecarInjection": "Enabled"})
    assert c.valid and c.warnings == [
        "spec.sidecarInjection: Enabled is not supported by l7scope and is ignored"]


def test_tproxy_patch() -> None:
    assert nodeconfig.tproxy_patch({}, True) == {"tproxyMode": "Enabled",
                                                 "policySyncPathPrefix": "/var/run/nodeagent"}
    assert nodeconfig.tproxy_patch({"policySyncPathPrefix": "/x", "tproxyMode": "Enabled"}, True) == {}
    assert nodeconfig.tproxy_patch({"tproxyMode": "EnabledAllServices", "policySyncPathPrefix": "/x"},
                                   True) == {}
    assert nodeconfig.tproxy_patch({"tproxyMode": "Enabled", "policySyncPathPrefix": "/x"},
                                   False) == {"tproxyMode": "Disabled"}
    assert nodeconfig.tproxy_patch({"tproxyMode": "Disabled"}, False) == {}


def test_status_keeps_transition_times() -> None:
    first = status.build("Progressing", "0/2", generation=1, now="2026-01-01T00:00:00Z")
    again = status.build("Progressing", "1/2", generation=1, now="2026-01-01T00:00:05Z",
                         previous=first)
    times = {c["type"]: c["lastTransitionTime"] for c in again["conditions"]}
    assert times == {"Ready": "2026-01-01T00:00:00Z", "Progressing": "2026-01-01T00:00:00Z",
                     "Degraded": "2026-01-01T00:00:00Z"}
    ready = status.build("Ready", "2/2", generation=1, now="2026-01-01T00:00:09Z", previous=again)
    cond = {c["type"]: c for c in ready["conditions"]}
    assert cond["Ready"]["status"] == "True" and cond["Ready"]["lastTransitionTime"].endswith("09Z")
    assert cond["Degraded"]["lastTransitionTime"].endswith("00Z")
    assert status.same(ready, status.build("Ready", "2/2", generation=1, now="later", previous=ready))
    assert not status.same(ready, status.build("Ready", "2/2", generation=2, now="x", previous=ready))


def test_status_nodes_ready_from_the_daemonset() -> None:
    from l7scope.operator import render

    ds = {"metadata": {"generation": 1},
          "status": {"desiredNumberScheduled": 3, "numberAvailable": 2, "observedGeneration": 1}}
    assert render.nodes_ready(ds) == "2/3" and render.nodes_ready(None) is None
    a = status.build("Progressing", "2/3", generation=1, now="t0", nodes_ready="2/3")
    assert a["nodesReady"] == "2/3"
    b = status.build("Progressing", "2/3", generation=1, now="t1", previous=a, nodes_ready="3/3")
    assert not status.same(a, b)  # a change of nodesReady is written
    assert "nodesReady" not in status.build("Disabled", "off", generation=1, now="t0")
