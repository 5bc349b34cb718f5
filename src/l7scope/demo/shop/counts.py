"""Exact counts of the requests the shop makes to its captured Services.

Decision (documented in docs/demo.md): every client counts its own outgoing requests, per
destination Service. The load generator counts its requests to `frontend`; each service counts
the gRPC calls (and, for cartservice, the TCP connections to redis-cart) it makes. A request
counts as `completed` once the other end (Envoy or the Service) answered it; one that never
left this process (e.g. connect refused) counts as `failed` and is not expected in the store.

Each process writes its counts to `<dir>/<pod>.json` (atomically, every half second when they
changed, and once more on exit). `read_totals(dir)` sums all files: the demo's own number to
compare with the sum of `count` in the store.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class CallCounts:
    """Thread-safe counters of one process's outgoing requests."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self._lock = threading.Lock()
        self._completed: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._version = 0

    def completed(self, dst: str, n: int = 1) -> None:
        with self._lock:
            self._completed[dst] += n
            self._version += 1

    def failed(self, dst: str, n: int = 1) -> None:
        with self._lock:
            self._failed[dst] += n
            self._version += 1

    def snapshot(self) -> tuple[int, dict[str, object]]:
        with self._lock:
            return self._version, {
                "pod": self.pod,
                "completed": dict(self._completed),
                "failed": dict(self._failed),
            }


def write_atomic(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


class CountsWriter:
    """Writes a CallCounts snapshot to `<dir>/<pod>.json` when it changed, and on stop()."""

    def __init__(self, counts: CallCounts, directory: Path, period_s: float = 0.5) -> None:
        self._counts = counts
        self.path = directory / f"{counts.pod}.json"
        self._period = period_s
        self._stop = threading.Event()
        self._written = -1
        directory.mkdir(parents=True, exist_ok=True)
        self.flush()
        self._thread = threading.Thread(target=self._run, name="counts-writer", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        version, data = self._counts.snapshot()
        if version != self._written:
            write_atomic(self.path, data)
            self._written = version

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()


@dataclass
class Totals:
    """Sum over every pod's counts file."""

    completed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (src, dst) -> n
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    @property
    def total_completed(self) -> int:
        return sum(self.completed.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "completed": self.total_completed,
            "failed": self.total_failed,
            "edges": {f"{s}->{d}": n for (s, d), n in sorted(self.completed.items())},
            "failed_edges": {f"{s}->{d}": n for (s, d), n in sorted(self.failed.items())},
            "unreadable": list(self.unreadable),
        }


def read_totals(directory: Path) -> Totals:
    out = Totals()
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            src = str(data["pod"])
            for dst, n in dict(data["completed"]).items():
                out.completed[(src, str(dst))] += int(n)
            for dst, n in dict(data["failed"]).items():
                out.failed[(src, str(dst))] += int(n)
        except (OSError, ValueError, KeyError, TypeError):
            out.unreadable.append(path.name)
    return out
