"""The whole node pipeline under load: capture throughput per Envoy core with the logs consumed
live, loss at sustained rates, and freshness (request made -> visible in the search API).

Topology (netlab, needs root and wrk): node n1 runs the real Envoy (`--concurrency 1`: one
worker, one core), `l7scope collector` (logIntervalSeconds 5, the default), `l7scope node`
(capture rules from an inventory, flush 1 s, the default) and `l7scope server` (DuckDB); a client
pod on n1 calls a Service whose one backend (`podserver fixed`) is on n2. Everything shares this
machine's cores, so the figures are what one machine running load, Envoy and l7scope's own
processes can do, not an isolated Envoy core.

- **throughput**: wrk (`-t1 -c16`, closed loop) through the captured Service for a few seconds;
  the rate wrk saw, and whether the collector and node agent kept up: the server holds every
  request Envoy completed within logIntervalSeconds + 10 s after wrk ended.
- **loss**: wrk paced to a target rate (a Lua `delay`, `-c20`) for each rate in `RATES`; per rate,
  the requests Envoy completed (its admin counters: wrk's own count misses those in flight when it
  stops) minus those stored and those in a drop counter of the collector or node agent
  (`contracts/status.py`): unaccounted requests. The highest rate with none is
  reported, and whether 10,000 req/s was reached.
- **freshness**: a request at a random moment, then the search API polled every 50 ms until its
  count shows; the p99 (with few samples: the maximum) against logIntervalSeconds + 1 s.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.row import Row
from l7scope.contracts.auth import ensure_token, read_token
from l7scope.contracts.status import COLLECTOR_DROPS, NODE_AGENT_DROPS
from l7scope.netlab import Pod, Topology
from l7scope.netlab import inventory as netlab_inventory
from l7scope.netlab.topology import Node
from l7scope.proxy import admin

LOG_INTERVAL_S = 5
SERVER_PORT, AGENT_PORT, COLLECTOR_PORT = 18687, 19702, 19701  # inside n1's network namespace
RATES = (1000, 2500, 5000, 10000)
TARGET_THROUGHPUT = 20_000
TARGET_LOSS_RATE = 10_000
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(m?s)")
_PACED = """
local rate_per_conn = tonumber(os.getenv("L7_RATE_PER_CONN"))
delay = function()
  return 1000 / rate_per_conn
