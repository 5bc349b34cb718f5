"""The node agent's cluster feed (built on the `kube` gateway): metadata watches and the live node-agent configuration.

`start_watches(kube, cache, settings_callback)` starts one list-and-watch thread each for pods,
Services, EndpointSlices and Nodes, delivering plain Kubernetes-shaped dicts to the node agent's
metadata cache (`upsert` / `delete` / `replace_all`), and one for our cluster-scoped
`NodeAgentConfiguration` named `default`, delivering validated `NodeSettings` to
`settings_callback` (a bad edit is counted and logged; the last good settings stay).

EndpointSlices: `discovery.k8s.io/v1` when the server serves it (1.21+), else `v1beta1` (1.20),
else the core `v1/Endpoints` (older servers); found through API discovery at start.

Objects are slimmed to the fields the cache reads (identity, addresses, ports, the Service
annotations) before they are kept, so a large cluster costs little memory. Each kind is
relisted on its own; the cache always receives the union of the current state of every kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from l7scope.contracts import nodeconfig
from l7scope.contracts.nodeconfig import NodeSettings, SettingsError, from_mapping
from l7scope.kube.client import JSON, Kube, KubeError
from l7scope.kube.watch import ResourceWatch, WatchStats

log = logging.getLogger(__name__)

NODE_CONFIG_VERSION = nodeconfig.API_VERSION
NODE_CONFIG_PLURAL = nodeconfig.PLURAL
NODE_CONFIG_NAME = nodeconfig.NAME


class MetadataSink(Protocol):
    """The part of `l7scope.node.metadata.MetadataCache` this module uses."""

    def upsert(self, obj: Mapping[str, Any], kind: str | None = None) -> None: ...
    def delete(self, obj: Mapping[str, Any], kind: str | None = None) -> None: ...
    def replace_all(self, objs: Any) -> None: ...


SettingsCallback = Callable[[NodeSettings], None]


def endpoint_source(kube: Kube) -> tuple[str, str]:
    """(list path, kind) of the endpoint objects this server serves best."""
    version = kube.served_version("discovery.k8s.io", ("v1", "v1beta1"))
    if version is not None:
        return f"/apis/{version}/endpointslices", "EndpointSlice"
    return "/api/v1/endpoints", "Endpoints"


def _meta(obj: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    m = obj.get("metadata") or {}
    out = {k: m[k] for k in ("name", "namespace", "generateName", "resourceVersion", *extra) if m.get(k)}
    return out


def slim(obj: Mapping[str, Any], kind: str) -> JSON:
    """The fields of `obj` the metadata cache reads, with `kind` set."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if kind == "Pod":
        return {"kind": kind, "metadata": _meta(obj, "labels"),
                "spec": {k: spec[k] for k in ("nodeName", "hostNetwork") if k in spec},
                "status": {k: status[k] for k in ("podIP", "podIPs", "phase") if k in status}}
    if kind == "Service":
        return {"kind": kind, "metadata": _meta(obj, "annotations", "labels"),
                "spec": {k: spec[k] for k in ("clusterIP", "clusterIPs", "ports", "type", "selector")
                         if k in spec}}
    if kind == "EndpointSlice":
        return {"kind": kind, "metadata": _meta(obj, "labels"),
                "addressType": obj.get("addressType"),
                "endpoints": [{k: ep[k] for k in ("addresses", "conditions", "nodeName", "targetRef")
                               if k in ep} for ep in obj.get("endpoints") or []],
                "ports": obj.get("ports") or []}
    if kind == "Endpoints":
        return {"kind": kind, "metadata": _meta(obj), "subsets": obj.get("subsets") or []}
    if kind == "Node":
        return {"kind": kind, "metadata": _meta(obj),
                "status": {"addresses": status.get("addresses") or []}}
    return {"kind": kind, **obj}


class _Mirror:
    """Current objects of every kind; pushes the union to the cache on a relist."""

    def __init__(self, cache: MetadataSink) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], JSON]] = {}

    def relisted(self, kind: str, items: list[JSON]) -> None:
        objs = {}
        for item in items:
            s = slim(item, kind)
            m = s["metadata"]
            objs[(str(m.get("namespace") or ""), str(m.get("name") or ""))] = s
        with self._lock:
            self._objects[kind] = objs
            union = [o for per_kind in self._objects.values() for o in per_kind.values()]
            self.cache.replace_all(union)

    def event(self, kind: str, type_: str, obj: JSON) -> None:
        s = slim(obj, kind)
        m = s["metadata"]
        key = (str(m.get("namespace") or ""), str(m.get("name") or ""))
        with self._lock:
            per_kind = self._objects.setdefault(kind, {})
            if type_ == "DELETED":
                per_kind.pop(key, None)
                self.cache.delete(s, kind)
            else:
                per_kind[key] = s
                self.cache.upsert(s, kind)


