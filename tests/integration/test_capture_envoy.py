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


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("payload", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                     b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"hello\n"],
                         ids=["silent", "http1", "h2c", "tcp"])
def test_direct_connection_to_the_transparent_port_is_closed_at_once(
        tmp_path: Path, payload: bytes) -> None:
    """Dialled at the listener itself (not TPROXYed), the connection's original destination
    is Envoy's own port: without the guard chain Envoy connects to itself until its fds run
    out (measured: 1,024 of 1,024 in under 0.25 s, admin unresponsive). With it, Envoy closes
    the connection at once, its fd count stays flat and nothing is logged."""
    import resource
    import time

    log = tmp_path / "envoy.log"
    settings = EnvoySettings(tproxy_port=_free_port(), listen_address="127.0.0.1",
                             access_log_path=str(log), admin_address=f"127.0.0.1:{_free_port()}")
    with EnvoySupervisor(settings, workdir=tmp_path / "envoy") as sup:
        pid = sup.pid
        assert pid is not None
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))  # as in the report
        before = _fds(pid)
        closed_after: list[float] = []
        for _ in range(50):
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", settings.tproxy_port), timeout=5) as c:
                if payload:
                    c.sendall(payload)
                try:
                    got = c.recv(4096)
                except ConnectionResetError:
                    got = b""
                closed_after.append(time.monotonic() - t0)
                assert got == b""  # closed (FIN or RST), never an answer
        # well below the 2 s the inspectors would wait for a silent client's first bytes
        assert max(closed_after) < settings.listener_filters_timeout_s / 2, closed_after
        time.sleep(0.3)
        assert _fds(pid) <= before + 2, (before, _fds(pid))
        assert sup.healthy()
        status, body = sup.admin("/clusters")
        assert status == 200
        text = body.decode()
        for cluster in ("original_dst", "original_dst_h2c"):
            assert f"{cluster}::default_priority::max_connections::65536" in text
        status, stats = sup.admin("/stats?filter=downstream_cx_total")
    assert not log.exists() or log.read_text() == ""  # no fake access-log lines
    assert b"listener.127.0.0.1_" in stats


def _tcp_listen_ports(pid: int) -> set[int]:
    """Ports of the TCP sockets `pid` listens on (from `ss`, which names the owning process)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
            if f"pid={pid}," in line}


@pytest.mark.parametrize("in_netns", [False, True], ids=["host", "netns"])
def test_admin_on_a_unix_socket(tmp_path: Path, in_netns: bool) -> None:
    """Admin on a unix socket (mode 0660): no TCP port but the transparent listener; the
    supervisor, the node agent's readiness probe, the collector's reopen and the DaemonSet's
    exec probe all reach it, also when Envoy runs in another network namespace."""
    import uuid

    from l7scope.collector.runner import reopen_envoy_logs
    from l7scope.node.selection import envoy_ready_probe

    sock = tmp_path / "run" / "envoy-admin.sock"
    settings = EnvoySettings(tproxy_port=_free_port(), access_log_path=str(tmp_path / "envoy.log"),
                             admin_address=f"unix:{sock}")
    netns = f"l7h-{uuid.uuid4().hex[:6]}" if in_netns else None
    if netns:
        subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        with EnvoySupervisor(settings, netns=netns, workdir=tmp_path / "envoy") as sup:
            assert sup.healthy()
            assert sock.stat().st_mode & 0o777 == 0o660
            pid = sup.pid
            assert pid is not None
            if netns is None:  # (ss sees the host's namespace only)
                assert _tcp_listen_ports(pid) == {settings.tproxy_port}
            sup.reopen_logs()
            assert envoy_ready_probe(f"unix:{sock}")() is True
            reopen_envoy_logs(f"unix://{sock}")
            probe = subprocess.run([sys.executable, "-m", "l7scope.proxy.admin", f"unix:{sock}"],
                                   capture_output=True, text=True, timeout=10)
            assert probe.returncode == 0, probe.stderr
        assert envoy_ready_probe(f"unix:{sock}")() is False
        probe = subprocess.run([sys.executable, "-m", "l7scope.proxy.admin", f"unix:{sock}"],
                               capture_output=True, text=True, timeout=10)
        assert probe.returncode == 1 and "unreachable" in probe.stderr
    finally:
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)


class _PrivSupervisor(EnvoySupervisor):
    """Envoy as the DaemonSet runs it: uid 0, group 10001, CAP_NET_ADMIN its only capability."""

    def command(self) -> list[str]:
        return ["setpriv", "--regid", "10001", "--clear-groups", "--inh-caps", "-all",
                "--bounding-set", "-all,+net_admin", "--", *super().command()]


def test_daemonset_users_reach_envoy_admin_by_group_only() -> None:
    """The DaemonSet's permission model on this host: Envoy with every capability but
    NET_ADMIN dropped makes its admin socket root:10001 0660; uid 10001 (the collector's user)
    reaches it, reads the log and rotates it, another user does not reach it. (curl stands in
    for the collector: this machine's Python is not readable by other users.)"""
    import shutil
    import tempfile

    if shutil.which("setpriv") is None or shutil.which("curl") is None:
        pytest.skip("needs setpriv and curl")
    base = Path(tempfile.mkdtemp(prefix="l7scope-priv-"))
    try:
        base.chmod(0o755)
        run, logs = base / "run", base / "logs"
        for d in (run, logs):  # emptyDirs are 0777
            d.mkdir()
            d.chmod(0o777)
        sock, log = run / "envoy-admin.sock", logs / "envoy.log"
        settings = EnvoySettings(tproxy_port=_free_port(), access_log_path=str(log),
                                 admin_address=f"unix:{sock}")
        with _PrivSupervisor(settings, workdir=base / "envoy") as sup:
            st = sock.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 10001, 0o660)
            pid = sup.pid
            assert pid is not None
            eff = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if ln.startswith("CapEff:"))
            assert int(eff.split()[1], 16) == 1 << 12  # CAP_NET_ADMIN only

            def as_user(uid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid),
                                       "--clear-groups", "--", *cmd],
                                      capture_output=True, text=True, timeout=10)

            def curl(uid: int, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
                return as_user(uid, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                               "--unix-socket", str(sock), *extra, f"http://localhost{path}")

            assert curl(10001, "/ready").stdout == "200"
            denied = curl(10002, "/ready")
            assert denied.returncode != 0 and denied.stdout == "000", denied
            # the collector's rotation: read, rename, ask Envoy to reopen
            assert as_user(10001, "cat", str(log)).returncode == 0
            assert as_user(10001, "mv", str(log), str(log) + ".1").returncode == 0
            assert curl(10001, "/reopen_logs", "-X", "POST").stdout == "200"
            assert (logs / "envoy.log.1").exists() and not log.exists()
            assert sup.healthy()
    finally:
        shutil.rmtree(base, ignore_errors=True)
