"""The demo's safety net for processes: every process a run starts inherits the environment
variable `L7SCOPE_DEMO_RUN=<prefix>:<demo pid>`, so the run can find all of them in /proc,
whatever happened to its own bookkeeping (a signal between `Popen` and the list append, a child
that re-parented itself to init, a group the stop did not reach), and a later run can find
what a SIGKILLed run left.

`mark()` sets the variable in the demo's own environment (children inherit it); `reap()` kills
the marked processes of one run, `reap_stale()` those of runs with the same prefix whose demo
process is gone. Pure /proc reading; no process is killed whose environment lacks the marker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

MARKER_ENV: Final = "L7SCOPE_DEMO_RUN"


def run_id(prefix: str, pid: int | None = None) -> str:
    return f"{prefix}:{os.getpid() if pid is None else pid}"


def mark(prefix: str) -> str:
    """Mark this process (and so every child started from now on) as the run `prefix`."""
    rid = run_id(prefix)
    os.environ[MARKER_ENV] = rid
    return rid


def _marker_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        env = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    key = MARKER_ENV.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key):].decode(errors="replace")
    return None


def _alive(pid: int, proc: Path = Path("/proc")) -> bool:
    try:
        state = (proc / str(pid) / "stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"


def marked(match: Callable[[str], bool], proc: Path = Path("/proc")) -> list[int]:
    """Live processes (not this one) whose marker satisfies `match`."""
    me = os.getpid()
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        value = _marker_of(int(d.name), proc)
        if value is not None and match(value) and _alive(int(d.name), proc):
            out.append(int(d.name))
    return sorted(out)


def _kill(pids: list[int], timeout: float) -> list[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return pids


def reap(rid: str, timeout: float = 10.0) -> list[int]:
    """Kill every live process of the run `rid` (after the orderly stop: survivors only)."""
    return _kill(marked(lambda v: v == rid), timeout)


def stale_match(prefix: str, alive: Callable[[int], bool] = _alive) -> Callable[[str], bool]:
    """A marker of another run with `prefix` whose demo process is gone."""
    me = run_id(prefix)

    def match(value: str) -> bool:
        p, _, pid = value.rpartition(":")
        return p == prefix and value != me and pid.isdigit() and not alive(int(pid))

    return match


def reap_stale(prefix: str, timeout: float = 20.0) -> list[int]:
    """Kill what SIGKILLed runs with `prefix` left (their demo process is gone)."""
    return _kill(marked(stale_match(prefix)), timeout)
