"""Enrichment (spec 7.1 and the endpoint part of 7.2): who talked to whom, and which Service.

Pure functions over the metadata cache; called by `ingest.py` once per Report entry.

Endpoints: a pod IP is a workload endpoint (`wep`, its namespace, `generateName*` or the pod
name); a node address is a host endpoint (`hep`, `-`, node name); an address in a Calico
NetworkSet / GlobalNetworkSet is `ns` (set name, its namespace or `-`); anything else is `net`
with `pvt` (10/8, 172.16/12, 192.168/16, and for IPv6 the unique local fc00::/7) or `pub`.

Client-side capture means the connection's destination is often a ClusterIP. Then the
destination endpoint is taken from Envoy's `upstream_host` when that is a pod; otherwise from the
Service's endpoint pods when they all share one aggregated name (the usual single Deployment);
with several workloads behind it the namespace is kept and the name is `-`.

Destination Service from the Host header (`domain`), exactly as Felix: split `addr[:port]` (port 80
for HTTP types without one); an IP is looked up as ClusterIP:port, then as an endpoint; a host name
first tries `upstream_host` as an endpoint (and, for client-side capture, as a ClusterIP), then
the forms `<name>.<ns>.svc[.<cluster domain>]`, `<name>.svc[...]` and `<name>.<ns>`; a missing
namespace defaults to the destination's. l7scope also accepts a bare `<name>` (same namespace).
The Service must exist in the cache. Beyond Calico: when `domain` is empty (tcp, tls, and
overflow entries), the Service is taken from the connection's destination (ClusterIP:port or
endpoint IP:port), which Felix leaves empty.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from l7scope.node.metadata import MetadataCache, Service

_PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_PRIVATE6 = ipaddress.IPv6Network("fc00::/7")  # RFC 4193 unique local addresses
NOT_INCLUDED = "-"


@dataclass(frozen=True, slots=True)
class Endpoint:
    type: str  # wep | hep | ns | net
    namespace: str
    name_aggr: str


@dataclass(frozen=True, slots=True)
class ServiceRef:
    name: str
    namespace: str
    port_name: str
    port: int


NO_SERVICE = ServiceRef("", "", "", 0)


def net_endpoint(ip: str) -> Endpoint:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return Endpoint("net", NOT_INCLUDED, "pub")
    if isinstance(addr, ipaddress.IPv6Address):
        private = addr in _PRIVATE6 or (addr.ipv4_mapped is not None and any(
            addr.ipv4_mapped in n for n in _PRIVATE))
    else:
        private = any(addr in n for n in _PRIVATE)
    return Endpoint("net", NOT_INCLUDED, "pvt" if private else "pub")


def endpoint(ip: str, cache: MetadataCache) -> Endpoint:
    """Classify one address: wep, hep, ns or net."""
    pod = cache.pod_by_ip(ip)
    if pod is not None:
        return Endpoint("wep", pod.namespace, pod.name_aggr)
    node = cache.node_by_ip(ip)
    if node is not None:
        return Endpoint("hep", NOT_INCLUDED, node)
    nset = cache.network_set_by_ip(ip)
    if nset is not None:
        return Endpoint("ns", nset.namespace, nset.name)
    return net_endpoint(ip)


def split_host_port(text: str) -> tuple[str, int | None]:
    """`host[:port]`, `[v6]:port` or a bare IPv6 address -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    try:
        p = int(port) if port else None
    except ValueError:
        p = None
    if p is not None and not 0 <= p <= 65535:
        p = None
    return host, p


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def destination(dst_ip: str, upstream_host: str, cache: MetadataCache) -> Endpoint:
    """The destination endpoint of a connection whose original destination is dst_ip."""
    svc = cache.service_with_cluster_ip(dst_ip)
    if svc is None:
        return endpoint(dst_ip, cache)
    up_ip = split_host_port(upstream_host)[0] if upstream_host else ""
    if up_ip and up_ip != dst_ip and cache.pod_by_ip(up_ip) is not None:
        return endpoint(up_ip, cache)
    pods = cache.endpoint_pods(svc)
    names = {(p.namespace, p.name_aggr) for p in pods}
    if len(names) == 1:
        ns, name = names.pop()
        return Endpoint("wep", ns, name)
    if pods:
        return Endpoint("wep", svc.namespace, NOT_INCLUDED)
    return net_endpoint(dst_ip)


