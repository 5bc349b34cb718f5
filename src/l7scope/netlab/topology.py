"""A small cluster in network namespaces: nodes, pods, Services, capture, Envoy.

Layout (names are `<prefix>-<name>`, so parallel topologies never clash):

    pod netns (eth0 10.244.<n>.<k>/32) --veth-- node netns (gateway 10.244.<n>.1)
    node netns (ul0 172.30.0.<n+1>/24) --veth-- underlay netns (bridge br0)

- Node `n` owns the pod CIDR 10.244.<n>.0/24 and routes the other nodes' pod CIDRs through
  their underlay address; `ip_forward=1`, `rp_filter=0`. Pods are routed /32s (each pod's veth
  is point-to-point with the node's gateway address), as with Calico, so pod-to-pod traffic on
  one node also crosses the node's IP stack (and its capture rules).
- Services get a VIP in 10.96.0.0/12 (10.96.0.10 upwards). Every node routes 10.96.0.0/12 to
  the underlay (a route must cover the VIP or Envoy's upstream connect fails before the nat
  OUTPUT hook runs) and runs the kube-proxy stand-in (`netlab.kubeproxy`, own nft table).
- `capture(node, services)` installs `l7scope.capture.tproxy` in the node: the VIPs and their
  endpoints, for clients in the node's pod CIDR. `start_envoy(node)` runs the real Envoy there.

`close()` (or leaving the `with` block) stops every process it started and deletes every
namespace it created (their veths, routes and nft tables go with them), also after a failure.
`cleanup_stale()` removes what a crashed run left behind.

    with Topology() as t:
        n1 = t.add_node("n1")
        c, s = t.add_pod(n1, "client"), t.add_pod(n1, "web")
        t.start_server(s, "http", 8080)
        web = t.add_service("web", 80, [(s, 8080)])
        t.capture(n1, [web]); envoy = t.start_envoy(n1)
        t.run(c, ["curl", "-s", f"http://{web.address}/"])
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from l7scope.capture import tproxy
from l7scope.netlab import kubeproxy
from l7scope.netlab.sh import NetlabError, failure, in_ns, ip, run, sysctl
from l7scope.proxy.bootstrap import EnvoySettings, nodeport_mark
from l7scope.proxy.supervisor import EnvoySupervisor

UNDERLAY_NET = ipaddress.IPv4Network("172.30.0.0/24")
SERVICE_NET = ipaddress.IPv4Network("10.96.0.0/12")
FIRST_VIP = ipaddress.IPv4Address("10.96.0.10")
UNDERLAY_NET6 = ipaddress.IPv6Network("fd00:30::/64")
SERVICE_NET6 = ipaddress.IPv6Network("fd00:96::/112")
FIRST_VIP6 = ipaddress.IPv6Address("fd00:96::a")
FAMILIES = ("ipv4", "ipv6", "dual")

_counter = itertools.count()
_DEFAULT_PREFIX = re.compile(r"^nl(\d+)x\d+-")


def default_prefix() -> str:
    """`nl<pid>x<n>`: unique per process and topology; `cleanup_stale()` recognises it."""
    return f"nl{os.getpid()}x{next(_counter)}"


@dataclass
class Node:
    name: str
    netns: str
    index: int
    pod_cidr: str
    gateway: str
    underlay_ip: str
    pod_cidr6: str | None = None  # dual stack: the IPv6 twins of the three above
    gateway6: str | None = None
    underlay_ip6: str | None = None
    pods: list[Pod] = field(default_factory=list)
    envoy: EnvoySupervisor | None = None
    capture_rules: tproxy.Rules | None = None


@dataclass
class Pod:
    name: str
    netns: str
    ip: str
    node: Node
    ip6: str | None = None  # dual stack: the pod's IPv6 address (`ip` is its IPv4 one)

    def address(self, port: int) -> str:
        return _hostport(self.ip, port)


@dataclass
class External:
    """A machine outside the cluster network on the nodes' underlay (a NodePort client)."""

    name: str
    netns: str
    ip: str
    ip6: str | None = None


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass
class Service:
    name: str
    vip: str
    port: int
    endpoints: list[tuple[str, int]]
    node_port: int = 0
    external_traffic_policy: str = "Cluster"
    vip6: str | None = None  # dual stack: the IPv6 ClusterIP and endpoints
    endpoints6: list[tuple[str, int]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return _hostport(self.vip, self.port)

    @property
    def address6(self) -> str:
        assert self.vip6 is not None, f"{self.name} is not dual stack"
        return _hostport(self.vip6, self.port)

    def selection_entries(self) -> list[tuple[str, int]]:
        """What capture selects for this Service: the VIPs:port and each endpoint ip:port."""
        return [(self.vip, self.port), *self.endpoints,
                *([(self.vip6, self.port), *self.endpoints6] if self.vip6 else [])]


class Topology:
    def __init__(self, prefix: str | None = None, workdir: str | Path | None = None,
                 family: str = "ipv4") -> None:
        """`family`: "ipv4", "ipv6" (IPv6 only: every address, VIP and route is IPv6) or
        "dual" (IPv4 primary, each node, pod and Service also has an IPv6 address)."""
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        self.family = family
        self.v4, self.v6 = family != "ipv6", family != "ipv4"
        self.prefix = prefix or default_prefix()
        if not re.fullmatch(r"[a-z][a-z0-9]{0,23}", self.prefix):
            raise ValueError(f"prefix must be [a-z][a-z0-9]{{0,23}}, got {self.prefix!r}")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"netlab-{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.services: dict[str, Service] = {}
        self.externals: dict[str, External] = {}
        self._netns: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._underlay: str | None = None
        self._closed = False
        atexit.register(self.close)

    # -- namespaces ---------------------------------------------------------------------------
    def _add_netns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        ip("netns", "add", full)
        self._netns.append(full)
        if self.v6:  # addresses usable at once (no duplicate address detection)
            sysctl(full, **{"net.ipv6.conf.all.accept_dad": 0,
                            "net.ipv6.conf.default.accept_dad": 0,
                            "net.ipv6.conf.all.disable_ipv6": 0,
                            "net.ipv6.conf.default.disable_ipv6": 0})
        ip("link", "set", "lo", "up", netns=full)
        return full

    def _ensure_underlay(self) -> str:
        if self._underlay is None:
            ns = self._add_netns("underlay")
            ip("link", "add", "br0", "type", "bridge", netns=ns)
            ip("link", "set", "br0", "up", netns=ns)
            self._underlay = ns
        return self._underlay

    def add_node(self, name: str) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name} exists")
        index = len(self.nodes)
        if index > 200:
            raise ValueError("at most 200 nodes")
        ul = self._ensure_underlay()
        ns = self._add_netns(name)
        sysctl(ns, **{"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                      "net.ipv4.conf.default.rp_filter": 0})
        port = f"n{index}"
        ip("link", "add", "ul0", "type", "veth", "peer", "name", port, "netns", ul, netns=ns)
        ip("link", "set", port, "master", "br0", "up", netns=ul)
        v4 = (f"10.244.{index}.0/24", f"10.244.{index}.1",
              str(UNDERLAY_NET.network_address + index + 1))
        v6 = (str(ipaddress.IPv6Network(f"fd00:244:{index:x}::/64")),
              str(ipaddress.IPv6Address(f"fd00:244:{index:x}::1")),
              str(UNDERLAY_NET6.network_address + index + 1))
        if self.v4:
            ip("addr", "add", f"{v4[2]}/{UNDERLAY_NET.prefixlen}", "dev", "ul0", netns=ns)
        if self.v6:
            sysctl(ns, **{"net.ipv6.conf.all.forwarding": 1})
            ip("addr", "add", f"{v6[2]}/{UNDERLAY_NET6.prefixlen}", "dev", "ul0", "nodad",
               netns=ns)
        ip("link", "set", "ul0", "up", netns=ns)
        if self.v4:
            ip("route", "add", str(SERVICE_NET), "dev", "ul0", netns=ns)
        if self.v6:
            ip("route", "add", str(SERVICE_NET6), "dev", "ul0", netns=ns)
        primary = v4 if self.v4 else v6
        node = Node(name=name, netns=ns, index=index, pod_cidr=primary[0], gateway=primary[1],
                    underlay_ip=primary[2])
        if self.family == "dual":
            node.pod_cidr6, node.gateway6, node.underlay_ip6 = v6
        for other in self.nodes.values():
            for a, b in ((other, node), (node, other)):
                ip("route", "add", a.pod_cidr, "via", a.underlay_ip, netns=b.netns)
                if a.pod_cidr6 and a.underlay_ip6:
                    ip("route", "add", a.pod_cidr6, "via", a.underlay_ip6, netns=b.netns)
        self.nodes[name] = node
        self._sync_services(node)
        return node

    def add_pod(self, node: Node, name: str) -> Pod:
        if name in self.pods:
            raise ValueError(f"pod {name} exists")
        k = len(node.pods) + 2
        if k > 254:
            raise ValueError(f"node {node.name} is full")
        ip6 = str(ipaddress.IPv6Address(f"fd00:244:{node.index:x}::{k:x}"))
        pod_ip = f"10.244.{node.index}.{k}" if self.v4 else ip6
        pod_ip6 = ip6 if self.family == "dual" else None
        ns = self._add_netns(name)
        veth = f"p{k}"
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
           netns=node.netns)
        pairs = [(node.gateway, pod_ip)]
        if pod_ip6 and node.gateway6:
            pairs.append((node.gateway6, pod_ip6))
        for gw, addr in pairs:
            if ":" in addr:  # IPv6 `peer` adds no route to the peer: routes of our own
                ip("addr", "add", f"{gw}/128", "dev", veth, "nodad", netns=node.netns)
                ip("addr", "add", f"{addr}/128", "dev", "eth0", "nodad", netns=ns)
            else:
                ip("addr", "add", gw, "peer", f"{addr}/32", "dev", veth, netns=node.netns)
                ip("addr", "add", addr, "peer", f"{gw}/32", "dev", "eth0", netns=ns)
        ip("link", "set", veth, "up", netns=node.netns)
        ip("link", "set", "eth0", "up", netns=ns)
        for gw, addr in pairs:
            if ":" in addr:
                ip("route", "add", f"{addr}/128", "dev", veth, netns=node.netns)
                ip("route", "add", f"{gw}/128", "dev", "eth0", netns=ns)
            ip("route", "add", "default", "via", gw, "dev", "eth0", netns=ns)
        pod = Pod(name=name, netns=ns, ip=pod_ip, node=node, ip6=pod_ip6)
        node.pods.append(pod)
        self.pods[name] = pod
        return pod

    def add_external(self, name: str) -> External:
        """A host on the underlay that is neither node nor pod (172.30.0.254 downwards)."""
        if name in self.externals:
            raise ValueError(f"external {name} exists")
        ul = self._ensure_underlay()
        n = len(self.externals)
        addr4 = str(UNDERLAY_NET.broadcast_address - 1 - n)
        addr6 = str(UNDERLAY_NET6.network_address + 0xfe - n)
        ns = self._add_netns(name)
        port = f"x{n}"
        ip("link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", ul, netns=ns)
        ip("link", "set", port, "master", "br0", "up", netns=ul)
        if self.v4:
            ip("addr", "add", f"{addr4}/{UNDERLAY_NET.prefixlen}", "dev", "eth0", netns=ns)
        if self.v6:
            ip("addr", "add", f"{addr6}/{UNDERLAY_NET6.prefixlen}", "dev", "eth0", "nodad",
               netns=ns)
        ip("link", "set", "eth0", "up", netns=ns)
        ext = External(name=name, netns=ns, ip=addr4 if self.v4 else addr6,
                       ip6=addr6 if self.family == "dual" else None)
        self.externals[name] = ext
        return ext

    # -- services and capture ----------------------------------------------------------------
    def add_service(self, name: str, port: int,
                    endpoints: Sequence[tuple[Pod | str, int]], vip: str | None = None,
                    node_port: int = 0, external_traffic_policy: str = "Cluster") -> Service:
        """A ClusterIP Service: VIP:port -> endpoints (pods or ip strings, with target port);
        with `node_port` a NodePort Service too (`externalTrafficPolicy` Cluster or Local)."""
        if external_traffic_policy not in ("Cluster", "Local"):
            raise ValueError(f"externalTrafficPolicy must be Cluster or Local, got {external_traffic_policy}")
        if name in self.services:
            raise ValueError(f"service {name} exists")
        net = SERVICE_NET if self.v4 else SERVICE_NET6
        if vip is None:
            vip = str((FIRST_VIP if self.v4 else FIRST_VIP6) + len(self.services))
        if ipaddress.ip_address(vip) not in net:
            raise ValueError(f"VIP {vip} is outside {net}")
        eps = [(e.ip if isinstance(e, Pod) else str(ipaddress.ip_address(e)), int(p))
               for e, p in endpoints]
        svc = Service(name=name, vip=vip, port=port, endpoints=eps, node_port=node_port,
                      external_traffic_policy=external_traffic_policy)
        if self.family == "dual":  # pod endpoints get their IPv6 twin
            svc.vip6 = str(FIRST_VIP6 + len(self.services))
            svc.endpoints6 = [(e.ip6, int(p)) for e, p in endpoints
                              if isinstance(e, Pod) and e.ip6]
        self.services[name] = svc
        for node in self.nodes.values():
            self._sync_services(node)
        return svc

    def _sync_services(self, node: Node) -> None:
        local = ({p.ip for p in node.pods} | {p.ip6 for p in node.pods if p.ip6}
                 | {node.underlay_ip, node.underlay_ip6})
        rules = [kubeproxy.ServiceRule(
            vip, s.port, eps, s.node_port,
            [e for e in eps if e[0] in local] if s.external_traffic_policy == "Local" else None)
            for s in self.services.values()
            for vip, eps in ((s.vip, s.endpoints), (s.vip6, s.endpoints6)) if vip]
        kubeproxy.apply(node.netns, rules)

    def capture(self, node: Node, services: Iterable[Service],
                tproxy_port: int = tproxy.DEFAULT_TPROXY_PORT) -> tproxy.Rules:
        """Send the node's pods' connections to these Services (VIPs and endpoints) to Envoy."""
        services = list(services)
        entries = [e for s in services for e in s.selection_entries()]
        nodeports = [s.node_port for s in services if s.node_port]
        rules = tproxy.Rules(tproxy_port=tproxy_port)
        cidrs = [node.pod_cidr, *([node.pod_cidr6] if node.pod_cidr6 else [])]
        tproxy.apply(tproxy.Selection.of(entries, cidrs, nodeports), rules,
                     netns=node.netns)
        node.capture_rules = rules
        return rules

    def uncapture(self, node: Node) -> None:
        """Remove the capture rules (what the node agent does when Envoy is unhealthy)."""
        tproxy.remove(node.capture_rules or tproxy.Rules(), netns=node.netns)

    def start_envoy(self, node: Node, settings: EnvoySettings | None = None,
                    **supervisor_args: Any) -> EnvoySupervisor:
        """Start Envoy in the node (its access log in the workdir unless `settings` says)."""
        if node.envoy is not None and node.envoy.running():
            raise RuntimeError(f"Envoy already runs on {node.name}")
        if settings is None:
            rules = node.capture_rules or tproxy.Rules()
            settings = EnvoySettings(tproxy_port=rules.tproxy_port,
                                     access_log_path=str(self.workdir / f"{node.name}-envoy.log"),
                                     listen_address_v6="::" if self.v6 else None,
                                     original_src_mark=rules.upstream_mark,
                                     nodeport_original_src_mark=nodeport_mark(rules.upstream_mark))
        sup = EnvoySupervisor(settings, netns=node.netns,
                              workdir=self.workdir / f"{node.name}-envoy", **supervisor_args)
        node.envoy = sup
        sup.start()
        return sup

    # -- processes ---------------------------------------------------------------------------
    def popen(self, where: Pod | Node | External | None, argv: Sequence[str], *,
              stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
              stdin: int | IO[Any] | None = subprocess.DEVNULL,
              text: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
        """Start a process in a pod or node namespace (host with None); stopped by close().

        stdout/stderr default to a log file in the workdir (see `log_path`)."""
        log = None
        if stdout is None or stderr is None:
            log = open(self.log_path(where, argv), "ab")  # noqa: SIM115 - handed to Popen
        proc = subprocess.Popen(
            in_ns(argv, where.netns if where else None),
            stdin=stdin, stdout=log if stdout is None else stdout,
            stderr=log if stderr is None else stderr, text=text, env=env,
            start_new_session=True,
        )
        if log is not None:
            log.close()
        self._procs.append(proc)
        return proc

    def log_path(self, where: Pod | Node | External | None, argv: Sequence[str]) -> Path:
        name = where.name if where else "host"
        return self.workdir / f"{name}-{Path(argv[0]).name}.log"

    def run(self, where: Pod | Node | External | None, argv: Sequence[str], *, check: bool = True,
            stdin: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a pod or node namespace and capture its output."""
        return run(argv, where.netns if where else None, check=check, stdin=stdin,
                   timeout=timeout)

    @staticmethod
    def python(module: str, *args: str) -> list[str]:
        """argv for `python -m module args` with this interpreter."""
        return [sys.executable, "-m", module, *args]

    def start_server(self, pod: Pod, mode: str, port: int, *extra: str,
                     timeout: float = 15.0) -> subprocess.Popen[Any]:
        """Start `l7scope.netlab.podserver MODE` in the pod and wait until it listens."""
        argv = self.python("l7scope.netlab.podserver", mode, "--port", str(port), *extra)
        errlog = self.workdir / f"{pod.name}-server-{port}.log"
        with open(errlog, "ab") as err:
            proc = self.popen(pod, argv, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.1):
                    line = proc.stdout.readline()
                    if line.startswith(b"READY"):
                        return proc
                    if not line and proc.poll() is not None:
                        break
                elif proc.poll() is not None:
                    break
        finally:
            sel.close()
        tail = errlog.read_text(errors="replace")[-2000:]
        raise NetlabError(f"{mode} server on {pod.name}:{port} did not start:\n{tail}")

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything started here and delete every namespace created here. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        for proc in reversed(self._procs):
            _stop(proc)
        for node in self.nodes.values():
            if node.envoy is not None:
                try:
                    node.envoy.stop()
                except Exception as e:  # keep tearing down
                    errors.append(f"envoy on {node.name}: {e}")
        for ns in reversed(self._netns):
            _kill_netns_pids(ns)
            res = run(["ip", "netns", "del", ns], check=False)
            if res.returncode != 0:
                errors.append(failure(["ip", "netns", "del", ns], res))
        if self._own_workdir and "NETLAB_KEEP" not in os.environ:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise NetlabError("the lab's teardown left: " + "; ".join(errors))

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _stop(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _kill_netns_pids(ns: str) -> None:
    """SIGKILL whatever still runs in a namespace we are about to delete."""
    res = run(["ip", "netns", "pids", ns], check=False)
    for pid in res.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def cleanup_stale(prefix: str | None = None) -> list[str]:
    """Delete namespaces (and kill their processes) left by a crashed run.

    With `prefix`: every `<prefix>-*` namespace. Without: namespaces with a default prefix
    (`nl<pid>x<n>-`) whose process is gone. Returns the deleted names.
    """
    listed = run(["ip", "netns", "list"], check=False).stdout.split("\n")
    deleted = []
    for line in listed:
        ns = line.split(" ", 1)[0]
        if not ns:
            continue
        if prefix is not None:
            if not ns.startswith(f"{prefix}-"):
                continue
        else:
            m = _DEFAULT_PREFIX.match(ns)
            if not m or _alive(int(m.group(1))):
                continue
        _kill_netns_pids(ns)
        if run(["ip", "netns", "del", ns], check=False).returncode == 0:
            deleted.append(ns)
    return deleted


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
