"""One demo run's shared state, and the interface of its two modes.

`Session` holds what both modes fill in and the runner reads: options, directories, the server
API, the probe, the pods, the load generator, the state file `l7scope status` reads, and the
cleanup list. A `Mode` (`demo/netns.py`, `demo/loopback.py`) starts the parts into a Session and
closes what only it owns; `demo/runner.py` picks the mode and runs, drains and tears down.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from l7scope.contracts import api, demo_state
from l7scope.contracts.auth import default_data_dir as server_data_dir
from l7scope.contracts.auth import ensure_token
from l7scope.demo import pipeline, topology
from l7scope.demo.probe import Probe, ServerApi
from l7scope.demo.shop import catalog

Progress = Callable[[str], None]


class DemoError(RuntimeError):
    """A part of the demo did not start; the message says which and why."""


@dataclass
class DemoOptions:
    port: int = api.DEFAULT_PORT
    host: str = api.DEFAULT_HOST
    rate: float = 5.0
    duration: float = 0.0  # 0 = until Ctrl-C
    data_dir: Path = field(default_factory=lambda: default_data_dir())
    no_netns: bool = False
    prefix: str = "l7demo"
    interval: int = 5  # ApplicationLayer logIntervalSeconds (the workshop's value)
    users: int = 4
    seed: int | None = None
    tproxy_port: int = 16001


def default_data_dir() -> Path:
    """`demo/` under the server's default data directory."""
    return server_data_dir() / "demo"


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             proc: subprocess.Popen[Any] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + log.read_text(errors="replace")[-1500:]
    state = f" (exited with {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    raise DemoError(f"{what} did not come up within {timeout:.0f} s{state}{tail}")


def ensure_port_free(host: str, port: int, wait_s: float = 15.0) -> None:
    """Fail early (and clearly) when the page's port is taken: we must not talk to a stranger.

    Waits up to `wait_s` first: a crashed run's server that was just killed may still be
    exiting (a busy machine can keep it a few seconds in uninterruptible I/O)."""
    import socket

    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
            try:
                s.bind((host, port))
                return
            except OSError as e:
                if time.monotonic() >= deadline:
                    owner = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"],
                                           capture_output=True, text=True, check=False).stdout
                    raise DemoError(f"{host}:{port} is in use ({e.strerror}); choose another "
                                    f"--port{': ' + owner.strip() if owner.strip() else ''}") from None
        time.sleep(0.25)


def reachable(read: Callable[[], dict[str, Any]]) -> Callable[[], bool]:
    """A check that `read` (a /stats reader) answers."""
    def check() -> bool:
        try:
            read()
            return True
        except Exception:
            return False
    return check


class Session:
    """What one run's mode starts and the runner reads (see the module docstring)."""

    def __init__(self, opts: DemoOptions, progress: Progress = lambda _: None) -> None:
        self.o = opts
        self.progress = progress
        self.data = opts.data_dir.resolve()
        self.counts_dir = self.data / "counts"
        self.ready_dir = self.data / "ready"
        self.started_at = time.time()
        self.url = f"http://{opts.host}:{opts.port}/"
        self.login_url = self.url
        self.token_file = pipeline.token_file(self.data / "server")
        self.api = ServerApi(f"http://{opts.host}:{opts.port}", self.started_at)
        self.probe: Probe | None = None
        self.loadgen: subprocess.Popen[Any] | None = None
        self.pods: dict[str, topology.PodPlan] = {}
        self.timeline: dict[str, float] = {}
        self._closers: list[Callable[[], None]] = []

    def new_token(self) -> None:
        """A fresh bearer token for this run's server, its node agents and the demo itself."""
        token, _ = ensure_token(self.token_file)
        self.api.use_token(token)

    def on_close(self, fn: Callable[[], None], *, first: bool = False) -> None:
        """Run `fn` at close() (errors ignored); `first` puts it before the others."""
        if first:
            self._closers.insert(0, fn)
        else:
            self._closers.append(fn)

    def fresh_dirs(self) -> None:
        import shutil

        for d in (self.counts_dir, self.ready_dir, self.data / "server", self.data / "nodes",
                  self.data / "run"):
            shutil.rmtree(d, ignore_errors=True)
        for d in (self.counts_dir, self.ready_dir, self.data / "server", self.data / "nodes"):
            d.mkdir(parents=True, exist_ok=True)

    def app_of(self, name_aggr: str) -> str | None:
        for p in self.pods.values():
            if name_aggr in (f"{p.generate_name}*", p.name):
                return p.app
        return None

    def write_state(self, nodes: list[demo_state.NodeParts], server_pid: int) -> None:
        """The state file `l7scope status` reads (removed again by close())."""
        state = demo_state.State(
            demo_pid=os.getpid(),
            server=demo_state.ServerPart(url=self.url.rstrip("/"), pid=server_pid,
                                         token_file=str(self.token_file)), nodes=nodes,
            annotated_services=[f"{topology.NAMESPACE}/{s.name}" for s in catalog.SERVICES])
        path = demo_state.write_state(state)
        self.on_close(lambda: demo_state.remove_state(path))

    def close(self) -> None:
        """Run the cleanup list (each step's errors ignored) and close the API client."""
        for c in self._closers:
            with contextlib.suppress(Exception):
                c()
        self._closers = []
        self.api.close()


class Mode(Protocol):
    """One way to run the demo's parts (network namespaces, or loopback without root)."""

    name: str

    def start(self, s: Session) -> None:
        """Start every part into `s` (its probe, pods and load generator); raise DemoError."""
        ...

    def close(self) -> list[str]:
        """Stop what only the mode owns (idempotent); the errors that stopped a cleanup step."""
        ...
