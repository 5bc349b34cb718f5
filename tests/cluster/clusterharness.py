"""A real Kubernetes v1.20.2 cluster of N nodes on this machine, for tests (marker `cluster`).

N is L7SCOPE_CLUSTER_NODES (default 1; 2 was brought up, tested and torn down cleanly). Each
node's names and addresses are a NodeSpec (`node_spec(i)`: `l7sc-node-<i>`, netns `l7sc-n<i>`,
veth `l7sc-h<i>` 10.250.0.<4(i-1)+1>/30, pods 10.244.<i-1>.0/24, cgroup root /l7sc-node-<i>, its
own kubelet token `system:node:<name>`); the module constants NODE, NETNS, ... are node 1's.
Every node below has its own netns, mount namespace, containerd (its own persistent root),
kubelet and kube-proxy. With two or more, the host routes each node's pod range via that node's
veth and forwards between the nodes (the guard allows only pod traffic between two nodes).
The text below describes one node; every node is built the same way.

What runs (all started here, all torn down here):
- etcd, kube-apiserver, kube-controller-manager, kube-scheduler in the host network namespace,
  the apiserver bound to HOST_IP on the host end of the node's veth (tests/kube/kubeharness.py
  spawns and waits for them; here with service accounts, the endpoint reconciler and the Node
  authorizer on, as pods need);
- the node `l7sc-node-1` in its own network namespace NETNS (veth HOST_IF <-> NODE_IF, node IP
  NODE_IP, no default route) and its own private mount namespace, in which the kubelet's and
  containerd's hard-coded host paths (/var/lib/kubelet, /var/log/pods, /var/log/containers,
  /run/containerd, /var/lib/cni) are bind mounts of dirs under the work dir;
- in that node: containerd (CRI, cgroupfs, restrict_oom_score_adj, private root/state/socket,
  the images of scripts/setup.d/images.sh imported), the `ptp` CNI (routed veths, as TPROXY
  needs), kubelet (cgroup root /l7sc-node-1) and kube-proxy (iptables mode, conntrack sizing
  off so the host's conntrack table is not retuned).

Because the node has its own network namespace, kube-proxy's and the kubelet's iptables rules,
the pods' veths and the hostNetwork pods all live there, and vanish with it. In the host netns
the harness adds only the veth and one nft table (GUARD_TABLE) that drops anything the node
would have the host forward, and any ClusterIP/pod-range packet leaving by another interface.

Side effects on the machine and how they are undone: the kernel sysctls the kubelet sets
(SYSCTLS) are saved and restored; the cgroups under /l7sc-node-1 are removed depth-first in
every hierarchy (also the cgroup2 mount at /sys/fs/cgroup/unified); host dirs made as mount
points are removed if the harness made them. A state file (STATE_DIR/state.json) records what
was made, so a run that died is cleaned up by the next start (`cleanup_stale`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kube"))
import kubeharness

from l7scope.contracts.demo_state import pid_alive
from l7scope.kube.client import Kube, KubeError, connect

VERSION = kubeharness.VERSION
NODE = "l7sc-node-1"
NETNS = "l7sc-n1"
HOST_IF, NODE_IF = "l7sc-h1", "uplink0"
HOST_IP, NODE_IP = "10.250.0.1", "10.250.0.2"  # outside SERVICE_CIDR and CLUSTER_CIDR
POD_CIDR, CLUSTER_CIDR, SERVICE_CIDR = "10.244.0.0/24", "10.244.0.0/16", "10.96.0.0/12"
CGROUP_ROOT = "l7sc-node-1"
NODES_ENV = "L7SCOPE_CLUSTER_NODES"
GUARD_TABLE = "l7sc_guard"
STATE_DIR = Path("/run/l7scope-cluster")
CGROUP_FS = Path("/sys/fs/cgroup")
NODE_BINARIES = ("kubelet", "kube-proxy")
CNI_PLUGINS = ("ptp", "host-local", "portmap", "loopback")
TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "nft", "ip",
         "nsenter", "unshare", "etcd", "openssl")
# Paths kubelet 1.20 / containerd 1.6 / libcni use whatever their flags say: private per node.
# The DaemonSet's hostPaths too (Policy Sync dir, L7 log dir, the node agent's spool): with two
# nodes on one machine each must have its own.
PRIVATE_PATHS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd",
                 "/var/lib/cni", "/run/nodeagent", "/var/log/calico", "/var/lib/l7scope")
# Global (not per-netns) sysctls the kubelet sets, and the host netns ones a node could touch.
SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "vm.panic_on_oom",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
           "net.ipv4.conf.all.forwarding", "net.ipv4.conf.all.route_localnet",
           "net.bridge.bridge-nf-call-iptables", "net.netfilter.nf_conntrack_max")
#: the chart's labels of the operator's pod (deploy/helm/l7scope/templates/_helpers.tpl)
OPERATOR_SELECTOR = {"app.kubernetes.io/name": "l7scope", "app.kubernetes.io/component": "operator"}
ADMIN_TOKEN, NODE_TOKEN, PROXY_TOKEN = ("l7sc-admin-token", "l7sc-node-token", "l7sc-proxy-token")


@dataclass(frozen=True)
class NodeSpec:
    """One node's fixed names and addresses (node 1's are the module constants above)."""

    index: int
    name: str
    netns: str
    host_if: str
    host_ip: str  # the host end of the node's veth (/30)
    node_ip: str
    pod_cidr: str
    cgroup_root: str
    token: str  # the kubelet's: user system:node:<name> (the Node authorizer)
    node_if: str = NODE_IF

    @property
    def key(self) -> str:
        """The prefix of this node's processes in State.pids and its dir under the work dir."""
        return self.name


