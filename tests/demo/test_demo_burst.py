"""An outside burst next to the demo's own traffic loses nothing (issue 18's acceptance).

`wrk` runs in the load generator pod's network namespace against the frontend Service's
`/_healthz` (answered by the frontend alone, so only the loadgenerator -> frontend edge grows),
a few thousand requests in seconds, while the shop keeps its own traffic. When the demo ends:
- every request the collectors read from Envoy's logs is in the store (`stored == captured`),
  and no drop counter moved;
- every one of the shop's own caller -> callee counts is in the store in full (the outside
  requests only add to loadgenerator -> frontend), and that edge holds at least the shop's count
  plus the requests wrk completed.

This found the demo's drain stopping at "stored >= the shop's own count": outside requests
reached that sum before the shop's last interval was shipped, so the summary said "counts
differ" while the shop's last requests were still on their way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from demo_harness import DemoRun, free_port

pytestmark = [pytest.mark.netns, pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(600)]

_FRONTEND = re.compile(r"Services:.*?\bfrontend\s+(\d+\.\d+\.\d+\.\d+:\d+)", re.DOTALL)
_WRK_TOTAL = re.compile(r"(\d+) requests in")


def _frontend_address(text: str) -> str:
    m = _FRONTEND.search(text)  # the progress line may be wrapped
    if m:
        return m.group(1)
    raise AssertionError("the demo printed no frontend address:\n" + text[-3000:])


def _netns(prefix: str, app: str) -> str:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    names = [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"{prefix}-{app}")]
    assert len(names) == 1, out
    return names[0]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (scripts/setup.sh installs it)")
def test_outside_burst_next_to_the_shop_loses_nothing(require_netns: None, tmp_path: Path) -> None:
    prefix = f"db{os.getpid()}"
    data = tmp_path / "data"
    run = DemoRun(["--duration", "40", "--port", str(free_port()), "--prefix", prefix, "--seed", "7",
                   "--rate", "5"], data, tmp_path / "state.json")
    try:
        run.wait_for_url(300)
        frontend = _frontend_address(run.text())
        ns = _netns(prefix, "loadgenerator")
        time.sleep(5)
        completed = 0
        for _ in range(2):  # two bursts, the second close to the end of the load
            wrk = subprocess.run(["ip", "netns", "exec", ns, "wrk", "-t1", "-c8", "-d3s",
                                  f"http://{frontend}/_healthz"],
                                 capture_output=True, text=True, timeout=60)
            assert wrk.returncode == 0, wrk.stderr
            m = _WRK_TOTAL.search(wrk.stdout)
            assert m, wrk.stdout
            completed += int(m.group(1))
            time.sleep(12)
        print(f"wrk completed {completed} requests to {frontend}/_healthz")
        assert completed > 1000, completed
        assert run.wait(300) == 0, run.text()[-3000:]
    finally:
        run.kill()

    summary = json.loads((data / "summary.json").read_text())
    print(f"sent {summary['sent']} captured {summary['captured']} stored {summary['stored']} "
          f"drops {summary['drops']}")
    assert summary["failed"] == 0, summary
    assert summary["drops"] == {}, summary
    assert summary["stored"] == summary["captured"], summary
    store, shop = summary["store_edges"], summary["counts"]["edges"]
    short = {k: (n, store.get(k, 0)) for k, n in shop.items() if store.get(k, 0) < n}
    assert short == {}, f"shop edges with fewer requests stored than made (shop, store): {short}"
    outside = "loadgenerator->frontend"
    assert store[outside] >= shop[outside] + completed, (store[outside], shop[outside], completed)
    assert {k for k in store if store[k] != shop.get(k, 0)} == {outside}, summary["edge_mismatches"]
