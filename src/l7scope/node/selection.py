"""Traffic selection: which Service addresses are captured, and the capture rules' life cycle.

`select(cache, mode, node_name)` (pure) returns the `capture.tproxy.Selection`: with
`tproxyMode: Enabled` the Services annotated `projectcalico.org/l7-logging: "true"` or
`l7scope.io/logging: "true"` (exactly "true"), with `EnabledAllServices` every Service; for each,
its TCP ports on every ClusterIP plus its endpoints' IP:port (TCP) from EndpointSlices/Endpoints,
and its TCP NodePorts (captured for any client that dials them at this node, Envoy's listener
`tproxyPort + 1`). Clients are the IPs of the non-host-network pods on this node (`spec.nodeName`), so a connection
is proxied once, on the client's node.

`CaptureController.step()` (called every ~0.25 s by the agent) applies a changed selection
atomically (`tproxy.apply`) and fails open: while Envoy is not ready (its admin `/ready` does not
answer 200) the table is removed, and it is put back when Envoy is ready again. `stop()` removes
everything. `tproxyMode: Disabled` means no rules.

Unsupported pod interfaces fail open too: with a `host_net` reader (`capture.bridge.read_host`),
clients that sit behind a Linux bridge while `bridge-nf-call-iptables` is 1 (where TPROXY loses
its socket assignment, see capture/bridge.py) are left out of `@clients`, logged once per
bridge and counted in the stats. On a node whose kube-proxy runs in IPVS mode
(`capture.ipvs`) nothing is captured at all: the rules are withdrawn, the state is
`unsupported` and the reason is logged once and kept in the stats. The check runs when the cache
changes and every `recheck_seconds` (the sysctl, a pod's interface or kube-proxy's mode may
change on their own).
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from l7scope.capture import bridge, ipvs, tproxy
from l7scope.contracts.nodeconfig import NodeSettings
from l7scope.node.metadata import MetadataCache, Service
from l7scope.proxy import admin

log = logging.getLogger(__name__)

ANNOTATIONS = ("projectcalico.org/l7-logging", "l7scope.io/logging")


def is_selected(svc: Service, mode: str) -> bool:
    if mode == "EnabledAllServices":
        return True
    if mode != "Enabled":
        return False
    return any(svc.annotations.get(a) == "true" for a in ANNOTATIONS)


def _address(ip: str) -> bool:
    """An IPv4 or IPv6 address (capture.tproxy handles both); not garbage from the inventory."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def select(cache: MetadataCache, mode: str, node_name: str, ipv6: bool = False) -> tproxy.Selection:
    """What to capture. Without `ipv6` (NodeSettings.ipv6_support) IPv6 addresses are left out:
    Envoy has no IPv6 listener then, and a TPROXYed connection would find no socket."""
    if mode == "Disabled":
        return tproxy.Selection()

    def _ip(ip: str) -> bool:
        return _address(ip) and (ipv6 or ":" not in ip)

    services: set[tuple[str, int]] = set()
    nodeports: set[int] = set()
    for svc in cache.services():
        if not is_selected(svc, mode):
            continue
        nodeports.update(p.node_port for p in svc.ports
                         if p.protocol == "TCP" and 0 < p.node_port < 65536)
        ports = [p.port for p in svc.ports if p.protocol == "TCP" and 0 < p.port < 65536]
        services.update((ip, port) for ip in svc.cluster_ips if _ip(ip) for port in ports)
        for es in cache.endpoints_of(svc):
            ports = [p.port for p in es.ports if p.protocol == "TCP" and 0 < p.port < 65536]
            services.update((ip, port) for ip in es.addresses if _ip(ip) for port in ports)
    clients = {ip for pod in cache.pods() if pod.node_name == node_name and not pod.host_network
               for ip in pod.ips if _ip(ip)}
    return tproxy.Selection.of(services, clients, nodeports)


def capture_rules(settings: NodeSettings) -> tproxy.Rules:
    """The capture rules these settings ask for (port, proxy mark, upstream connection mark)."""
    return tproxy.Rules(tproxy_port=settings.tproxy_port, mark=settings.tproxy_mark,
                        upstream_mark=settings.tproxy_upstream_conn_mark)


