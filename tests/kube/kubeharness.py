"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler v1.20.2 (built once by scripts/setup.d/kube.sh), on free loopback ports, with a
static admin token, registered Node objects and a pod-status writer (PodStatusWriter).

There is no kubelet here. PodStatusWriter is an API-only pod-status writer: it writes into the
API what a kubelet would report for pods bound to our nodes, `Running` + `Ready` (every
container ready, a pod IP from the node's range, the node IP for host-network pods), and
confirms deletions (force-deletes), so DaemonSets become available and roll. No container,
image, volume or probe is ever run: a test using it shows what the API and the controllers do
with pods, never that a pod runs. Pods that really run are tests/cluster's (a real kubelet).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l7scope.kube.client import Kube, KubeError, connect
from l7scope.kube.watch import ResourceWatch

VERSION = "v1.20.2"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
TOKEN = "l7scope-test-admin-token"


def cache_bin_dir() -> Path:
    """Same rule as scripts/setup.d/kube.sh."""
    env = os.environ.get("L7SCOPE_KUBE_CACHE")
    if env:
        return Path(env) / "bin"
    if os.geteuid() == 0:
        return Path(f"/var/cache/l7scope/kube-{VERSION}/bin")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "l7scope" / f"kube-{VERSION}" / "bin"


def missing_parts() -> str | None:
    """Why the control plane cannot start here (None when it can)."""
    b = cache_bin_dir()
    absent = [x for x in BINARIES if not (b / x).is_file()]
    if absent:
        return f"{', '.join(absent)} not built in {b} (run `make setup`, which runs scripts/setup.d/kube.sh)"
    for tool in ("etcd", "openssl"):
        if shutil.which(tool) is None:
            return f"`{tool}` not installed (Debian packages etcd-server, openssl)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeNode:
    name: str
    ip: str
    pod_prefix: str  # e.g. "10.244.1." + n


@dataclass
class ControlPlane:
    workdir: Path
    server: str
    kubeconfig: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    nodes: list[FakeNode] = field(default_factory=list)
    pod_status_writer: PodStatusWriter | None = None

    def kube(self) -> Kube:
        return connect(str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", f"--kubeconfig={self.kubeconfig}", *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def log_tail(self, name: str, lines: int = 40) -> str:
        p = self.workdir / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def stop(self) -> None:
        if self.pod_status_writer is not None:
            self.pod_status_writer.stop()
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(cp: ControlPlane, name: str, argv: list[str]) -> None:
    out = open(cp.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
    cp.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()


def _wait(cp: ControlPlane, name: str, url: str, timeout: float, token: str | None = None) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if cp.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited ({cp.procs[name].returncode}):\n{cp.log_tail(name)}")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                if r.status == 200:
                    return
        except Exception as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout}s ({last}):\n{cp.log_tail(name)}")


def start(node_names: tuple[str, ...] = ("node-a", "node-b"), with_pod_status_writer: bool = True) -> ControlPlane:
    bindir = cache_bin_dir()
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    workdir = Path(tempfile.mkdtemp(prefix=f"l7scope-kube-{os.getpid()}-", dir=base))
    api_port = free_port()
    cp = ControlPlane(workdir=workdir, server=f"https://127.0.0.1:{api_port}",
                      kubeconfig=workdir / "kubeconfig")
    try:
        etcd_client, etcd_peer = free_port(), free_port()
        _spawn(cp, "etcd", [
            "etcd", "--name", "t", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"t=http://127.0.0.1:{etcd_peer}",
            "--log-level", "warn"])
        subprocess.run(["openssl", "genrsa", "-out", str(workdir / "sa.key"), "2048"],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(workdir / "sa.key"), "-pubout",
                        "-out", str(workdir / "sa.pub")], check=True, capture_output=True)
        (workdir / "tokens.csv").write_text(f"{TOKEN},admin,admin-uid,system:masters\n")
        _wait(cp, "etcd", f"http://127.0.0.1:{etcd_client}/health", 20)
        _spawn(cp, "kube-apiserver", [
            str(bindir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", f"--secure-port={api_port}", "--advertise-address=127.0.0.1",
            f"--cert-dir={workdir / 'certs'}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={workdir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/12", "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount", "--profiling=false"])
        # The API server's self-signed certificate (written to --cert-dir with its own CA
        # appended) is the kubeconfig's certificate authority: TLS is verified.
        cp.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: t\n  cluster:\n    server: {cp.server}\n"
            f"    certificate-authority: {workdir / 'certs' / 'apiserver.crt'}\n"
            f"users:\n- name: admin\n  user:\n    token: {TOKEN}\n"
            "contexts:\n- name: t\n  context:\n    cluster: t\n    user: admin\n"
            "current-context: t\n")
        _wait(cp, "kube-apiserver", f"{cp.server}/readyz", 60, TOKEN)
        _spawn(cp, "kube-controller-manager", [
            str(bindir / "kube-controller-manager"), f"--kubeconfig={cp.kubeconfig}",
            "--leader-elect=false", "--port=0", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", f"--service-account-private-key-file={workdir / 'sa.key'}",
            "--controllers=*,-serviceaccount-token", "--node-monitor-grace-period=1h",
            "--concurrent-gc-syncs=5"])
        _spawn(cp, "kube-scheduler", [
            str(bindir / "kube-scheduler"), f"--kubeconfig={cp.kubeconfig}", "--leader-elect=false",
            "--port=0", "--bind-address=127.0.0.1", f"--secure-port={free_port()}"])
        kube = cp.kube()
        for i, name in enumerate(node_names, start=1):
            node = FakeNode(name, f"10.99.0.{i}", f"10.244.{i}.")
            register_node(kube, node)
            cp.nodes.append(node)
        if with_pod_status_writer:
            cp.pod_status_writer = PodStatusWriter(kube, cp.nodes).start()
        return cp
    except BaseException:
        cp.stop()
        raise


def register_node(kube: Kube, node: FakeNode) -> None:
    kube.create({"apiVersion": "v1", "kind": "Node",
                 "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name,
                                                            "kubernetes.io/os": "linux"}}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kube.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "l7scope test: API-only pod-status writer, no kubelet", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": node.ip},
                      {"type": "Hostname", "address": node.name}],
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "nodeInfo": {"kubeletVersion": VERSION, "operatingSystem": "linux", "architecture": "amd64",
                     "containerRuntimeVersion": "l7scope-test://0", "kernelVersion": "", "osImage": "",
                     "kubeProxyVersion": VERSION, "machineID": "", "systemUUID": "", "bootID": ""}}})


