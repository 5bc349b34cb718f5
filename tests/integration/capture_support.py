"""Helpers shared by the capture integration tests (tests/integration/test_capture_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from l7scope.netlab import Topology, cleanup_stale


def read_log(path: str | Path) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_log(path: str | Path, n: int, timeout: float = 15.0, settle: float = 0.6
             ) -> list[dict[str, Any]]:
    """Wait until the log holds at least `n` lines, then a little longer to catch extras."""
    deadline = time.monotonic() + timeout
    lines = read_log(path)
    while len(lines) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = read_log(path)
    time.sleep(settle)
    return read_log(path)


def topology(request: pytest.FixtureRequest) -> Topology:
    """A fresh topology that is torn down when the test (or module) ends, pass or fail."""
    if os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("ip")):
        pytest.skip("needs root, nftables and iproute2")
    cleanup_stale()  # namespaces of crashed earlier runs (default prefixes, dead pids)
    topo = Topology()
    request.addfinalizer(topo.close)
    return topo


def self_signed_cert(workdir: Path, name: str) -> tuple[Path, Path]:
    """A throwaway EC certificate for `name` (CN and SAN): (cert.pem, key.pem) in workdir."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


# A grpcio client run inside a pod: argv[1] = target, argv[2:] = payloads; prints
# [[grpc status code, reply or details], ...] as JSON. Path /package.Service/Method.
GRPC_CLIENT = """
import json, sys, grpc
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
call = ch.unary_unary("/package.Service/Method")
out = []
for payload in sys.argv[2:]:
    try:
        out.append([0, call(payload.encode(), timeout=10).decode()])
    except grpc.RpcError as e:
        out.append([e.code().value[0], e.details()])
print(json.dumps(out))
"""
