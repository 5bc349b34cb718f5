"""Fixtures for tests against a real control plane (marker `kube`); see kubeharness.py."""

from __future__ import annotations

import shutil
import sys
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
