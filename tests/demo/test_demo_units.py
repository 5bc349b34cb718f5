"""Unit tests of the demo's pure parts: counts, faults, redis protocol, pacing, topology YAML,
the loopback Envoy bootstrap, and the probe's reading of the service graph."""

from __future__ import annotations

import io
import json
import random
import socket
import threading
from pathlib import Path

import pytest
import yaml

from l7scope.demo import loopback, probe, topology
from l7scope.demo.loadgen import Pacer
from l7scope.demo.shop import catalog, faults
from l7scope.demo.shop.counts import CallCounts, CountsWriter, read_totals
from l7scope.demo.shop.redis_cart import ProtocolError, Reader, RedisClient, RedisServer, Store
from l7scope.node.inventory import Inventory
from l7scope.node.metadata import MetadataCache
from l7scope.node.selection import select
from l7scope.proxy.bootstrap import EnvoySettings


def test_counts_files_sum_per_edge(tmp_path: Path) -> None:
    a, b = CallCounts("frontend"), CallCounts("checkoutservice")
    a.completed("cartservice", 3)
    a.failed("adservice")
    b.completed("cartservice", 2)
    wa, wb = CountsWriter(a, tmp_path, period_s=60), CountsWriter(b, tmp_path, period_s=60)
    a.completed("cartservice")  # written by stop()
    wa.stop()
    wb.stop()
    (tmp_path / "broken.json").write_text("{not json")
    t = read_totals(tmp_path)
    assert t.completed[("frontend", "cartservice")] == 4
    assert t.completed[("checkoutservice", "cartservice")] == 2
    assert t.total_completed == 6 and t.total_failed == 1
    assert t.unreadable == ["broken.json"]


def test_fault_decisions_follow_the_random_source() -> None:
    f = faults.Fault(error_rate=0.5, error="INTERNAL", slow_rate=0.5, slow_s=(0.1, 0.2))
    rng = random.Random(7)
    outcomes = [f.decide(rng) for _ in range(2000)]
    errors = sum(1 for _, e in outcomes if e)
    slow = [d for d, _ in outcomes if d]
    assert 850 < errors < 1150 and 850 < len(slow) < 1150
    assert all(0.1 <= d <= 0.2 for d in slow)
    assert faults.fault_for("nosuch", "Method").decide(rng) == (0.0, None)


def test_redis_store_and_reader() -> None:
    s = Store()
    assert s.execute([b"SET", b"k", b"v"]) == b"+OK\r\n"
    assert s.execute([b"GET", b"k"]) == b"$1\r\nv\r\n"
    assert s.execute([b"DEL", b"k"]) == b":1\r\n"
    assert s.execute([b"GET", b"k"]) == b"$-1\r\n"
    assert s.execute([b"FLUSHALL"]).startswith(b"-ERR")
    with pytest.raises(ProtocolError):
        Reader(io.BytesIO(b"?what\r\n")).read()
    with pytest.raises(ProtocolError):
        Reader(io.BytesIO(b"*999\r\n")).read()


