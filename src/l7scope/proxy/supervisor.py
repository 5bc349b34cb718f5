"""Start one Envoy, wait until it is ready, report its health, stop it.

Used by the tests, the demo and the node agent. Envoy runs as a child process, optionally
inside a network namespace (`ip netns exec NS envoy ...`, which execs, so the child's pid is
Envoy's own). Every Envoy gets `--disable-hot-restart`: no shared-memory segment (an Envoy
stopped by a signal used to leave one behind in /dev/shm) and no base id, so any number run
side by side. A short `--file-flush-interval-msec` lets the collector see lines within a
fraction of a second.

Readiness and health go through the admin endpoint (`/ready` answers 200 `LIVE`): a unix
socket, or loopback inside Envoy's namespace (see `l7scope.proxy.admin`).

    with EnvoySupervisor(EnvoySettings(access_log_path="/tmp/a.log"), netns="n1") as envoy:
        envoy.healthy()      # True
        envoy.reopen_logs()  # after the collector rotated the file
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from l7scope.proxy import admin
from l7scope.proxy.binary import envoy_path
from l7scope.proxy.bootstrap import FILE_FLUSH_INTERVAL_MS, EnvoySettings, render_yaml

log = logging.getLogger(__name__)


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready; the message carries the tail of its stderr."""


class EnvoySupervisor:
    """One Envoy process. Not thread-safe; call from one owner."""

    def __init__(
        self,
        settings: EnvoySettings,
        *,
        netns: str | None = None,
        concurrency: int = 1,
        flush_interval_ms: int = FILE_FLUSH_INTERVAL_MS,
        log_level: str = "warning",
        workdir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.settings = settings
        self.netns = netns
        self.concurrency = concurrency
        self.flush_interval_ms = flush_interval_ms
        self.log_level = log_level
        self.extra_args = extra_args
        self._own_workdir = workdir is None
        self._workdir = Path(workdir) if workdir else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="l7scope-envoy-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    @property
    def config_path(self) -> Path:
        return self.workdir / "envoy.yaml"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "envoy.stderr"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        cmd = [
            str(envoy_path()), "-c", str(self.config_path),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "--file-flush-interval-msec", str(self.flush_interval_ms),
            "-l", self.log_level,
            *self.extra_args,
        ]
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + cmd

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start Envoy and wait until `/ready` says LIVE."""
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("Envoy is already running")
        self.config_path.write_text(render_yaml(self.settings))
        Path(self.settings.access_log_path).parent.mkdir(parents=True, exist_ok=True)
        sock = admin.unix_path(self.settings.admin_address)
        if sock is not None:
            Path(sock).parent.mkdir(parents=True, exist_ok=True)
            Path(sock).unlink(missing_ok=True)  # a stale socket from an Envoy that was killed
        with open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("envoy pid %s ready (netns %s, port %s)", self._proc.pid, self.netns,
                 self.settings.tproxy_port)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None:
                raise EnvoyStartError("Envoy was not started")
            rc = self._proc.poll()
            if rc is not None:
                raise EnvoyStartError(f"Envoy exited with code {rc}:\n{self.stderr_tail()}")
            if self.ready():
                return
            if time.monotonic() > deadline:
                raise EnvoyStartError(
                    f"Envoy not ready after {timeout:g} s:\n{self.stderr_tail()}")
            time.sleep(0.02)

    def ready(self) -> bool:
        """True when the admin endpoint answers `/ready` with 200."""
        try:
            status, _ = self.admin("/ready", timeout=1.0)
        except admin.AdminError:
            return False
        return status == 200

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self) -> bool:
        """The process runs and Envoy says it is ready."""
        return self.running() and self.ready()

    def reopen_logs(self) -> None:
        """Make Envoy reopen its access log files (after a rotation)."""
        status, body = self.admin("/reopen_logs", method="POST")
        if status != 200:
            raise admin.AdminError(f"/reopen_logs answered {status}: {body[:200]!r}")

    def admin(self, path: str, method: str = "GET", timeout: float = 2.0) -> tuple[int, bytes]:
        return admin.request_at(self.settings.admin_address, path, method=method,
                                netns=self.netns, timeout=timeout)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code (None if never run)."""
        proc, self._proc = self._proc, None
        rc: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            rc = proc.returncode
        if self._own_workdir and self._workdir is not None and "KEEP_ENVOY_WORKDIR" not in os.environ:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return rc

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty stderr)"

    def __enter__(self) -> EnvoySupervisor:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
