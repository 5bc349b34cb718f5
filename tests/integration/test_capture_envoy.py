"""Envoy itself: it accepts what `l7scope envoy-config` prints, and the supervisor runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from l7scope.proxy.binary import envoy_path
from l7scope.proxy.bootstrap import EnvoySettings
from l7scope.proxy.supervisor import EnvoyStartError, EnvoySupervisor

pytestmark = pytest.mark.envoy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("als", [False, True])
def test_envoy_validates_envoy_config_output(tmp_path: Path, als: bool) -> None:
    cli = Path(sys.executable).parent / "l7scope"
    # (validation opens the access log, so it must be in an existing directory)
    extra = ["--access-log", str(tmp_path / "envoy.log"), "--tproxy-port", "15001"]
    if als:
        extra += ["--als-socket", str(tmp_path / "als.sock"), "--als-log-name", "node-1"]
    out = subprocess.run([str(cli), "envoy-config", *extra], capture_output=True, text=True,
                         check=True).stdout
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(out)
    res = subprocess.run([str(envoy_path()), "--mode", "validate", "-c", str(cfg),
                          "--disable-hot-restart", "-l", "warning"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK" in res.stdout + res.stderr


def test_supervisor_start_health_reopen_stop(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "envoy.log"
    settings = EnvoySettings(tproxy_port=_free_port(), access_log_path=str(log),
                             admin_address=f"127.0.0.1:{_free_port()}")
    sup = EnvoySupervisor(settings, workdir=tmp_path / "envoy")
    with sup:
        assert sup.healthy()
        assert log.exists()  # Envoy opened its access log (the directory was created for it)
        sup.reopen_logs()  # (that Envoy then writes to a new file: test_capture_protocols)
        status, body = sup.admin("/server_info")
        assert status == 200 and b'"state": "LIVE"' in body
        pid = sup.pid
        assert pid is not None
    assert not sup.running() and not sup.healthy()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_supervisor_reports_why_envoy_did_not_start(tmp_path: Path) -> None:
    port = _free_port()
    with socket.socket() as busy:  # the admin port is taken: Envoy exits at start
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port))
        busy.listen()
        settings = EnvoySettings(tproxy_port=_free_port(), admin_address=f"127.0.0.1:{port}",
                                 access_log_path=str(tmp_path / "envoy.log"))
        sup = EnvoySupervisor(settings, workdir=tmp_path / "envoy")
        with pytest.raises(EnvoyStartError) as err:
            sup.start(timeout=10)
    assert "exited" in str(err.value) and f"cannot bind '127.0.0.1:{port}'" in str(err.value)
    assert not sup.running()
