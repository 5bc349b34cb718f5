"""Scheduled archive: every closed interval of records as one Parquet file in a directory.

`l7scope server --archive-dir DIR --archive-interval 1h` writes `l7-<start>-<end>.parquet` for
each interval [start, end) aligned to the interval (epoch multiples) once `end + lag` has passed,
so records that arrive a little late (shipping delay) are in their file. The store's engine writes
the file (ExportStore.export, the same as `l7scope export`) to `<name>.part`, renamed when whole:
a file that exists is complete, and an interval whose file exists is never written again
(idempotent across restarts). Intervals with no records get no file. Runs start from the oldest
stored record, at most `max_per_run` intervals each (bounded work; the rest in the next run).
Object stores (S3 and the like) are not done: no client is in the project (docs/server.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from l7scope.contracts.timerange import TimeRange
from l7scope.server.store.base import ExportStore, Filter, Store, StoreError

log = logging.getLogger(__name__)


def file_name(start: int, end: int) -> str:
    return f"l7-{start}-{end}.parquet"


def due(oldest: int, now: float, interval: int, lag: int) -> list[tuple[int, int]]:
    """The closed intervals [start, end) from the one holding `oldest` up to `now - lag`."""
    first = oldest - oldest % interval
    last_end = int(now) - lag
    return [(s, s + interval) for s in range(first, last_end - interval + 1, interval)]


@dataclass
class ArchiveCounters:
    runs: int = 0
    files_written: int = 0
    intervals_empty: int = 0
    errors: int = 0
    last_error: str | None = None
    last_run: float | None = None
    done: set[tuple[int, int]] = field(default_factory=set)

    def public(self) -> dict[str, object]:
        return {"runs": self.runs, "files_written": self.files_written,
                "intervals_empty": self.intervals_empty, "errors": self.errors,
                "last_error": self.last_error,
                "last_run": None if self.last_run is None else int(self.last_run)}


class Archiver:
    def __init__(self, store: Store, directory: Path, interval_s: int, *, lag_s: int = 300,
                 max_per_run: int = 48, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(store, ExportStore):
            raise ValueError(f"the {store.kind} store cannot export: no archive")
        if interval_s < 60:
            raise ValueError("the archive interval must be at least 60 s")
        self.store: ExportStore = store
        self._stats = store.stats
        self._search_total = store.search
        self.directory = directory
        self.interval_s = interval_s
        self.lag_s = lag_s
        self.max_per_run = max_per_run
        self.clock = clock
        self.counters = ArchiveCounters()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Write the due intervals that have no file yet; the number of files written."""
        self.counters.runs += 1
        self.counters.last_run = self.clock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            st = self._stats()
        except (OSError, StoreError) as e:
            return self._failed(f"archive: cannot start a run in {self.directory}: {e}")
        if st.oldest_end_time is None:
            return 0
        # Intervals before the oldest record (removed by retention) are never due again.
        self.counters.done = {iv for iv in self.counters.done if iv[1] > st.oldest_end_time}
        # end_time is "from exclusive, to inclusive" in queries: [start, end) is (start-1, end-1].
        todo = [iv for iv in due(st.oldest_end_time, self.clock(), self.interval_s, self.lag_s)
                if iv not in self.counters.done and not (self.directory / file_name(*iv)).exists()]
        written = 0
        for start, end in todo[: self.max_per_run]:
            path = self.directory / file_name(start, end)
            part = path.with_name(path.name + ".part")
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            flt = Filter(TimeRange(start - 1, end - 1))
            try:
                if not self._has_records(flt):
                    self.counters.intervals_empty += 1
                    self.counters.done.add((start, end))
                    continue
                self.store.export(flt, "parquet", str(part))
                os.replace(part, path)
            except (OSError, StoreError, ValueError) as e:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                self._failed(f"archive: cannot write {path}: {e}")
                break
            self.counters.done.add((start, end))
            self.counters.files_written += 1
            written += 1
        return written

    def _has_records(self, flt: Filter) -> bool:
        from l7scope.server.store.base import SearchQuery

        return self._search_total(SearchQuery(flt, (), 1, 0)).total_hits > 0

    def _failed(self, message: str) -> int:
        self.counters.errors += 1
        self.counters.last_error = message[:500]
        log.warning("%s (will retry)", message)
        return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(min(300.0, self.interval_s / 4))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="l7scope-archive", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