def test_redis_server_one_connection_per_operation() -> None:
    srv = RedisServer(("127.0.0.1", 0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = RedisClient(srv.server_address[:2])  # type: ignore[arg-type]
        with client.connect() as sock:
            assert client.run(sock, (b"SET", b"cart:u", b"{}"), (b"GET", b"cart:u")) == ["OK", b"{}"]
        with socket.create_connection(srv.server_address[:2]) as raw:  # type: ignore[arg-type]
            raw.sendall(b"garbage\r\n")
            assert raw.recv(100).startswith(b"-ERR")
    finally:
        srv.shutdown()
        srv.server_close()


def test_pacer_spaces_sends_and_stops() -> None:
    now = [100.0]
    p = Pacer(4.0, clock=lambda: now[0])
    assert [p.take() for _ in range(3)] == [100.0, 100.25, 100.5]
    now[0] = 200.0  # after a long stall it does not burst more than a second's worth
    assert p.take() == 199.0
    p.stopped.set()
    assert p.take() is None and p.wait() is False


def test_pacer_with_a_limit_hands_out_exactly_that_many() -> None:
    p = Pacer(1000.0, clock=lambda: 0.0, limit=3)
    assert [p.take() is not None for _ in range(5)] == [True, True, True, False, False]
    assert p.wait() is False and not p.stopped.is_set()
    with pytest.raises(ValueError):
        Pacer(1.0, limit=0)


def test_inventory_is_what_the_node_agent_selects(tmp_path: Path) -> None:
    pods = topology.plan_pods(random.Random(1))
    assert {p.node for p in pods} == set(topology.NODES)
    assert len({p.name for p in pods}) == len(catalog.SERVICES) + 1
    ips = {p.name: f"10.244.{topology.NODES.index(p.node)}.{i + 2}" for i, p in enumerate(pods)}
    vips = {s.name: f"10.96.0.{10 + i}" for i, s in enumerate(catalog.SERVICES)}
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump_all(topology.inventory(pods, ips, vips)))
    cache = MetadataCache()
    Inventory(tmp_path, cache).poll()
    assert cache.stats.counts["services"] == 11 and cache.stats.counts["pods"] == 12
    sel = select(cache, "Enabled", "node-a")
    for s in catalog.SERVICES:  # every Service is annotated: its VIP:port is captured
        assert (vips[s.name], s.port) in sel.services
    local = {f"{ips[p.name]}/32" for p in pods if p.node == "node-a"}
    assert sel.clients == frozenset(local)
    pod = next(p for p in cache.pods() if p.name == pods[0].name)
    assert pod.name_aggr == pods[0].generate_name + "*"


def test_unprivileged_ports_move_up() -> None:
    fe = catalog.BY_NAME["frontend"]
    assert topology.service_port(fe, unprivileged=False) == 80
    assert topology.service_port(fe, unprivileged=True) == 8080
    assert topology.service_port(catalog.BY_NAME["cartservice"], unprivileged=True) == 7070


def test_explicit_bootstrap_has_a_listener_and_static_clusters_per_service() -> None:
    boot = loopback.render_explicit(EnvoySettings(access_log_path="/tmp/x.log"), [
        ("cartservice", "127.1.2.2", 7070, "127.1.1.2", 7070),
        ("frontend", "127.1.2.3", 8080, "127.1.1.3", 8080)])
    listeners = boot["static_resources"]["listeners"]
    assert [lst["address"]["socket_address"] for lst in listeners] == [
        {"address": "127.1.2.2", "port_value": 7070}, {"address": "127.1.2.3", "port_value": 8080}]
    assert all("transparent" not in lst for lst in listeners)
    text = json.dumps(listeners)
    assert "original_dst" not in text and "svc_cartservice_h2c" in text
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    assert set(clusters) == {"svc_cartservice", "svc_cartservice_h2c", "svc_frontend",
                             "svc_frontend_h2c"}
    ep = clusters["svc_frontend"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert ep["endpoint"]["address"]["socket_address"] == {"address": "127.1.1.3",
                                                           "port_value": 8080}


def test_probe_reads_services_and_edges_from_the_graph() -> None:
    graph = {"nodes": [{"id": "svc/default/cartservice"}, {"id": "wep/default/frontend-1-*"},
                       {"id": "namespace/other"}],
             "edges": [{"source": "wep/default/frontend-1-*", "target": "svc/default/cartservice",
                        "kind": "traffic"},
                       {"source": "svc/default/cartservice", "target": "wep/default/cart-2-*",
                        "kind": "backend"}]}
    assert probe.graph_services(graph) == {"cartservice"}
    app = {"frontend-1-*": "frontend"}.get
    assert probe.graph_edges(graph, app) == {("frontend", "cartservice")}


def test_snapshot_line_names_every_number() -> None:
    s = probe.Snapshot(sent=10, captured=10, stored=9, drops={"node-a reports_dropped": 1})
    line = s.line()
    assert "requests sent 10" in line and "captured 10" in line and "logged 9" in line
    assert "reports_dropped 1" in line
    assert probe.collector_captured({"requests_batched": 5, "lines_read": 6}) == 5
    assert probe.collector_captured({"nothing": 1}) is None


def test_help_has_examples_and_the_fallback() -> None:
    from click.testing import CliRunner

    from l7scope.cli import main

    res = CliRunner().invoke(main, ["demo", "--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:" in res.output and "--no-netns" in res.output
    assert "l7scope demo --rate 20 --duration 60" in res.output


def test_without_root_the_error_points_to_the_fallback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l7scope.demo import netns, runner, session

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    d = runner.Demo(session.DemoOptions(data_dir=tmp_path))
    with pytest.raises(session.DemoError, match="--no-netns"):
        d.start()
    d.close()


def test_a_running_demo_with_the_same_prefix_is_not_cleaned_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from l7scope.contracts import demo_state
    from l7scope.demo import netns, session

    monkeypatch.setenv(demo_state.STATE_ENV, str(tmp_path / "state.json"))
    other = subprocess.Popen(["sleep", "30"])
    try:
        demo_state.write_state(demo_state.State(demo_pid=other.pid, nodes=[
            demo_state.NodeParts(name="node-a", netns="l7demo-node-a")]))
        with pytest.raises(session.DemoError, match=f"pid {other.pid}"):
            netns.refuse_if_running("l7demo")
        netns.refuse_if_running("otherprefix")  # a different demo: fine
    finally:
        other.kill()
        other.wait()
    netns.refuse_if_running("l7demo")  # its process is gone: a crash, clean it up


def test_all_stored_needs_what_the_collectors_read_too() -> None:
    # the shop's own count is reached by outside requests before the shop's last interval
    assert not probe.Snapshot(sent=100, captured=5100, stored=5000).all_stored()
    assert probe.Snapshot(sent=100, captured=5100, stored=5100).all_stored()
    assert not probe.Snapshot(sent=100, captured=90, stored=95).all_stored()  # shop short
    assert probe.Snapshot(sent=100, captured=None, stored=100).all_stored()  # no collector stats
    assert not probe.Snapshot(sent=100, captured=100, stored=None).all_stored()  # server down
