"""The shop on its own (no Envoy): real pod processes on loopback addresses and the load
generator; every caller -> callee pair of Online Boutique gets traffic, nothing fails to connect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l7scope.demo.shop import catalog
from l7scope.demo.shop.counts import read_totals

pytestmark = pytest.mark.slow


def test_shop_calls_every_edge(tmp_path: Path) -> None:
    block = 20 + os.getpid() % 200  # own loopback addresses: parallel runs do not clash
    ip = {s.name: f"127.{block}.1.{i + 2}" for i, s in enumerate(catalog.SERVICES)}
    peers = [f"--peer={s.name}={ip[s.name]}:{s.target_port}" for s in catalog.SERVICES]
    counts, ready = tmp_path / "counts", tmp_path / "ready"
    ready.mkdir()
    procs = []
    try:
        for s in catalog.SERVICES:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "l7scope.demo.shop.pod", "--service", s.name,
                 "--listen", ip[s.name], *peers, "--counts-dir", str(counts),
                 "--ready-file", str(ready / s.name), "--seed", "5"],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{s.name}.log", "wb")))  # noqa: SIM115
        deadline = time.monotonic() + 90
        while len(list(ready.iterdir())) < len(catalog.SERVICES):
            assert time.monotonic() < deadline, "pods did not start"
            assert all(p.poll() is None for p in procs), "a pod exited"
            time.sleep(0.1)
        fe = catalog.BY_NAME["frontend"]
        lg = subprocess.Popen([sys.executable, "-m", "l7scope.demo.loadgen",
                               "--target", f"{ip['frontend']}:{fe.target_port}", "--rate", "30",
                               "--counts-dir", str(counts), "--seed", "5"])
        procs.append(lg)
        deadline = time.monotonic() + 60  # until every edge had traffic (a busy CI is slower)
        while set(read_totals(counts).completed) != catalog.edges():
            assert time.monotonic() < deadline, read_totals(counts).to_dict()
            time.sleep(0.5)
    finally:
        for p in reversed(procs):  # the load generator first: its requests finish
            p.terminate()
            if p is procs[-1]:
                p.wait(60)
        for p in procs:
            p.wait(15)
    totals = read_totals(counts)
    assert totals.total_failed == 0, totals.to_dict()
    assert all(p.returncode == 0 for p in procs)
    assert set(totals.completed) == catalog.edges(), totals.to_dict()
    # the pacing: never more than the rate (30/s) allows over the time it ran
    assert totals.completed[("loadgenerator", "frontend")] <= 30 * 61 + 30
