"""The demo's exit paths (issue 19): a second signal during the teardown (Ctrl-C twice, then
SIGTERM and more Ctrl-C while it removes things) must not abandon it, and a run after a SIGKILLed
one stops what the killed run left, found by the run marker (demo/reaper.py). The other paths
(duration reached, one Ctrl-C, SIGKILL then a new run) are in test_demo_netns.py; every path
ends with the same check: no process, namespace, nftables table or mount of the run remains."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from demo_harness import DemoRun, free_port, mounts_mentioning, processes_mentioning

from l7scope.demo import reaper

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(600)]


def _netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if ln.startswith(f"{prefix}-")]


def _nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def assert_nothing_left(prefix: str, data: Path, tables_before: str) -> None:
    assert _netns_with(prefix) == []
    assert _nft_tables() == tables_before
    assert processes_mentioning(str(data)) == []
    assert processes_mentioning(f"{prefix}-") == []
    assert reaper.marked(lambda v: v.startswith(f"{prefix}:")) == []
    assert mounts_mentioning(f"{prefix}-", str(data)) == []


def test_signals_during_the_teardown_do_not_abandon_it(require_netns: None, tmp_path: Path) -> None:
    prefix = f"dt{os.getpid()}"
    data = tmp_path / "data"
    tables_before = _nft_tables()
    run = DemoRun(["--port", str(free_port()), "--prefix", prefix, "--rate", "5"], data,
                  tmp_path / "state.json")
    try:
        run.wait_for_url(300)
        server_pid = int((data / "server.pid").read_text())
        time.sleep(3)
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C: stop the load, drain
        run.wait_for_line(re.compile(r"stopping: waiting"), 60)
        # Ctrl-C again: skip the drain, tear down; the SIGTERM right behind it is pending when
        # the first handler starts the teardown, so it lands during the teardown however fast
        # that is (a teardown shorter than this process's scheduling delay left the later
        # signals of the loop below nothing to hit)
        os.killpg(run.proc.pid, signal.SIGINT)
        os.killpg(run.proc.pid, signal.SIGTERM)
        run.wait_for_line(re.compile(r"interrupted: removing"), 60)
        sent = 0
        while run.proc.poll() is None and sent < 400:  # during the whole teardown
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.proc.pid, (signal.SIGTERM, signal.SIGINT)[sent % 2])
            sent += 1
            time.sleep(0.05)
        code = run.wait(180)
    finally:
        run.kill()
    text = run.text()
    # the teardown ran to its end although signals kept coming; one after it may end the process
    assert code in (0, -signal.SIGTERM, -signal.SIGINT, 1), text[-3000:]
    assert "ignored: still removing" in text, text[-3000:]
    assert "cleanup incomplete" not in text, text[-2000:]
    assert text.index("ignored: still removing") < text.index("cleaned up")
    assert not Path(f"/proc/{server_pid}/stat").exists() or \
        Path(f"/proc/{server_pid}/stat").read_text().split(") ", 1)[1][:1] == "Z"
    assert_nothing_left(prefix, data, tables_before)


def test_a_new_run_reaps_what_a_killed_run_left(require_netns: None, tmp_path: Path) -> None:
    prefix = f"dk{os.getpid()}"
    data = tmp_path / "data"
    port = free_port()
    tables_before = _nft_tables()
    first = DemoRun(["--port", str(port), "--prefix", prefix, "--rate", "2"], data,
                    tmp_path / "state.json")
    try:
        first.wait_for_url(300)
        first_id = reaper.run_id(prefix, first.proc.pid)
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        left = reaper.marked(lambda v: v == first_id)
        assert left, "a SIGKILLed run leaves its (marked) processes behind"
        second = DemoRun(["--duration", "5", "--port", str(port), "--prefix", prefix,
                          "--rate", "2"], data, tmp_path / "state.json")
        try:
            assert second.wait(300) == 0, second.text()[-3000:]
        finally:
            second.kill()
        assert "processes a killed run left behind" in second.text()
        assert all(not reaper._alive(p) for p in left)
    finally:
        first.kill()
    assert_nothing_left(prefix, data, tables_before)
