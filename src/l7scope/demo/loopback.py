"""The `--no-netns` FALLBACK: the same shop and pipeline without root.

No namespaces and no transparent capture: every pod gets a loopback address
(`127.<b>.1.<n>`), every Service a "VIP" (`127.<b>.2.<n>`), and one Envoy listens explicitly
on each VIP:port (same filter chains and access log as the transparent listener, but a static
cluster to the pod instead of `original_dst`). Clients connect from their pod's address (gRPC
through a small relay, since grpcio cannot bind a source address), so the node agent still
knows which pod called. One node (`node-a`) with its collector and node agent (capture rules
disabled) and the server. Service ports below 1024 move up by 8000 (frontend: 8080).
"""

from __future__ import annotations

import copy
import hashlib
import random
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import yaml

from l7scope.contracts import demo_state
from l7scope.demo import pipeline, topology
from l7scope.demo.probe import Probe, netns_stats
from l7scope.demo.procs import Processes, kill_recorded
from l7scope.demo.session import Session, ensure_port_free, reachable, wait_for
from l7scope.demo.shop import catalog
from l7scope.proxy import bootstrap as envoy_config
from l7scope.proxy.supervisor import EnvoySupervisor

NODE = "node-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def loopback_block(prefix: str) -> int:
    """Second octet of the run's loopback addresses (differs per prefix)."""
    return 100 + int(hashlib.sha256(prefix.encode()).hexdigest(), 16) % 100


