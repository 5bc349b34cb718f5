"""The agent end to end without root: Report() over the real unix socket -> enrich -> aggregate
-> l7.log + shipping to a local bulk server; socket permissions; intake overflow counted; status
endpoint; settings re-read live."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from test_node_shipper import BulkServer, wait_for

from l7scope.contracts import policysync
from l7scope.contracts import policysync_pb2 as pb
from l7scope.contracts import policysync_pb2_grpc as pb_grpc
from l7scope.node.agent import Agent, AgentConfig
from l7scope.node.policysync_server import PolicySyncServer
from l7scope.testing.node_inputs import http_data, report, shop


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[BulkServer]:
    s = BulkServer()
    yield s
    s.close()


def write_settings(path: Path, tmp: Path, **extra: object) -> None:
    spec = {"policySyncPathPrefix": str(tmp / "nodeagent"), "l7LogsFileDirectory": str(tmp / "logs"),
            "l7LogsFlushInterval": "200ms", **extra}
    path.write_text(yaml.safe_dump({"apiVersion": "projectcalico.org/v3",
                                    "kind": "FelixConfiguration", "spec": spec}))


def test_report_to_server_and_l7log(server: BulkServer, tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "shop.yaml").write_text(yaml.safe_dump_all(shop()))
    settings = tmp_path / "node.yaml"
    write_settings(settings, tmp_path)
    status = f"127.0.0.1:{free_port()}"
    agent = Agent(AgentConfig(node_name="node-a", settings_path=str(settings),
                              inventory_dir=str(inv), server_url=server.url,
                              status_addr=status, data_dir=str(tmp_path / "data")))
    agent.start()
    try:
        sock = policysync.socket_path(tmp_path / "nodeagent")
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert not mode & stat.S_IWOTH
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        with grpc.insecure_channel(policysync.dial_target(sock)) as ch:
            stub = pb_grpc.PolicySyncStub(ch)
            r1 = stub.Report(report([http_data(path="/cart?id=1", count=3, duration_ms=6,
                                               duration_max_ms=3)]), timeout=5)
            r2 = stub.Report(report([], seen=4, sport=40001), timeout=5)  # overflow only
            assert r1.successful and r2.successful
        wait_for(lambda: server.count() == 7)
        recs = [r for b in server.batches.values() for r in b]
        detailed = [r for r in recs if r.method == "GET"]
        assert len(detailed) == 1
        r = detailed[0]
        assert (r.src_name_aggr, r.dest_name_aggr, r.dest_service_name, r.url, r.host) == \
            ("frontend-7bbcdbbcbf-*", "cart-5d9f8-*", "cart", "cart/cart", "node-a")
        assert (r.duration_mean, r.duration_max) == (2_000_000, 3_000_000)
        lines = (tmp_path / "logs" / "l7.log").read_text().splitlines()
        assert sum(json.loads(line)["count"] for line in lines) == 7
        st = httpx.get(f"http://{status}/stats").json()
        assert st["reports_received"] == 2 and st["requests_seen"] == 7
        assert st["requests_logged"] == 3 and st["capture_state"] == "disabled"
        assert httpx.get(f"http://{status}/healthz").json() == {"ok": True}
        # settings re-read live: exclude the method
        write_settings(settings, tmp_path, l7LogsFileAggregationHTTPMethod="ExcludeL7HTTPMethod")
        os.utime(settings, ns=(1, time.time_ns() + 10**9))
        time.sleep(0.6)
        with grpc.insecure_channel(policysync.dial_target(sock)) as ch:
            pb_grpc.PolicySyncStub(ch).Report(report([http_data(path="/z")]), timeout=5)
        wait_for(lambda: server.count() == 8)
        assert any(r.method == "-" for b in server.batches.values() for r in b)
    finally:
        agent.stop()
    assert not sock.exists()


def test_intake_full_refuses_and_counts(tmp_path: Path) -> None:
    import queue
    q: queue.Queue[pb.DataplaneStats] = queue.Queue(maxsize=1)
    srv = PolicySyncServer(tmp_path / "p", q, put_timeout=0.05)
    srv.start()
    try:
        with grpc.insecure_channel(policysync.dial_target(srv.path)) as ch:
            stub = pb_grpc.PolicySyncStub(ch)
            assert stub.Report(report([http_data(count=2)]), timeout=5).successful
            res = stub.Report(report([http_data(count=5)], seen=6), timeout=5)
            assert not res.successful
    finally:
        srv.stop()
    assert (srv.stats.reports_received, srv.stats.reports_dropped,
            srv.stats.requests_dropped) == (1, 1, 6)


def test_stop_flushes_and_leaves_unsent_batches_in_spool(tmp_path: Path) -> None:
    settings = tmp_path / "node.yaml"
    write_settings(settings, tmp_path, l7LogsFlushInterval="1h")
    agent = Agent(AgentConfig(node_name="n", settings_path=str(settings),
                              server_url="http://127.0.0.1:9", data_dir=str(tmp_path / "d")))
    agent.start()
    with grpc.insecure_channel(policysync.dial_target(agent.server.path)) as ch:
        pb_grpc.PolicySyncStub(ch).Report(report([http_data(count=2)]), timeout=5)
    time.sleep(0.3)
    agent.stop()
    spooled = list((tmp_path / "d" / "spool").glob("*.ndjson"))
    assert len(spooled) == 1
    assert sum(json.loads(x)["count"] for x in spooled[0].read_text().splitlines()) == 2


def test_feed_and_apply_settings(tmp_path: Path) -> None:
    from l7scope.contracts.nodeconfig import from_mapping
    from l7scope.node.metadata import MetadataCache
    from l7scope.testing.node_inputs import pod

    def feed(cache: MetadataCache, stop: object) -> None:
        cache.upsert(pod("fed-1", "x", "10.9.9.9"))

    settings = tmp_path / "node.yaml"
    write_settings(settings, tmp_path)
    agent = Agent(AgentConfig(node_name="n", settings_path=str(settings),
                              data_dir=str(tmp_path / "d"), feeds=[feed]))
    agent.start()
    try:
        agent.apply_settings(from_mapping({"l7LogsFlushInterval": "3s",
                                           "policySyncPathPrefix": str(tmp_path / "nodeagent"),
                                           "tproxyMode": "Disabled",
                                           "l7LogsFileEnabled": False}, local_paths=True))
        wait_for(lambda: agent.snapshot()["settings"]["l7LogsFlushInterval"] == 3.0)
        wait_for(lambda: agent.snapshot()["metadata"].get("pods") == 1)
    finally:
        agent.stop()


def test_policy_sync_chmods_only_a_directory_it_created(tmp_path: Path) -> None:
    import queue

    from l7scope.node.policysync_server import PolicySyncServer

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)  # (umask)
    created = tmp_path / "new" / "nodeagent"
    for prefix in (shared, created):
        srv = PolicySyncServer(prefix, queue.Queue(maxsize=1))
        srv.start()
        try:
            assert stat.S_IMODE(os.stat(prefix / "socket").st_mode) == 0o660
        finally:
            srv.stop()
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755  # existing: left alone
    assert stat.S_IMODE(os.stat(created).st_mode) == 0o700  # created by the server


def test_port_and_mark_changes_wait_for_a_restart(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    from l7scope.contracts.nodeconfig import from_mapping

    settings = tmp_path / "node.yaml"
    write_settings(settings, tmp_path, tproxyMode="Disabled")
    agent = Agent(AgentConfig(node_name="n", settings_path=str(settings),
                              data_dir=str(tmp_path / "d")))
    before = agent.capture.rules
    assert (before.tproxy_port, before.mark, before.upstream_mark) == (16001, 0x1000, 0x2000)
    agent.apply_settings(from_mapping({"tproxyMode": "Disabled", "tproxyPort": 15001,
                                       "tproxyUpstreamConnMark": 0x17}))
    with caplog.at_level(logging.WARNING, logger="l7scope.node.agent"):
        agent.control_step()
    # Envoy still listens on 16001 and marks with 0x2000: the rules must keep those
    assert agent.capture.rules == before and agent.capture.mode == "Disabled"
    assert any("takes effect after a restart" in r.getMessage() for r in caplog.records)
    assert agent.stats.control_errors == 0


def test_a_stopping_agent_leaves_the_socket_of_the_agent_that_replaced_it(tmp_path: Path) -> None:
    """A DaemonSet roll on one host path: the new pod's agent starts before the old pod's one
    stops. The old one must not remove (nor gRPC unlink) the new one's socket."""
    import queue

    old_q: queue.Queue[pb.DataplaneStats] = queue.Queue(maxsize=10)
    new_q: queue.Queue[pb.DataplaneStats] = queue.Queue(maxsize=10)
    old = PolicySyncServer(tmp_path / "p", old_q)
    new = PolicySyncServer(tmp_path / "p", new_q)
    old.start()
    new.start()
    try:
        assert new.owns_socket() and not old.owns_socket()
        old.stop()
        assert (tmp_path / "p" / "socket").exists()
        with grpc.insecure_channel(policysync.dial_target(new.path)) as ch:
            assert pb_grpc.PolicySyncStub(ch).Report(report([http_data(count=1)]), timeout=5).successful
        assert new_q.qsize() == 1 and old_q.qsize() == 0
        assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["socket"]
    finally:
        new.stop()
    assert not (tmp_path / "p" / "socket").exists()  # its own: removed