def _ref(svc: Service, port: int | None) -> ServiceRef:
    name = svc.port_name(port) if port is not None else None
    return ServiceRef(svc.name, svc.namespace, name or NOT_INCLUDED, port or 0)


def _by_address(ip: str, port: int | None, cache: MetadataCache) -> Service | None:
    if port is not None:
        svc = cache.service_by_cluster_ip(ip, port) or cache.service_by_endpoint(ip, port)
        if svc is not None:
            return svc
        return cache.service_by_endpoint(ip)
    return cache.service_with_cluster_ip(ip) or cache.service_by_endpoint(ip)


def _by_name(host: str, dst_namespace: str, cache: MetadataCache) -> Service | None:
    parts = host.lower().rstrip(".").split(".")
    if len(parts) >= 2 and parts[1] == "svc":
        name, ns = parts[0], dst_namespace
    elif len(parts) >= 3 and parts[2] == "svc":
        name, ns = parts[0], parts[1]
    elif len(parts) == 2:
        name, ns = parts
    elif len(parts) == 1:
        name, ns = parts[0], dst_namespace
    else:
        return None
    if not name or not ns or ns == NOT_INCLUDED:
        return None
    return cache.service(ns, name)


def service(domain: str, log_type: str, upstream_host: str, dst_ip: str, dst_port: int,
            dst_namespace: str, cache: MetadataCache) -> ServiceRef:
    """The destination Service of one request (see the module doc for the rules)."""
    if not domain:
        svc = _by_address(dst_ip, dst_port, cache) if dst_ip else None
        return _ref(svc, dst_port) if svc is not None else NO_SERVICE
    host, port = split_host_port(domain)
    if port is None and "http" in log_type.lower():
        port = 80
    if _is_ip(host):
        svc = _by_address(host, port, cache)
    else:
        svc = None
        if upstream_host:
            up_ip, up_port = split_host_port(upstream_host)
            if _is_ip(up_ip):
                svc = _by_address(up_ip, up_port, cache)
        if svc is None:
            svc = _by_name(host, dst_namespace, cache)
    return _ref(svc, port) if svc is not None else NO_SERVICE


class Enricher:
    """Memoizing front of `endpoint`, `destination` and `service` for one cache.

    Results depend only on the arguments and the cache contents, so they are remembered until
    the cache's `version` changes (every feed change and every expiry of a deleted pod bumps
    it). Bounded: the memo is cleared when it holds `max_entries` results.
    """

    def __init__(self, cache: MetadataCache, max_entries: int = 200_000) -> None:
        self.cache = cache
        self.max_entries = max_entries
        self._version = -1
        self._endpoints: dict[str, Endpoint] = {}
        self._dests: dict[tuple[str, str], Endpoint] = {}
        self._services: dict[tuple[str, str, str, str, int, str], ServiceRef] = {}

    def _check(self) -> None:
        size = len(self._endpoints) + len(self._dests) + len(self._services)
        if self.cache.version != self._version or size >= self.max_entries:
            self._version = self.cache.version
            self._endpoints.clear()
            self._dests.clear()
            self._services.clear()

    def endpoint(self, ip: str) -> Endpoint:
        self._check()
        ep = self._endpoints.get(ip)
        if ep is None:
            ep = self._endpoints[ip] = endpoint(ip, self.cache)
        return ep

    def destination(self, dst_ip: str, upstream_host: str) -> Endpoint:
        self._check()
        key = (dst_ip, upstream_host)
        ep = self._dests.get(key)
        if ep is None:
            ep = self._dests[key] = destination(dst_ip, upstream_host, self.cache)
        return ep

    def service(self, domain: str, log_type: str, upstream_host: str, dst_ip: str,
                dst_port: int, dst_namespace: str) -> ServiceRef:
        self._check()
        key = (domain, log_type, upstream_host, dst_ip, dst_port, dst_namespace)
        ref = self._services.get(key)
        if ref is None:
            ref = self._services[key] = service(domain, log_type, upstream_host, dst_ip,
                                                dst_port, dst_namespace, self.cache)
        return ref
