"""List-then-watch one API resource forever, in a thread, restarting on expiry.

The loop Kubernetes clients call a reflector:

1. list everything (paged) -> `on_list(items)`; remember the list's resourceVersion;
2. watch from it -> `on_event(type, obj)` for ADDED / MODIFIED / DELETED; BOOKMARK events only
   move the version forward;
3. when the server ends the stream (its timeout), watch again from the last version seen;
4. when the version has expired (`410 Gone`, as an ERROR event or as the answer), go to 1;
5. any other error: count it, wait (1 s doubling to 30 s), go to 1.

A callback that raises is counted and logged; it never stops the watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from l7scope.kube.client import JSON, Kube, KubeError

log = logging.getLogger(__name__)

OnList = Callable[[list[JSON]], None]
OnEvent = Callable[[str, JSON], None]


@dataclass
class WatchStats:
    lists: int = 0
    events: int = 0
    relists_after_expiry: int = 0
    restarts: int = 0
    errors: int = 0
    callback_errors: int = 0
    last_error: str = ""
    resource_version: str = ""


class ResourceWatch:
    """Mirror of one collection (`path`, e.g. `/api/v1/pods`) delivered to two callbacks."""

    def __init__(self, kube: Kube, path: str, on_list: OnList, on_event: OnEvent, *,
                 query: Mapping[str, Any] | None = None, timeout_seconds: int = 300,
                 name: str | None = None, backoff_max: float = 30.0) -> None:
        self.kube = kube
        self.path = path
        self.on_list = on_list
        self.on_event = on_event
        self.query = dict(query or {})
        self.timeout_seconds = timeout_seconds
        self.name = name or path
        self.backoff_max = backoff_max
        self.stats = WatchStats()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ResourceWatch:
        self._thread = threading.Thread(target=self.run, name=f"watch {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, join_timeout: float = 0.0) -> None:
        """Ask the loop to end; it does so at the next event or stream end (daemon thread)."""
        self._stop.set()
        if self._thread is not None and join_timeout:
            self._thread.join(join_timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                version = self._relist()
                backoff = 1.0
                while not self._stop.is_set():
                    version, expired = self._watch_once(version)
                    if expired:
                        self.stats.relists_after_expiry += 1
                        log.info("watch %s: resource version expired, relisting", self.name)
                        break
                    self.stats.restarts += 1
            except KubeError as e:
                if e.status == 410:
                    self.stats.relists_after_expiry += 1
                    continue
                self._failed(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            except Exception as e:  # broken stream, bad JSON: start over from a list
                self._failed(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    def _failed(self, e: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        log.warning("watch %s: %s (retrying)", self.name, self.stats.last_error)

    def _relist(self) -> str:
        items, version = self.kube.list(self.path, **self.query)
        self.stats.lists += 1
        self._call(self.on_list, items)
        self.stats.resource_version = version
        self.synced.set()
        return version

    def _watch_once(self, version: str) -> tuple[str, bool]:
        """Consume one watch stream; returns (last version, expired?)."""
        for event in self.kube.watch(self.path, resource_version=version,
                                     timeout_seconds=self.timeout_seconds, **self.query):
            if self._stop.is_set():
                return version, False
            kind = str(event.get("type") or "")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return version, True
                raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or ""),
                                str(obj.get("message") or "watch error"))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                version = str(rv)
                self.stats.resource_version = version
            if kind == "BOOKMARK":
                continue
            self.stats.events += 1
            self._call(self.on_event, kind, obj)
        return version, False

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("watch %s: callback failed", self.name)
