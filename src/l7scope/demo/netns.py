"""The demo in network namespaces (root): netlab nodes node-a and node-b, transparent capture.

One pod per shop Service plus the load generator (round robin over the nodes), a Service VIP each
with the kube-proxy stand-in. Per node, inside the node's namespace: Envoy (transparent
listener), `l7scope collector`, and `l7scope node`, which reads the demo's Kubernetes YAML,
programs the TPROXY rules for the annotated Services and ships to the server through a relay
(`netrelay`). The server runs in the host namespace with the embedded store. Traffic starts only
once both nodes capture (a gRPC connection opened before the rules exist would bypass Envoy for
its whole life).

Every process is a child of a netlab `Topology` (stopped by `close()`), every namespace carries
the prefix (default `l7demo`), and `cleanup_stale(prefix)` removes a crashed run's leftovers
first. The server's pid is kept in `<data-dir>/server.pid` for the same reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l7scope.contracts import demo_state
from l7scope.demo import pipeline, procs, topology
from l7scope.demo.netrelay import NetnsRelay
from l7scope.demo.probe import Probe, netns_stats
from l7scope.demo.session import DemoError, Session, ensure_port_free, reachable, wait_for
from l7scope.demo.shop import catalog


def refuse_if_running(prefix: str) -> None:
    """Do not clean up (and so destroy) a demo that is still running with the same prefix."""
    try:
        state = demo_state.read_state()
    except demo_state.StateError:
        return
    if state is None or state.demo_pid in (None, os.getpid()):
        return
    ours = any((n.netns or "").startswith(f"{prefix}-") for n in state.nodes)
    if ours and state.demo_pid is not None and demo_state.pid_alive(state.demo_pid):
        raise DemoError(f"another demo (pid {state.demo_pid}) is running with the namespaces "
                        f"{prefix}-*; stop it first (Ctrl-C in its terminal)")


def kill_stale_pidfile(path: Path, must_contain: str) -> None:
    """Stop a process a crashed run left (only if its command line still looks like ours)."""
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return
    if must_contain in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20  # its listening socket goes when it has exited
        while time.monotonic() < deadline and procs.running(pid):
            time.sleep(0.05)
    path.unlink(missing_ok=True)


class NetnsMode:
    name = "netns"

    def __init__(self) -> None:
        self._relays: list[NetnsRelay] = []
        self._topo: Any = None

    def start(self, s: Session) -> None:
        from l7scope.capture import tproxy
        from l7scope.netlab import Topology, cleanup_stale
        from l7scope.proxy.bootstrap import EnvoySettings

        o = s.o
        if os.geteuid() != 0:
            raise DemoError("the demo needs root for network namespaces and nftables; "
                            "run it as root, or use `l7scope demo --no-netns` (fallback)")
        refuse_if_running(o.prefix)
        s.progress("cleaning up what an earlier run left behind")
        gone = cleanup_stale(o.prefix)
        kill_stale_pidfile(s.data / "server.pid", "l7scope")
        if gone:
            s.progress(f"removed {len(gone)} stale namespaces of an earlier run")
        ensure_port_free(o.host, o.port)  # after the cleanup: a crashed run's server held it
        s.fresh_dirs()
        s.new_token()

        s.progress("starting the server (embedded DuckDB store)")
        t = Topology(prefix=o.prefix, workdir=s.data / "run")
        self._topo = t
        server = t.popen(None, pipeline.server_argv(o.host, o.port, s.data / "server"))
        (s.data / "server.pid").write_text(str(server.pid))
        s.on_close(lambda: (s.data / "server.pid").unlink(missing_ok=True))

        s.progress("creating nodes node-a and node-b (network namespaces)")
        nodes = {n: t.add_node(n) for n in topology.NODES}
        rng = random.Random(o.seed)
        plans = topology.plan_pods(rng)
        s.pods = {p.name: p for p in plans}
        pods = {}
        for p in plans:
            s.progress(f"creating pod {p.name} on {p.node}")
            pods[p.name] = t.add_pod(nodes[p.node], p.name)
        by_app = {p.app: p for p in plans}
        services = {}
        for svc in catalog.SERVICES:
            pod = pods[by_app[svc.name].name]
            services[svc.name] = t.add_service(svc.name, svc.port, [(pod, svc.target_port)])
        s.progress("Services: " + ", ".join(f"{n} {s.address}" for n, s in services.items()))
        objects = topology.inventory(plans, {n: p.ip for n, p in pods.items()},
                                     {n: s.vip for n, s in services.items()})

        wait_for("the server", s.api.healthy, 30, server,
                 t.log_path(None, pipeline.server_argv(o.host, o.port, s.data)))

        collectors, agents = {}, {}
        for name, node in nodes.items():
            files = pipeline.NodeFiles(s.data / "nodes" / name)
            pipeline.write_node_files(files, objects, capture=True, tproxy_port=o.tproxy_port)
            s.progress(f"{name}: starting Envoy (transparent listener :{o.tproxy_port})")
            t.start_envoy(node, EnvoySettings(
                tproxy_port=o.tproxy_port, access_log_path=str(files.envoy_log),
                admin_address=f"127.0.0.1:{pipeline.ENVOY_ADMIN_PORT}", node_id=name,
                # the client's IP kept upstream, with the node agents' default upstream mark
                original_src_mark=tproxy.DEFAULT_UPSTREAM_MARK))
            self._relays.append(NetnsRelay(node.netns, ("127.0.0.1", pipeline.RELAY_PORT),
                                           (o.host, o.port)))
            s.progress(f"{name}: starting the node agent and the collector")
            agents[name] = t.popen(node, pipeline.node_argv(
                files, name, f"http://127.0.0.1:{pipeline.RELAY_PORT}",
                f"http://127.0.0.1:{pipeline.ENVOY_ADMIN_PORT}",
                f"127.0.0.1:{pipeline.NODE_STATUS_PORT}", s.token_file,
                f"127.0.0.1:{pipeline.COLLECTOR_STATUS_PORT}"))
            collectors[name] = t.popen(node, pipeline.collector_argv(
                files, name, o.interval, f"127.0.0.1:{pipeline.COLLECTOR_STATUS_PORT}"))

        node_stats = {n: netns_stats(nodes[n].netns, pipeline.NODE_STATUS_PORT) for n in nodes}
        coll_stats = {n: netns_stats(nodes[n].netns, pipeline.COLLECTOR_STATUS_PORT)
                      for n in nodes}
        s.probe = Probe(s.counts_dir, coll_stats, node_stats, s.api)
        s.write_state([demo_state.NodeParts(
            name=n, netns=node.netns,
            envoy_admin=demo_state.Part(addr=f"127.0.0.1:{pipeline.ENVOY_ADMIN_PORT}",
                                       pid=node.envoy.pid if node.envoy else None),
            collector=demo_state.Part(addr=f"127.0.0.1:{pipeline.COLLECTOR_STATUS_PORT}",
                                     pid=collectors[n].pid),
            node_agent=demo_state.Part(addr=f"127.0.0.1:{pipeline.NODE_STATUS_PORT}",
                                      pid=agents[n].pid)) for n, node in nodes.items()],
            server.pid)

        for name in nodes:
            def capturing(read: Callable[[], dict[str, Any]] = node_stats[name]) -> bool:
                try:
                    return read().get("capture_state") == "active"
                except Exception:
                    return False
            s.progress(f"{name}: waiting for the capture rules (annotated Services)")
            wait_for(f"capture on {name}", capturing, 30, agents[name],
                     t.log_path(nodes[name], pipeline.l7scope()))
            wait_for(f"the collector on {name}", reachable(coll_stats[name]), 30,
                     collectors[name], t.log_path(nodes[name], pipeline.l7scope()))

        peers = [f"--peer={s.name}={services[s.name].address}" for s in catalog.SERVICES]
        shop_procs = {}
        for p in plans:
            if p.app == catalog.LOADGEN:
                continue
            s.progress(f"starting {p.app} in pod {p.name}")
            shop_procs[p.name] = t.popen(pods[p.name], [
                *t.python("l7scope.demo.shop.pod"), "--service", p.app, *peers,
                "--counts-dir", str(s.counts_dir),
                "--ready-file", str(s.ready_dir / p.app),
                *(["--seed", str(o.seed)] if o.seed is not None else [])])
        for p in plans:
            if p.name in shop_procs:
                wait_for(f"{p.app} in pod {p.name}", (s.ready_dir / p.app).exists, 30,
                         shop_procs[p.name])
        lg = by_app[catalog.LOADGEN]
        s.progress(f"starting the load generator in pod {lg.name} ({o.rate:g} requests/s)")
        s.loadgen = t.popen(pods[lg.name], [
            *t.python("l7scope.demo.loadgen"), "--target", services["frontend"].address,
            "--rate", str(o.rate), "--users", str(o.users),
            "--counts-dir", str(s.counts_dir),
            *(["--seed", str(o.seed)] if o.seed is not None else [])])

    def close(self) -> list[str]:
        errors = []
        for r in self._relays:
            r.close()
        self._relays = []
        if self._topo is not None:
            try:
                self._topo.close()
            except Exception as e:  # report, keep cleaning
                errors.append(str(e))
            self._topo = None
        return errors