def node_spec(i: int) -> NodeSpec:
    """Node i (1-based): veth 10.250.0.<4(i-1)+1>/30, pod range 10.244.<i-1>.0/24."""
    if not 1 <= i <= 8:
        raise ValueError(f"node index out of range: {i}")
    base = 4 * (i - 1)
    return NodeSpec(index=i, name=f"l7sc-node-{i}", netns=f"l7sc-n{i}", host_if=f"l7sc-h{i}",
                    host_ip=f"10.250.0.{base + 1}", node_ip=f"10.250.0.{base + 2}",
                    pod_cidr=f"10.244.{i - 1}.0/24", cgroup_root=f"l7sc-node-{i}",
                    token=NODE_TOKEN if i == 1 else f"l7sc-node-{i}-token")


def spec_named(name: str) -> NodeSpec:
    """The NodeSpec of a node name (`l7sc-node-2` -> node 2)."""
    spec = node_spec(int(name.rsplit("-", 1)[1]))
    assert spec.name == name, name
    return spec


def node_count() -> int:
    """How many nodes start: L7SCOPE_CLUSTER_NODES (default 1)."""
    n = int(os.environ.get(NODES_ENV, "1"))
    if not 1 <= n <= 8:
        raise ValueError(f"{NODES_ENV}={n}: 1 to 8 nodes")
    return n


# ---- what this machine has ------------------------------------------------------------------
def image_cache() -> Path:
    return Path(os.environ.get("L7SCOPE_IMAGE_CACHE", "/var/cache/l7scope/images"))


REPO = Path(__file__).resolve().parents[2]
#: this checkout's choice of images (scripts/setup.d/images.sh writes it; /build/ is gitignored)
IMAGES_FILE = REPO / "build" / "images.json"


def _image_keys() -> Any:
    """scripts/setup.d/images/keys.py, the one definition of the images' cache keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "l7scope_image_keys", REPO / "scripts" / "setup.d" / "images" / "keys.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def images() -> dict[str, dict[str, str]]:
    """The images scripts/setup.d/images.sh built for this checkout:
    {"pause"|"base"|"l7scope": {name, tar}}."""
    doc: dict[str, dict[str, str]] = json.loads(IMAGES_FILE.read_text())
    return doc


def image_problem() -> str | None:
    """Why this checkout's project image cannot be used (None: it can). Another checkout's
    image must never stand in for it: the selection is per checkout and its key must be the one
    the checkout's sources give now."""
    rebuild = f"run `bash scripts/setup.d/images.sh` in {REPO}"
    try:
        imgs = images()
    except FileNotFoundError:
        return f"this checkout's images were never built ({IMAGES_FILE} is missing); {rebuild}"
    except (OSError, ValueError) as e:
        return f"cannot read {IMAGES_FILE} ({e}); {rebuild}"
    if not isinstance(imgs, dict) or set(imgs) != {"pause", "base", "l7scope"}:
        return f"{IMAGES_FILE} does not name the pause, base and l7scope images; {rebuild}"
    gone = [v.get("tar") for v in imgs.values() if not Path(str(v.get("tar"))).is_file()]
    if gone:
        return (f"image tarballs named by {IMAGES_FILE} are gone from the cache ({gone}; "
                f"another checkout's older images.sh may have pruned them); {rebuild}")
    want = _image_keys().app_key(REPO)
    have = imgs["l7scope"].get("key") or imgs["l7scope"]["name"].rsplit(":", 1)[-1]
    if have != want:
        return (f"this checkout's sources changed since its image was built (image key {have}, "
                f"sources key {want}); {rebuild}")
    return None


def missing_parts() -> str | None:
    """Why a real node cannot run here (None when it can): the message a skip shows."""
    if os.geteuid() != 0:
        return "needs root (network/mount namespaces, cgroups, containerd)"
    why = kubeharness.missing_parts()
    if why:
        return why
    b = kubeharness.cache_bin_dir()
    absent = [x for x in NODE_BINARIES if not (b / x).is_file()]
    if absent:
        return f"{', '.join(absent)} not built in {b} (run `make setup`: scripts/setup.d/kube.sh)"
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        return (f"missing {', '.join(tools)} (Debian packages containerd runc iptables nftables "
                "iproute2 util-linux etcd-server openssl: scripts/setup.d/node.sh)")
    cni = [p for p in CNI_PLUGINS if not Path("/usr/lib/cni", p).is_file()]
    if cni:
        return f"CNI plugins {', '.join(cni)} missing in /usr/lib/cni (containernetworking-plugins)"
    return kernel_gaps()


