"""List-and-watch loop (expiry -> relist, errors -> retry) and the node-agent feed, with a fake
API (the real one is exercised in tests/kube)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from l7scope.kube.client import Kube, KubeError
from l7scope.kube.watch import ResourceWatch
from l7scope.node.cluster_feed import _Mirror, _SettingsFeed, endpoint_source, slim
from l7scope.node.metadata import MetadataCache


class FakeKube:
    """Scripted answers: each list() pops a (items, version); each watch() pops a list of events
    (or an exception)."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[Any]) -> None:
        self.lists, self.watches = lists, watches
        self.watch_versions: list[str] = []
        self.done = threading.Event()

    def list(self, path: str, **query: Any) -> tuple[list[dict[str, Any]], str]:
        if not self.lists:
            self.done.set()
            raise KubeError(500, "Exhausted", "no more scripted lists")
        return self.lists.pop(0)

    def watch(self, path: str, *, resource_version: str, timeout_seconds: int = 300,
              **query: Any) -> Iterator[dict[str, Any]]:
        self.watch_versions.append(resource_version)
        if not self.watches:
            self.done.set()
            raise KubeError(500, "Exhausted", "no more scripted watches")
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        yield from step


def pod(name: str, ip: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "resourceVersion": rv,
                         "managedFields": [{"big": "x" * 100}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": ip, "phase": "Running"}}


def run_until_done(fake: FakeKube, **kw: Any) -> tuple[ResourceWatch, list[Any]]:
    seen: list[Any] = []
    w = ResourceWatch(fake, "/api/v1/pods", lambda items: seen.append(("list", len(items))),  # type: ignore[arg-type]
                      lambda t, o: seen.append((t, o["metadata"]["name"])), backoff_max=0.01, **kw)
    w._stop.wait = lambda t=None: False  # type: ignore[method-assign]  # no sleeping in backoff
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    assert fake.done.wait(5)
    w.stop()
    return w, seen


def test_expired_watch_relists_and_stream_end_rewatches() -> None:
    fake = FakeKube(
        lists=[([pod("a", "10.0.0.1", "5")], "10"), ([pod("a", "10.0.0.1", "5")], "30")],
        watches=[
            [{"type": "ADDED", "object": pod("b", "10.0.0.2", "11")},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],  # stream ends
            [{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}],
            [{"type": "DELETED", "object": pod("a", "10.0.0.1", "31")}],
        ])
    w, seen = run_until_done(fake)
    assert seen == [("list", 1), ("ADDED", "b"), ("list", 1), ("DELETED", "a")]
    assert fake.watch_versions[:3] == ["10", "15", "30"]  # bookmark moved it; relist reset it
    assert w.stats.relists_after_expiry == 1 and w.stats.restarts >= 1


def test_gone_answer_and_errors_relist_and_count() -> None:
    fake = FakeKube(lists=[([], "1"), ([], "2"), ([], "3")],
                    watches=[KubeError(410, "Gone", "expired"), ConnectionResetError("reset"), []])
    w, seen = run_until_done(fake)
    assert seen[:3] == [("list", 0), ("list", 0), ("list", 0)]
    assert w.stats.relists_after_expiry == 1
    assert w.stats.errors >= 1  # the reset stream, counted, then a fresh list


def test_callback_errors_are_counted_not_fatal() -> None:
    fake = FakeKube(lists=[([], "1")], watches=[[{"type": "ADDED", "object": pod("x", "1.1.1.1", "2")},
                                                 {"type": "ADDED", "object": pod("y", "1.1.1.2", "3")}]])
    calls: list[str] = []

    def on_event(t: str, o: Mapping[str, Any]) -> None:
        calls.append(o["metadata"]["name"])
        raise ValueError("boom")

    w = ResourceWatch(fake, "/p", lambda items: None, on_event, backoff_max=0.01)  # type: ignore[arg-type]
    w._stop.wait = lambda t=None: False  # type: ignore[method-assign]
    threading.Thread(target=w.run, daemon=True).start()
    assert fake.done.wait(5)
    w.stop()
    assert calls == ["x", "y"] and w.stats.callback_errors == 2


def test_mirror_keeps_other_kinds_on_relist() -> None:
    cache = MetadataCache()
    m = _Mirror(cache)
    svc = {"metadata": {"name": "web", "namespace": "default",
                        "annotations": {"projectcalico.org/l7-logging": "true"}},
           "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    m.relisted("Service", [svc])
    m.relisted("Pod", [pod("a", "10.0.0.1", "1")])
    assert cache.service("default", "web") is not None
    m.relisted("Pod", [pod("b", "10.0.0.2", "2")])  # a pod relist must not drop the Service
    assert cache.service("default", "web") is not None
    assert cache.pod_by_ip("10.0.0.2") is not None
    m.event("Service", "DELETED", svc)
    assert cache.service("default", "web") is None
    m.event("Pod", "MODIFIED", pod("c", "10.0.0.3", "3"))
    assert cache.pod_by_ip("10.0.0.3") is not None


def test_slim_keeps_what_the_cache_reads() -> None:
    s = slim(pod("a", "10.0.0.1", "1"), "Pod")
    assert "managedFields" not in s["metadata"] and "containers" not in s["spec"]
    assert s["kind"] == "Pod" and s["status"]["podIP"] == "10.0.0.1" and s["spec"]["nodeName"] == "n1"
    es = slim({"metadata": {"name": "web-abc", "namespace": "d",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "topology": {}}],
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}, "EndpointSlice")
    assert es["endpoints"] == [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]
    assert es["metadata"]["labels"] == {"kubernetes.io/service-name": "web"}


def test_settings_feed_validates_and_keeps_last_good() -> None:
    got: list[Any] = []
    feed = _SettingsFeed(got.append)
    feed.relisted([{"spec": {"tproxyMode": "Enabled", "policySyncPathPrefix": "/run/na"}}])
    assert len(got) == 1 and got[0].tproxy_mode == "Enabled"
    feed.event("MODIFIED", {"spec": {"tproxyMode": "Sometimes"}})
    assert len(got) == 1 and feed.errors == 1 and "tproxyMode" in feed.last_error
    feed.event("MODIFIED", {"spec": {"tproxyMode": "Enabled", "policySyncPathPrefix": "/run/na"}})
    assert len(got) == 1  # unchanged: no callback
    feed.event("DELETED", {"spec": {}})
    assert len(got) == 2 and got[1].tproxy_mode == "Disabled"


class GroupsKube(Kube):
    """Only `get` of the discovery document, as a server serving these versions answers it."""

    def __init__(self, versions: list[str] | None) -> None:
        self.versions = versions

    def get(self, path: str, **kw: Any) -> Any:
        assert path == "/apis/discovery.k8s.io"
        if self.versions is None:
            raise KubeError(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "versions": [{"version": v} for v in self.versions]}


def test_endpoint_source_follows_what_the_server_serves() -> None:
    # 1.30 serves only v1; 1.21-1.24 both (v1 preferred); 1.20 only v1beta1; 1.16 none of them
    assert endpoint_source(GroupsKube(["v1"])) == ("/apis/discovery.k8s.io/v1/endpointslices",
                                                   "EndpointSlice")
    assert endpoint_source(GroupsKube(["v1beta1", "v1"]))[0].startswith("/apis/discovery.k8s.io/v1/")
    assert endpoint_source(GroupsKube(["v1beta1"]))[0] == "/apis/discovery.k8s.io/v1beta1/endpointslices"
    assert endpoint_source(GroupsKube(None)) == ("/api/v1/endpoints", "Endpoints")
