"""`l7scope demo`: build the shop on this machine, run the whole pipeline, tear it all down.

`Demo` picks the mode (`demo/netns.py` as root, `demo/loopback.py` with `--no-netns`), which
starts every part into the run's `Session` (`demo/session.py`); the runner then takes snapshots,
stops the load, drains until the store holds every request, writes `<data-dir>/summary.json`,
and closes the mode and the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from l7scope.demo import reaper
from l7scope.demo.loopback import LoopbackMode
from l7scope.demo.netns import NetnsMode
from l7scope.demo.probe import Snapshot
from l7scope.demo.session import DemoError, DemoOptions, Mode, Progress, Session
from l7scope.demo.shop.counts import read_totals


class Demo:
    """The running demo. `start()`, then `snapshot()` as often as wanted, then `finish()`."""

    def __init__(self, opts: DemoOptions, progress: Progress = lambda _: None) -> None:
        self.s = Session(opts, progress)
        self.mode: Mode = LoopbackMode() if opts.no_netns else NetnsMode()
        self.closing = False  # set when the teardown begins: signals must not interrupt it
        self._previous_marker = os.environ.get(reaper.MARKER_ENV)
        self.run_id = reaper.mark(opts.prefix)  # every child inherits it (demo/reaper.py)

    @property
    def progress(self) -> Progress:
        return self.s.progress

    @progress.setter
    def progress(self, fn: Progress) -> None:
        self.s.progress = fn

    @property
    def url(self) -> str:
        return self.s.url

    @property
    def loadgen(self) -> subprocess.Popen[Any] | None:
        return self.s.loadgen

    @property
    def token_file(self) -> Path:
        return self.s.token_file

    @property
    def login_url(self) -> str:
        return self.s.login_url

    def start(self) -> str:
        """Start everything; returns the page's one-time login URL."""
        left = reaper.reap_stale(self.s.o.prefix)
        if left:
            self.s.progress(f"stopped {len(left)} processes a killed run left behind")
        self.mode.start(self.s)
        try:
            self.s.login_url = self.s.api.login_url()
        except (httpx.HTTPError, KeyError, ValueError) as e:
            raise DemoError(f"the server did not give a login link: {e}") from None
        self.s.timeline["url_printed"] = time.time()
        return self.s.login_url

    # -- run -----------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        if self.s.probe is None:
            return Snapshot()
        return self.s.probe.snapshot()

    def stop_load(self, timeout: float = 45.0) -> None:
        """Stop the shoppers; wait for their requests (and the calls they caused) to finish."""
        if self.s.loadgen is not None and self.s.loadgen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.s.loadgen.pid, signal.SIGTERM)
            try:
                self.s.loadgen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.s.loadgen.pid, signal.SIGKILL)
        # every pod rewrites its counts file within half a second of a change
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = read_totals(self.s.counts_dir).total_completed
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 1.5:
                break
            time.sleep(0.25)

    def drain(self, timeout: float | None = None) -> Snapshot:
        """Wait until the store holds every request the shop made and every request the
        collectors read (or the timeout passes)."""
        timeout = timeout if timeout is not None else self.s.o.interval + 20.0
        deadline = time.monotonic() + timeout
        snap = self.snapshot()
        while time.monotonic() < deadline:
            if snap.all_stored():
                break
            time.sleep(0.5)
            snap = self.snapshot()
        return snap

    def finish(self) -> Snapshot | None:
        """Stop the load, drain, write `<data-dir>/summary.json`, and tear everything down."""
        snap: Snapshot | None = None
        try:
            if self.s.probe is not None:
                self.s.progress("stopping the load generator")
                self.stop_load()
                self.s.progress("waiting for the last requests to reach the store")
                snap = self.drain()
                self.write_summary(snap)
        finally:
            self.close()
        return snap

    def store_edges(self) -> dict[str, int]:
        """The store's sum of `count` per caller -> callee, named like the shop's counts."""
        out: dict[str, int] = {}
        for (src, dst), n in self.s.api.edge_counts().items():
            key = f"{self.s.app_of(src) or src}->{dst or '?'}"
            out[key] = out.get(key, 0) + n
        return dict(sorted(out.items()))

    def write_summary(self, snap: Snapshot) -> None:
        out: dict[str, Any] = {
            "started_at": self.s.started_at, "finished_at": time.time(), "url": self.s.url,
            "mode": self.mode.name, **snap.to_dict(),
            "timeline": self.s.timeline}
        try:
            store = self.store_edges()
            shop = snap.totals.to_dict()["edges"]
            assert isinstance(shop, dict)
            out["store_edges"] = store
            out["edge_mismatches"] = {k: {"shop": shop.get(k, 0), "store": store.get(k, 0)}
                                      for k in sorted(set(shop) | set(store))
                                      if shop.get(k, 0) != store.get(k, 0)}
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
            out["store_edges_error"] = str(e)
        (self.s.data / "summary.json").write_text(json.dumps(out, indent=2, sort_keys=True))

    def close(self) -> None:
        """Remove every namespace, rule and process of the demo. Idempotent. Then kill any
        process of this run that outlived the orderly stop (found by its marker)."""
        self.closing = True
        errors = self.mode.close()
        self.s.close()
        survivors = reaper.reap(self.run_id)
        if survivors:
            errors.append(f"{len(survivors)} processes outlived the stop and were killed "
                          f"(pids {', '.join(map(str, survivors))})")
        if self._previous_marker is None:
            os.environ.pop(reaper.MARKER_ENV, None)
        else:
            os.environ[reaper.MARKER_ENV] = self._previous_marker
        if errors:
            raise DemoError("cleanup incomplete: " + "; ".join(errors))