def envoy_ready_probe(admin_address: str, timeout: float = 0.5) -> Callable[[], bool]:
    """A readiness check against Envoy's admin `/ready` (200 = LIVE); the address is
    `unix:/path`, `host:port` or `http://host:port` (`l7scope.proxy.admin`)."""
    def probe() -> bool:
        try:
            status, _ = admin.request_at(admin_address, "/ready", timeout=timeout)
        except admin.AdminError:
            return False
        return status == 200

    return probe


@dataclass
class CaptureStats:
    state: str = "disabled"  # active | withdrawn | disabled | error | unsupported
    envoy_ready: bool = False
    selected_services: int = 0
    selected_service_names: list[str] = field(default_factory=list)  # "ns/name", for `l7scope status`
    selected_addresses: int = 0
    clients: int = 0
    applies: int = 0
    withdrawals: int = 0
    errors: int = 0
    last_error: str = ""
    bridge_nf_call_iptables: bool = False
    bridged_clients: int = 0  # left out of capture (fail open): behind a bridge with br_netfilter
    bridges: list[str] = field(default_factory=list)  # the bridges they sit behind
    host_check_errors: int = 0
    last_host_check_error: str = ""
    unsupported: str = ""  # why this node cannot be captured at all (capture.ipvs), else ""


class CaptureController:
    """Keeps the kernel's capture table equal to the desired selection while Envoy is ready."""

    def __init__(self, cache: MetadataCache, node_name: str, rules: tproxy.Rules,
                 envoy_ready: Callable[[], bool], netns: str | None = None,
                 apply: Callable[..., None] = tproxy.apply,
                 remove: Callable[..., None] = tproxy.remove,
                 host_net: Callable[[], bridge.HostNet] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 recheck_seconds: float = 10.0) -> None:
        self.cache = cache
        self.node_name = node_name
        self.rules = rules
        self.envoy_ready = envoy_ready
        self.netns = netns
        self._apply, self._remove = apply, remove
        self.mode = "Disabled"
        self.ipv6 = False  # NodeSettings.ipv6_support
        self.stats = CaptureStats()
        self._applied: tproxy.Selection | None = None  # what is in the kernel (None: no table)
        self._version = -1
        self._selected = tproxy.Selection()  # what the cache selects
        self._desired = tproxy.Selection()  # that, without the clients capture cannot serve
        self.host_net, self.clock, self.recheck_seconds = host_net, clock, recheck_seconds
        self._next_host_check = 0.0
        self._warned_bridges: set[str] = set()
        self._warned_unsupported = ""
        self._lock = threading.Lock()  # step() runs in the control loop, close() at the stop
        self._closed = False

    def set_mode(self, mode: str, rules: tproxy.Rules, ipv6: bool | None = None) -> None:
        """Use this mode and these rules (port, mark); changed rules replace the installed ones
        (the old table and policy route are removed with the old rules). `ipv6`: capture IPv6
        addresses too (None: unchanged)."""
        if ipv6 is not None and ipv6 != self.ipv6:
            self.ipv6 = ipv6
            self._version = -1
        if mode != self.mode or rules != self.rules:
            log.info("capture: tproxyMode %s, port %d, mark 0x%x", mode, rules.tproxy_port,
                     rules.mark)
            self.mode = mode
            if rules != self.rules:
                self._withdraw()
                self.rules = rules
            self._version = -1

    def step(self) -> None:
        """One reconcile: recompute on cache change, probe Envoy, apply or withdraw. Nothing
        once closed."""
        with self._lock:
            if not self._closed:
                self._step()

    def _step(self) -> None:
        now = self.clock()
        changed = self._version != self.cache.version
        if changed:
            self._version = self.cache.version
            self._selected = select(self.cache, self.mode, self.node_name, self.ipv6)
            names = {(s.namespace, s.name) for s in self.cache.services() if is_selected(s, self.mode)}
            self.stats.selected_services = len(names)
            self.stats.selected_service_names = sorted(f"{ns}/{name}" for ns, name in names)
            self.stats.selected_addresses = len(self._selected.services)
        if changed or (self.host_net is not None and now >= self._next_host_check):
            self._desired = self._without_bridged(self._selected, now)
            self.stats.clients = len(self._desired.clients)
        if self.mode == "Disabled":
            self.stats.envoy_ready = False
            self._withdraw()
            self.stats.state = "disabled"
            return
        if self.stats.unsupported:
            self.stats.envoy_ready = False
            self._withdraw()
            self.stats.state = "unsupported"
            return
        ready = self.envoy_ready()
        if ready != self.stats.envoy_ready:
            log.warning("Envoy is %s: capture %s", "ready" if ready else "NOT ready",
                        "restored" if ready else "withdrawn (fail open)")
        self.stats.envoy_ready = ready
        if not ready:
            self._withdraw()
            self.stats.state = "withdrawn"
            return
        if self._applied != self._desired:
            try:
                self._apply(self._desired, self.rules, netns=self.netns)
            except (tproxy.CaptureError, OSError) as e:
                self.stats.errors += 1
                self.stats.last_error = str(e)
                self.stats.state = "error"
                log.error("capture: %s", e)
                return
            self._applied = self._desired
            self.stats.applies += 1
        self.stats.state = "active"

    def _without_bridged(self, sel: tproxy.Selection, now: float) -> tproxy.Selection:
        """`sel` without the clients behind a bridge with br_netfilter on; also notes whether
        the node cannot be captured at all (see module doc)."""
        if self.host_net is None or sel == tproxy.Selection():
            return sel
        self._next_host_check = now + self.recheck_seconds
        try:
            host = self.host_net()
        except (bridge.HostReadError, OSError, subprocess.TimeoutExpired) as e:
            # cannot tell: capture as configured (the apply needs the same tools anyway)
            self.stats.host_check_errors += 1
            self.stats.last_host_check_error = str(e)
            return sel
        reason = ipvs.unsupported_reason(host.links)
        self.stats.unsupported = reason
        if reason and reason != self._warned_unsupported:
            log.warning("capture: %s; nothing on this node is captured (fail open)", reason)
        self._warned_unsupported = reason
        bridged = bridge.bridged_clients(sel.clients, host)
        self.stats.bridge_nf_call_iptables = host.bridge_nf_call_iptables
        self.stats.bridged_clients = len(bridged)
        self.stats.bridges = sorted(set(bridged.values()))
        for name in sorted(set(bridged.values()) - self._warned_bridges):
            pods = sorted(c for c, b in bridged.items() if b == name)
            log.warning(
                "capture: %d client pod(s) (%s%s) reach this node through bridge %s while "
                "net.bridge.bridge-nf-call-iptables=1; TPROXY cannot capture bridged packets "
                "(the kernel drops its socket assignment), so their connections are NOT captured "
                "(fail open). Routed pod interfaces (Calico, the ptp CNI plugin) are supported.",
                len(pods), ", ".join(pods[:5]), ", ..." if len(pods) > 5 else "", name)
            self._warned_bridges.add(name)
        if not bridged:
            return sel
        return tproxy.Selection(sel.services, sel.clients - bridged.keys())

    def _withdraw(self) -> None:
        if self._applied is None:
            return
        try:
            self._remove(self.rules, netns=self.netns)
        except OSError as e:
            self.stats.errors += 1
            self.stats.last_error = str(e)
            log.error("capture: removing rules failed: %s", e)
            return
        self._applied = None
        self.stats.withdrawals += 1

    def close(self) -> None:
        """Withdraw the rules for good, at the agent's stop: Envoy gets its SIGTERM with ours and
        exits at once, so rules kept any longer would hand new connections to a closed socket.
        Later steps do nothing, so a step in flight cannot apply them again."""
        with self._lock:
            self._closed = True
            self.stop()

    def stop(self) -> None:
        """Remove all rules (also when we think none are installed: a previous run may have left some)."""
        try:
            self._remove(self.rules, netns=self.netns)
        except OSError as e:
            log.error("capture: removing rules failed: %s", e)
        self._applied = None
        self.stats.state = "disabled" if self.mode == "Disabled" else "withdrawn"
