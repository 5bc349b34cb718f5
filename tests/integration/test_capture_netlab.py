"""netlab itself: it routes pods across nodes through Service VIPs, captures only what is
selected, works fail-open when the capture rules are removed, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from capture_support import read_log, topology, wait_log

from l7scope.netlab import Topology, cleanup_stale
from l7scope.netlab.sh import run

pytestmark = [pytest.mark.netns]


def _netns_names() -> set[str]:
    out = run(["ip", "netns", "list"]).stdout
    return {line.split(" ", 1)[0] for line in out.splitlines() if line}


def _curl(t: Topology, pod: object, url: str) -> str:
    from l7scope.netlab import Pod

    assert isinstance(pod, Pod)
    return t.run(pod, ["curl", "-s", "--noproxy", "*", "-m", "5", "-o", "/dev/null",
                       "-w", "%{http_code}", url], check=False).stdout


@pytest.mark.envoy
def test_capture_then_fail_open_then_capture_again(request: pytest.FixtureRequest) -> None:
    t = topology(request)
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, web = t.add_pod(n1, "client"), t.add_pod(n2, "web")
    t.start_server(web, "http", 8080)
    svc = t.add_service("web", 80, [(web, 8080)])
    assert _curl(t, client, f"http://{svc.vip}/status/201") == "201"  # VIP -> pod on n2

    t.capture(n1, [svc])
    envoy = t.start_envoy(n1)
    log = envoy.settings.access_log_path
    assert _curl(t, client, f"http://{svc.vip}/one") == "200"
    assert [ln["request_path"] for ln in wait_log(log, 1)] == ["/one"]

    # Fail open (what the node agent does when Envoy is unhealthy): rules gone, traffic flows
    # straight to the Service, nothing is proxied.
    t.uncapture(n1)
    envoy.stop()
    assert _curl(t, client, f"http://{svc.vip}/two") == "200"
    time.sleep(0.5)
    assert [ln["request_path"] for ln in read_log(log)] == ["/one"]

    envoy.start()
    t.capture(n1, [svc])
    assert _curl(t, client, f"http://{svc.vip}/three") == "200"
    assert [ln["request_path"] for ln in wait_log(log, 2)] == ["/one", "/three"]


def test_close_removes_everything_even_after_a_failure() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = f"nlt{os.getpid()}"
    server = None
    with pytest.raises(RuntimeError, match="boom"), Topology(prefix=prefix) as t:
        n1 = t.add_node("n1")
        pod = t.add_pod(n1, "web")
        server = t.start_server(pod, "echo", 9000)
        assert {f"{prefix}-underlay", f"{prefix}-n1", f"{prefix}-web"} <= _netns_names()
        raise RuntimeError("boom")
    assert server is not None and server.poll() is not None
    assert not {n for n in _netns_names() if n.startswith(f"{prefix}-")}
    assert not t.workdir.exists()


def test_cleanup_stale_removes_leftovers_and_their_processes() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = f"nls{os.getpid()}"
    run(["ip", "netns", "add", f"{prefix}-node"])
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-node", "sleep", "600"])
    try:
        deadline = time.monotonic() + 5
        while not run(["ip", "netns", "pids", f"{prefix}-node"]).stdout.strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cleanup_stale(prefix) == [f"{prefix}-node"]
        assert sleeper.wait(5) != 0
        assert f"{prefix}-node" not in _netns_names()
    finally:
        sleeper.kill()
        sleeper.wait()
        run(["ip", "netns", "del", f"{prefix}-node"], check=False)


def test_cleanup_stale_without_prefix_only_takes_dead_owners() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    dead = 4_000_000 + os.getpid() % 100_000  # above any pid handed out on this machine
    with open("/proc/sys/kernel/pid_max") as f:
        assert dead > int(f.read()) or not os.path.exists(f"/proc/{dead}")
    stale, alive = f"nl{dead}x0-node", f"nl{os.getpid()}x999-node"
    for ns in (stale, alive):
        run(["ip", "netns", "add", ns])
    try:
        removed = cleanup_stale()
        assert stale in removed and alive not in removed
        assert alive in _netns_names() and stale not in _netns_names()
    finally:
        for ns in (stale, alive):
            run(["ip", "netns", "del", ns], check=False)
