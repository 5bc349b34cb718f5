"""Fixtures for tests against a real control plane (marker `kube`); see kubeharness.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import kubeharness

from l7scope.kube.client import Kube

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[kubeharness.ControlPlane]:
    why = kubeharness.missing_parts()
    if why:
        pytest.skip(f"no test control plane: {why}")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    cp = kubeharness.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube(control_plane: kubeharness.ControlPlane) -> Iterator[Kube]:
    k = control_plane.kube()
    yield k
    k.close()


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A fresh directory below /run, removed afterwards: the NodeAgentConfiguration CRD only
    takes host paths below /run, /var/run, /var/lib or /var/log (l7scope.contracts.nodeconfig), so a
    test's Policy Sync directory or log directory set through the API lives here."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a directory below /run)")
    root = Path("/run/l7scope-tests")
    root.mkdir(exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):  # another test's directory is still there
            root.rmdir()
