"""Running `l7scope demo` as a user would, for the demo's acceptance tests."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

URL_LINE = re.compile(r"Service Graph:\s+(http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DemoRun:
    def __init__(self, args: list[str], data_dir: Path, state_file: Path) -> None:
        self.data_dir = data_dir
        env = {**os.environ, "L7SCOPE_STATE_FILE": str(state_file), "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "l7scope", "--log-level", "warning", "demo",
             "--data-dir", str(data_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            bufsize=0)  # unbuffered: select() must see every line that readline() has not
        self.output: list[str] = []

    def wait_for_url(self, timeout: float) -> str:
        return self.wait_for_line(URL_LINE, timeout).group(1)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Read output lines until one matches `pattern`."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    line = self.proc.stdout.readline().decode(errors="replace")
                    if not line and self.proc.poll() is not None:
                        break
                    self.output.append(line)
                    m = pattern.search(line)
                    if m:
                        return m
                elif self.proc.poll() is not None:
                    break
        finally:
            sel.close()
        raise AssertionError(f"no line matching {pattern.pattern!r}:\n" + "".join(self.output[-60:]))

    def wait(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        out, _ = self.proc.communicate(timeout=timeout)
        self.output.append(out.decode(errors="replace"))
        return self.proc.returncode

    def text(self) -> str:
        return "".join(self.output)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)  # the demo cleans up on Ctrl-C
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def app_of_name_aggr(data_dir: Path) -> dict[str, str]:
    """generateName* -> app, from the inventory the demo wrote."""
    out = {}
    for inv in sorted(data_dir.glob("nodes/*/inventory/demo.yaml"))[:1]:
        for obj in yaml.safe_load_all(inv.read_text()):
            if obj and obj.get("kind") == "Pod":
                out[obj["metadata"]["generateName"] + "*"] = obj["metadata"]["labels"]["app"]
    return out


def open_login_link(url: str) -> httpx.Client:
    """Follow the one-time link the demo printed, as a browser would: the page (200) and a client
    holding the session cookie. The link works once."""
    parts = urlsplit(url)
    assert parts.path == "/login" and parts.query.startswith("code="), url
    client = httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", timeout=10)
    r = client.get(url, follow_redirects=True)
    assert r.status_code == 200 and "Service Graph" in r.text, (r.status_code, r.text[:200])
    assert r.url.path == "/"
    assert httpx.get(url, timeout=5).status_code == 401  # used up
    return client


def service_graph(page: httpx.Client) -> dict[str, Any]:
    r = page.post("/api/v1/servicegraph",
                  json={"time_range": {"from": "now-1h", "to": "now"}, "expand": ["*"]})
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def url_counts(page: httpx.Client) -> dict[str, int]:
    """Stored requests per `url` (the route-templated URL) over the last hour."""
    r = page.post("/api/v1/l7/logs/aggregation",
                  json={"selector": "", "time_range": {"from": "now-1h", "to": "now"},
                        "group_by": ["url"], "limit": 10000})
    r.raise_for_status()
    return {str(g["key"]["url"]): int(g["count"]) for g in r.json()["groups"]}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (zombies excluded)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if text in cmd and state != "Z":
            found.append(f"{d.name}: {cmd}")
    return found


def mounts_mentioning(*texts: str) -> list[str]:
    """Mount points (of this mount namespace) whose line names one of `texts`."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [ln for ln in lines if any(t in ln for t in texts)]
