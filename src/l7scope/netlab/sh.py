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
    res = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout,
                         check=False)
    if check and res.returncode != 0:
        raise NetlabError(f"{' '.join(full)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS...`, returning stdout."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, check=check).stdout


def sysctl(netns: str, **values: str | int) -> None:
    """Set sysctls inside a namespace: sysctl(ns, **{"net.ipv4.ip_forward": 1})."""
    args = [f"{k}={v}" for k, v in values.items()]
    run(["sysctl", "-q", "-w", *args], netns)
