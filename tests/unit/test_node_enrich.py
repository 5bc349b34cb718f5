"""Enrichment (spec 7.1): endpoint types and aggregated names, Service from the Host header."""

from __future__ import annotations

import pytest

from l7scope.node import enrich
from l7scope.node.enrich import Endpoint, ServiceRef
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import pod, shop


@pytest.fixture
def cache() -> MetadataCache:
    c = MetadataCache()
    c.replace_all(shop())
    return c


@pytest.mark.parametrize(("ip", "expected"), [
    ("10.1.1.10", Endpoint("wep", "shop", "frontend-7bbcdbbcbf-*")),
    ("10.1.2.30", Endpoint("wep", "data", "db")),
    ("172.30.0.1", Endpoint("hep", "-", "node-a")),
    ("203.0.113.9", Endpoint("ns", "-", "partners")),
    ("192.168.7.7", Endpoint("net", "-", "pvt")),
    ("172.16.0.1", Endpoint("net", "-", "pvt")),
    ("10.200.0.1", Endpoint("net", "-", "pvt")),
    ("8.8.8.8", Endpoint("net", "-", "pub")),
    ("172.32.0.1", Endpoint("net", "-", "pub")),
    ("fd00:30::fe", Endpoint("net", "-", "pvt")),  # IPv6 unique local
    ("::ffff:10.0.0.1", Endpoint("net", "-", "pvt")),
    ("2001:db8::1", Endpoint("net", "-", "pub")),
])
def test_endpoint(cache: MetadataCache, ip: str, expected: Endpoint) -> None:
    assert enrich.endpoint(ip, cache) == expected


def test_ipv6_pods_and_cluster_ips(cache: MetadataCache) -> None:
    cache.upsert(pod("v6-pod", "shop", "fd00:244::7", "node-a"))
    assert enrich.endpoint("fd00:244::7", cache) == Endpoint("wep", "shop", "v6-pod")
    cache.upsert({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "v6svc", "namespace": "shop"},
                  "spec": {"clusterIP": "fd00:96::a", "clusterIPs": ["fd00:96::a"],
                           "ports": [{"port": 80, "protocol": "TCP"}]}})
    cache.upsert({"kind": "EndpointSlice", "metadata": {
        "name": "v6svc-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "v6svc"}},
        "addressType": "IPv6", "endpoints": [{"addresses": ["fd00:244::7"]}],
        "ports": [{"port": 8080, "protocol": "TCP"}]})
    assert enrich.destination("fd00:96::a", "[fd00:244::7]:8080", cache) == \
        Endpoint("wep", "shop", "v6-pod")
    assert enrich.destination("fd00:96::a", "", cache) == Endpoint("wep", "shop", "v6-pod")


def test_destination_cluster_ip(cache: MetadataCache) -> None:
    # both cart pods share one generateName -> the aggregated name
    assert enrich.destination("10.96.0.10", "10.96.0.10:80", cache) == \
        Endpoint("wep", "shop", "cart-5d9f8-*")
    # Envoy's upstream host is a pod -> that pod
    assert enrich.destination("10.96.0.10", "10.1.2.30:5432", cache) == \
        Endpoint("wep", "data", "db")
    # two workloads behind one Service -> namespace kept, name "-"
    cache.upsert(pod("other-1", "shop", "10.1.2.22", "node-b"))
    cache.upsert({"kind": "EndpointSlice", "metadata": {
        "name": "cart-zzz", "namespace": "shop", "labels": {"kubernetes.io/service-name": "cart"}},
        "endpoints": [{"addresses": ["10.1.2.22"]}], "ports": [{"name": "http", "port": 8080}]})
    assert enrich.destination("10.96.0.10", "", cache) == Endpoint("wep", "shop", "-")
    # not a ClusterIP: the address itself
    assert enrich.destination("10.1.2.20", "", cache) == Endpoint("wep", "shop", "cart-5d9f8-*")


CART = ServiceRef("cart", "shop", "http", 80)


@pytest.mark.parametrize(("domain", "typ", "upstream", "expected"), [
    ("cart", "HTTP/1.1", "", CART),  # bare name: destination's namespace (l7scope)
    ("cart.shop", "HTTP/1.1", "", CART),
    ("cart.shop.svc", "HTTP/1.1", "", CART),
    ("cart.shop.svc.cluster.local", "HTTP/1.1", "", CART),
    ("cart.shop.svc.cluster.local:80", "HTTP/1.1", "", CART),
    ("cart.svc.cluster.local", "HTTP/1.1", "", CART),  # namespace from the destination
    ("CART.Shop", "HTTP/2", "", CART),
    ("10.96.0.10", "HTTP/1.1", "", CART),  # IP without port: 80 for HTTP
    ("10.96.0.10:80", "HTTP/1.1", "", CART),
    ("10.1.2.20:8080", "HTTP/1.1", "", ServiceRef("cart", "shop", "-", 8080)),  # endpoint
    ("shop.example.com", "HTTP/1.1", "10.1.2.21:8080", CART),  # upstream is an endpoint
    ("shop.example.com", "HTTP/1.1", "10.96.0.10:80", CART),  # client-side VIP upstream
    ("cart.shop:8080", "HTTP/1.1", "", ServiceRef("cart", "shop", "-", 8080)),
    ("db.data", "HTTP/1.1", "", ServiceRef("db", "data", "-", 80)),
    ("nothere.shop", "HTTP/1.1", "", enrich.NO_SERVICE),
    ("cart.other", "HTTP/1.1", "", enrich.NO_SERVICE),
    ("a.b.c.d", "HTTP/1.1", "", enrich.NO_SERVICE),
    ("10.9.9.9", "HTTP/1.1", "", enrich.NO_SERVICE),
])
def test_service_from_host(cache: MetadataCache, domain: str, typ: str, upstream: str,
                           expected: ServiceRef) -> None:
    assert enrich.service(domain, typ, upstream, "10.96.0.10", 80, "shop", cache) == expected


def test_service_without_domain_from_tuple(cache: MetadataCache) -> None:
    # tcp/tls/overflow: no Host header; l7scope takes the connection's destination
    assert enrich.service("", "tls", "", "10.96.0.10", 80, "shop", cache) == CART
    assert enrich.service("", "tcp", "", "10.1.2.30", 5432, "data", cache) == \
        ServiceRef("db", "data", "-", 5432)
    assert enrich.service("", "tcp", "", "8.8.8.8", 443, "-", cache) == enrich.NO_SERVICE


@pytest.mark.parametrize(("text", "expected"), [
    ("a:80", ("a", 80)), ("a", ("a", None)), ("[fd00::1]:8080", ("fd00::1", 8080)),
    ("fd00::1", ("fd00::1", None)), ("a:x", ("a", None)), ("a:99999", ("a", None)),
])
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert enrich.split_host_port(text) == expected
