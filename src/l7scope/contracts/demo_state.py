"""The demo's state file: where `l7scope status` finds the parts of a local installation.

The one owner of its shape: the demo writes it (`demo/session.py`), `l7scope status` reads it.

The demo (or anything that starts the parts by hand) writes one small JSON file listing the
server and, per node, the status addresses of its Envoy admin, collector and node agent, with
the network namespace each address lives in. `write_state()` writes it atomically (the demo calls
it after every start or restart of a part); `remove_state()` deletes it at shutdown.

Status addresses inside a network namespace stay on that namespace's loopback: `l7scope status`
reaches them by opening its socket from a thread that has entered the namespace (setns, needs
root, as the demo does), so nothing has to listen on the host.

Path: `$L7SCOPE_STATE_FILE` if set; else `/run/l7scope/demo.json` for root; else
`$XDG_RUNTIME_DIR/l7scope/demo.json`, or `/tmp/l7scope-<uid>/demo.json` without XDG_RUNTIME_DIR.
Shape (version 1):

    {"version": 1, "written_at": 1764160000.5, "demo_pid": 4242,
     "server": {"url": "http://127.0.0.1:8080", "pid": 4243},
     "nodes": [{"name": "node-a", "netns": "l7demo-node-a",
                "envoy_admin": {"addr": "127.0.0.1:9901", "pid": 4250},
                "collector": {"addr": "127.0.0.1:9101", "pid": 4251},
                "node_agent": {"addr": "127.0.0.1:9102", "pid": 4252}}],
     "annotated_services": ["shop/cartservice", "shop/checkout"]}

Any part may be null (not run). A part's own `netns` overrides the node's: `""` means the host
namespace (e.g. a node agent that runs on the host while the node's Envoy runs in a namespace).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATE_ENV: Final = "L7SCOPE_STATE_FILE"
STATE_VERSION: Final = 1


class Part(BaseModel):
    """One process with a status address (HOST:PORT, no scheme)."""

    model_config = ConfigDict(extra="forbid")

    addr: str
    pid: int | None = None
    netns: str | None = None  # overrides the node's netns for this part; "" = host namespace


class NodeParts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    netns: str | None = None  # network namespace the parts' addresses live in; None = host
    envoy_admin: Part | None = None
    collector: Part | None = None
    node_agent: Part | None = None


class ServerPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    pid: int | None = None
    token_file: str | None = None  # the server's bearer token (contracts/auth.py)


class State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    written_at: float = Field(default_factory=time.time)
    demo_pid: int | None = None
    server: ServerPart | None = None
    nodes: list[NodeParts] = Field(default_factory=list)
    annotated_services: list[str] = Field(default_factory=list)


class StateError(RuntimeError):
    pass


def default_path() -> Path:
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/l7scope/demo.json")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "l7scope" / "demo.json"
    return Path(f"/tmp/l7scope-{os.getuid()}/demo.json")


def write_state(state: State, path: Path | str | None = None) -> Path:
    """Write the state file atomically (temp file + rename); returns its path."""
    target = Path(path) if path is not None else default_path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    data = state.model_dump_json(indent=2).encode()
    fd, tmp = tempfile.mkstemp(prefix=".demo-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def remove_state(path: Path | str | None = None) -> None:
    (Path(path) if path is not None else default_path()).unlink(missing_ok=True)


def read_state(path: Path | str | None = None) -> State | None:
    """The state file, or None if there is none. Raises StateError if it is unreadable."""
    target = Path(path) if path is not None else default_path()
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {target}: {e}") from None
    try:
        obj = json.loads(raw)
        state = State.model_validate(obj)
    except (ValueError, ValidationError) as e:
        raise StateError(f"{target} is not an l7scope state file: {e}") from None
    if state.version != STATE_VERSION:
        raise StateError(f"{target}: state file version {state.version}, expected {STATE_VERSION}")
    return state


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
