"""Child processes of the `--no-netns` demo: started in their own session, logged to files,
recorded in a pid file so that a run after a crash can stop them, stopped on close()."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class Processes:
    def __init__(self, logdir: Path, pidfile: Path) -> None:
        self.logdir = logdir
        self.pidfile = pidfile
        self.procs: list[tuple[str, subprocess.Popen[Any]]] = []
        self.others: list[tuple[str, int]] = []  # started elsewhere (Envoy), recorded here
        logdir.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        return self.logdir / f"{name}.log"

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[Any]:
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        self.procs.append((name, proc))
        self._record()
        return proc

    def record(self, name: str, pid: int) -> None:
        """Remember a process another owner started and stops (for the crash cleanup)."""
        self.others.append((name, pid))
        self._record()

    def _record(self) -> None:
        data = [{"name": n, "pid": p.pid} for n, p in self.procs]
        data += [{"name": n, "pid": pid} for n, pid in self.others]
        self.pidfile.write_text(json.dumps(data))

    def close(self, grace: float = 5.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
        self.pidfile.unlink(missing_ok=True)


def kill_recorded(pidfile: Path, marker: str = "l7scope") -> int:
    """Kill the process groups a crashed run recorded (if they still look like ours)."""
    try:
        entries = json.loads(pidfile.read_text())
    except (OSError, ValueError):
        return 0
    killed: list[int] = []
    for e in entries if isinstance(entries, list) else []:
        try:
            pid = int(e["pid"])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if marker in cmd or "envoy" in cmd:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
    deadline = time.monotonic() + 10  # their listening sockets go when they have exited
    while time.monotonic() < deadline and any(running(p) for p in killed):
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return len(killed)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"