end
"""


class _Lab:
    def __init__(self, t: Topology, n1: Node, client: Pod, vip: str, token: str, work: Path,
                 envoy_admin: str) -> None:
        self.t, self.n1, self.client, self.vip, self.token, self.work = t, n1, client, vip, token, work
        self.envoy_admin = envoy_admin

    def envoy_completed(self) -> int:
        """Requests Envoy's capture listeners completed (admin /stats): what must be stored.
        wrk's own count misses the requests in flight when it stops (up to one per connection)."""
        out = self.t.run(self.n1, ["curl", "-s", "--noproxy", "*", "-m", "5",
                                   f"http://{self.envoy_admin}{admin.COMPLETED_FILTER}"],
                         check=False).stdout
        return admin.completed_requests(out)

    def _get(self, port: int, path: str) -> dict[str, Any]:
        out = self.t.run(self.n1, ["curl", "-s", "--noproxy", "*", "-m", "5",
                                   f"http://127.0.0.1:{port}{path}"], check=False).stdout
        return json.loads(out) if out.strip().startswith("{") else {}

    def stored(self) -> int:
        body = json.dumps({"time_range": {"from": 0, "to": "now"}, "page_size": 1})
        out = self.t.run(self.n1, ["curl", "-s", "--noproxy", "*", "-m", "5", "-X", "POST", "-H",
                                   "content-type: application/json", "-H",
                                   f"Authorization: Bearer {self.token}", "-d", body,
                                   f"http://127.0.0.1:{SERVER_PORT}/api/v1/l7/logs/search"],
                         check=False).stdout
        try:
            return int(json.loads(out)["total_requests"])
        except (ValueError, KeyError):
            return -1

    def drops(self) -> int:
        c, a = self._get(COLLECTOR_PORT, "/stats"), self._get(AGENT_PORT, "/stats")
        return (sum(int(c.get(k) or 0) for k in COLLECTOR_DROPS)
                + sum(int(a.get(k) or 0) for k in NODE_AGENT_DROPS))

    def wrk(self, seconds: float, connections: int, rate: int | None = None) -> tuple[int, float]:
        """(requests completed, seconds) of one wrk run against the Service."""
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://{self.vip}/"]
        env = ""
        if rate is not None:
            script = self.work / "paced.lua"
            script.write_text(_PACED)
            argv[4:4] = ["-s", str(script)]
            env = f"L7_RATE_PER_CONN={rate / connections:g}"
        cmd = ["env", *([env] if env else []), *argv]
        out = self.t.run(self.client, cmd, timeout=seconds + 60).stdout
        m = _WRK_TOTAL.search(out)
        if not m:
            raise RuntimeError(f"no wrk summary:\n{out}")
        took = float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
        if errors:
            raise RuntimeError(f"wrk saw errors:\n{out}")
        return int(m.group(1)), took

    def settle(self, want: int, timeout: float) -> tuple[int, float]:
        """(stored, seconds waited) once the store holds `want` (or at the timeout)."""
        t0 = time.monotonic()
        n = self.stored()
        while n < want and time.monotonic() - t0 < timeout:
            time.sleep(0.2)
            n = self.stored()
        time.sleep(1.5)  # anything late would show now (it must not: exactly once)
        return self.stored(), time.monotonic() - t0


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout} s")
        time.sleep(0.2)


def _start(t: Topology, work: Path) -> _Lab:
    n1, n2 = t.add_node("n1"), t.add_node("n2")
    client, web = t.add_pod(n1, "client"), t.add_pod(n2, "web")
    t.start_server(web, "fixed", 8080)
    svc = t.add_service("web", 80, [(web, 8080)])
    envoy = t.start_envoy(n1)
    inv = work / "inventory"
    inv.mkdir()
    netlab_inventory.write(inv, t, {"web"})
    settings = work / "node.yaml"
    settings.write_text(yaml.safe_dump({
        "tproxyMode": "Enabled", "policySyncPathPrefix": str(work / "nodeagent"),
        "l7LogsFileEnabled": False}))
    token_file = work / "store" / "token"
    ensure_token(token_file)
    t.popen(n1, t.python("l7scope", "server", "--port", str(SERVER_PORT), "--data-dir", str(work / "store")))
    t.popen(n1, t.python("l7scope", "node", "--settings", str(settings), "--inventory", str(inv),
                         "--node-name", "n1", "--envoy-admin", f"http://{envoy.settings.admin_address}",
                         "--server", f"http://127.0.0.1:{SERVER_PORT}", "--server-token-file",
                         str(token_file), "--data-dir", str(work / "agent"),
                         "--status-addr", f"127.0.0.1:{AGENT_PORT}"))
    t.popen(n1, t.python("l7scope", "collector", "--envoy-log", envoy.settings.access_log_path,
                         "--dial-target", str(work / "nodeagent" / "socket"),
                         "--interval", str(LOG_INTERVAL_S), "--requests-per-interval", "-1",
                         "--max-lag-bytes", "0", "--node-name", "n1", "--no-checkpoint",
                         "--status-addr", f"127.0.0.1:{COLLECTOR_PORT}"))
    lab = _Lab(t, n1, client, svc.address, read_token(token_file), work, envoy.settings.admin_address)
    _wait(lambda: lab.stored() >= 0, 60, "the server")
    _wait(lambda: bool(lab._get(COLLECTOR_PORT, "/stats")), 30, "the collector")
    # capture on: a request through the Service is logged and stored
    lab.t.run(client, ["curl", "-s", "--noproxy", "*", "-m", "5", "-o", "/dev/null", f"http://{svc.address}/"])
    _wait(lambda: lab.stored() >= 1, 30, "the first captured request stored")
    return lab


