"""The whole node pipeline on the real data path: client pod -> TPROXY -> Envoy -> collector ->
`l7scope node` (capture + enrichment + aggregation) -> `l7scope server`. Every request a client
sends to the annotated Service is in the server exactly once, enriched with the pods' and the
Service's names; the same Envoy log through `collector replay | node aggregate` gives the same
total.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from capture_support import client_and_web, server_post, topology
from test_node_capture import wait_until, write_inventory

from l7scope.capture import tproxy
from l7scope.contracts.auth import ensure_token

pytestmark = [pytest.mark.netns, pytest.mark.envoy]

SERVER_PORT = 18686  # inside n1's own network namespace: no clash with other tests


def search(t: Any, node: Any, body: dict[str, Any], token_file: Path) -> dict[str, Any]:
    return server_post(t, node, SERVER_PORT, "/api/v1/l7/logs/search", body, token_file)


def test_requests_reach_the_server_exactly_once_enriched(request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    t = topology(request)
    n1, client, web = client_and_web(t)
    envoy = t.start_envoy(n1)
    inv = tmp_path / "inventory"
    inv.mkdir()
    write_inventory(inv, t, {"web"})
    settings = tmp_path / "node.yaml"
    settings.write_text(yaml.safe_dump({
        "tproxyMode": "Enabled", "policySyncPathPrefix": str(tmp_path / "nodeagent"),
        "l7LogsFileDirectory": str(tmp_path / "l7logs")}))
    token_file = tmp_path / "store" / "token"
    ensure_token(token_file)
    t.popen(n1, t.python("l7scope", "server", "--port", str(SERVER_PORT),
                         "--data-dir", str(tmp_path / "store")))
    t.popen(n1, t.python("l7scope", "node", "--settings", str(settings), "--inventory", str(inv),
                         "--node-name", "n1", "--envoy-admin",
                         f"http://{envoy.settings.admin_address}",
                         "--server", f"http://127.0.0.1:{SERVER_PORT}",
                         "--server-token-file", str(token_file),
                         "--data-dir", str(tmp_path / "agent")))
    log = Path(envoy.settings.access_log_path)
    t.popen(n1, t.python("l7scope", "collector", "--envoy-log", str(log), "--dial-target",
                         str(tmp_path / "nodeagent" / "socket"), "--interval", "1",
                         "--requests-per-interval", "-1", "--node-name", "n1",
                         "--no-checkpoint"))
    wait_until(lambda: bool((s := tproxy.installed(netns=n1.netns)) and s.services), 20)
    wait_until(lambda: bool(search(t, n1, {"page_size": 1}, token_file)), 30, 0.3)

    plan = [{"method": m, "path": p} for m, p in
            [("GET", "/api/items/1?x=1"), ("GET", "/api/items/2"), ("POST", "/status/500/a"),
             ("GET", "/status/404/b")] * 75]
    proc = t.popen(client, t.python("l7scope.netlab.loadgen", "--target", web.address),
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(json.dumps(plan), timeout=120)
    results = json.loads(out)
    assert results["errors"] == 0 and len(results["results"]) == 300
    sent_at = time.monotonic()

    body = {"time_range": {"from": 0, "to": "now"}, "page_size": 100}
    took = wait_until(lambda: search(t, n1, body, token_file).get("total_requests") == 300, 20, 0.2)
    time.sleep(2.5)  # nothing else arrives later (no double counting)
    answer = search(t, n1, body, token_file)
    assert answer["total_requests"] == 300
    print(f"300 requests visible in the server {took + 0.0:.1f} s after the client finished "
          f"(collector interval 1 s, flush 1 s)")
    hits = answer["hits"]
    by_url: dict[tuple[str, str, str], int] = {}
    for h in hits:
        assert (h["src_name_aggr"], h["src_namespace"], h["src_type"]) == \
            ("client-5f7d8-*", "shop", "wep")
        assert (h["dest_name_aggr"], h["dest_namespace"], h["dest_type"]) == \
            ("web-5f7d8-*", "shop", "wep")
        assert (h["dest_service_name"], h["dest_service_namespace"], h["dest_service_port"],
                h["dest_service_port_name"]) == ("web", "shop", 80, "http")
        assert h["host"] == "n1" and h["duration_mean"] > 0 and h["duration_p50"] > 0
        key = (h["method"], h["url"], h["response_code"])
        by_url[key] = by_url.get(key, 0) + h["count"]
    # route templates (on by default): the numeric segments are `{int}`, both item pages one route
    assert by_url == {("GET", "10.96.0.10/api/items/{int}", "200"): 150,
                      ("POST", "10.96.0.10/status/{int}/a", "500"): 75,
                      ("GET", "10.96.0.10/status/{int}/b", "404"): 75}
    assert time.monotonic() - sent_at < 30

    # Offline: the same Envoy log through `collector replay | node aggregate`.
    replay = subprocess.run(t.python("l7scope", "collector", "replay", str(log),
                                     "--interval", "60"), capture_output=True, check=True)
    agg = subprocess.run(t.python("l7scope", "node", "aggregate", "--inventory", str(inv),
                                  "--node-name", "n1"), input=replay.stdout,
                         capture_output=True, check=True)
    records = [json.loads(line) for line in agg.stdout.splitlines()]
    assert sum(r["count"] for r in records) == 300
    assert {r["dest_service_name"] for r in records} == {"web"}
