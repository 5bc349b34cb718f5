"""What the demo shows while it runs: its own count of requests, what the collectors captured,
what the store holds, and every drop counter on the way. Read from the counts files, the
collectors' and node agents' `/stats`, and the server's API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from l7scope.contracts import api, status
from l7scope.contracts.auth import CODES_PATH, bearer
from l7scope.demo.shop.counts import Totals, read_totals
from l7scope.proxy import admin


def collector_captured(stats: Mapping[str, Any]) -> int | None:
    """Requests a collector read from Envoy's log (the collector's source of `seen`)."""
    return status.counter("seen", {status.COLLECTOR: stats})


@dataclass
class Snapshot:
    sent: int = 0  # requests the shop completed (its own count)
    failed: int = 0  # requests that never left a client (not expected in the store)
    captured: int | None = None  # requests the collectors read from Envoy's logs
    stored: int | None = None  # sum of `count` in the store (detailed + unlogged)
    drops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)

    def line(self) -> str:
        parts = [f"requests sent {self.sent}"]
        parts.append(f"captured {'?' if self.captured is None else self.captured}")
        parts.append(f"logged {'?' if self.stored is None else self.stored}")
        if self.failed:
            parts.append(f"client failures {self.failed}")
        dropped = sum(self.drops.values())
        if dropped:
            parts.append(f"dropped {dropped} ({', '.join(f'{k} {v}' for k, v in self.drops.items() if v)})")
        return " · ".join(parts)

    def all_stored(self) -> bool:
        """The store holds the shop's own count and also everything the collectors read. The
        shop's count alone is not enough: requests from outside the shop (a user's curl, a load
        tool in a pod) are in the store too, and could make up that sum while the shop's last
        interval is still on its way."""
        if self.stored is None or self.stored < self.sent:
            return False
        return self.captured is None or self.stored >= self.captured

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "captured": self.captured,
                "stored": self.stored, "drops": self.drops, "errors": self.errors,
                "counts": self.totals.to_dict()}


StatsReader = Callable[[], dict[str, Any]]


def netns_stats(netns: str | None, port: int, host: str = "127.0.0.1") -> StatsReader:
    """A reader of `GET /stats` of a process listening on loopback in `netns`."""
    def read() -> dict[str, Any]:
        code, body = admin.request(host, port, status.STATS_PATH, netns=netns, timeout=1.0)
        if code != 200:
            raise admin.AdminError(f"/stats answered {code}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise admin.AdminError("/stats is not a JSON object")
        return data
    return read


class ServerApi:
    def __init__(self, base_url: str, since: float) -> None:
        self.base = base_url.rstrip("/")
        self.since = int(since) - 60
        self._http = httpx.Client(timeout=5.0)

    def use_token(self, token: str) -> None:
        self._http.headers.update(bearer(token))

    def login_url(self) -> str:
        """A one-time login link for the page (the server mints the code)."""
        r = self._http.post(f"{self.base}{CODES_PATH}", json={})
        r.raise_for_status()
        return f"{self.base}{r.json()['path']}"

    def _time_range(self) -> dict[str, Any]:
        return {"from": self.since, "to": int(time.time()) + 3600}

    def stored_requests(self) -> int:
        r = self._http.post(self.base + api.SEARCH_PATH,
                            json={"selector": "", "time_range": self._time_range(),
                                  "page_size": 1})
        r.raise_for_status()
        return int(r.json()["total_requests"])

    def edge_counts(self) -> dict[tuple[str, str], int]:
        """Sum of `count` per (src_name_aggr, dest_service_name) in the store."""
        r = self._http.post(self.base + api.AGGREGATION_PATH,
                            json={"selector": "", "time_range": self._time_range(),
                                  "group_by": ["src_name_aggr", "dest_service_name"],
                                  "limit": 10000})
        r.raise_for_status()
        return {(str(g["key"]["src_name_aggr"]), str(g["key"]["dest_service_name"])):
                int(g["count"]) for g in r.json()["groups"]}

    def service_graph(self) -> dict[str, Any]:
        r = self._http.post(self.base + api.SERVICEGRAPH_PATH,
                            json={"time_range": self._time_range(), "expand": ["*"]})
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def healthy(self) -> bool:
        try:
            return self._http.get(self.base + api.HEALTHZ_PATH).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()


def graph_services(graph: Mapping[str, Any]) -> set[str]:
    """Service names that appear as `svc/<ns>/<name>` nodes."""
    out = set()
    for n in graph.get("nodes", []):
        parts = str(n.get("id", "")).split("/")
        if len(parts) == 3 and parts[0] == "svc":
            out.add(parts[2])
    return out


def graph_edges(graph: Mapping[str, Any], app_of: Callable[[str], str | None]) -> set[tuple[str, str]]:
    """(caller app, callee Service) pairs of the traffic edges; `app_of` maps a wep name_aggr."""
    out = set()
    for e in graph.get("edges", []):
        if e.get("kind", "traffic") != "traffic":
            continue
        src = str(e.get("source", "")).split("/")
        dst = str(e.get("target", "")).split("/")
        if len(src) == 3 and src[0] == "wep" and len(dst) == 3 and dst[0] == "svc":
            app = app_of(src[2])
            if app:
                out.add((app, dst[2]))
    return out


class Probe:
    """Takes a Snapshot of the whole demo."""

    def __init__(self, counts_dir: Path, collectors: dict[str, StatsReader],
                 nodes: dict[str, StatsReader], api: ServerApi) -> None:
        self.counts_dir = counts_dir
        self.collectors = collectors
        self.nodes = nodes
        self.api = api

    def snapshot(self) -> Snapshot:
        totals = read_totals(self.counts_dir)
        snap = Snapshot(sent=totals.total_completed, failed=totals.total_failed, totals=totals)
        captured = 0
        for name, read in self.collectors.items():
            try:
                st = read()
            except (OSError, ValueError, admin.AdminError) as e:
                snap.errors.append(f"collector {name}: {e}")
                captured = -1 if captured < 0 else captured
                continue
            n = collector_captured(st)
            if n is None or captured < 0:
                captured = -1
            else:
                captured += n
            for k in status.COLLECTOR_DROPS:
                v = status.number(st, k)
                if v:
                    snap.drops[f"{name} {k}"] = v
        snap.captured = captured if captured >= 0 and self.collectors else None
        for name, read in self.nodes.items():
            try:
                st = read()
            except (OSError, ValueError, admin.AdminError) as e:
                snap.errors.append(f"node {name}: {e}")
                continue
            for k in status.NODE_AGENT_DROPS:
                v = status.number(st, k)
                if v:
                    snap.drops[f"{name} {k}"] = v
        try:
            snap.stored = self.api.stored_requests()
        except (httpx.HTTPError, KeyError, ValueError) as e:
            snap.errors.append(f"server: {e}")
        return snap