class PodStatusWriter:
    """An API-only pod-status writer for our registered nodes (no kubelet, nothing runs; see
    the module doc)."""

    def __init__(self, kube: Kube, nodes: list[FakeNode]) -> None:
        self.kube = kube
        self.nodes = {n.name: n for n in nodes}
        self._next_ip: dict[str, int] = {n.name: 10 for n in nodes}
        self._ips: dict[str, str] = {}
        self._lock = threading.Lock()
        self.marked = 0
        self.errors: list[str] = []
        self.watch = ResourceWatch(kube, "/api/v1/pods", self._on_list, self._on_event,
                                   name="pod-status-writer", timeout_seconds=60)

    def start(self) -> PodStatusWriter:
        self.watch.start()
        return self

    def stop(self) -> None:
        self.watch.stop()

    def _on_list(self, items: list[dict[str, Any]]) -> None:
        for pod in items:
            self._handle(pod)

    def _on_event(self, type_: str, pod: dict[str, Any]) -> None:
        if type_ != "DELETED":
            self._handle(pod)

    def _handle(self, pod: dict[str, Any]) -> None:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        node = self.nodes.get(str(spec.get("nodeName") or ""))
        if node is None:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            if meta.get("deletionTimestamp"):
                self.kube.delete(path, grace_period_seconds=0)
                return
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            if status.get("phase") == "Running" and ready:
                return
            self.kube.merge_patch(path + "/status", {"status": self._running_status(node, pod)})
            self.marked += 1
        except KubeError as e:
            if e.status not in (404, 409):
                self.errors.append(str(e))

    def _running_status(self, node: FakeNode, pod: dict[str, Any]) -> dict[str, Any]:
        spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
        if spec.get("hostNetwork"):
            ip = node.ip
        else:
            with self._lock:
                uid = str(meta.get("uid"))
                if uid not in self._ips:
                    self._ips[uid] = node.pod_prefix + str(self._next_ip[node.name])
                    self._next_ip[node.name] += 1
                ip = self._ips[uid]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conds = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                 for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
        containers = [{"name": c["name"], "ready": True, "started": True, "restartCount": 0,
                       "image": c.get("image", ""), "imageID": "",
                       "containerID": f"l7scope-test://{meta.get('uid')}-{c['name']}",
                       "state": {"running": {"startedAt": now}}}
                      for c in spec.get("containers") or []]
        return {"phase": "Running", "hostIP": node.ip, "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": now, "conditions": conds, "containerStatuses": containers}


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `predicate()` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (KubeError, KeyError, IndexError) as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


class OperatorProcess:
    """`l7scope operator` as a child process against the test control plane."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.kubeconfig, self.namespace, self.log_path = kubeconfig, namespace, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        exe = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "l7scope"
        cmd = [str(exe) if exe.exists() else "l7scope", "--log-level", "debug", "operator",
               "--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace,
               "--image", "l7scope:test"]
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, \
            f"operator exited:\n{self.log_tail()}"


@contextlib.contextmanager
def restoring_node_config(kube: Kube) -> Iterator[None]:
    """Put the cluster-scoped NodeAgentConfiguration `default` back as it was (absent, or its
    spec) when the block ends: tests in one session share the control plane."""
    from l7scope.contracts import nodeconfig

    try:
        before = kube.get(nodeconfig.PATH)
    except KubeError as e:
        if e.status != 404:
            raise
        before = None
    try:
        yield
    finally:
        if before is None:
            kube.delete(nodeconfig.PATH)
        elif kube.exists(nodeconfig.PATH):
            kube.request("PUT", nodeconfig.PATH, body={**kube.get(nodeconfig.PATH),
                                                       "spec": before.get("spec") or {}})
        else:
            kube.create({k: v for k, v in before.items() if k != "metadata"}
                        | {"metadata": {"name": nodeconfig.NAME}})


def service_account_kubeconfig(cp: ControlPlane, kube: Kube, ns: str, sa: str, path: Path) -> Path:
    """A kubeconfig holding a token for `ns/sa` (TokenRequest API), so the operator runs with
    exactly the permissions the install manifest grants."""
    answer = kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 7200}})
    token = answer["status"]["token"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "t", "cluster": {
            "server": cp.server, "certificate-authority": str(cp.workdir / "certs" / "apiserver.crt")}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "t", "user": sa}}]}))
    return path
