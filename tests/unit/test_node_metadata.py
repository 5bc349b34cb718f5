"""Metadata cache lookups, the deleted-pod grace period (injected clock), and the inventory dir."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from l7scope.node.inventory import Inventory
from l7scope.node.metadata import MetadataCache
from l7scope.testing.node_inputs import pod, shop


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lookups() -> None:
    c = MetadataCache()
    c.replace_all(shop())
    p = c.pod_by_ip("10.1.1.10")
    assert p is not None and p.name_aggr == "frontend-7bbcdbbcbf-*" and p.namespace == "shop"
    db = c.pod_by_ip("10.1.2.30")
    assert db is not None and db.name_aggr == "db"  # no generateName: the pod name
    svc = c.service_by_cluster_ip("10.96.0.10", 80)
    assert svc is not None and svc.name == "cart" and svc.port_name(80) == "http"
    assert c.service_by_cluster_ip("10.96.0.10", 81) is None
    ep = c.service_by_endpoint("10.1.2.21", 8080)
    assert ep is not None and ep.name == "cart"
    assert c.service("data", "db") is not None
    assert c.node_by_ip("172.30.0.1") == "node-a"
    ns = c.network_set_by_ip("203.0.113.9")
    assert ns is not None and (ns.name, ns.namespace) == ("partners", "-")
    assert {p.name for p in c.endpoint_pods(svc)} == {"cart-5d9f8-aaaaa", "cart-5d9f8-bbbbb"}


def test_deleted_pod_grace_period_and_ip_reuse() -> None:
    clock = Clock()
    c = MetadataCache(grace_seconds=30, clock=clock)
    old = pod("web-1", "a", "10.1.1.50", generate_name="web-")
    c.upsert(old)
    c.delete(old)
    clock.t += 29
    p = c.pod_by_ip("10.1.1.50")
    assert p is not None and p.name == "web-1"  # late records still resolve
    clock.t += 2
    assert c.pod_by_ip("10.1.1.50") is None
    # a new pod reusing the IP wins over a tombstone
    c.upsert(old)
    c.delete(old)
    c.upsert(pod("api-1", "b", "10.1.1.50"))
    p = c.pod_by_ip("10.1.1.50")
    assert p is not None and p.name == "api-1"


def test_replace_all_tombstones_disappeared_pods() -> None:
    clock = Clock()
    c = MetadataCache(grace_seconds=10, clock=clock)
    c.replace_all(shop())
    c.replace_all([o for o in shop() if o["metadata"]["name"] != "db"])
    assert c.pod_by_ip("10.1.2.30") is not None
    clock.t += 11
    assert c.expire() == 1
    assert c.pod_by_ip("10.1.2.30") is None


def test_bad_objects_are_counted_not_fatal() -> None:
    c = MetadataCache()
    c.upsert({"kind": "Pod", "metadata": {}})  # no name
    c.upsert({"kind": "Service", "metadata": {"name": "x"}, "spec": "garbage"})
    c.upsert({"kind": "ConfigMap", "metadata": {"name": "y"}})
    assert c.stats.objects_bad == 2 and c.stats.objects_ignored == 1


def test_inventory_directory_reload(tmp_path: Path) -> None:
    c = MetadataCache()
    inv = Inventory(tmp_path, c)
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump_all(shop()))
    assert inv.poll()
    assert c.service("shop", "cart") is not None
    assert not inv.poll()  # unchanged
    v = c.version
    (tmp_path / "extra.yml").write_text(yaml.safe_dump(
        {"kind": "List", "items": [pod("x-1", "shop", "10.1.1.77")]}))
    assert inv.poll() and c.version > v
    assert c.pod_by_ip("10.1.1.77") is not None
    # a broken edit keeps the file's last good objects
    (tmp_path / "extra.yml").write_text("kind: [oops\n")
    os.utime(tmp_path / "extra.yml", ns=(1, 5))
    assert inv.poll()
    assert inv.errors == 1 and c.pod_by_ip("10.1.1.77") is not None
