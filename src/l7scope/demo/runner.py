"""`l7scope demo`: build the shop on this machine, run the whole pipeline, tear it all down.

Namespace mode (root): netlab nodes `node-a` and `node-b`, one pod per shop Service plus the
load generator (round robin over the nodes), a Service VIP each with the kube-proxy stand-in.
Per node, inside the node's namespace: Envoy (transparent listener), `l7scope collector`, and
`l7scope node`, which reads the demo's Kubernetes YAML, programs the TPROXY rules for the
annotated Services and ships to the server through a relay (`netrelay`). The server runs in the
host namespace with the embedded store. Traffic starts only once both nodes capture (a gRPC
connection opened before the rules exist would bypass Envoy for its whole life).

Every process is a child of a netlab `Topology` (stopped by `close()`), every namespace carries
the prefix (default `l7demo`), and `cleanup_stale(prefix)` removes a crashed run's leftovers
first. The server's pid is kept in `<data-dir>/server.pid` for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from l7scope.contracts import api, demo_state
from l7scope.contracts.auth import ensure_token
from l7scope.demo import pipeline, procs, topology
from l7scope.demo.netrelay import NetnsRelay
from l7scope.demo.probe import Probe, ServerApi, Snapshot, netns_stats
from l7scope.demo.shop import catalog
from l7scope.demo.shop.counts import read_totals

Progress = Callable[[str], None]


class DemoError(RuntimeError):
    """A part of the demo did not start; the message says which and why."""


@dataclass
class DemoOptions:
    port: int = api.DEFAULT_PORT
    host: str = api.DEFAULT_HOST
    rate: float = 5.0
    duration: float = 0.0  # 0 = until Ctrl-C
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    no_netns: bool = False
    prefix: str = "l7demo"
    interval: int = 5  # ApplicationLayer logIntervalSeconds (the workshop's value)
    users: int = 4
    seed: int | None = None
    tproxy_port: int = 16001


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "l7scope" / "demo"


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             proc: subprocess.Popen[Any] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + log.read_text(errors="replace")[-1500:]
    state = f" (exited with {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    raise DemoError(f"{what} did not come up within {timeout:.0f} s{state}{tail}")


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


def ensure_port_free(host: str, port: int, wait_s: float = 15.0) -> None:
    """Fail early (and clearly) when the page's port is taken: we must not talk to a stranger.

    Waits up to `wait_s` first: a crashed run's server that was just killed may still be
    exiting (a busy machine can keep it a few seconds in uninterruptible I/O)."""
    import socket

    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
            try:
                s.bind((host, port))
                return
            except OSError as e:
                if time.monotonic() >= deadline:
                    owner = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"],
                                           capture_output=True, text=True, check=False).stdout
                    raise DemoError(f"{host}:{port} is in use ({e.strerror}); choose another "
                                    f"--port{': ' + owner.strip() if owner.strip() else ''}") from None
        time.sleep(0.25)


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


class Demo:
    """The running demo. `start()`, then `snapshot()` as often as wanted, then `finish()`."""

    def __init__(self, opts: DemoOptions, progress: Progress = lambda _: None) -> None:
        self.o = opts
        self.progress = progress
        self.data = opts.data_dir.resolve()
        self.counts_dir = self.data / "counts"
        self.ready_dir = self.data / "ready"
        self.started_at = time.time()
        self.url = f"http://{opts.host}:{opts.port}/"
        self.login_url = self.url
        self.token_file = pipeline.token_file(self.data / "server")
        self.api = ServerApi(f"http://{opts.host}:{opts.port}", self.started_at)
        self.probe: Probe | None = None
        self.loadgen: subprocess.Popen[Any] | None = None
        self.pods: dict[str, topology.PodPlan] = {}
        self._relays: list[NetnsRelay] = []
        self._topo: Any = None
        self._closers: list[Callable[[], None]] = []
        self.timeline: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _fresh_dirs(self) -> None:
        import shutil

        for d in (self.counts_dir, self.ready_dir, self.data / "server", self.data / "nodes",
                  self.data / "run"):
            shutil.rmtree(d, ignore_errors=True)
        for d in (self.counts_dir, self.ready_dir, self.data / "server", self.data / "nodes"):
            d.mkdir(parents=True, exist_ok=True)

    def app_of(self, name_aggr: str) -> str | None:
        for p in self.pods.values():
            if name_aggr in (f"{p.generate_name}*", p.name):
                return p.app
        return None

    # -- start ---------------------------------------------------------------------------------
    def new_token(self) -> None:
        """A fresh bearer token for this run's server, its node agents and the demo itself."""
        token, _ = ensure_token(self.token_file)
        self.api.use_token(token)

    def start(self) -> str:
        """Start everything; returns the page's one-time login URL."""
        if self.o.no_netns:
            from l7scope.demo.loopback import start_loopback

            start_loopback(self)
        else:
            self._start_netns()
        try:
            self.login_url = self.api.login_url()
        except (httpx.HTTPError, KeyError, ValueError) as e:
            raise DemoError(f"the server did not give a login link: {e}") from None
        self.timeline["url_printed"] = time.time()
        return self.login_url

    def _start_netns(self) -> None:
        from l7scope.netlab import Topology, cleanup_stale
        from l7scope.proxy.config import EnvoySettings

        o = self.o
        if os.geteuid() != 0:
            raise DemoError("the demo needs root for network namespaces and nftables; "
                            "run it as root, or use `l7scope demo --no-netns` (fallback)")
        refuse_if_running(o.prefix)
        self.progress("cleaning up what an earlier run left behind")
        gone = cleanup_stale(o.prefix)
        kill_stale_pidfile(self.data / "server.pid", "l7scope")
        if gone:
            self.progress(f"removed {len(gone)} stale namespaces of an earlier run")
        ensure_port_free(o.host, o.port)  # after the cleanup: a crashed run's server held it
        self._fresh_dirs()
        self.new_token()

        self.progress("starting the server (embedded DuckDB store)")
        t = Topology(prefix=o.prefix, workdir=self.data / "run")
        self._topo = t
        server = t.popen(None, pipeline.server_argv(o.host, o.port, self.data / "server"))
        (self.data / "server.pid").write_text(str(server.pid))
        self._closers.append(lambda: (self.data / "server.pid").unlink(missing_ok=True))

        self.progress("creating nodes node-a and node-b (network namespaces)")
        nodes = {n: t.add_node(n) for n in topology.NODES}
        rng = random.Random(o.seed)
        plans = topology.plan_pods(rng)
        self.pods = {p.name: p for p in plans}
        pods = {}
        for p in plans:
            self.progress(f"creating pod {p.name} on {p.node}")
            pods[p.name] = t.add_pod(nodes[p.node], p.name)
        by_app = {p.app: p for p in plans}
        services = {}
        for svc in catalog.SERVICES:
            pod = pods[by_app[svc.name].name]
            services[svc.name] = t.add_service(svc.name, svc.port, [(pod, svc.target_port)])
        self.progress("Services: " + ", ".join(f"{n} {s.address}" for n, s in services.items()))
        objects = topology.inventory(plans, {n: p.ip for n, p in pods.items()},
                                     {n: s.vip for n, s in services.items()})

        wait_for("the server", self.api.healthy, 30, server,
                 t.log_path(None, pipeline.server_argv(o.host, o.port, self.data)))

        collectors, agents = {}, {}
        for name, node in nodes.items():
            files = pipeline.NodeFiles(self.data / "nodes" / name)
            pipeline.write_node_files(files, objects, capture=True, tproxy_port=o.tproxy_port)
            self.progress(f"{name}: starting Envoy (transparent listener :{o.tproxy_port})")
            t.start_envoy(node, EnvoySettings(
                tproxy_port=o.tproxy_port, access_log_path=str(files.envoy_log),
                admin_address=f"127.0.0.1:{pipeline.ENVOY_ADMIN_PORT}", node_id=name))
            self._relays.append(NetnsRelay(node.netns, ("127.0.0.1", pipeline.RELAY_PORT),
                                           (o.host, o.port)))
            self.progress(f"{name}: starting the node agent and the collector")
            agents[name] = t.popen(node, pipeline.node_argv(
                files, name, f"http://127.0.0.1:{pipeline.RELAY_PORT}",
                f"http://127.0.0.1:{pipeline.ENVOY_ADMIN_PORT}",
                f"127.0.0.1:{pipeline.NODE_STATUS_PORT}", self.token_file))
            collectors[name] = t.popen(node, pipeline.collector_argv(
                files, name, o.interval, f"127.0.0.1:{pipeline.COLLECTOR_STATUS_PORT}"))

        node_stats = {n: netns_stats(nodes[n].netns, pipeline.NODE_STATUS_PORT) for n in nodes}
        coll_stats = {n: netns_stats(nodes[n].netns, pipeline.COLLECTOR_STATUS_PORT)
                      for n in nodes}
        self.probe = Probe(self.counts_dir, coll_stats, node_stats, self.api)
        self._write_state([demo_state.NodeParts(
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
            self.progress(f"{name}: waiting for the capture rules (annotated Services)")
            wait_for(f"capture on {name}", capturing, 30, agents[name],
                     t.log_path(nodes[name], pipeline.l7scope()))
            wait_for(f"the collector on {name}", _reachable(coll_stats[name]), 30,
                     collectors[name], t.log_path(nodes[name], pipeline.l7scope()))

        peers = [f"--peer={s.name}={services[s.name].address}" for s in catalog.SERVICES]
        shop_procs = {}
        for p in plans:
            if p.app == catalog.LOADGEN:
                continue
            self.progress(f"starting {p.app} in pod {p.name}")
            shop_procs[p.name] = t.popen(pods[p.name], [
                *t.python("l7scope.demo.shop.pod"), "--service", p.app, *peers,
                "--counts-dir", str(self.counts_dir),
                "--ready-file", str(self.ready_dir / p.app),
                *(["--seed", str(o.seed)] if o.seed is not None else [])])
        for p in plans:
            if p.name in shop_procs:
                wait_for(f"{p.app} in pod {p.name}", (self.ready_dir / p.app).exists, 30,
                         shop_procs[p.name])
        lg = by_app[catalog.LOADGEN]
        self.progress(f"starting the load generator in pod {lg.name} ({o.rate:g} requests/s)")
        self.loadgen = t.popen(pods[lg.name], [
            *t.python("l7scope.demo.loadgen"), "--target", services["frontend"].address,
            "--rate", str(o.rate), "--users", str(o.users),
            "--counts-dir", str(self.counts_dir),
            *(["--seed", str(o.seed)] if o.seed is not None else [])])

    def _write_state(self, nodes: list[demo_state.NodeParts], server_pid: int) -> None:
        """The state file `l7scope status` reads (removed again by close())."""
        state = demo_state.State(
            demo_pid=os.getpid(),
            server=demo_state.ServerPart(url=self.url.rstrip("/"), pid=server_pid,
                                         token_file=str(self.token_file)), nodes=nodes,
            annotated_services=[f"{topology.NAMESPACE}/{s.name}" for s in catalog.SERVICES])
        path = demo_state.write_state(state)
        self._closers.append(lambda: demo_state.remove_state(path))

    # -- run -----------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self.probe is None:
            return Snapshot()
        return self.probe.snapshot()

    def stop_load(self, timeout: float = 45.0) -> None:
        """Stop the shoppers; wait for their requests (and the calls they caused) to finish."""
        if self.loadgen is not None and self.loadgen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.loadgen.pid, signal.SIGTERM)
            try:
                self.loadgen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.loadgen.pid, signal.SIGKILL)
        # every pod rewrites its counts file within half a second of a change
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = read_totals(self.counts_dir).total_completed
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                break
            time.sleep(0.25)

    def drain(self, timeout: float | None = None) -> Snapshot:
        """Wait until the store holds every request the shop made (or the timeout passes)."""
        timeout = timeout if timeout is not None else self.o.interval + 20.0
        deadline = time.monotonic() + timeout
        snap = self.snapshot()
        while time.monotonic() < deadline:
            if snap.stored is not None and snap.stored >= snap.sent:
                break
            time.sleep(0.5)
            snap = self.snapshot()
        return snap

    def finish(self) -> Snapshot | None:
        """Stop the load, drain, write `<data-dir>/summary.json`, and tear everything down."""
        snap: Snapshot | None = None
        try:
            if self.probe is not None:
                self.progress("stopping the load generator")
                self.stop_load()
                self.progress("waiting for the last requests to reach the store")
                snap = self.drain()
                self.write_summary(snap)
        finally:
            self.close()
        return snap

    def store_edges(self) -> dict[str, int]:
        """The store's sum of `count` per caller -> callee, named like the shop's counts."""
        out: dict[str, int] = {}
        for (src, dst), n in self.api.edge_counts().items():
            key = f"{self.app_of(src) or src}->{dst or '?'}"
            out[key] = out.get(key, 0) + n
        return dict(sorted(out.items()))

    def write_summary(self, snap: Snapshot) -> None:
        out: dict[str, Any] = {
            "started_at": self.started_at, "finished_at": time.time(), "url": self.url,
            "mode": "loopback" if self.o.no_netns else "netns", **snap.to_dict(),
            "timeline": self.timeline}
        try:
            store = self.store_edges()
            shop = snap.totals.to_dict()["edges"]
            assert isinstance(shop, dict)
            out["store_edges"] = store
            out["edge_mismatches"] = {k: {"shop": shop.get(k, 0), "store": store.get(k, 0)}
                                      for k in sorted(set(shop) | set(store))
                                      if shop.get(k, 0) != store.get(k, 0)}
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
            out["store_edges_error"] = str(e)
        (self.data / "summary.json").write_text(json.dumps(out, indent=2, sort_keys=True))

    def close(self) -> None:
        """Remove every namespace, rule and process of the demo. Idempotent."""
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
        for c in self._closers:
            with contextlib.suppress(Exception):
                c()
        self._closers = []
        self.api.close()
        if errors:
            raise DemoError("cleanup incomplete: " + "; ".join(errors))


def _reachable(read: Callable[[], dict[str, Any]]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            read()
            return True
        except Exception:
            return False
    return check


def server_reachable(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False