def kernel_gaps() -> str | None:
    """What the kernel lacks for a node (None: nothing)."""
    fs = Path("/proc/filesystems").read_text()
    if "overlay" not in fs:
        return "the kernel has no overlayfs (containerd's snapshotter)"
    for ctrl in ("cpu", "memory", "pids", "cpuset", "devices", "freezer"):
        if not (CGROUP_FS / ctrl / "cgroup.procs").is_file():
            return (f"no cgroup v1 `{ctrl}` hierarchy at {CGROUP_FS / ctrl} (kubelet 1.20 with "
                    "cgroupfs needs cgroup v1 or hybrid mode)")
    if not os.access(CGROUP_FS / "memory", os.W_OK):
        return f"{CGROUP_FS / 'memory'} is not writable"
    if not Path("/proc/sys/net/netfilter").is_dir() and not Path("/proc/net/nf_conntrack").exists():
        return "the kernel has no netfilter conntrack (kube-proxy needs NAT)"
    r = subprocess.run(["unshare", "--net", "sh", "-c",
                        "ip link add l7sc-ka type veth peer name l7sc-kb && nft add table ip t && "
                        "nft add chain ip t c '{ type nat hook prerouting priority -100; }'"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"the kernel lacks veth or nf_tables NAT: {r.stderr.strip()[:200]}"
    return None


# ---- small helpers ----------------------------------------------------------------------------
def run(*cmd: str, check: bool = True, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def in_netns(*cmd: str, check: bool = True, input: str | None = None,
             node: NodeSpec | None = None) -> subprocess.CompletedProcess[str]:
    """`cmd` in a node's network namespace (node 1's by default)."""
    netns = node.netns if node is not None else NETNS
    return run("nsenter", f"--net=/run/netns/{netns}", "--", *cmd, check=check, input=input)


def read_sysctl(name: str) -> str | None:
    p = Path("/proc/sys", *name.split("."))
    try:
        return p.read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", *name.split(".")).write_text(value)


def stop_pid(pid: int, timeout: float = 10, proc: subprocess.Popen[bytes] | None = None) -> None:
    """TERM, then KILL after `timeout` s; by pid only."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not pid_alive(pid):
                return
            time.sleep(0.1)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)

#: Run in a pod (`python -c PROBE_LOOP URL SECONDS`): GET URL on a new connection (1 s timeout)
#: every 0.1 s for SECONDS; prints [[epoch, ok], ...]. `$VAR`s in URL are the pod's environment
#: (e.g. a Service's `*_SERVICE_HOST`).
PROBE_LOOP = """
import http.client, json, os, sys, time, urllib.parse
u = urllib.parse.urlsplit(os.path.expandvars(sys.argv[1]))
end, out = time.time() + float(sys.argv[2]), []
while time.time() < end:
    t = time.time()
    try:  # a new connection each time: a fresh SYN through whatever rules are in place
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=1)
        c.request("GET", u.path or "/")
        ok = c.getresponse().status == 200
        c.close()
    except Exception:
        ok = False
    out.append([t, ok])
    time.sleep(0.1)
print(json.dumps(out))
"""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.3,
             diagnose: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = predicate()
            if v:
                return v
        except (KubeError, KeyError, IndexError, OSError) as e:
            last = e
        time.sleep(interval)
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last})" if last else "") + extra)


def cgroup_dirs(root: str = CGROUP_ROOT) -> list[Path]:
    """A node's cgroup root in every mounted hierarchy (v1 controllers, name=systemd, cgroup2)."""
    if not CGROUP_FS.is_dir():
        return []
    return [d / root for d in sorted(CGROUP_FS.iterdir()) if (d / "cgroup.procs").exists()]


def cgroup_pids(cgroup_root: str = CGROUP_ROOT) -> set[int]:
    pids: set[int] = set()
    for root in cgroup_dirs(cgroup_root):
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return pids


def remove_cgroups(cgroup_root: str = CGROUP_ROOT) -> list[str]:
    """rmdir a node's cgroup trees depth-first; the paths that would not go."""
    left: list[str] = []
    for root in cgroup_dirs(cgroup_root):
        if not root.is_dir():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, root]:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(str(d))
    return left


def shims_of(socket: str) -> list[int]:
    """containerd-shim-runc-v2 processes started by the containerd listening on `socket`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
            found.append(int(p.name))
    return found


# ---- the state file: what this run made, for teardown and for a later run's cleanup ------------
@dataclass
class State:
    workdir: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    made_dirs: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    netns: bool = False  # the nodes' netns may exist (teardown deletes each of `nodes`)
    guard: bool = False
    cgroups: bool = False
    nodes: int = 1

    @staticmethod
    def path() -> Path:
        return STATE_DIR / "state.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path().with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(self.path())

    @classmethod
    def load(cls) -> State | None:
        try:
            return cls(**json.loads(cls.path().read_text()))
        except (OSError, ValueError, TypeError):
            return None


# ---- the cluster -----------------------------------------------------------------------------
@dataclass
class Cluster:
    workdir: Path
    cp: kubeharness.ControlPlane
    state: State
    images: dict[str, dict[str, str]]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    lock_fd: int | None = None
    nodes: list[NodeSpec] = field(default_factory=lambda: [node_spec(1)])

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    @property
    def socket(self) -> str:
        """Node 1's containerd socket."""
        return socket_of(self.workdir, self.nodes[0])

    def node(self, name: str) -> NodeSpec:
        """The node of that name (a pod's spec.nodeName)."""
        (n,) = [n for n in self.nodes if n.name == name]
        return n

    def kube(self) -> Kube:
        return connect(str(self.kubeconfig))

    def image(self, which: str) -> str:
        return self.images[which]["name"]

    def ctr(self, *args: str, check: bool = True, timeout: float = 120,
            node: NodeSpec | None = None) -> subprocess.CompletedProcess[str]:
        """`ctr` against a node's containerd (node 1's by default)."""
        sock = socket_of(self.workdir, node or self.nodes[0])
        return run("ctr", "--address", sock, "-n", "k8s.io", *args, check=check, timeout=timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        p = self.workdir / f"{name}.log"
        if not p.exists():
            return self.cp.log_tail(name, lines)
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])

    def diagnose(self) -> str:
        return "\n".join(f"--- {node.name}/{n} log tail:\n{self.log_tail(f'{node.key}/{n}', 15)}"
                         for node in self.nodes for n in ("kubelet", "containerd", "kube-proxy"))

    # -- processes in a node
    def spawn_in_node(self, node: NodeSpec, proc: str, argv: list[str]) -> subprocess.Popen[bytes]:
        holder = self.state.pids[f"{node.key}/node-holder"]
        name = f"{node.key}/{proc}"
        out = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        p = subprocess.Popen(["nsenter", f"--target={holder}", "--mount", "--net", "--", *argv],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        out.close()
        self.procs[name] = p
        self.state.pids[name] = p.pid
        self.state.save()
        return p

    def assert_running(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited ({p.returncode}):\n{self.log_tail(name)}")

    def stop(self) -> list[str]:
        """Tear everything down; the things that could not be removed (empty: all gone)."""
        try:
            delete_workloads(self)
        except Exception as e:  # teardown goes on; what is left is reported
            print(f"cluster teardown: deleting workloads failed: {e}", file=sys.stderr)
        problems = teardown(self.state, self.procs, self.cp)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        return problems


def socket_of(workdir: Path, node: NodeSpec) -> str:
    return str(workdir / node.key / "containerd" / "containerd.sock")


def delete_workloads(c: Cluster, timeout: float = 60) -> None:
    """Delete every workload through the API, so the kubelet removes the sandboxes through CRI
    (CNI DEL, netns, cgroups) the normal way; then wait until no pod is left on the node."""
    kube = c.kube()
    try:
        system = {"default", "kube-system", "kube-public", "kube-node-lease"}
        for ns in kube.list("/api/v1/namespaces")[0]:
            name = ns["metadata"]["name"]
            if name not in system:
                with contextlib.suppress(KubeError):
                    kube.delete(f"/api/v1/namespaces/{name}")
        for ns in ("default", "kube-system"):
            for group, plural in (("apps/v1", "daemonsets"), ("apps/v1", "deployments"),
                                  ("apps/v1", "replicasets"), ("apps/v1", "statefulsets"),
                                  ("batch/v1", "jobs")):
                base = f"/apis/{group}/namespaces/{ns}/{plural}"
                for obj in kube.list(base)[0]:
                    with contextlib.suppress(KubeError):
                        kube.delete(f"{base}/{obj['metadata']['name']}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = kube.list("/api/v1/pods")[0]
            if not pods:
                return
            for pod in pods:
                m = pod["metadata"]
                if not m.get("deletionTimestamp"):
                    with contextlib.suppress(KubeError):
                        kube.delete(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                                    grace_period_seconds=1)
            time.sleep(0.5)
        left = [p["metadata"]["name"] for p in kube.list("/api/v1/pods")[0]]
        print(f"cluster teardown: pods still present after {timeout}s: {left}", file=sys.stderr)
    finally:
        kube.close()


def teardown(state: State, procs: dict[str, subprocess.Popen[bytes]] | None = None,
             cp: kubeharness.ControlPlane | None = None) -> list[str]:
    """Undo what `state` records, in order. Safe to run on a partial or stale state."""
    procs = procs or {}
    problems: list[str] = []
    work = Path(state.workdir) if state.workdir else None
    nodes = [node_spec(i) for i in range(1, max(1, state.nodes) + 1)]
    sockets = [socket_of(work, n) for n in nodes] if work else []
    # A state file of the one-node harness before NodeSpec: its node processes are unprefixed
    # and its containerd socket sits at the work dir's top.
    for proc in ("node-holder", "containerd", "kubelet", "kube-proxy"):
        if proc in state.pids:
            state.pids[f"{nodes[0].key}/{proc}"] = state.pids.pop(proc)
            if work is not None and proc == "containerd":
                sockets[0] = str(work / "containerd" / "containerd.sock")

    def stop(name: str) -> None:
        pid = state.pids.get(name)
        if pid:
            stop_pid(pid, proc=procs.get(name))

    # 1. node agents first, so nothing recreates what is removed next
    for n in nodes:
        stop(f"{n.key}/kube-proxy")
        stop(f"{n.key}/kubelet")
    # 2. every container through each containerd's API while it still runs
    for n, socket in zip(nodes, sockets, strict=False):
        pid = state.pids.get(f"{n.key}/containerd")
        if Path(socket).exists() and pid and pid_alive(pid):
            ctr = ["ctr", "--address", socket, "-n", "k8s.io"]
            tasks = run(*ctr, "tasks", "ls", "-q", check=False).stdout.split()
            for t in tasks:
                run(*ctr, "tasks", "kill", "-s", "SIGKILL", t, check=False)
            for t in tasks:
                run(*ctr, "tasks", "delete", "-f", t, check=False)
            for c in run(*ctr, "containers", "ls", "-q", check=False).stdout.split():
                run(*ctr, "containers", "delete", c, check=False)
        stop(f"{n.key}/containerd")
        for shim in shims_of(socket):
            stop_pid(shim, timeout=3)
    # 3. anything still in our cgroups (container processes a killed shim left behind)
    for n in nodes:
        for _ in range(3):
            pids = cgroup_pids(n.cgroup_root)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)
    # 4. the mount-namespace holders: with them the nodes' private mounts go
    for n in nodes:
        stop(f"{n.key}/node-holder")
    # 5. the control plane
    if cp is not None:
        cp.stop()
    else:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            stop(name)
    # 6. network: the node netns (with its veth peer, pod veths, iptables) and the guard table
    if state.netns:
        for n in nodes:
            run("ip", "netns", "del", n.netns, check=False)
            with contextlib.suppress(AssertionError):
                wait_for(functools.partial(_link_gone, n.host_if), 10, f"link {n.host_if} to go")
            if run("ip", "link", "show", n.host_if, check=False).returncode == 0:
                run("ip", "link", "del", n.host_if, check=False)
    if state.guard:
        run("nft", "delete", "table", "inet", GUARD_TABLE, check=False)
    # 7. cgroups, sysctls, dirs
    if state.cgroups:
        for n in nodes:
            problems += [f"cgroup {d}" for d in remove_cgroups(n.cgroup_root)]
    restored = []
    for name, value in state.sysctls.items():
        now = read_sysctl(name)
        if now != value:
            write_sysctl(name, value)
            restored.append(f"{name} {now}->{value}")
            if read_sysctl(name) != value:
                problems.append(f"sysctl {name} is {read_sysctl(name)}, was {value}")
    if restored:
        print(f"cluster teardown: restored sysctls: {', '.join(restored)}", file=sys.stderr)
    for d in reversed(state.made_dirs):
        with contextlib.suppress(OSError):
            Path(d).rmdir()
    if work is not None and work.exists():
        mounted = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
                   if ln.split()[4].startswith(str(work))]
        for m in sorted(mounted, key=len, reverse=True):
            run("umount", "-l", m, check=False)
        shutil.rmtree(work, ignore_errors=True)
    # what is still there
    for name, pid in state.pids.items():
        if pid_alive(pid):
            problems.append(f"process {name} ({pid})")
    netns_left = run("ip", "netns", "list", check=False).stdout.split()
    problems += [f"netns {n.netns}" for n in nodes if n.netns in netns_left]
    links = run("ip", "-o", "link", "show", check=False).stdout
    problems += [f"link {n.host_if}" for n in nodes if f" {n.host_if}@" in links
                 or f" {n.host_if}:" in links]
    if run("nft", "list", "table", "inet", GUARD_TABLE, check=False).returncode == 0:
        problems.append(f"nft table {GUARD_TABLE}")
    problems += [f"dir {d}" for d in state.made_dirs if Path(d).exists()]
    for socket in sockets:
        problems += [f"shim {p}" for p in shims_of(socket)]
    with contextlib.suppress(OSError):
        State.path().unlink()
    return problems


def _link_gone(name: str) -> bool:
    return run("ip", "link", "show", name, check=False).returncode != 0


def cleanup_stale() -> list[str]:
    """Tear down what a run that died left (its state file), before a new start."""
    st = State.load()
    if st is None:
        return []
    return teardown(st)


def machine_lock(timeout: float = 1200) -> int:
    """One real node per machine (the netns, veth, cgroup root and addresses are fixed): an
    exclusive lock, held until the returned fd is closed."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"another test cluster holds {STATE_DIR / 'lock'}") from None
            time.sleep(1)


# ---- bring-up ---------------------------------------------------------------------------------
def start(nodes: int | None = None) -> Cluster:
    """Start the control plane and `nodes` nodes (default node_count()); every node Ready and
    the default service account made."""
    specs = [node_spec(i) for i in range(1, (nodes or node_count()) + 1)]
    fd = machine_lock()
    leftovers = cleanup_stale()
    if leftovers:
        os.close(fd)
        raise RuntimeError(f"a previous test cluster left things that could not be removed: {leftovers}")
    t0 = time.monotonic()
    base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix="l7scope-cluster-", dir=base))
    state = State(workdir=str(work), nodes=len(specs))
    state.sysctls = {n: v for n in SYSCTLS if (v := read_sysctl(n)) is not None}
    state.save()
    cp = kubeharness.ControlPlane(workdir=work / "cp", server=f"https://{HOST_IP}:0",
                                  kubeconfig=work / "cp" / "admin.kubeconfig")
    c = Cluster(workdir=work, cp=cp, state=state, images=images(), lock_fd=fd, nodes=specs)
    try:
        _network(c)
        c.timings["network"] = time.monotonic() - t0
        _control_plane(c)
        c.timings["control plane"] = time.monotonic() - t0
        for n in specs:
            _node_namespace(c, n)
            _containerd(c, n)
        c.timings["containerd + images"] = time.monotonic() - t0
        for n in specs:
            _kubelet(c, n)
            _kube_proxy(c, n)
        kube = c.kube()
        try:
            for n in specs:
                wait_for(functools.partial(_node_ready, kube, n.name), 90, f"node {n.name} Ready",
                         diagnose=c.diagnose)
            c.timings["nodes Ready"] = time.monotonic() - t0
            wait_for(lambda: kube.exists("/api/v1/namespaces/default/serviceaccounts/default"),
                     30, "the default service account")
        finally:
            kube.close()
        return c
    except BaseException:
        problems = c.stop()
        if problems:
            print(f"cluster start failed and left: {problems}", file=sys.stderr)
        raise


def _node_ready(kube: Kube, name: str = NODE) -> bool:
    node = kube.get(f"/api/v1/nodes/{name}")
    return any(x["type"] == "Ready" and x["status"] == "True"
               for x in node.get("status", {}).get("conditions", []))


def _guard_rules(nodes: list[NodeSpec]) -> str:
    """The host's guard: nothing a node sends is forwarded but pod traffic to another node (pod
    or node IP -> that node's pod range, pod -> that node's IP), and no ClusterIP or pod-range
    packet leaves the host by another interface than the nodes' veths."""
    allow = []
    for a in nodes:
        for b in nodes:
            if a is not b:
                allow += [f'iifname "{a.host_if}" oifname "{b.host_if}" ip saddr {{ {a.pod_cidr}, '
                          f'{a.node_ip} }} ip daddr {b.pod_cidr} counter accept',
                          f'iifname "{a.host_if}" oifname "{b.host_if}" ip saddr {a.pod_cidr} '
                          f'ip daddr {b.node_ip} counter accept']
    ifs = ", ".join(f'"{n.host_if}"' for n in nodes)
    body = "\n    ".join(allow)
    return f"""
table inet {GUARD_TABLE} {{
  chain forward_guard {{
    type filter hook forward priority -10; policy accept;
    {body}
    iifname {{ {ifs} }} counter drop
    ip daddr {{ {SERVICE_CIDR}, {CLUSTER_CIDR} }} counter drop
  }}
  chain output_guard {{
    type filter hook output priority -10; policy accept;
    ip daddr {{ {SERVICE_CIDR}, {CLUSTER_CIDR} }} oifname != {{ {ifs} }} counter drop
  }}
}}
"""