def test_stop_with_a_grace_takes_the_collectors_final_report(tmp_path: Path) -> None:
    """SIGTERM reaches the agent and the collector together: a regular Report just after the stop
    began does not close the intake before the collector's final one (sent after its 2 s wait
    for Envoy's exit); both are taken and flushed (spooled for the next run)."""
    import threading

    from l7scope.node.agent import FINAL_REPORT_QUIET_S

    settings = tmp_path / "node.yaml"
    write_settings(settings, tmp_path, l7LogsFlushInterval="1h")
    agent = Agent(AgentConfig(node_name="n", settings_path=str(settings),
                              server_url="http://127.0.0.1:9", data_dir=str(tmp_path / "d")))
    agent.start()
    answers: list[bool] = []

    def reports() -> None:
        with grpc.insecure_channel(policysync.dial_target(agent.server.path)) as ch:
            for delay in (0.3, 2.0):  # the interval's regular Report, then the final one
                time.sleep(delay)
                answers.append(pb_grpc.PolicySyncStub(ch).Report(report([http_data(count=3)]),
                                                                 timeout=5).successful)
    t = threading.Thread(target=reports)
    t.start()
    t0 = time.monotonic()
    agent.stop(report_grace=8.0)
    took = time.monotonic() - t0
    t.join()
    assert answers == [True, True]
    # FINAL_REPORT_QUIET_S after the last report (at 2.3 s), not the whole grace
    assert 2.3 + FINAL_REPORT_QUIET_S - 0.2 < took < 2.3 + FINAL_REPORT_QUIET_S + 1.0, took
    spooled = list((tmp_path / "d" / "spool").glob("*.ndjson"))
    assert sum(json.loads(x)["count"] for f in spooled for x in f.read_text().splitlines()) == 6
