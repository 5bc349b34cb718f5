"""Request detail on the real data path (docs/detail.md): client pod -> TPROXY -> Envoy (the
detail object in its access log) -> collector (picks errors, slow and sampled requests) ->
`l7scope node` (the Service's `l7scope.io/detail: sampled` mode, the aggregated record's key) ->
`l7scope server` (stored, then read back through POST /api/v1/l7/requests).

A 5xx and a slow request are stored whole with their request id and trace context (W3C
traceparent, B3) and without the redacted headers (authorization, cookie, set-cookie: not even
in Envoy's log); the allowlisted headers are kept; the sampled successes times their rate give
exactly the count the deterministic rule (CRC-32 of the request id) predicts, which is close to
the true count; the aggregated records still count every request.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from capture_support import client_and_web, server_post, topology
from test_node_capture import inventory, wait_until

from l7scope.capture import tproxy
from l7scope.contracts import detail as dc
from l7scope.contracts.auth import ensure_token
from l7scope.proxy.bootstrap import EnvoySettings, nodeport_mark

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

SERVER_PORT = 18687
NODE_STATUS, COLLECTOR_STATUS = 19187, 19188  # inside n1's network namespace
N_OK = 400
ONE_IN = 8
TP_ERR = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
B3_TRACE, B3_SPAN = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
SECRET = "s3cr3t-value-never-stored"


def call(t: Any, node: Any, path: str, body: dict[str, Any], token_file: Path) -> dict[str, Any]:
    return server_post(t, node, SERVER_PORT, path, body, token_file)


def test_errors_slow_and_sampled_requests_are_kept_whole(request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    t = topology(request)
    n1, client, web = client_and_web(t)
    rules = n1.capture_rules or tproxy.Rules()
    envoy = t.start_envoy(n1, EnvoySettings(
        tproxy_port=rules.tproxy_port, access_log_path=str(tmp_path / "envoy.log"),
        original_src_mark=rules.upstream_mark, nodeport_original_src_mark=nodeport_mark(rules.upstream_mark),
        # the redacted names are asked for too: they must never be logged or stored
        detail_request_headers=("x-tenant", "authorization", "cookie", "proxy-authorization"),
        detail_response_headers=("x-request-bytes", "set-cookie")))
    inv = tmp_path / "inventory"
    inv.mkdir()
    objs = inventory(t, {"web"})
    for o in objs:
        if o["kind"] == "Service":
            o["metadata"]["annotations"][dc.ANNOTATION] = "sampled"
    (inv / "shop.yaml").write_text(yaml.safe_dump_all(objs))
    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({
        "tproxyMode": "Enabled", "policySyncPathPrefix": str(tmp_path / "nodeagent"),
        "l7LogsFileDirectory": str(tmp_path / "l7logs"),
        "l7Detail": {"defaultMode": "errors", "maxPerInterval": 5000}}))
    token_file = tmp_path / "store" / "token"
    ensure_token(token_file)
    t.popen(n1, t.python("l7scope", "server", "--port", str(SERVER_PORT),
                         "--data-dir", str(tmp_path / "store")))
    t.popen(n1, t.python("l7scope", "node", "--settings", str(settings), "--inventory", str(inv),
                         "--node-name", "n1", "--envoy-admin", f"http://{envoy.settings.admin_address}",
                         "--server", f"http://127.0.0.1:{SERVER_PORT}",
                         "--server-token-file", str(token_file), "--data-dir", str(tmp_path / "agent"),
                         "--status-addr", f"127.0.0.1:{NODE_STATUS}"))
    log = Path(envoy.settings.access_log_path)
    detail_cfg = {"slowThresholdMs": 300, "sampleOneIn": ONE_IN, "maxPerInterval": 5000}
    t.popen(n1, t.python("l7scope", "collector", "--envoy-log", str(log), "--dial-target",
                         str(tmp_path / "nodeagent" / "socket"), "--interval", "1",
                         "--node-name", "n1", "--no-checkpoint", "--detail", json.dumps(detail_cfg),
                         "--status-addr", f"127.0.0.1:{COLLECTOR_STATUS}"))
    wait_until(lambda: bool((s := tproxy.installed(netns=n1.netns)) and s.services), 20)
    wait_until(lambda: bool(call(t, n1, "/api/v1/l7/logs/search", {"page_size": 1}, token_file)), 30, 0.3)

    secrets = {"authorization": f"Bearer {SECRET}", "cookie": f"session={SECRET}",
               "proxy-authorization": f"Basic {SECRET}", "x-set-cookie": f"id={SECRET}"}
    plan: list[dict[str, Any]] = [
        {"method": "GET", "path": f"/api/items/{i}", "headers": {"x-request-id": f"ok-{i}",
                                                                  "x-tenant": "acme"}}
        for i in range(N_OK)]
    plan.insert(100, {"method": "POST", "path": "/status/503/pay", "headers": {
        "x-request-id": "err-1", "traceparent": TP_ERR, "x-tenant": "acme", **secrets}})
    plan.insert(200, {"method": "GET", "path": "/api/items/9999", "headers": {
        "x-request-id": "slow-1", "x-b3-traceid": B3_TRACE, "x-b3-spanid": B3_SPAN,
        "x-delay-ms": "600", **secrets}})
    proc = t.popen(client, t.python("l7scope.netlab.loadgen", "--target", web.address),
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(json.dumps(plan), timeout=120)
    results = json.loads(out)
    assert results["errors"] == 0 and len(results["results"]) == N_OK + 2

    # the aggregated records count every request, as without detail
    body = {"time_range": {"from": 0, "to": "now"}, "page_size": 100}
    wait_until(lambda: call(t, n1, "/api/v1/l7/logs/search", body, token_file).get(
        "total_requests") == N_OK + 2, 30, 0.2)
    tr = {"from": 0, "to": "now"}

    def by_id(rid: str) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = call(t, n1, dc.REQUESTS_PATH, {"request_id": rid, "time_range": tr},
                                         token_file).get("requests", [])
        return got

    wait_until(lambda: bool(by_id("err-1")) and bool(by_id("slow-1")), 20, 0.2)
    (err,) = by_id("err-1")
    assert (err["reason"], err["sample_rate"], err["response_code"], err["method"], err["path"]) == (
        "error", 1, "503", "POST", "/status/503/pay")
    assert (err["trace_id"], err["span_id"], err["trace_format"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "w3c")
    assert err["request_headers"] == {"x-tenant": "acme"}
    assert err["response_headers"] == {"x-request-bytes": "0"}  # set-cookie was answered, not kept
    assert (err["src_name_aggr"], err["dest_service_name"], err["dest_service_namespace"], err["host"]) == (
        "client-5f7d8-*", "web", "shop", "n1")
    assert err["url"] == "10.96.0.10/status/{int}/pay"
    (slow,) = by_id("slow-1")
    assert (slow["reason"], slow["sample_rate"], slow["response_code"]) == ("slow", 1, "200")
    assert slow["duration_us"] >= 600_000
    assert (slow["trace_id"], slow["span_id"], slow["trace_format"]) == (B3_TRACE, B3_SPAN, "b3")
    assert slow["request_headers"] == {}  # the slow request sent no x-tenant
    assert SECRET not in json.dumps([err, slow])
    logged = log.read_text()
    assert '"req:x-tenant":"acme"' in logged and TP_ERR in logged  # the detail object is logged
    assert SECRET not in logged  # Envoy never logged a redacted header

    # the drill-down of the success record: the slow one, plus the sampled share of the rest
    hits = call(t, n1, "/api/v1/l7/logs/search", body, token_file)["hits"]
    ok_records = [h for h in hits if h["response_code"] == "200"]
    assert sum(h["count"] for h in ok_records) == N_OK + 1
    expected = {f"ok-{i}" for i in range(N_OK) if dc.sampled(f"ok-{i}", ONE_IN)}

    def drilled() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for h in ok_records:
            key = {f: h[f] for f in dc.DRILL_FIELDS}
            out += call(t, n1, dc.REQUESTS_PATH, {"record": key, "limit": 1000}, token_file)["requests"]
        return out

    wait_until(lambda: len(drilled()) == len(expected) + 1, 20, 0.3)
    reqs = drilled()
    sampled = [r for r in reqs if r["reason"] == "sampled"]
    assert {r["request_id"] for r in sampled} == expected
    assert all(r["sample_rate"] == ONE_IN and r["request_headers"] == {"x-tenant": "acme"} for r in sampled)
    estimate = sum(r["sample_rate"] for r in reqs)  # sampled x rate, plus the slow one (rate 1)
    assert estimate == ONE_IN * len(expected) + 1
    print(f"{len(sampled)} of {N_OK} successes sampled (1 in {ONE_IN}): estimate {estimate} "
          f"for {N_OK + 1} requests ({(estimate - N_OK - 1) / (N_OK + 1):+.1%})")
    assert abs(estimate - (N_OK + 1)) <= 0.35 * (N_OK + 1)  # binomial: sd ~ 13 % at this size

    # the counters: everything the collector picked reached the server, nothing dropped
    def stats(port: int) -> dict[str, Any]:
        out = t.run(n1, ["curl", "-s", "--noproxy", "*", "-m", "5", f"http://127.0.0.1:{port}/stats"])
        got: dict[str, Any] = json.loads(out.stdout)
        return got

    kept = len(expected) + 2
    c = stats(COLLECTOR_STATUS)
    assert (c["details_picked"], c["details_sent"], c["details_dropped"]) == (kept, kept, 0)
    wait_until(lambda: stats(NODE_STATUS)["details_shipped"] == kept, 10, 0.2)
    a = stats(NODE_STATUS)
    assert (a["details_received"], a["details_kept"], a["details_off"], a["details_dropped"],
            a["details_bad"], a["details_ship_dropped"]) == (kept, kept, 0, 0, 0, 0)