def _network(c: Cluster) -> None:
    st = c.state
    # The guard first: the host forwards only pod traffic between two nodes, and no ClusterIP or
    # pod-range packet leaves the host by another interface than a node's.
    run("nft", "-f", "-", input=_guard_rules(c.nodes))
    st.guard = True
    st.netns = True
    st.save()
    for n in c.nodes:
        _node_network(n, multi=len(c.nodes) > 1)
    if len(c.nodes) > 1:  # the host routes between the nodes (the guard allows only that)
        write_sysctl("net.ipv4.ip_forward", "1")


def _node_network(n: NodeSpec, multi: bool) -> None:
    run("ip", "netns", "add", n.netns)
    run("ip", "link", "add", n.host_if, "type", "veth", "peer", "name", n.node_if,
        "netns", n.netns)
    run("ip", "addr", "add", f"{n.host_ip}/30", "dev", n.host_if)
    run("ip", "link", "set", n.host_if, "up")
    in_netns("ip", "link", "set", "lo", "up", node=n)
    in_netns("ip", "addr", "add", f"{n.node_ip}/30", "dev", n.node_if, node=n)
    in_netns("ip", "link", "set", n.node_if, "up", node=n)
    # ClusterIPs must be routable for the node's own processes (kube-proxy DNATs them in OUTPUT);
    # there is no default route: the node reaches the host end of its veth, the apiserver
    # (HOST_IP) and, with several nodes, the other nodes' pods and IPs through the host.
    in_netns("ip", "route", "add", SERVICE_CIDR, "dev", n.node_if, node=n)
    if n.host_ip != HOST_IP:
        in_netns("ip", "route", "add", HOST_IP, "via", n.host_ip, node=n)
    if multi:
        in_netns("ip", "route", "add", CLUSTER_CIDR, "via", n.host_ip, node=n)
        in_netns("ip", "route", "add", "10.250.0.0/24", "via", n.host_ip, node=n)
        run("ip", "route", "add", n.pod_cidr, "via", n.node_ip, "dev", n.host_if)
    # Pods reach the apiserver (the `kubernetes` Service's endpoint on the host) masqueraded to
    # the node IP, so the host needs no route into the pod range for that; pod to pod across
    # nodes keeps its addresses.
    in_netns("nft", "-f", "-", node=n, input=f"""
table ip l7sc_node {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{n.node_if}" ip saddr {CLUSTER_CIDR} ip daddr != {CLUSTER_CIDR} masquerade
  }}
}}
""")


