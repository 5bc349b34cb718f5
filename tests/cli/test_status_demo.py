"""`l7scope status` on the demo's own processes (the acceptance test of issue 8): the demo runs
with a prefix of its own and writes the state file where this test says; `status` shows every
part healthy with counters moving, then reports the collector this test stopped, exit code 1."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import L7SCOPE, free_port

from l7scope.contracts import demo_state
from l7scope.demo.runner import Demo
from l7scope.demo.session import DemoOptions


def status(state_file: Path) -> tuple[int, dict[str, Any]]:
    res = subprocess.run([L7SCOPE, "status", "--state-file", str(state_file), "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


@pytest.mark.netns
@pytest.mark.envoy
@pytest.mark.slow
def test_status_on_the_demo(require_netns: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state_file = tmp_path / "demo.json"
    monkeypatch.setenv(demo_state.STATE_ENV, str(state_file))
    demo = Demo(DemoOptions(port=free_port(), data_dir=tmp_path / "demo", rate=2.0, interval=1,
                            prefix=f"l7h8{os.getpid() % 10000}{secrets.token_hex(1)}"))
    try:
        demo.start()
        state = demo_state.read_state(state_file)
        assert state is not None and len(state.nodes) == 2

        deadline = time.monotonic() + 60
        while True:  # healthy, and records have made it to the server
            code, report = status(state_file)
            shipped = sum(c["shipped"] or 0 for c in report["counters"].values())
            if (code == 0 and shipped) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert code == 0, report
        parts = sorted((p["node"], p["part"]) for p in report["parts"])
        assert parts == [("-", "server"), *[(n.name, k) for n in sorted(state.nodes, key=lambda n: n.name)
                                            for k in ("collector", "envoy", "node-agent")]]
        assert all(p["healthy"] for p in report["parts"])
        for node, c in report["counters"].items():
            assert c["seen"] is not None and c["logged"] is not None, (node, c)
        assert shipped > 0
        annotated = report["annotated_services"]
        assert annotated["*"] and all(sorted(annotated[n.name]) == sorted(annotated["*"]) for n in state.nodes)

        # stop one node's collector: reported by name, exit code 1, the rest still healthy
        victim = state.nodes[1]
        assert victim.collector is not None and victim.collector.pid is not None
        os.kill(victim.collector.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while demo_state.pid_alive(victim.collector.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        code, report = status(state_file)
        assert code == 1
        bad = [(p["node"], p["part"]) for p in report["parts"] if not p["healthy"]]
        assert bad == [(victim.name, "collector")], report
        table = subprocess.run([L7SCOPE, "status", "--state-file", str(state_file)],
                               capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
        assert table.returncode == 1
        assert f"1 of 7 parts unhealthy: {victim.name}/collector" in table.stdout
    finally:
        demo.close()
    assert not state_file.exists()  # the demo removes its state file
