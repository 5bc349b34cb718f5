"""Latency the Envoy hop adds: TPROXY + Envoy vs straight to the pod, same run, with wrk.

Topology (netlab, needs root): one node running the real Envoy with the shipped config (JSON
file access log on), a client pod and a server pod on that node. The server is
`podserver fixed` (asyncio, answers a fixed 2-byte body, Nagle off) on two ports: 8080 behind
a selected Service VIP (captured: client -> TPROXY -> Envoy -> VIP DNAT -> pod) and 8081 that
nothing selects (direct: client -> pod, routed by the node).

wrk runs in the client pod with one connection and one thread (`-t1 -c1`) and waits 1 ms
between requests (a fixed low rate, a few hundred requests/s): this measures latency, not
saturation. Direct and proxied runs alternate and each percentile is the median over rounds.

Envoy keeps the client's source IP upstream (`original_src`, as wherever l7scope captures).
The same run also measures what that costs: proxied requests with `original_src` and with
Envoy restarted without it, alternating, under SCHED_FIFO.

Two modes in the same run, both reported:
- `shared CPU`: every process at normal priority, competing with whatever else runs;
- `SCHED_FIFO`: wrk, Envoy and the server get real-time priority (`chrt -f 20`, restored
  afterwards), which takes other tenants' load out of the measurement and leaves the cost of
  the hop itself (two extra socket round trips through Envoy's worker, TPROXY and DNAT).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.row import Row
from l7scope.netlab import Node, Pod, Topology

_LUA = """
delay = function()
  return 1
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"requests\\":%d,\\"errors\\":%d}\\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
"""

TARGET_P50_MS = 0.10
TARGET_P99_MS = 0.25
RT_PRIORITY = "20"


@dataclass
class _Lab:
    topo: Topology
    client: Pod
    script: Path
    direct_url: str
    proxied_url: str
    pids: list[int]


def _wrk(lab: _Lab, url: str, seconds: int, rt: bool) -> dict[str, int]:
    prefix = ["chrt", "-f", RT_PRIORITY] if rt else []
    out = lab.topo.run(lab.client, [*prefix, "wrk", "-t1", "-c1", f"-d{seconds}s", "-s",
                                    str(lab.script), url], timeout=seconds + 30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("JSON "))
    res: dict[str, int] = json.loads(line[5:])
    if res["errors"]:
        raise RuntimeError(f"wrk saw {res['errors']} errors on {url}:\n{out}")
    return res


def _set_policy(pids: list[int], rt: bool) -> None:
    policy = ["-f", RT_PRIORITY] if rt else ["-o", "0"]
    for pid in pids:
        subprocess.run(["chrt", "-a", policy[0], "-p", policy[1], str(pid)], check=True,
                       capture_output=True)


def _measure(lab: _Lab, rounds: int, seconds: int, rt: bool) -> list[Row]:
    _set_policy(lab.pids, rt)
    try:
        _wrk(lab, lab.proxied_url, 1, rt)  # warm up both paths
        _wrk(lab, lab.direct_url, 1, rt)
        direct, proxied = [], []
        for _ in range(rounds):
            direct.append(_wrk(lab, lab.direct_url, seconds, rt))
            proxied.append(_wrk(lab, lab.proxied_url, seconds, rt))
    finally:
        _set_policy(lab.pids, False)

    def med(runs: list[dict[str, int]], key: str) -> float:
        return statistics.median(r[key] for r in runs) / 1000.0  # us -> ms

    d = {p: med(direct, p) for p in ("p50", "p90", "p99")}
    x = {p: med(proxied, p) for p in ("p50", "p90", "p99")}
    add = {p: x[p] - d[p] for p in d}
    mode = "SCHED_FIFO" if rt else "shared CPU"
    n = sum(r["requests"] for r in proxied)
    what = f"Envoy hop, {mode}: added latency p50 / p90 / p99"
    return [Row(
        f"{what} ({rounds}x{seconds}s each way, wrk -t1 -c1 + 1 ms pacing, {n} proxied)",
        f"+{add['p50']:.3f} / +{add['p90']:.3f} / +{add['p99']:.3f} ms"
        f" (proxied {x['p50']:.3f} / {x['p90']:.3f} / {x['p99']:.3f})",
        f"direct {d['p50']:.3f} / {d['p90']:.3f} / {d['p99']:.3f} ms",
        f"p50 <= {TARGET_P50_MS:.2f}, p99 <= {TARGET_P99_MS:.2f} ms",
        add["p50"] <= TARGET_P50_MS and add["p99"] <= TARGET_P99_MS,
    )]


def _original_src_cost(lab: _Lab, node: Node, rounds: int, seconds: int) -> Row:
    """Proxied latency with and without `original_src`, alternating Envoy restarts."""
    assert node.envoy is not None
    mark = node.envoy.settings.original_src_mark
    runs: dict[bool, list[dict[str, int]]] = {True: [], False: []}
    for _ in range(rounds):
        for keep in (True, False):
            settings = node.envoy.settings.model_copy(
                update={"original_src_mark": mark if keep else None})
            node.envoy.stop()
            envoy = lab.topo.start_envoy(node, settings)
            assert envoy.pid is not None
            lab.pids[0] = envoy.pid
            _set_policy(lab.pids, True)
            try:
                _wrk(lab, lab.proxied_url, 1, True)  # warm up (new upstream connections)
                runs[keep].append(_wrk(lab, lab.proxied_url, seconds, True))
            finally:
                _set_policy(lab.pids, False)

    def med(rs: list[dict[str, int]], key: str) -> float:
        return statistics.median(r[key] for r in rs) / 1000.0

    w = {p: med(runs[True], p) for p in ("p50", "p90", "p99")}
    wo = {p: med(runs[False], p) for p in ("p50", "p90", "p99")}
    return Row(
        f"Envoy hop, SCHED_FIFO: original_src (client IP kept) vs without, p50 / p90 / p99"
        f" ({rounds}x{seconds}s each, alternating)",
        f"{w['p50'] - wo['p50']:+.3f} / {w['p90'] - wo['p90']:+.3f} / {w['p99'] - wo['p99']:+.3f} ms"
        f" (with {w['p50']:.3f} / {w['p90']:.3f} / {w['p99']:.3f})",
        f"without {wo['p50']:.3f} / {wo['p90']:.3f} / {wo['p99']:.3f} ms")


def run(quick: bool) -> list[Row]:
    if os.geteuid() != 0 or not shutil.which("wrk") or not shutil.which("chrt"):
        return [Row("Envoy hop latency", "skipped: needs root, wrk and chrt")]
    rounds, seconds = (1, 2) if quick else (2, 4)
    with Topology() as t:
        node = t.add_node("n1")
        client, server = t.add_pod(node, "client"), t.add_pod(node, "server")
        servers = [t.start_server(server, "fixed", 8080), t.start_server(server, "fixed", 8081)]
        svc = t.add_service("hop", 80, [(server, 8080)])
        t.capture(node, [svc])
        envoy = t.start_envoy(node)
        assert envoy.pid is not None
        script = t.workdir / "percentiles.lua"
        script.write_text(_LUA)
        lab = _Lab(t, client, script, f"http://{server.ip}:8081/", f"http://{svc.vip}/",
                   [envoy.pid, *(p.pid for p in servers)])
        rows = _measure(lab, rounds, seconds, rt=False) + _measure(lab, rounds, seconds, rt=True)
        with open(envoy.settings.access_log_path) as f:
            logged = sum(1 for _ in f)
        rows.append(_original_src_cost(lab, node, rounds, seconds))
    rows.append(Row("Envoy hop: proxied requests in Envoy's access log", str(logged)))
    return rows
