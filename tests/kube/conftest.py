"""Fixtures for tests against a real control plane (marker `kube`); see kubeharness.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


class OperatorProcess:
    """`l7scope operator` as a child process against the test control plane."""

    def __init__(self, cp: kubeharness.ControlPlane, namespace: str, log_path: Path) -> None:
        self.cp, self.namespace, self.log_path = cp, namespace, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        exe = REPO / ".venv" / "bin" / "l7scope"
        cmd = [str(exe) if exe.exists() else "l7scope", "--log-level", "debug", "operator",
               "--kubeconfig", str(self.cp.kubeconfig), "--namespace", self.namespace,
               "--image", "l7scope:test"]
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, \
            f"operator exited:\n{self.log_tail()}"


@pytest.fixture
def operator_factory(control_plane: kubeharness.ControlPlane, tmp_path: Path) -> Iterator[object]:
    made: list[OperatorProcess] = []

    def make(namespace: str) -> OperatorProcess:
        op = OperatorProcess(control_plane, namespace, tmp_path / f"operator-{len(made)}.log").start()
        made.append(op)
        return op

    yield make
    for op in made:
        op.stop()
    if os.environ.get("L7SCOPE_SHOW_OPERATOR_LOG"):
        for op in made:
            print(op.log_tail(200))
    time.sleep(0)
