"""`l7.log`: one JSON record per line, rotated by size, with N backups (Calico's defaults).

`<directory>/l7.log` is rotated when the next write would take it over `max_size_mb`; backups are
`l7.log.1` (newest) .. `l7.log.<max_files>` (oldest, then deleted). File mode 0644 as Felix. Used
by the agent's flush loop; a write error is counted and logged once per state change, never fatal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "l7.log"


class L7LogFile:
    def __init__(self, directory: str | Path, max_files: int = 5, max_size_mb: int = 100) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.max_files = max_files
        self.max_bytes = max_size_mb * 1024 * 1024
        self._fd: int | None = None
        self._size = 0
        self.lines_written = 0
        self.rotations = 0
        self.write_errors = 0
        self._failing = False

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> None:
        self.close()
        if self.max_files <= 0:
            self.path.unlink(missing_ok=True)
        else:
            oldest = self.directory / f"{FILE_NAME}.{self.max_files}"
            oldest.unlink(missing_ok=True)
            for i in range(self.max_files - 1, 0, -1):
                src = self.directory / f"{FILE_NAME}.{i}"
                if src.exists():
                    src.rename(self.directory / f"{FILE_NAME}.{i + 1}")
            if self.path.exists():
                self.path.rename(self.directory / f"{FILE_NAME}.1")
        self.rotations += 1

    def write(self, ndjson: bytes, lines: int) -> bool:
        """Append NDJSON (already newline-terminated); rotates first when it would not fit."""
        if not ndjson:
            return True
        try:
            fd = self._open()
            if self._size and self._size + len(ndjson) > self.max_bytes:
                self._rotate()
                fd = self._open()
            view = memoryview(ndjson)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            self._size += len(ndjson)
            self.lines_written += lines
            if self._failing:
                log.info("writing %s again", self.path)
                self._failing = False
            return True
        except OSError as e:
            self.write_errors += 1
            if not self._failing:
                log.error("cannot write %s: %s", self.path, e)
                self._failing = True
            self.close()
            return False

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
