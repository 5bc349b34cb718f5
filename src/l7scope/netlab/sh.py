"""Run commands on the host or inside a network namespace, with errors that say what failed."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class NetlabError(RuntimeError):
    """A command that builds or tears down the topology failed; carries its stderr."""


def in_ns(argv: Sequence[str], netns: str | None) -> list[str]:
    """`argv` prefixed with `ip netns exec NETNS` when a namespace is given."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def run(argv: Sequence[str], netns: str | None = None, *, check: bool = True,
        stdin: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture output; raise NetlabError on failure when `check`."""
    full = in_ns(argv, netns)
    # its own process group: a Ctrl-C at the terminal goes to the foreground group and would
    # kill an `ip netns del` halfway through a teardown; the caller decides what a signal means
    res = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout,
                         check=False, process_group=0)
    if check and res.returncode != 0:
        raise NetlabError(failure(full, res))
    return res


def failure(argv: Sequence[str], res: subprocess.CompletedProcess[str]) -> str:
    """What a failed command says: its argv, its exit status (or the signal that ended it) and
    its stderr."""
    how = (f"killed by signal {-res.returncode}" if res.returncode < 0
           else f"exit status {res.returncode}")
    err = res.stderr.strip()
    return f"{' '.join(argv)} failed ({how})" + (f": {err}" if err else "")


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS...`, returning stdout."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, check=check).stdout


def sysctl(netns: str, **values: str | int) -> None:
    """Set sysctls inside a namespace: sysctl(ns, **{"net.ipv4.ip_forward": 1})."""
    args = [f"{k}={v}" for k, v in values.items()]
    run(["sysctl", "-q", "-w", *args], netns)