class _SettingsFeed:
    def __init__(self, callback: SettingsCallback) -> None:
        self.callback = callback
        self.errors = 0
        self.last_error = ""
        self.current: NodeSettings | None = None

    def apply(self, obj: Mapping[str, Any] | None) -> None:
        spec = (obj or {}).get("spec") or {}
        try:
            new = from_mapping(spec, f"{NODE_CONFIG_PLURAL}/{NODE_CONFIG_NAME}")
        except SettingsError as e:
            self.errors += 1
            self.last_error = str(e)
            log.error("ignoring node-agent configuration (keeping the last good one): %s", e)
            return
        if new != self.current:
            self.current = new
            self.callback(new)

    def relisted(self, items: list[JSON]) -> None:
        self.apply(items[0] if items else None)

    def event(self, type_: str, obj: JSON) -> None:
        self.apply(None if type_ == "DELETED" else obj)


@dataclass
class Watches:
    """The running watches; `stop()` ends them, `wait_synced()` waits for the first lists."""

    watches: list[ResourceWatch] = field(default_factory=list)
    endpoint_kind: str = ""
    settings: _SettingsFeed | None = None

    def wait_synced(self, timeout: float) -> bool:
        return all(w.synced.wait(timeout) for w in self.watches)

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def stats(self) -> dict[str, WatchStats]:
        return {w.name: w.stats for w in self.watches}

    def counters(self) -> dict[str, int]:
        out = {"watch_errors": sum(w.stats.errors for w in self.watches),
               "watch_relists_after_expiry": sum(w.stats.relists_after_expiry for w in self.watches),
               "watch_events": sum(w.stats.events for w in self.watches),
               "watch_callback_errors": sum(w.stats.callback_errors for w in self.watches)}
        if self.settings is not None:
            out["node_config_errors"] = self.settings.errors
        return out


def start_watches(kube: Kube, cache: MetadataSink, settings_callback: SettingsCallback | None = None,
                  *, timeout_seconds: int = 300) -> Watches:
    """Start every watch (daemon threads) and return at once; see the module doc."""
    mirror = _Mirror(cache)
    ep_path, ep_kind = endpoint_source(kube)
    result = Watches(endpoint_kind=ep_kind)

    def meta_watch(path: str, kind: str) -> ResourceWatch:
        return ResourceWatch(kube, path, lambda items: mirror.relisted(kind, items),
                             lambda t, o: mirror.event(kind, t, o),
                             timeout_seconds=timeout_seconds, name=kind)

    result.watches = [meta_watch("/api/v1/pods", "Pod"), meta_watch("/api/v1/services", "Service"),
                      meta_watch(ep_path, ep_kind), meta_watch("/api/v1/nodes", "Node")]
    if settings_callback is not None:
        feed = _SettingsFeed(settings_callback)
        result.settings = feed
        result.watches.append(ResourceWatch(
            kube, f"/apis/{NODE_CONFIG_VERSION}/{NODE_CONFIG_PLURAL}", feed.relisted, feed.event,
            query={"fieldSelector": f"metadata.name={NODE_CONFIG_NAME}"},
            timeout_seconds=timeout_seconds, name="NodeAgentConfiguration"))
    for w in result.watches:
        w.start()
    log.info("watching pods, services, %s, nodes%s", ep_kind,
             " and the node-agent configuration" if settings_callback else "")
    return result


def current_settings(kube: Kube) -> NodeSettings:
    """NodeAgentConfiguration `default` as it is now: for the node agent's start, so settings
    that only apply at start (policySyncPathPrefix) are right from the beginning. Defaults when
    the object is absent or invalid (logged)."""
    try:
        obj = kube.get(f"/apis/{NODE_CONFIG_VERSION}/{NODE_CONFIG_PLURAL}/{NODE_CONFIG_NAME}")
    except KubeError as e:
        if e.status != 404:
            raise
        log.info("no %s/%s yet: node agent defaults", NODE_CONFIG_PLURAL, NODE_CONFIG_NAME)
        return NodeSettings()
    try:
        return from_mapping(obj.get("spec") or {}, f"{NODE_CONFIG_PLURAL}/{NODE_CONFIG_NAME}")
    except SettingsError as e:
        log.error("%s; node agent defaults until it is fixed", e)
        return NodeSettings()


def write_current_settings(kube: Kube, path: str | Path) -> Path:
    """`current_settings()` as a settings file (Felix field names) for the node agent's start."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(yaml.safe_dump(current_settings(kube).model_dump(by_alias=True), sort_keys=True))
    tmp.replace(p)
    return p
