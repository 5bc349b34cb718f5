"""The node agent's traffic selection on the real data path (netlab namespaces, nftables, Envoy).

The agent (`l7scope node`) runs inside node n1's namespace, as a DaemonSet pod with host
networking would, fed by an inventory directory generated from the topology:
- annotating a Service (editing the inventory) installs its VIP and endpoints within 2 s, and
  real requests to it go through Envoy; un-annotating removes them within 2 s; traffic to the
  other Service is never proxied;
- fail open: Envoy killed while a client sends requests -> requests succeed again within 3 s;
  capture resumes after Envoy is back; the rules are gone after the agent stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from capture_support import read_log, topology, wait_log

from l7scope.capture import tproxy
from l7scope.netlab import Pod, Topology
from l7scope.netlab import inventory as netlab_inventory
from l7scope.netlab.topology import Node, Service
from l7scope.proxy.supervisor import EnvoySupervisor

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

ANNOTATION = netlab_inventory.ANNOTATION


def inventory(t: Topology, annotated: set[str]) -> list[dict[str, Any]]:
    """Kubernetes objects for the topology's pods and Services (namespace `shop`)."""
    return netlab_inventory.objects(t, annotated)


def write_inventory(directory: Path, t: Topology, annotated: set[str]) -> None:
    netlab_inventory.write(directory, t, annotated)


@dataclass
class Lab:
    t: Topology
    n1: Node
    client: Pod
    web: Service
    other: Service
    envoy: EnvoySupervisor
    inv: Path
    agent: subprocess.Popen[Any]

    def installed(self) -> tproxy.Selection | None:
        return tproxy.installed(netns=self.n1.netns)

    def curl(self, svc: Service, path: str, timeout: float = 1.0) -> str:
        return self.t.run(self.client, ["curl", "-s", "--noproxy", "*", "-m", str(timeout),
                                        "-o", "/dev/null", "-w", "%{http_code}",
                                        f"http://{svc.address}{path}"], check=False).stdout


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until cond() held; fails after timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Lab:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client = t.add_pod(n1, "client")
    web_pod, other_pod = t.add_pod(n2, "web"), t.add_pod(n2, "other")
    t.start_server(web_pod, "http", 8080)
    t.start_server(other_pod, "http", 8080)
    web = t.add_service("web", 80, [(web_pod, 8080)])
    other = t.add_service("other", 80, [(other_pod, 8080)])
    envoy = t.start_envoy(n1)
    inv = tmp_path / "inventory"
    inv.mkdir()
    write_inventory(inv, t, set())
    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({
        "tproxyMode": "Enabled", "policySyncPathPrefix": str(tmp_path / "nodeagent"),
        "l7LogsFileDirectory": str(tmp_path / "l7logs")}))
    admin = envoy.settings.admin_address
    agent = t.popen(n1, t.python("l7scope", "node", "--settings", str(settings),
                                 "--inventory", str(inv), "--node-name", "n1",
                                 "--envoy-admin", f"http://{admin}",
                                 "--data-dir", str(tmp_path / "data")))
    lab = Lab(t, n1, client, web, other, envoy, inv, agent)
    try:
        wait_until(lambda: lab.installed() is not None, 15)
    except AssertionError:
        raise AssertionError(t.log_path(n1, [t.python("l7scope")[0]]).read_text()) from None
    return lab


def test_annotation_starts_and_stops_capture(lab: Lab) -> None:
    log = lab.envoy.settings.access_log_path
    sel = lab.installed()
    assert sel is not None and not sel.services and sel.clients == {f"{lab.client.ip}/32"}
    assert lab.curl(lab.web, "/before") == "200"

    write_inventory(lab.inv, lab.t, {"web"})
    web_entries = set(lab.web.selection_entries())
    took = wait_until(lambda: (s := lab.installed()) is not None and s.services == web_entries, 3)
    print(f"annotate -> capture installed in {took:.2f} s")
    assert took < 2.0
    assert lab.curl(lab.web, "/captured") == "200"
    assert lab.curl(lab.other, "/not-captured") == "200"
    lines = wait_log(log, 1)
    assert [ln["request_path"] for ln in lines] == ["/captured"]

    write_inventory(lab.inv, lab.t, set())
    took = wait_until(lambda: (s := lab.installed()) is not None and not s.services, 3)
    print(f"un-annotate -> capture removed in {took:.2f} s")
    assert took < 2.0
    assert lab.curl(lab.web, "/after") == "200"
    time.sleep(0.5)
    assert [ln["request_path"] for ln in read_log(log)] == ["/captured"]

    lab.agent.send_signal(signal.SIGTERM)
    lab.agent.wait(10)
    assert lab.installed() is None  # all rules removed on stop


def test_fail_open_when_envoy_dies_and_capture_resumes(lab: Lab) -> None:
    log = lab.envoy.settings.access_log_path
    write_inventory(lab.inv, lab.t, {"web"})
    wait_until(lambda: (s := lab.installed()) is not None and bool(s.services), 3)
    assert lab.curl(lab.web, "/warm") == "200"
    assert len(wait_log(log, 1, settle=0)) == 1

    results: list[tuple[float, bool]] = []
    pid = lab.envoy.pid
    assert pid is not None
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while time.monotonic() - killed_at < 5:
        ok = lab.curl(lab.web, "/during", timeout=0.5) == "200"
        results.append((time.monotonic() - killed_at, ok))
    failures = [t for t, ok in results if not ok]
    recovered_after = max(failures, default=0.0)
    print(f"Envoy killed: {len(failures)} of {len(results)} requests failed, the last "
          f"{recovered_after:.2f} s after the kill")
    assert recovered_after <= 3.0, results
    assert all(ok for t, ok in results if t > 3.0)
    assert lab.installed() is None  # withdrawn

    lab.envoy.start()
    took = wait_until(lambda: (s := lab.installed()) is not None and bool(s.services), 5)
    print(f"Envoy back -> capture restored in {took:.2f} s")
    assert took < 2.5
    n_before = len(read_log(log))
    assert lab.curl(lab.web, "/again") == "200"
    lines = wait_log(log, n_before + 1)
    assert lines[-1]["request_path"] == "/again"