def _control_plane(c: Cluster) -> None:
    cp, work = c.cp, c.cp.workdir
    work.mkdir(parents=True)
    bindir = kubeharness.cache_bin_dir()
    api_port = kubeharness.free_port()
    cp.server = f"https://{HOST_IP}:{api_port}"
    etcd_client, etcd_peer = kubeharness.free_port(), kubeharness.free_port()
    kubeharness._spawn(cp, "etcd", [
        "etcd", "--name", "c", "--data-dir", str(work / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
        "--initial-cluster", f"c=http://127.0.0.1:{etcd_peer}", "--log-level", "warn"])
    c.state.pids["etcd"] = cp.procs["etcd"].pid
    run("openssl", "genrsa", "-out", str(work / "sa.key"), "2048")
    run("openssl", "rsa", "-in", str(work / "sa.key"), "-pubout", "-out", str(work / "sa.pub"))
    (work / "tokens.csv").write_text(
        f"{ADMIN_TOKEN},admin,admin-uid,system:masters\n"
        + "".join(f"{n.token},system:node:{n.name},{n.name}-uid,system:nodes\n" for n in c.nodes)
        + f"{PROXY_TOKEN},system:kube-proxy,proxy-uid\n")
    kubeharness._wait(cp, "etcd", f"http://127.0.0.1:{etcd_client}/health", 20)
    kubeharness._spawn(cp, "kube-apiserver", [
        str(bindir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
        f"--bind-address={HOST_IP}", f"--secure-port={api_port}", f"--advertise-address={HOST_IP}",
        f"--cert-dir={work / 'certs'}", f"--token-auth-file={work / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={work / 'sa.pub'}",
        f"--service-account-signing-key-file={work / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true", "--profiling=false"])
    c.state.pids["kube-apiserver"] = cp.procs["kube-apiserver"].pid
    c.state.save()
    ca = work / "certs" / "apiserver.crt"
    kubelets = [(f"kubelet-{n.name}", n.token) for n in c.nodes]
    for name, token in (("admin", ADMIN_TOKEN), *kubelets, ("kube-proxy", PROXY_TOKEN)):
        (work / f"{name}.kubeconfig").write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: c\n  cluster:\n    server: {cp.server}\n"
            f"    certificate-authority: {ca}\n"
            f"users:\n- name: {name}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: c\n  context:\n    cluster: c\n    user: {name}\n"
            "current-context: c\n")
    kubeharness._wait(cp, "kube-apiserver", f"{cp.server}/readyz", 60, ADMIN_TOKEN)
    kubeharness._spawn(cp, "kube-controller-manager", [
        str(bindir / "kube-controller-manager"), f"--kubeconfig={cp.kubeconfig}",
        "--leader-elect=false", "--port=0", "--bind-address=127.0.0.1",
        f"--secure-port={kubeharness.free_port()}",
        f"--service-account-private-key-file={work / 'sa.key'}", f"--root-ca-file={ca}",
        f"--cluster-cidr={CLUSTER_CIDR}", "--allocate-node-cidrs=false",
        "--concurrent-gc-syncs=5"])
    kubeharness._spawn(cp, "kube-scheduler", [
        str(bindir / "kube-scheduler"), f"--kubeconfig={cp.kubeconfig}", "--leader-elect=false",
        "--port=0", "--bind-address=127.0.0.1", f"--secure-port={kubeharness.free_port()}"])
    for n in ("kube-controller-manager", "kube-scheduler"):
        c.state.pids[n] = cp.procs[n].pid
    c.state.save()


def _node_namespace(c: Cluster, n: NodeSpec) -> None:
    """The holder of the node's private mount namespace (inside the node's netns): the kubelet's
    and containerd's fixed host paths become dirs under the work dir."""
    st = c.state
    priv = c.workdir / n.key / "private"
    for d in PRIVATE_PATHS:
        (priv / d.strip("/").replace("/", "_")).mkdir(parents=True)
        missing = []
        p = Path(d)
        while not p.exists():
            missing.append(str(p))
            p = p.parent
        for m in reversed(missing):
            if m not in st.made_dirs:
                Path(m).mkdir()
                st.made_dirs.append(m)
    st.save()
    for cg in cgroup_dirs(n.cgroup_root):
        cg.mkdir(exist_ok=True)
    st.cgroups = True
    st.save()
    for f in ("cpuset.cpus", "cpuset.mems"):
        src = CGROUP_FS / "cpuset" / f
        if src.exists():
            (CGROUP_FS / "cpuset" / n.cgroup_root / f).write_text(src.read_text())
    ready = c.workdir / n.key / "ready"
    binds = " && ".join(f"mount --bind {priv / d.strip('/').replace('/', '_')} {d}"
                        for d in PRIVATE_PATHS)
    out = open(c.workdir / n.key / "node-holder.log", "wb")  # noqa: SIM115 - the child owns it
    holder = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{n.netns}", "unshare", "--mount", "--propagation", "private",
         "--", "sh", "-ec", f"{binds} && touch {ready} && exec sleep infinity"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    c.procs[f"{n.key}/node-holder"] = holder
    st.pids[f"{n.key}/node-holder"] = holder.pid
    st.save()
    wait_for(lambda: ready.exists() or holder.poll() is not None, 10, "the node's mount namespace")
    if holder.poll() is not None:
        raise RuntimeError(f"node mount namespace failed:\n{c.log_tail(f'{n.key}/node-holder')}")
    # the pid that holds the namespaces is `sleep` (sh exec'd it)
    wait_for(lambda: Path(f"/proc/{holder.pid}/cmdline").read_bytes().startswith(b"sleep"), 5,
             "the holder to exec sleep")


def containerd_root(node: NodeSpec | None = None) -> Path:
    """A node's containerd root (one per node: containerd locks it); containerd's root (content store, snapshots, metadata) persists between runs in the
    image cache, so the images are imported once, not every session (import is ~20-40 s).
    Teardown deletes every container, so only images stay in it."""
    if node is None or node.index == 1:
        return image_cache() / "containerd-root"
    return image_cache() / f"containerd-root-{node.index}"


def _containerd(c: Cluster, n: NodeSpec) -> None:
    d = c.workdir / n.key / "containerd"
    d.mkdir()
    (d / "state").mkdir()
    root = containerd_root(n)
    sock = socket_of(c.workdir, n)
    wanted = sorted(v["name"] for v in c.images.values())
    stamp = root.with_name(root.name + ".images")
    if not stamp.exists() or stamp.read_text().split() != wanted:
        # Another set of images (a new build of the project's): start from an empty root rather
        # than let old layers pile up.
        shutil.rmtree(root, ignore_errors=True)
        stamp.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    cni = c.workdir / n.key / "cni"
    (cni / "net.d").mkdir(parents=True)
    (cni / "net.d" / "10-l7sc.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "l7sc", "plugins": [
            {"type": "ptp", "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": n.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(cni / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=1))
    (d / "config.toml").write_text(f"""version = 2
root = "{root}"
state = "{d / 'state'}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{c.image('pause')}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc')}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / 'net.d'}"
    max_conf_num = 1
""")

    def up() -> bool:
        c.assert_running(f"{n.key}/containerd")
        return c.ctr("version", check=False, timeout=10, node=n).returncode == 0
    c.spawn_in_node(n, "containerd", ["containerd", "--config", str(d / "config.toml")])
    try:
        wait_for(up, 20, "containerd", interval=0.1)
    except (AssertionError, RuntimeError) as e:
        # A root a crashed run left unusable: start once more from an empty one.
        print(f"containerd did not start on {root} ({e}); starting from an empty root",
              file=sys.stderr)
        stop_pid(c.state.pids[f"{n.key}/containerd"], proc=c.procs[f"{n.key}/containerd"])
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        c.spawn_in_node(n, "containerd", ["containerd", "--config", str(d / "config.toml")])
        wait_for(up, 20, "containerd", interval=0.1)
    # Containers a run that died left in the persistent root: none may survive into this one.
    for t in c.ctr("tasks", "ls", "-q", node=n).stdout.split():
        c.ctr("tasks", "delete", "-f", t, check=False, node=n)
    for ctr_id in c.ctr("containers", "ls", "-q", node=n).stdout.split():
        c.ctr("containers", "delete", ctr_id, check=False, node=n)
    present = set(c.ctr("images", "ls", "-q", node=n).stdout.split())
    for which in ("pause", "base", "l7scope"):
        if c.images[which]["name"] not in present:
            c.ctr("images", "import", c.images[which]["tar"], timeout=300, node=n)
    stamp.write_text("\n".join(wanted) + "\n")


def _kubelet(c: Cluster, n: NodeSpec) -> None:
    d = c.workdir / n.key / "kubelet"
    sock = socket_of(c.workdir, n)
    d.mkdir()
    (d / "config.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{n.cgroup_root}
failSwapOn: false
address: {n.node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
authorization:
  mode: AlwaysAllow
volumePluginDir: {d / 'volume-plugins'}
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 4s
""")
    bindir = kubeharness.cache_bin_dir()
    c.spawn_in_node(n, "kubelet", [
        str(bindir / "kubelet"), f"--config={d / 'config.yaml'}",
        f"--kubeconfig={c.cp.workdir / f'kubelet-{n.name}.kubeconfig'}",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{sock}",
        f"--containerd={sock}", f"--pod-infra-container-image={c.image('pause')}",
        f"--hostname-override={n.name}", f"--node-ip={n.node_ip}", "--v=1"])


def _kube_proxy(c: Cluster, n: NodeSpec) -> None:
    d = c.workdir / n.key / "kube-proxy"
    d.mkdir()
    (d / "config.yaml").write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {c.cp.workdir / 'kube-proxy.kubeconfig'}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {n.name}
bindAddress: {n.node_ip}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
""")
    c.spawn_in_node(n, "kube-proxy", [str(kubeharness.cache_bin_dir() / "kube-proxy"),
                                   f"--config={d / 'config.yaml'}"])


# ---- workloads: what the tests do with real pods ---------------------------------------------
class Pods:
    """Pods on the real node through the API: wait, exec (apiserver -> kubelet -> containerd,
    over the API's websocket exec), logs."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        from kubernetes import client as k8s_client

        self.kube, self.namespace = kube, namespace
        self.core = k8s_client.CoreV1Api(k8s_client.ApiClient(kube.configuration))

    def path(self, name: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods" + (f"/{name}" if name else "")

    def get(self, name: str) -> dict[str, Any]:
        return self.kube.get(self.path(name))

    def list(self, **labels: str) -> list[dict[str, Any]]:
        sel = ",".join(f"{k}={v}" for k, v in labels.items())
        return self.kube.list(self.path(), labelSelector=sel or None)[0]

    def describe(self) -> str:
        lines = []
        for p in self.kube.list(self.path())[0]:
            st = p.get("status", {})
            cs = [(x["name"], x.get("ready"), x.get("restartCount"), list(x.get("state", {})))
                  for x in st.get("containerStatuses", [])]
            lines.append(f"{p['metadata']['name']}: {st.get('phase')} ip={st.get('podIP')} {cs}")
        events = self.kube.list(f"/api/v1/namespaces/{self.namespace}/events")[0]
        lines += [f"event {e.get('reason')}: {e.get('message')}" for e in events[-15:]]
        return "\n".join(lines)

    def wait_ready(self, name: str, timeout: float = 90) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            p = self.get(name)
            ok = any(x["type"] == "Ready" and x["status"] == "True"
                     for x in p.get("status", {}).get("conditions", []))
            return p if ok else None
        pod: dict[str, Any] = wait_for(ready, timeout, f"pod {name} Ready", diagnose=self.describe)
        return pod

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            p = self.get(name)
            return p if p.get("status", {}).get("phase") in phases else None
        pod: dict[str, Any] = wait_for(done, timeout, f"pod {name} in {phases}",
                                       diagnose=self.describe)
        return pod

    def exec(self, name: str, command: list[str], container: str | None = None,
             timeout: float = 60) -> tuple[int, str, str]:
        """Run `command` in the pod; (exit code, stdout, stderr)."""
        from kubernetes.stream import stream

        kw: dict[str, Any] = {"container": container} if container else {}
        ws = stream(self.core.connect_get_namespaced_pod_exec, name, self.namespace,
                    command=command, stdout=True, stderr=True, stdin=False, tty=False,
                    _preload_content=False, **kw)
        out: list[str] = []
        err: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=1)
                if ws.peek_stdout():
                    out.append(ws.read_stdout())
                if ws.peek_stderr():
                    err.append(ws.read_stderr())
            if ws.is_open():
                raise AssertionError(f"exec {command} in {name} still running after {timeout}s")
            rc = ws.returncode
        finally:
            ws.close()
        return int(rc if rc is not None else -1), "".join(out), "".join(err)

    def logs(self, name: str, container: str | None = None) -> str:
        kw: dict[str, Any] = {"container": container} if container else {}
        text: str = self.core.read_namespaced_pod_log(name, self.namespace, **kw)
        return text

    def follow(self, name: str, container: str) -> LogFollower:
        """Stream a container's log from now until it exits (`kubectl logs -f`): a deleted
        pod's last lines are gone from the API once the pod is, so a test that deletes one and
        needs its shutdown log follows it first."""
        return LogFollower(self, name, container)


class LogFollower:
    def __init__(self, pods: Pods, name: str, container: str) -> None:
        self.name, self.container = name, container
        self.chunks: list[str] = []
        self._resp = pods.core.read_namespaced_pod_log(
            name, pods.namespace, container=container, follow=True, tail_lines=40,
            _preload_content=False)
        self._thread = threading.Thread(target=self._read, daemon=True,
                                        name=f"logs {name}/{container}")
        self._thread.start()

    def _read(self) -> None:
        try:
            for chunk in self._resp.stream(4096):
                self.chunks.append(chunk.decode(errors="replace"))
        except Exception as e:  # the stream ends with the container, or the pod's deletion
            self.chunks.append(f"\n(log stream ended: {type(e).__name__})\n")

    def text(self, wait: float = 5) -> str:
        """What was read, after waiting up to `wait` s for the stream's end."""
        self._thread.join(timeout=wait)
        if self._thread.is_alive():
            self._resp.close()
        return f"--- {self.name}/{self.container} (followed):\n" + "".join(self.chunks)


def service_account_kubeconfig(c: Cluster, kube: Kube, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig with a token of `namespace/sa` (TokenRequest API): a process run with it has
    exactly the permissions RBAC gives that service account."""
    answer = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 7200}})
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": c.cp.server, "certificate-authority": str(c.cp.workdir / "certs" / "apiserver.crt")}}],
        "users": [{"name": sa, "user": {"token": answer["status"]["token"]}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa}}]}))
    return path
