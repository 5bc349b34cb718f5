"""Retention: remove records older than the configured age, periodically, on a thread."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Final

from l7scope.server.metrics import Metrics
from l7scope.server.store.base import Store, StoreError

log = logging.getLogger(__name__)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """`90s`, `15m`, `24h`, `7d`, `2w` or a number of seconds -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 24h, 7d)")
    return int(m.group(1)) * _UNITS[m.group(2) or "s"]


def cutoff(now: float, retention_s: int) -> int:
    return max(0, int(now) - retention_s)


class Retention:
    """Calls `store.delete_before(now - retention)` every `interval` seconds until stopped."""

    def __init__(self, store: Store, retention_s: int, metrics: Metrics,
                 clock: Callable[[], float] = time.time, interval: float | None = None) -> None:
        self.store = store
        self.retention_s = retention_s
        self.metrics = metrics
        self.clock = clock
        self.interval = interval if interval is not None else min(300.0, max(10.0, retention_s / 20))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        now = self.clock()
        c = cutoff(now, self.retention_s)
        self.store.delete_before(c)
        self.metrics.retention(now, c)
        return c

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except StoreError as e:
                log.warning("retention run failed (will retry): %s", e)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="l7scope-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
