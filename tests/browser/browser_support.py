"""Harness for the browser tests: a real `l7scope server` subprocess (free port, temporary data
dir) loaded through the real bulk endpoint, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from l7scope.contracts.auth import SESSION_COOKIE, TOKEN_FILE_NAME, bearer, read_token
from l7scope.contracts.bulk import BATCH_ID_HEADER, BULK_PATH, CONTENT_TYPE
from l7scope.contracts.record import L7Record, encode_records

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 # a container's /dev/shm is often 64 MB: a renderer that runs out of it crashes
                 # ("Target crashed"); /tmp has the room
                 "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_modules_present() -> bool:
    return (REPO / "ui" / "node_modules" / "cytoscape" / "package.json").is_file()


class Server:
    """`l7scope server` on 127.0.0.1:<free port> with a DuckDB store in `data_dir`."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        exe = Path(sys.executable).with_name("l7scope")
        cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(data_dir / "store")]
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self._wait_healthy()
        self.token = read_token(data_dir / "store" / TOKEN_FILE_NAME)  # created by the server
        self.client.headers.update(bearer(self.token))

    def log_in(self, context: Any) -> None:
        """Give a browser context the session cookie the page's token login would set."""
        r = httpx.post(f"{self.url}/login", json={"token": self.token}, timeout=30)
        r.raise_for_status()
        context.add_cookies([{"name": SESSION_COOKIE, "value": r.cookies[SESSION_COOKIE],
                              "url": self.url, "httpOnly": True, "sameSite": "Strict"}])

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"l7scope server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"l7scope server not healthy after {timeout}s: {self.log.read_text()[-2000:]}")

    def load(self, records: list[L7Record]) -> None:
        """Ship records through the real bulk endpoint, in batches, and check every one was accepted."""
        for i in range(0, len(records), 5000):
            chunk = records[i:i + 5000]
            r = self.client.post(BULK_PATH, content=encode_records(chunk),
                                 headers={"Content-Type": CONTENT_TYPE, BATCH_ID_HEADER: uuid.uuid4().hex})
            r.raise_for_status()
            answer = r.json()
            assert answer["accepted"] == len(chunk), answer

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.client.post(path, json=body).json()

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def chromium_available() -> str | None:
    """None when the browser tests can run, else the reason to skip."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "Debian's chromium is not installed (scripts/setup.sh installs it)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not node_modules_present():
        return "ui/node_modules is missing (scripts/setup.sh runs npm ci in ui/)"
    return None


# --- page helpers -------------------------------------------------------------------------------

def open_app(page: Any, target: Server | str) -> None:
    """Load the page (logged in, for one of our servers) and wait until the graph is drawn and
    its handlers are bound."""
    if isinstance(target, Server):
        target.log_in(page.context)
        target = target.url
    page.goto(target)
    page.wait_for_function("window.l7scope && window.l7scope.ready === true", timeout=30_000)


def element_point(page: Any, selector: str) -> dict[str, float]:
    """Viewport coordinates of a graph element (cytoscape selector): node centre or edge midpoint."""
    point: dict[str, float] = page.evaluate(
        """(sel) => {
          const cy = window.l7scope.graph.cy;
          const ele = cy.$(sel)[0];
          if (!ele) return null;
          const box = cy.container().getBoundingClientRect();
          const p = ele.isNode() ? ele.renderedPosition() : ele.renderedMidpoint();
          return {x: box.left + p.x, y: box.top + p.y};
        }""", selector)
    assert point is not None, f"no graph element {selector}"
    return point


def focus_on(page: Any, selector: str) -> None:
    """Zoom the graph onto one element so a click at its position cannot hit a neighbour."""
    page.evaluate("(sel) => { const cy = window.l7scope.graph.cy; cy.fit(cy.$(sel), 150); }", selector)


def graph_ids(page: Any, selector: str) -> list[str]:
    ids: list[str] = page.evaluate(
        "(sel) => window.l7scope.graph.cy.$(sel).filter((e) => !e.hasClass('hidden')).map((e) => e.id())", selector)
    return ids
