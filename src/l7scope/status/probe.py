"""Ask every part how it is: Envoy's admin `/ready` (+ request counter), the collector's and
the node agent's `/healthz` + `/stats`, the server's `/healthz` + `/api/v1/status`.

`probe_all()` runs the requests in parallel (each with a short timeout) and returns one
`PartStatus` per part. A status address inside a network namespace is reached by opening the
socket from a thread that entered the namespace (`l7scope.proxy.admin`), so nothing needs to
listen on the host. Health rules are in `judge_*` (pure, unit-tested).
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from l7scope.contracts import api, status
from l7scope.contracts.auth import bearer
from l7scope.contracts.demo_state import Part, State, pid_alive
from l7scope.proxy import admin

#: Batches in the node agent's spool worth a warning without a shipping error (a batch or two
#: pass through it on their way to the server).
SPOOL_WARN_BATCHES: Final = 10

Getter = Callable[[str, int, str, str | None, float], tuple[int, bytes]]


def http_get(host: str, port: int, path: str, netns: str | None, timeout: float) -> tuple[int, bytes]:
    return admin.request(host, port, path, netns=netns, timeout=timeout)


@dataclass
class PartStatus:
    node: str  # node name; "-" for the server
    part: str  # envoy | collector | node-agent | server
    addr: str
    netns: str | None = None
    healthy: bool = False
    state: str = "unknown"
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "part": self.part, "addr": self.addr, "netns": self.netns,
                "healthy": self.healthy, "state": self.state, "warnings": self.warnings,
                "stats": self.stats}


def split_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT or a URL -> (host, port)."""
    if "://" in addr:
        u = urlsplit(addr)
        return u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _json(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


# --- pure judgements ------------------------------------------------------------------------


def judge_envoy(ready: tuple[int, bytes] | Exception, stats: tuple[int, bytes] | Exception | None
                ) -> tuple[bool, str, dict[str, Any]]:
    if isinstance(ready, Exception):
        return False, f"unreachable: {ready}", {}
    code, body = ready
    text = body.decode(errors="replace").strip()
    counters: dict[str, Any] = {}
    if stats is not None and not isinstance(stats, Exception) and stats[0] == 200:
        total = 0
        for s in _json(stats[1]).get("stats", []):
            name = str(s.get("name", ""))
            if name.endswith("downstream_rq_total") and not name.startswith("http.admin."):
                total += int(s.get("value") or 0)
        counters["downstream_rq_total"] = total
    if code == 200:
        return True, f"ready ({text or 'LIVE'})", counters
    return False, f"not ready ({code} {text[:40]})", counters


def judge_service(health: tuple[int, bytes] | Exception, stats: tuple[int, bytes] | Exception | None
                  ) -> tuple[bool, str, dict[str, Any]]:
    """Collector and node agent: healthy when /healthz answers 200."""
    if isinstance(health, Exception):
        return False, f"unreachable: {health}", {}
    code, body = health
    data = _json(stats[1]) if stats is not None and not isinstance(stats, Exception) and stats[0] == 200 else {}
    if code == 200:
        return True, "healthy", data
    detail = _json(body).get("error") or body.decode(errors="replace")[:60]
    return False, f"unhealthy ({code} {detail})", data


def node_agent_warnings(stats: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    state = stats.get("capture_state")
    if state and state not in ("active", "disabled"):
        why = {"withdrawn": " (fail open: Envoy not ready)",
               "unsupported": f" (fail open: {(stats.get('capture') or {}).get('unsupported') or '?'})"}
        out.append(f"capture {state}" + why.get(str(state), ""))
    bridged = int(stats.get("capture_bridged_clients") or 0)
    if bridged:
        bridges = ", ".join((stats.get("capture") or {}).get("bridges") or []) or "a bridge"
        out.append(f"{bridged} pod(s) behind {bridges} with br_netfilter not captured (fail open)")
    if stats.get("ship_error"):
        out.append(f"shipping: {str(stats['ship_error'])[:120]}")
    spooled = int(stats.get("spool_batches") or 0)
    if spooled >= SPOOL_WARN_BATCHES or (spooled and stats.get("ship_error")):
        out.append(f"{spooled} batches waiting in the spool")
    for key in ("records_dropped", "reports_dropped", "requests_dropped_at_intake", "l7log_write_errors"):
        if int(stats.get(key) or 0) > 0:
            out.append(f"{key} = {stats[key]}")
    return out


def counters_of(parts: list[PartStatus]) -> dict[str, int | None]:
    """The canonical counters (contracts.status.COUNTERS) of one node from its parts' stats."""
    by_part = {p.part: p.stats for p in parts}
    return {name: status.counter(name, by_part) for name in status.COUNTER_NAMES}


def collector_warnings(stats: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("reports_dropped", "requests_dropped", "lag_skips", "partial_lines_dropped",
                "reopen_failures"):
        if int(stats.get(key) or 0) > 0:
            out.append(f"{key} = {stats[key]}")
    if int(stats.get("reports_buffered") or 0) > 0:
        out.append(f"{stats['reports_buffered']} reports waiting for the node agent")
    return out


# --- probing ------------------------------------------------------------------------------


def _get(getter: Getter, addr: str, path: str, netns: str | None, timeout: float
         ) -> tuple[int, bytes] | Exception:
    try:
        host, port = split_addr(addr)
        return getter(host, port, path, netns, timeout)
    except admin.AdminError as e:  # reported as the part's state, without the "admin" wording
        return e.__cause__ if isinstance(e.__cause__, Exception) else e
    except Exception as e:
        return e


def _probe_part(node: str, kind: str, part: Part, netns: str | None, getter: Getter,
                timeout: float) -> PartStatus:
    ns = (part.netns if part.netns is not None else netns) or None  # "" = the host namespace
    st = PartStatus(node=node, part=kind, addr=part.addr, netns=ns)
    if part.pid is not None and not pid_alive(part.pid):
        st.state = f"process {part.pid} has exited"
        return st
    if kind == "envoy":
        ready = _get(getter, part.addr, "/ready", ns, timeout)
        stats = _get(getter, part.addr, "/stats?format=json&filter=downstream_rq_total", ns, timeout)
        st.healthy, st.state, st.stats = judge_envoy(ready, stats)
    else:
        health = _get(getter, part.addr, status.HEALTHZ_PATH, ns, timeout)
        stats = _get(getter, part.addr, status.STATS_PATH, ns, timeout)
        st.healthy, st.state, st.stats = judge_service(health, stats)
        if kind == "node-agent":
            st.warnings = node_agent_warnings(st.stats)
        elif kind == "collector":
            st.warnings = collector_warnings(st.stats)
    return st


def _server_get(url: str, path: str, token: str | None, timeout: float,
                verify: ssl.SSLContext | bool = True) -> tuple[int, bytes] | Exception:
    try:
        resp = httpx.get(url.rstrip("/") + path, timeout=timeout, verify=verify,
                         headers=bearer(token) if token is not None else None)
    except httpx.HTTPError as e:
        return e
    return resp.status_code, resp.content


def _probe_server(url: str, pid: int | None, token: str | None, timeout: float,
                  verify: ssl.SSLContext | bool) -> PartStatus:
    st = PartStatus(node="-", part="server", addr=url)
    if pid is not None and not pid_alive(pid):
        st.state = f"process {pid} has exited"
        return st
    health = _server_get(url, api.HEALTHZ_PATH, None, timeout, verify)
    if isinstance(health, Exception):
        st.state = f"unreachable: {health}"
        return st
    answer = _server_get(url, api.STATUS_PATH, token, timeout, verify)
    if not isinstance(answer, Exception) and answer[0] == 200:
        st.stats = _json(answer[1])
    elif not isinstance(answer, Exception) and answer[0] == 401:
        st.warnings.append("no counters: the server wants a token (--token-file or $L7SCOPE_TOKEN)")
    elif not isinstance(answer, Exception) and answer[0] == 403:
        st.warnings.append("no counters: this token may not read them (in a cluster they need "
                           "`get pods` in every namespace)")
    if health[0] == 200:
        st.healthy, st.state = True, "healthy"
    else:
        st.state = f"unhealthy ({health[0]} {_json(health[1]).get('error', '')})"
    return st


def probe_all(state: State, *, getter: Getter = http_get, timeout: float = 2.0,
              token: str | None = None, verify: ssl.SSLContext | bool = True) -> list[PartStatus]:
    """Probe every part of `state` in parallel; results in a stable order. `token` is sent to the
    server (its /api/v1/status needs one)."""
    jobs: list[Callable[[], PartStatus]] = []
    if state.server is not None:
        srv = state.server
        jobs.append(lambda: _probe_server(srv.url, srv.pid, token, timeout, verify))
    for n in state.nodes:
        for kind, part in (("envoy", n.envoy_admin), ("collector", n.collector),
                           ("node-agent", n.node_agent)):
            if part is not None:
                jobs.append(functools.partial(_probe_part, n.name, kind, part, n.netns, getter,
                                              timeout))
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(jobs))) as pool:
        return list(pool.map(lambda j: j(), jobs))