def _throughput(lab: _Lab, seconds: float) -> Row:
    before, env0 = lab.stored(), lab.envoy_completed()
    done, took = lab.wrk(seconds, 16)
    captured = lab.envoy_completed() - env0
    stored, waited = lab.settle(before + captured, LOG_INTERVAL_S + 10)
    rate = done / took
    kept_up = stored - before == captured
    return Row(f"pipeline: capture throughput, one Envoy worker, logs consumed live (wrk -c16, {seconds:g} s)",
               f"{rate:,.0f} req/s; stored {stored - before:,} of the {captured:,} Envoy completed "
               f"{'within' if kept_up else 'NOT within'} {waited:.1f} s after",
               "-", f">= {TARGET_THROUGHPUT:,} req/s, all stored", rate >= TARGET_THROUGHPUT and kept_up)


def _loss(lab: _Lab, seconds: float, rates: tuple[int, ...]) -> list[Row]:
    rows, best, results = [], 0.0, []
    for rate in rates:
        before, drops0, env0 = lab.stored(), lab.drops(), lab.envoy_completed()
        done, took = lab.wrk(seconds, 20, rate)
        captured = lab.envoy_completed() - env0
        stored, _ = lab.settle(before + captured, LOG_INTERVAL_S + 10)
        dropped = lab.drops() - drops0
        unaccounted = captured - (stored - before) - dropped
        results.append(f"paced {rate:,}/s: Envoy completed {captured:,} ({done / took:,.0f}/s by wrk), "
                       f"stored {stored - before:,}, dropped {dropped}, unaccounted {unaccounted}")
        if unaccounted == 0:
            best = max(best, done / took)  # the rate reached, not the one asked for
        else:
            break
    rows.append(Row(f"pipeline: loss at paced rates ({seconds:g} s each, wrk -c20 paced)",
                    f"highest rate reached with 0 unaccounted: {best:,.0f} req/s", "; ".join(results),
                    f"0 unaccounted at {TARGET_LOSS_RATE:,} req/s", best >= TARGET_LOSS_RATE))
    return rows


def _freshness(lab: _Lab, samples: int) -> Row:
    delays = []
    rnd = random.Random(7)
    for _ in range(samples):
        time.sleep(rnd.uniform(0, LOG_INTERVAL_S))  # a random phase of the collector's interval
        before = lab.stored()
        t0 = time.monotonic()
        lab.t.run(lab.client, ["curl", "-s", "--noproxy", "*", "-m", "5", "-o", "/dev/null",
                               f"http://{lab.vip}/fresh"])
        while lab.stored() <= before:
            if time.monotonic() - t0 > 60:
                raise RuntimeError("a request did not become visible within 60 s")
            time.sleep(0.05)
        delays.append(time.monotonic() - t0)
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    target = LOG_INTERVAL_S + 1
    return Row(f"pipeline: freshness, request -> visible in the search API ({samples} samples, "
               f"logIntervalSeconds {LOG_INTERVAL_S}, flush 1 s)",
               f"p99 {p99:.2f} s (median {statistics.median(delays):.2f}, min {delays[0]:.2f})",
               "-", f"<= {target} s", p99 <= target)


def run(quick: bool) -> list[Row]:
    if os.geteuid() != 0 or not shutil.which("wrk"):
        return [Row("pipeline: throughput, loss, freshness", "skipped: needs root and wrk")]
    seconds = 3.0 if quick else 8.0
    with Topology() as t:
        lab = _start(t, t.workdir)
        rows = [_throughput(lab, seconds)]
        rows += _loss(lab, seconds, RATES[:2] if quick else RATES)
        rows.append(_freshness(lab, 4 if quick else 12))
    load1 = os.getloadavg()[0]
    rows.append(Row("pipeline: 1-minute load average after the pipeline benchmarks", f"{load1:.1f}"))
    return rows
