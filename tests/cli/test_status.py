"""`l7scope status` on real processes: a server, an Envoy and a collector inside a network
namespace (reached through the namespace, as in the demo), a node agent on the host; all found
through the state file written with `contracts.demo_state.write_state`. Everything healthy (exit 0,
counters flowing), then the stopped collector is reported with exit code 1."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_support import L7SCOPE, free_port, start_server, stop, wait_http

from l7scope.contracts.demo_state import NodeParts, Part, ServerPart, State, write_state
from l7scope.proxy.bootstrap import EnvoySettings
from l7scope.proxy.supervisor import EnvoySupervisor
from l7scope.testing import envoy_lines


def status(state_file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    res = subprocess.run([L7SCOPE, "status", "--state-file", str(state_file), "-o", "json", *args],
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def wait_status_http_in_netns(netns: str, addr: str, timeout: float = 20.0) -> None:
    from l7scope.proxy import admin

    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if admin.request(host, int(port), "/healthz", netns=netns, timeout=1.0)[0] == 200:
                return
        except admin.AdminError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{addr} in {netns} did not answer")


@pytest.mark.netns
@pytest.mark.envoy
@pytest.mark.slow
def test_status_every_part_healthy_then_reports_the_stopped_one(require_netns: None, tmp_path: Path) -> None:
    ns = f"l7st{os.getpid() % 100000}{secrets.token_hex(2)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    envoy: EnvoySupervisor | None = None
    srv = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        srv = start_server(tmp_path / "server")
        envoy_log = tmp_path / "envoy.log"
        envoy_log.touch()
        envoy = EnvoySupervisor(EnvoySettings(access_log_path=str(envoy_log), admin_address="127.0.0.1:19901",
                                              tproxy_port=19001), netns=ns, workdir=tmp_path / "envoy")
        envoy.start()

        prefix = tmp_path / "policysync"
        prefix.mkdir()
        settings = tmp_path / "node.yaml"
        settings.write_text(f"policySyncPathPrefix: {prefix}\nl7LogsFlushInterval: 1s\ntproxyMode: Enabled\n"
                            f"l7LogsFileDirectory: {tmp_path / 'l7logs'}\n")
        inventory = tmp_path / "inventory"
        inventory.mkdir()
        (inventory / "services.yaml").write_text(yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": "shop", "annotations": ann},
             "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
            for name, ip, ann in (("cartservice", "10.96.0.10", {"projectcalico.org/l7-logging": "true"}),
                                  ("checkout", "10.96.0.11", {}))]))
        node_addr = f"127.0.0.1:{free_port()}"
        with open(tmp_path / "node.log", "wb") as f:
            node = subprocess.Popen(  # capture rules go into the test namespace (--netns)
                [L7SCOPE, "node", "--settings", str(settings), "--node-name", "node-a",
                 "--inventory", str(inventory), "--netns", ns,
                 "--server", srv.url, "--server-token-file", str(srv.token_file),
                 "--status-addr", node_addr, "--data-dir", str(tmp_path / "node")],
                stdout=f, stderr=subprocess.STDOUT)
        procs.append(node)
        wait_http(f"http://{node_addr}/healthz")

        collector_addr = "127.0.0.1:19902"  # inside the namespace
        with open(tmp_path / "collector.log", "wb") as f:
            collector = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "l7scope", "collector",
                 "--envoy-log", str(envoy_log), "--dial-target", f"unix://{prefix}/socket",
                 "--interval", "1", "--status-addr", collector_addr, "--node-name", "node-a",
                 "--no-checkpoint"],
                stdout=f, stderr=subprocess.STDOUT)
        procs.append(collector)
        wait_status_http_in_netns(ns, collector_addr)

        state_file = tmp_path / "demo.json"
        write_state(State(
            server=ServerPart(url=srv.url, pid=srv.proc.pid, token_file=str(srv.token_file)),
            nodes=[NodeParts(name="node-a", netns=ns,
                             envoy_admin=Part(addr="127.0.0.1:19901", pid=envoy.pid),
                             collector=Part(addr=collector_addr, pid=collector.pid),
                             node_agent=Part(addr=node_addr, pid=node.pid, netns=""))],  # "" = host
            annotated_services=["shop/cartservice"]), state_file)

        # traffic: Envoy-shaped lines into the log the collector tails
        n = 200
        time.sleep(1.0)  # the collector has opened the log at its end
        with open(envoy_log, "ab") as f:
            f.write(b"".join(line + b"\n" for line in envoy_lines.lines(n, seed=3)))
        deadline = time.monotonic() + 30
        while True:
            code, report = status(state_file)
            counters = report["counters"]["node-a"]
            settled = (counters["shipped"] and counters["reported"] == n
                       and (counters["logged"] or 0) + (counters["unlogged"] or 0) == n
                       and all(p["healthy"] for p in report["parts"])
                       and next(p for p in report["parts"] if p["part"] == "server")
                       ["stats"]["store"]["records"] == counters["shipped"])
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)

        assert code == 0, report
        assert report["healthy"] is True
        assert sorted((p["node"], p["part"]) for p in report["parts"]) == [
            ("-", "server"), ("node-a", "collector"), ("node-a", "envoy"), ("node-a", "node-agent")]
        assert all(p["healthy"] for p in report["parts"])
        by_part = {p["part"]: p for p in report["parts"]}
        assert by_part["envoy"]["netns"] == ns and by_part["envoy"]["state"].startswith("ready")
        assert by_part["collector"]["netns"] == ns
        assert counters["seen"] == n and counters["reported"] == n
        assert counters["logged"] is not None and counters["logged"] + counters["unlogged"] == n
        assert counters["shipped"] >= 1
        assert report["annotated_services"] == {"*": ["shop/cartservice"], "node-a": ["shop/cartservice"]}
        assert by_part["node-agent"]["stats"]["capture_state"] == "active"
        assert by_part["node-agent"]["warnings"] == []
        assert by_part["server"]["stats"]["store"]["records"] == counters["shipped"]

        table = subprocess.run([L7SCOPE, "status", "--state-file", str(state_file)],
                               capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
        assert table.returncode == 0
        assert "all 4 parts healthy" in table.stdout and "shop/cartservice" in table.stdout

        # stop the collector: reported, exit code 1, the rest still healthy
        stop(collector)
        code, report = status(state_file)
        assert code == 1
        assert report["healthy"] is False
        bad = [(p["node"], p["part"]) for p in report["parts"] if not p["healthy"]]
        assert bad == [("node-a", "collector")]
        assert "has exited" in next(p["state"] for p in report["parts"] if p["part"] == "collector")
        table = subprocess.run([L7SCOPE, "status", "--state-file", str(state_file)],
                               capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
        assert table.returncode == 1
        assert "1 of 4 parts unhealthy: node-a/collector" in table.stdout

        # without a pid to check, an unreachable status address is what tells
        state = State.model_validate_json(state_file.read_text())
        assert state.nodes[0].collector is not None
        state.nodes[0].collector.pid = None
        write_state(state, state_file)
        code, report = status(state_file)
        assert code == 1
        assert next(p["state"] for p in report["parts"] if p["part"] == "collector").startswith("unreachable")
    finally:
        for p in procs:
            stop(p)
        if envoy is not None:
            envoy.stop()
        if srv is not None:
            stop(srv.proc)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_status_without_anything_to_check_says_what_to_do(tmp_path: Path) -> None:
    res = subprocess.run([L7SCOPE, "status", "--state-file", str(tmp_path / "none.json")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "l7scope demo" in res.stderr and "--kubeconfig" in res.stderr


def test_status_of_a_server_only(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    try:
        res = subprocess.run([L7SCOPE, "status", "--state-file", str(tmp_path / "none.json"),
                              "--server", srv.url, "--token-file", str(srv.token_file), "-o", "json"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert [p["part"] for p in report["parts"]] == ["server"]
        assert report["parts"][0]["stats"]["store"]["kind"] == "duckdb"
        # without the token: healthy, but no counters, and it says why
        res = subprocess.run([L7SCOPE, "status", "--state-file", str(tmp_path / "none.json"),
                              "--server", srv.url, "-o", "json"], capture_output=True, text=True,
                             env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "empty")})
        part = json.loads(res.stdout)["parts"][0]
        assert part["healthy"] and part["stats"] == {} and "wants a token" in part["warnings"][0]
    finally:
        stop(srv.proc)
    res = subprocess.run([L7SCOPE, "status", "--state-file", str(tmp_path / "none.json"),
                          "--server", srv.url, "-o", "json"], capture_output=True, text=True)
    assert res.returncode == 1
    assert json.loads(res.stdout)["parts"][0]["state"].startswith("unreachable")
