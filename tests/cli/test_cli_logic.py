"""Unit tests of the pure parts of the CLI: the follow cursor, flag -> selector translation and
local evaluation, table layout, status judgements, the state file, cluster pod parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l7scope.contracts import demo_state
from l7scope.observe import filters
from l7scope.observe.filters import FilterError, FilterSpec
from l7scope.observe.follow import FollowCursor
from l7scope.observe.printer import column_widths, human_ns, safe
from l7scope.status.cluster import annotated, nodes_without_pod, pod_parts
from l7scope.status.probe import (
    PartStatus,
    counters_of,
    judge_envoy,
    judge_service,
    node_agent_warnings,
)


def rec(end: int, url: str = "/a", **kw: object) -> dict[str, object]:
    return {"end_time": end, "url": url, "count": 1, **kw}


# --- follow cursor -----------------------------------------------------------------------------


def test_cursor_prints_each_record_once_even_when_a_second_grows() -> None:
    c = FollowCursor(start=100, window=60)
    assert c.changed({101: 2, 100: 5}) == [101]  # 100 is not after the start
    first = c.accept(101, [rec(101, "/b"), rec(101, "/a")])
    assert [r["url"] for r in first] == ["/a", "/b"]  # sorted
    assert c.changed({101: 2}) == []
    # the same second gains a record, and an identical copy of a printed one
    again = c.accept(101, [rec(101, "/a"), rec(101, "/b"), rec(101, "/c"), rec(101, "/a")])
    assert [r["url"] for r in again] == ["/a", "/c"]
    assert c.counts[101] == 4


def test_cursor_counts_records_that_arrive_after_their_second_left_the_window() -> None:
    c = FollowCursor(start=100, window=10)
    c.accept(101, [rec(101)])
    c.accept(105, [rec(105), rec(105, "/x")])
    c.advance(c.range(now=112)[0])  # window is (102, 112]: second 101 leaves
    assert c.low == 102 and 101 not in c.counts and c.left_window == 1
    assert c.check_late(1) == 0
    assert c.check_late(3) == 2 and c.late == 2  # two arrived late for second 101 or 102
    assert c.check_late(3) == 0  # reported once
    c.advance(110)
    assert c.left_window == 3 and c.check_late(5) == 0  # 105's records are counted, not late


# --- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "selector"), [
    ("404", 'response_code = "404"'),
    ("5+", 'response_code =~ "5[0-9][0-9]"'),
    ("50+", 'response_code =~ "50[0-9]"'),
    ("503+", 'response_code = "503"'),
])
def test_status_values(value: str, selector: str) -> None:
    assert filters.condition("http-status", value, {}) == selector


@pytest.mark.parametrize("value", ["6+", "abc", "40", "4044", "+", ""])
def test_bad_status_values(value: str) -> None:
    with pytest.raises(FilterError):
        filters.condition("http-status", value, {})


def test_workload_names_match_kubernetes_aggregated_names() -> None:
    match = filters.compile_selector(filters.condition("from-workload", "cart", {}))
    assert match({"src_name_aggr": "cart-5c8d7f9b4-*"})  # Deployment
    assert match({"src_name_aggr": "cart-*"})  # DaemonSet
    assert match({"src_name_aggr": "cart"})  # a pod without generateName
    assert not match({"src_name_aggr": "cart-api-*"})  # another workload
    assert not match({"src_name_aggr": "carts-5c8d7f9b4-*"})


def test_hostile_values_stay_values() -> None:
    sel = filters.to_selector(FilterSpec({"to-service": ('shop/x" OR count > 0 OR method = "',)}))
    match = filters.compile_selector(sel)
    assert not match({"dest_service_name": "y", "dest_service_namespace": "shop", "count": 5})
    assert match({"dest_service_name": 'x" OR count > 0 OR method = "', "dest_service_namespace": "shop"})


def test_local_evaluation_follows_the_selector_language() -> None:
    m = filters.compile_selector('method IN ("POST", "PUT") AND NOT url =~ ".*/healthz" AND count >= 2')
    assert m({"method": "POST", "url": "a/x", "count": 2})
    assert not m({"method": "POST", "url": "a/healthz", "count": 2})
    assert not m({"method": "GET", "url": "a/x", "count": 2})
    assert not m({"method": "PUT", "url": "a/x", "count": 1})
    assert filters.compile_selector("")({})
    with pytest.raises(FilterError, match="position"):
        filters.compile_selector("count >")


def test_from_service_without_backends_matches_nothing() -> None:
    sel = filters.to_selector(FilterSpec({"from-service": ("shop/cart",)}), {"shop/cart": []})
    assert not filters.compile_selector(sel)({"count": 0, "src_namespace": "shop"})
    sel = filters.to_selector(FilterSpec({"from-service": ("shop/cart",)}),
                              {"shop/cart": [("shop", "cart-*")]})
    assert filters.compile_selector(sel)({"src_namespace": "shop", "src_name_aggr": "cart-*"})


# --- printing ----------------------------------------------------------------------------------


def test_control_characters_are_escaped() -> None:
    assert safe("a\x1b[31mb\x07\x9b") == "a\\x1b[31mb\\x07\\x9b"


def test_human_durations() -> None:
    assert [human_ns(v) for v in (0, 850_000, 12_340_000, 250_000_000, 1_240_000_000)] == \
        ["-", "850us", "12.3ms", "250ms", "1.24s"]


@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
def test_table_columns_fill_the_width(width: int) -> None:
    w = column_widths(width)
    used = sum(w) + (sum(1 for x in w if x) - 1)
    assert used == max(width, 72)  # below the minimum the table overflows rather than truncating to nothing
    assert w[-1] == (7 if width >= 88 else 0)  # MAX is the first to go


# --- status --------------------------------------------------------------------------------------


def test_judgements() -> None:
    assert judge_envoy((200, b"LIVE\n"), (200, b'{"stats":[{"name":"http.ingress.downstream_rq_total","value":7},'
                                              b'{"name":"http.admin.downstream_rq_total","value":3}]}')) == \
        (True, "ready (LIVE)", {"downstream_rq_total": 7})
    ok, state, _ = judge_envoy((503, b"PRE_INITIALIZING"), None)
    assert not ok and "503" in state
    ok, state, _ = judge_envoy(OSError("refused"), None)
    assert not ok and state.startswith("unreachable")
    ok, state, stats = judge_service((200, b'{"ok": true}'), (200, b'{"requests_seen": 3}'))
    assert ok and stats == {"requests_seen": 3}
    assert not judge_service((503, b'{"error": "stopping"}'), None)[0]
    assert node_agent_warnings({"capture_state": "withdrawn", "spool_batches": 2, "ship_error": "refused"}) == [
        "capture withdrawn (fail open: Envoy not ready)", "shipping: refused", "2 batches waiting in the spool"]
    assert node_agent_warnings({"capture_state": "active", "capture_bridged_clients": 3,
                                "capture": {"bridges": ["cni0"]}}) == [
        "3 pod(s) behind cni0 with br_netfilter not captured (fail open)"]


def test_counters_combine_the_parts_of_a_node() -> None:
    parts = [PartStatus("n", "collector", "a", stats={"requests_batched": 10, "requests_reported": 9,
                                                       "lines_skipped": 1, "bad_lines": 2}),
             PartStatus("n", "node-agent", "b", stats={"requests_seen": 9, "requests_logged": 8,
                                                        "requests_unlogged": 1, "records_spooled": 0,
                                                        "records_shipped": 4})]
    assert counters_of(parts) == {"seen": 10, "reported": 9, "skipped": 3, "logged": 8, "unlogged": 1,
                                  "spooled": 0, "shipped": 4}
    assert counters_of(parts[1:])["seen"] == 9 and counters_of(parts[1:])["reported"] is None


def test_state_file_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x" / "demo.json"
    monkeypatch.setenv(demo_state.STATE_ENV, str(path))
    assert demo_state.read_state() is None
    st = demo_state.State(server=demo_state.ServerPart(url="http://127.0.0.1:8686"), nodes=[
        demo_state.NodeParts(name="node-a", netns="ns-a", collector=demo_state.Part(addr="127.0.0.1:1"))])
    assert demo_state.write_state(st) == path
    assert demo_state.read_state() == st
    path.write_text('{"version": 1, "nodes": [{"name": "a", "bogus": 1}]}')
    with pytest.raises(demo_state.StateError, match="not an l7scope state file"):
        demo_state.read_state()
    demo_state.remove_state()
    assert not path.exists()
    assert demo_state.pid_alive(os.getpid())


def test_cluster_pod_parts_and_annotations() -> None:
    pod = {"metadata": {"name": "l7-log-collector-abc"}, "spec": {"nodeName": "node-a"},
           "status": {"phase": "Running", "containerStatuses": [
               {"name": "envoy-proxy", "ready": True, "restartCount": 0, "state": {"running": {}}},
               {"name": "l7-collector", "ready": False, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    parts = {p.part: p for p in pod_parts(pod)}
    assert parts["envoy"].healthy and parts["envoy"].state == "running, ready"
    assert not parts["collector"].healthy and parts["collector"].state == "waiting: CrashLoopBackOff"
    assert parts["collector"].warnings == ["3 restarts"]
    assert not parts["node-agent"].healthy and "no container status" in parts["node-agent"].state
    svcs = [{"metadata": {"namespace": "shop", "name": "cart", "annotations": {"projectcalico.org/l7-logging": "true"}}},
            {"metadata": {"namespace": "shop", "name": "web", "annotations": {"l7scope.io/logging": "true"}}},
            {"metadata": {"namespace": "shop", "name": "db"}}]
    assert annotated(svcs) == ["shop/cart", "shop/web"]


def test_nodes_the_daemonset_targets_without_a_pod() -> None:
    ds = {"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}}}
    nodes = [{"metadata": {"name": n, "labels": {"kubernetes.io/os": os_}}}
             for n, os_ in (("a", "linux"), ("b", "linux"), ("w", "windows"))]
    assert nodes_without_pod(ds, nodes, {"a"}) == ["b"]