def _replace_cluster(obj: Any, mapping: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: (mapping.get(v, v) if k == "cluster" and isinstance(v, str)
                    else _replace_cluster(v, mapping)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_cluster(v, mapping) for v in obj]
    return obj


def render_explicit(settings: envoy_config.EnvoySettings,
                    services: list[tuple[str, str, int, str, int]]) -> dict[str, Any]:
    """Envoy bootstrap with one explicit listener per (name, vip, port, pod_ip, target_port),
    built from the transparent configuration so chains and access logs stay identical."""
    base = envoy_config.render(settings)
    template = base["static_resources"]["listeners"][0]
    by_name = {c["name"]: c for c in base["static_resources"]["clusters"]}
    listeners, clusters = [], []
    for name, vip, port, pod_ip, target_port in services:
        mapping = {envoy_config.CLUSTER_HTTP1: f"svc_{name}",
                   envoy_config.CLUSTER_H2C: f"svc_{name}_h2c"}
        lst = _replace_cluster(copy.deepcopy(template), mapping)
        lst["name"] = f"svc_{name}"
        lst["address"] = {"socket_address": {"address": vip, "port_value": port}}
        lst.pop("transparent", None)
        lst["listener_filters"] = [f for f in lst["listener_filters"]
                                   if "original_dst" not in f["name"]]
        listeners.append(lst)
        for orig, new in mapping.items():
            c = copy.deepcopy(by_name[orig])
            c["name"] = new
            c["type"] = "STATIC"
            c["lb_policy"] = "ROUND_ROBIN"
            c["load_assignment"] = {"cluster_name": new, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": pod_ip, "port_value": target_port}}}}]}]}
            clusters.append(c)
    clusters += [c for n, c in by_name.items()
                 if n not in (envoy_config.CLUSTER_HTTP1, envoy_config.CLUSTER_H2C)]
    base["static_resources"] = {"listeners": listeners, "clusters": clusters}
    return base


class ExplicitEnvoy(EnvoySupervisor):
    """An EnvoySupervisor that runs a given bootstrap instead of the transparent one."""

    def __init__(self, settings: envoy_config.EnvoySettings, bootstrap: dict[str, Any],
                 **kw: Any) -> None:
        super().__init__(settings, **kw)
        self._bootstrap = bootstrap

    @property
    def explicit_config(self) -> Path:
        return self.workdir / "envoy-explicit.yaml"

    def command(self) -> list[str]:
        self.explicit_config.write_text(yaml.safe_dump(self._bootstrap, sort_keys=False))
        cmd = super().command()
        cmd[cmd.index("-c") + 1] = str(self.explicit_config)
        return cmd


class LoopbackMode:
    name = "loopback"

    def start(self, d: Session) -> None:
        _start(d)

    def close(self) -> list[str]:
        return []  # every process and directory is on the Session's cleanup list


def _start(d: Session) -> None:
    o = d.o
    procs_file = d.data / "pids.json"
    d.progress("cleaning up what an earlier run left behind")
    kill_recorded(procs_file)
    d.fresh_dirs()
    d.new_token()
    shutil.rmtree(d.data / "logs", ignore_errors=True)
    procs = Processes(d.data / "logs", procs_file)
    d.on_close(procs.close)
    relay_dir = Path(tempfile.mkdtemp(prefix="l7d-"))
    d.on_close(lambda: shutil.rmtree(relay_dir, ignore_errors=True))

    b = loopback_block(o.prefix)
    plans = topology.plan_pods(random.Random(o.seed), nodes=(NODE,))
    d.pods = {p.name: p for p in plans}
    pod_ips = {p.name: f"127.{b}.1.{i + 2}" for i, p in enumerate(plans)}
    vips = {s.name: f"127.{b}.2.{i + 2}" for i, s in enumerate(catalog.SERVICES)}
    by_app = {p.app: p for p in plans}
    port_of = {s.name: topology.service_port(s, unprivileged=True) for s in catalog.SERVICES}

    ensure_port_free(o.host, o.port)
    d.progress("starting the server (embedded DuckDB store)")
    server = procs.start("server", pipeline.server_argv(o.host, o.port, d.data / "server"))
    wait_for("the server", d.api.healthy, 30, server, procs.log_path("server"))

    files = pipeline.NodeFiles(d.data / "nodes" / NODE)
    objects = topology.inventory(plans, pod_ips, vips, unprivileged=True)
    pipeline.write_node_files(files, objects, capture=False, tproxy_port=o.tproxy_port)

    admin_port, node_port, coll_port = free_port(), free_port(), free_port()
    d.progress(f"{NODE}: starting Envoy with one explicit listener per Service VIP")
    settings = envoy_config.EnvoySettings(access_log_path=str(files.envoy_log),
                                          admin_address=f"127.0.0.1:{admin_port}", node_id=NODE)
    bootstrap = render_explicit(settings, [
        (s.name, vips[s.name], port_of[s.name], pod_ips[by_app[s.name].name], s.target_port)
        for s in catalog.SERVICES])
    envoy = ExplicitEnvoy(settings, bootstrap, workdir=d.data / "envoy")
    envoy.workdir.mkdir(parents=True, exist_ok=True)
    envoy.start()
    if envoy.pid is not None:
        procs.record("envoy", envoy.pid)

    def stop_envoy() -> None:
        envoy.stop()

    d.on_close(stop_envoy, first=True)

    d.progress(f"{NODE}: starting the node agent and the collector")
    agent = procs.start("node", pipeline.node_argv(
        files, NODE, f"http://{o.host}:{o.port}", f"http://127.0.0.1:{admin_port}",
        f"127.0.0.1:{node_port}", d.token_file, f"127.0.0.1:{coll_port}"))
    collector = procs.start("collector", pipeline.collector_argv(
        files, NODE, o.interval, f"127.0.0.1:{coll_port}"))
    node_stats = {NODE: netns_stats(None, node_port)}
    coll_stats = {NODE: netns_stats(None, coll_port)}
    d.probe = Probe(d.counts_dir, coll_stats, node_stats, d.api)
    d.write_state([demo_state.NodeParts(
        name=NODE, envoy_admin=demo_state.Part(addr=f"127.0.0.1:{admin_port}", pid=envoy.pid),
        collector=demo_state.Part(addr=f"127.0.0.1:{coll_port}", pid=collector.pid),
        node_agent=demo_state.Part(addr=f"127.0.0.1:{node_port}", pid=agent.pid))], server.pid)

    wait_for("the node agent", reachable(node_stats[NODE]), 30, agent, procs.log_path("node"))
    wait_for("the collector", reachable(coll_stats[NODE]), 30, collector, procs.log_path("collector"))

    peers = [f"--peer={s.name}={vips[s.name]}:{port_of[s.name]}" for s in catalog.SERVICES]
    started = {}
    for p in plans:
        if p.app == catalog.LOADGEN:
            continue
        d.progress(f"starting {p.app} on {pod_ips[p.name]}")
        started[p.name] = procs.start(p.app, [
            *pipeline.l7scope()[:1], "-m", "l7scope.demo.shop.pod", "--service", p.app,
            "--listen", pod_ips[p.name], *peers, "--counts-dir", str(d.counts_dir),
            "--ready-file", str(d.ready_dir / p.app), "--source-ip", pod_ips[p.name],
            "--relay-dir", str(relay_dir),
            *(["--seed", str(o.seed)] if o.seed is not None else [])])
    for p in plans:
        if p.name in started:
            wait_for(f"{p.app}", (d.ready_dir / p.app).exists, 30, started[p.name],
                     procs.log_path(p.app))
    lg = by_app[catalog.LOADGEN]
    d.progress(f"starting the load generator ({o.rate:g} requests/s)")
    d.loadgen = procs.start("loadgenerator", [
        *pipeline.l7scope()[:1], "-m", "l7scope.demo.loadgen",
        "--target", f"{vips['frontend']}:{port_of['frontend']}",
        "--host", f"frontend:{port_of['frontend']}", "--rate", str(o.rate),
        "--users", str(o.users), "--counts-dir", str(d.counts_dir),
        "--source-ip", pod_ips[lg.name],
        *(["--seed", str(o.seed)] if o.seed is not None else [])])
