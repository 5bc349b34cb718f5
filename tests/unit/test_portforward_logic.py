"""The pure parts of `-P/--port-forward` and `l7scope dashboard` (observe/portforward.py,
observe/dashboard.py, the handshake parsing of kube/client.py) and the loopback forwarder
(kube/forward.py) with an injected dialer: pod choice, target ports, URLs, error messages."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from l7scope.kube.client import _handshake_message
from l7scope.kube.forward import Forwarder
from l7scope.observe.client import ApiError
from l7scope.observe.dashboard import login_link
from l7scope.observe.portforward import (
    ReachError,
    choose_pod,
    describe_pods,
    forbidden,
    label_selector,
    portforward_denied,
    target_port,
)


def pod(name: str, *, ready: bool = True, phase: str = "Running", since: str = "2026-12-04T10:00:00Z",
        deleting: bool = False, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T11:00:00Z"
    return {"metadata": meta,
            "spec": {"containers": [{"name": "server", "ports": ports or []}]},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False",
                 "lastTransitionTime": since}]}}


def test_choose_pod_takes_a_ready_running_pod_not_being_deleted() -> None:
    assert choose_pod([]) is None
    assert choose_pod([pod("a", ready=False), pod("b", phase="Pending", ready=True)]) is None
    assert choose_pod([pod("a", deleting=True)]) is None
    got = choose_pod([pod("old", deleting=True), pod("new"), pod("starting", ready=False)])
    assert got is not None and got["metadata"]["name"] == "new"


def test_choose_pod_prefers_the_longest_ready_then_the_name() -> None:
    pods = [pod("c", since="2026-12-04T10:05:00Z"), pod("b", since="2026-12-04T10:01:00Z"),
            pod("a", since="2026-12-04T10:01:00Z")]
    for order in (pods, pods[::-1]):
        got = choose_pod(order)
        assert got is not None and got["metadata"]["name"] == "a"


def test_describe_pods_says_why_each_is_not_used() -> None:
    assert describe_pods([pod("s-0", ready=False, phase="Running"), pod("s-1", deleting=True)]) == \
        "s-0 (Running, not ready), s-1 (Running, being deleted)"


def svc(*ports: dict[str, Any], selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"spec": {"selector": selector if selector is not None else {"b": "2", "a": "1"},
                     "ports": list(ports)}}


def test_target_port_number_name_and_default() -> None:
    p = pod("s", ports=[{"name": "https", "containerPort": 9443}])
    assert target_port(svc({"port": 8686, "targetPort": 8686}), p, 8686) == 8686
    assert target_port(svc({"port": 8686, "targetPort": "9000"}), p, 8686) == 9000
    assert target_port(svc({"port": 8686, "targetPort": "https"}), p, 8686) == 9443
    assert target_port(svc({"port": 8686}), p, 8686) == 8686
    # a Service whose port differs: its only port is the one
    assert target_port(svc({"port": 443, "targetPort": 8686}), p, 8686) == 8686
    with pytest.raises(ReachError, match="targetPort 'web' names no container port of pod s"):
        target_port(svc({"port": 8686, "targetPort": "web"}), p, 8686)


def test_label_selector_is_sorted_and_empty_without_one() -> None:
    assert label_selector(svc()) == "a=1,b=2"
    assert label_selector(svc(selector={})) == ""


def test_messages_name_the_missing_permission() -> None:
    msg = portforward_denied("l7scope-system", "l7scope-server-0", ["create"], "forbidden")
    assert "`create` on `pods/portforward`" in msg and "`get`" not in msg.split("e.g.")[0]
    assert 'verbs: ["create"]' in msg and "l7scope-server-0" in msg
    both = portforward_denied("ns", "p", [], "forbidden")  # unknown which: both verbs
    assert "`get` and `create` on `pods/portforward`" in both and 'verbs: ["get", "create"]' in both
    assert forbidden("list", "pods", "l7scope-system") == (
        "the Kubernetes API refused to list pods in namespace l7scope-system: your user needs "
        "`list` on `pods` there (RBAC: a Role in l7scope-system bound to you)")


def test_login_link_uses_only_the_servers_login_path() -> None:
    base = "https://127.0.0.1:8686"
    assert login_link(base + "/", {"path": "/login?code=abc_-1"}) == base + "/login?code=abc_-1"
    for bad in ({"path": "https://evil.example/login?code=x"}, {"path": "/api?code=x"}, {}):
        with pytest.raises(ApiError):
            login_link(base, bad)


def test_handshake_message_is_the_api_servers_message() -> None:
    text = ('Handshake status 403 Forbidden -+-+- {"content-type": "application/json"} -+-+- '
            'b\'{"kind":"Status","status":"Failure","message":"pods \\\\"s-0\\\\" is forbidden: '
            'User \\\\"u\\\\" cannot get resource \\\\"pods/portforward\\\\"","code":403}\'')
    assert _handshake_message(text) == ('pods "s-0" is forbidden: User "u" cannot get resource '
                                        '"pods/portforward"')
    assert _handshake_message("Connection refused") == "Connection refused"


# ---- the forwarder, with an in-process "pod" ---------------------------------------------------
class EchoStream:
    """A dialed stream whose far end upper-cases what it gets (a stand-in for the pod)."""

    def __init__(self, opened: list[EchoStream]) -> None:
        self.sock, far = socket.socketpair()
        self.closed = False
        opened.append(self)

        def serve() -> None:
            with far:
                while data := far.recv(65536):
                    far.sendall(data.upper())
        threading.Thread(target=serve, daemon=True).start()

    def error(self) -> str | None:
        return None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_forwarder_copies_both_ways_and_closes_the_stream() -> None:
    opened: list[EchoStream] = []
    with Forwarder(lambda: EchoStream(opened)) as fw:
        with socket.create_connection((fw.host, fw.port), timeout=5) as c:
            c.sendall(b"hello " * 50_000)
            got = b""
            while len(got) < 300_000:
                got += c.recv(65536)
            assert got == b"HELLO " * 50_000
        deadline = time.monotonic() + 5
        while fw.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fw.active == 0 and opened[0].closed
        assert fw.stats.accepted == 1 and fw.stats.bytes_out == fw.stats.bytes_in == 300_000


def test_forwarder_bounds_connections_and_counts_failed_dials() -> None:
    opened: list[EchoStream] = []
    with Forwarder(lambda: EchoStream(opened), max_connections=2) as fw:
        a = socket.create_connection((fw.host, fw.port), timeout=5)
        b = socket.create_connection((fw.host, fw.port), timeout=5)
        for s in (a, b):
            s.sendall(b"x")
            assert s.recv(1) == b"X"
        with socket.create_connection((fw.host, fw.port), timeout=5) as c:  # over the cap
            assert c.recv(1) == b""
        assert fw.stats.refused_over_cap == 1 and fw.active == 2
        a.close()
        b.close()

    def refuse() -> EchoStream:
        raise RuntimeError("403 Forbidden: pods/portforward")
    with Forwarder(refuse) as fw:
        with socket.create_connection((fw.host, fw.port), timeout=5) as c:
            assert c.recv(1) == b""  # closed: the pod could not be reached
        assert fw.stats.dial_failures == 1 and "pods/portforward" in fw.stats.last_error
