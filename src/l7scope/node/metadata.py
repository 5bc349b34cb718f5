"""Metadata cache of pods, Services, EndpointSlices (and Endpoints), Nodes and network sets.

Fed with plain Kubernetes-shaped dicts (the API's JSON field names: `metadata.generateName`,
`spec.clusterIP`, `status.podIP`, ...), from the inventory directory (`inventory.py`) or from
Kubernetes watches (the operator's `l7scope.kube` package; see `agent.MetadataFeed`):
`upsert(obj)`, `delete(obj)`, `replace_all(objs)`. Objects without `kind` (items of a typed
list/watch) take the `kind` argument.

Lookups used by enrichment and traffic selection: pod by IP, Service by ClusterIP:port, Service by
endpoint IP:port, Service by name/namespace, node by address, network set by address. A deleted
pod keeps its identity for `grace_seconds` so records that arrive late still resolve; a live pod
that reuses the IP wins. The clock is injected. Thread-safe (one lock; every lookup is O(1)
except network sets, which are a short linear scan).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    generate_name: str
    ips: tuple[str, ...]
    node_name: str
    host_network: bool

    @property
    def name_aggr(self) -> str:
        return f"{self.generate_name}*" if self.generate_name else self.name


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str
    node_port: int = 0


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    annotations: Mapping[str, str]
    type: str = "ClusterIP"

    def port_name(self, port: int) -> str | None:
        for p in self.ports:
            if p.port == port:
                return p.name
        return None


@dataclass(frozen=True)
class EndpointSet:
    """Endpoints of one Service from one EndpointSlice (or one v1 Endpoints object)."""

    service: str
    namespace: str
    addresses: tuple[str, ...]
    ports: tuple[ServicePort, ...]  # target ports (name, port, protocol)


@dataclass(frozen=True)
class NetworkSet:
    name: str
    namespace: str  # "-" for a GlobalNetworkSet
    nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass
class _Tomb:
    pod: Pod
    expires: float


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata") or {}
    return m if isinstance(m, Mapping) else {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    m = _meta(obj)
    return (str(m.get("namespace") or "default"), str(m.get("name") or ""))


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _ports(items: Any) -> tuple[ServicePort, ...]:
    out = []
    for p in items or []:
        if isinstance(p, Mapping):
            out.append(ServicePort(str(p.get("name") or ""), _int(p.get("port")),
                                   str(p.get("protocol") or "TCP").upper(),
                                   _int(p.get("nodePort"))))
    return tuple(out)


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    ns, name = _key(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ips = [str(i.get("ip")) for i in status.get("podIPs") or [] if isinstance(i, Mapping) and i.get("ip")]
    if status.get("podIP") and status["podIP"] not in ips:
        ips.insert(0, str(status["podIP"]))
    return Pod(name, ns, str(_meta(obj).get("generateName") or ""), tuple(ips),
               str(spec.get("nodeName") or ""), bool(spec.get("hostNetwork")))


def parse_service(obj: Mapping[str, Any]) -> Service:
    ns, name = _key(obj)
    spec = obj.get("spec") or {}
    ips = [str(i) for i in spec.get("clusterIPs") or []]
    cip = spec.get("clusterIP")
    if cip and cip not in ips:
        ips.insert(0, str(cip))
    ips = [i for i in ips if i and i != "None"]
    ann = _meta(obj).get("annotations") or {}
    return Service(name, ns, tuple(ips), _ports(spec.get("ports")),
                   {str(k): str(v) for k, v in ann.items()}, str(spec.get("type") or "ClusterIP"))


def parse_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSet:
    ns, _ = _key(obj)
    labels = _meta(obj).get("labels") or {}
    addrs: list[str] = []
    for ep in obj.get("endpoints") or []:
        if not isinstance(ep, Mapping):
            continue
        cond = ep.get("conditions") or {}
        if cond.get("ready") is False:
            continue
        addrs += [str(a) for a in ep.get("addresses") or []]
    return EndpointSet(str(labels.get("kubernetes.io/service-name") or ""), ns, tuple(addrs),
                       _ports(obj.get("ports")))


def parse_endpoints(obj: Mapping[str, Any]) -> list[EndpointSet]:
    ns, name = _key(obj)
    out = []
    for sub in obj.get("subsets") or []:
        addrs = tuple(str(a.get("ip")) for a in sub.get("addresses") or [] if a.get("ip"))
        out.append(EndpointSet(name, ns, addrs, _ports(sub.get("ports"))))
    return out


def parse_network_set(obj: Mapping[str, Any], global_: bool) -> NetworkSet:
    ns, name = _key(obj)
    nets = []
    for n in (obj.get("spec") or {}).get("nets") or []:
        try:
            nets.append(ipaddress.ip_network(str(n), strict=False))
        except ValueError:
            continue
    return NetworkSet(name, "-" if global_ else ns, tuple(nets))


KINDS = ("Pod", "Service", "EndpointSlice", "Endpoints", "Node", "NetworkSet", "GlobalNetworkSet")


@dataclass
class CacheStats:
    objects_bad: int = 0
    objects_ignored: int = 0
    changes: int = 0
    counts: dict[str, int] = field(default_factory=dict)


class MetadataCache:
    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_seconds = grace_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._pods: dict[tuple[str, str], Pod] = {}
        self._services: dict[tuple[str, str], Service] = {}
        # (kind, ns, name) -> endpoint sets (Endpoints and EndpointSlice both feed this)
        self._endpoints: dict[tuple[str, str, str], list[EndpointSet]] = {}
        self._nodes: dict[str, tuple[str, ...]] = {}
        self._netsets: dict[tuple[str, str, str], NetworkSet] = {}
        self._tombs: dict[str, _Tomb] = {}
        # derived indexes
        self._pod_by_ip: dict[str, Pod] = {}
        self._svc_by_vip: dict[tuple[str, int], Service] = {}
        self._svc_by_ip: dict[str, Service] = {}
        self._svc_by_ep: dict[tuple[str, int], Service] = {}
        self._svc_by_ep_ip: dict[str, Service] = {}
        self._node_by_ip: dict[str, str] = {}
        self._eps_by_svc: dict[tuple[str, str], list[EndpointSet]] = {}
        self.version = 0
        self._dirty = False
        self.stats = CacheStats()

    # ---- feeding ----------------------------------------------------------------------------
    def upsert(self, obj: Mapping[str, Any], kind: str | None = None) -> None:
        with self._lock:
            if self._put(obj, kind):
                self._changed()

    def delete(self, obj: Mapping[str, Any], kind: str | None = None) -> None:
        with self._lock:
            k = kind or str(obj.get("kind") or "")
            ns, name = _key(obj)
            if k == "Pod":
                pod = self._pods.pop((ns, name), None)
                if pod is not None:
                    self._bury(pod)
            elif k == "Service":
                self._services.pop((ns, name), None)
            elif k in ("EndpointSlice", "Endpoints"):
                self._endpoints.pop((k, ns, name), None)
            elif k == "Node":
                self._nodes.pop(_key(obj)[1], None)
            elif k in ("NetworkSet", "GlobalNetworkSet"):
                self._netsets.pop((k, ns, name), None)
            else:
                return
            self._changed()

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Make the cache hold exactly `objs` (pods that disappear are kept for the grace period)."""
        with self._lock:
            old_pods = self._pods
            self._pods, self._services, self._endpoints = {}, {}, {}
            self._nodes, self._netsets = {}, {}
            for obj in objs:
                self._put(obj, None)
            for key, pod in old_pods.items():
                if key not in self._pods:
                    self._bury(pod)
            self._changed()

    def _put(self, obj: Mapping[str, Any], kind: str | None) -> bool:
        k = (kind or str(obj.get("kind") or "")) if isinstance(obj, Mapping) else ""
        try:
            ns, name = _key(obj)
            if not name:
                raise ValueError("metadata.name missing")
            if k == "Pod":
                pod = parse_pod(obj)
                self._pods[(ns, name)] = pod
                for ip in pod.ips:
                    self._tombs.pop(ip, None)
            elif k == "Service":
                self._services[(ns, name)] = parse_service(obj)
            elif k == "EndpointSlice":
                self._endpoints[(k, ns, name)] = [parse_endpoint_slice(obj)]
            elif k == "Endpoints":
                self._endpoints[(k, ns, name)] = parse_endpoints(obj)
            elif k == "Node":
                addrs = (obj.get("status") or {}).get("addresses") or []
                self._nodes[name] = tuple(str(a.get("address")) for a in addrs if a.get("address"))
            elif k in ("NetworkSet", "GlobalNetworkSet"):
                self._netsets[(k, ns, name)] = parse_network_set(obj, k == "GlobalNetworkSet")
            else:
                self.stats.objects_ignored += 1
                return False
        except (AttributeError, TypeError, ValueError):
            self.stats.objects_bad += 1
            return False
        return True

    def _bury(self, pod: Pod) -> None:
        expires = self._clock() + self.grace_seconds
        for ip in pod.ips:
            self._tombs[ip] = _Tomb(pod, expires)

    def _changed(self) -> None:
        self._dirty = True  # indexes are rebuilt by the next lookup: a burst of events costs one
        self._count()
        self.version += 1
        self.stats.changes += 1

    def _index(self) -> None:
        if self._dirty:
            self._dirty = False
            self._reindex()

    def _reindex(self) -> None:
        self._pod_by_ip = {ip: p for p in self._pods.values() if not p.host_network for ip in p.ips}
        self._svc_by_vip, self._svc_by_ip = {}, {}
        for svc in self._services.values():
            for ip in svc.cluster_ips:
                self._svc_by_ip[ip] = svc
                for p in svc.ports:
                    self._svc_by_vip[(ip, p.port)] = svc
        self._svc_by_ep, self._svc_by_ep_ip = {}, {}
        self._eps_by_svc = {}
        for sets in self._endpoints.values():
            for es in sets:
                self._eps_by_svc.setdefault((es.namespace, es.service), []).append(es)
                owner = self._services.get((es.namespace, es.service))
                if owner is None:
                    continue
                for ip in es.addresses:
                    self._svc_by_ep_ip.setdefault(ip, owner)
                    for p in es.ports:
                        self._svc_by_ep.setdefault((ip, p.port), owner)
        self._node_by_ip = {ip: n for n, ips in self._nodes.items() for ip in ips}

    def _count(self) -> None:
        self.stats.counts = {
            "pods": len(self._pods), "services": len(self._services),
            "endpoint_sets": sum(len(v) for v in self._endpoints.values()),
            "nodes": len(self._nodes), "network_sets": len(self._netsets),
            "deleted_pods_in_grace": len(self._tombs),
        }

    # ---- lookups ----------------------------------------------------------------------------
    def pod_by_ip(self, ip: str) -> Pod | None:
        with self._lock:
            self._index()
            pod = self._pod_by_ip.get(ip)
            if pod is not None:
                return pod
            tomb = self._tombs.get(ip)
            if tomb is None:
                return None
            if tomb.expires <= self._clock():
                del self._tombs[ip]
                return None
            return tomb.pod

    def service_by_cluster_ip(self, ip: str, port: int) -> Service | None:
        with self._lock:
            self._index()
            return self._svc_by_vip.get((ip, port))

    def service_with_cluster_ip(self, ip: str) -> Service | None:
        with self._lock:
            self._index()
            return self._svc_by_ip.get(ip)

    def service_by_endpoint(self, ip: str, port: int | None = None) -> Service | None:
        with self._lock:
            self._index()
            if port is not None:
                return self._svc_by_ep.get((ip, port))
            return self._svc_by_ep_ip.get(ip)

    def service(self, namespace: str, name: str) -> Service | None:
        with self._lock:
            self._index()
            return self._services.get((namespace, name))

    def node_by_ip(self, ip: str) -> str | None:
        with self._lock:
            self._index()
            return self._node_by_ip.get(ip)

    def network_set_by_ip(self, ip: str) -> NetworkSet | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        with self._lock:
            self._index()
            best: NetworkSet | None = None
            best_len = -1
            for ns in self._netsets.values():
                for net in ns.nets:
                    if addr.version == net.version and addr in net and net.prefixlen > best_len:
                        best, best_len = ns, net.prefixlen
            return best

    def endpoint_pods(self, svc: Service) -> list[Pod]:
        """The pods behind a Service (by endpoint address), for naming a ClusterIP destination."""
        with self._lock:
            self._index()
            return [p for es in self._eps_by_svc.get((svc.namespace, svc.name), ())
                    for ip in es.addresses if (p := self._pod_by_ip.get(ip))]

    # ---- snapshots for traffic selection -----------------------------------------------------
    def services(self) -> list[Service]:
        with self._lock:
            self._index()
            return list(self._services.values())

    def endpoints_of(self, svc: Service) -> list[EndpointSet]:
        with self._lock:
            self._index()
            return list(self._eps_by_svc.get((svc.namespace, svc.name), ()))

    def pods(self) -> list[Pod]:
        with self._lock:
            self._index()
            return list(self._pods.values())

    def expire(self) -> int:
        """Drop deleted pods whose grace period is over; returns how many were dropped."""
        with self._lock:
            self._index()
            now = self._clock()
            dead = [ip for ip, t in self._tombs.items() if t.expires <= now]
            for ip in dead:
                del self._tombs[ip]
            if dead:
                self.version += 1  # lookups change: memoized enrichment must forget
            self.stats.counts["deleted_pods_in_grace"] = len(self._tombs)
            return len(dead)
