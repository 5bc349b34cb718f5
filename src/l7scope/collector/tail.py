"""Tail Envoy's access log: from its end, across rotation and truncation, in large chunks.

`Tail.read()` returns a block of complete lines (each ending in a newline), at most about
`chunk_bytes` long, or `b""` when nothing new is there. It never reads per line: one `pread` per
chunk, one `rfind` to keep the partial last line for the next call.

* Start: at the end of the file, like Calico (`start_at_end`), or at a saved `Position` (a
  restarted collector resumes where it stopped; if that file was rotated to `<path>.1` meanwhile,
  it finishes that one first). A file that does not exist yet is waited for, and read from its
  start when it appears.
* Rotation (the path now names another inode): the old file stays open and is read to its end
  first; it is closed once it gives nothing more and the new file has data.
* Truncation (size < offset, e.g. copytruncate): read again from the start, counted.
* Lag: when more than `max_lag_bytes` are waiting (0 = no limit), skip to the end of the file and
  count the skipped bytes and an estimate of the skipped lines.

Pure file I/O and arithmetic: no threads, no clock. `rotate_file()` renames the log for a
size-based rotation; the caller then asks Envoy to reopen its log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

ROTATED_SUFFIX: Final = ".1"
MAX_LINE_BYTES: Final = 1 << 20  # a "line" longer than this is dropped (counted)
DEFAULT_LINE_BYTES: Final = 450  # for the skipped-lines estimate before any line was read


@dataclass(frozen=True)
class Position:
    """Where reading stopped: a file identity and the offset after the last complete line."""

    dev: int
    ino: int
    offset: int


@dataclass
class TailCounters:
    bytes_read: int = 0  # bytes returned as complete lines
    lines_read: int = 0  # complete lines returned
    bytes_skipped: int = 0  # skipped because of lag (or a partial line at a skip point)
    lines_skipped: int = 0  # estimate: bytes_skipped / average line length
    lag_skips: int = 0
    rotations: int = 0
    truncations: int = 0
    partial_dropped: int = 0  # incomplete lines dropped (file rotated away mid-line, or too long)


class _File:
    __slots__ = ("dev", "fd", "ino", "offset", "partial", "resync")

    def __init__(self, fd: int, st: os.stat_result, offset: int) -> None:
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.offset = offset  # bytes consumed from the file (including `partial`)
        self.partial = b""  # an incomplete last line
        self.resync = False  # drop bytes up to the next newline (we started mid-line)

    def same(self, st: os.stat_result) -> bool:
        return st.st_ino == self.ino and st.st_dev == self.dev

    def position(self) -> Position:
        return Position(self.dev, self.ino, self.offset - len(self.partial))


class Tail:
    def __init__(self, path: str | Path, *, max_lag_bytes: int = 1_000_000,
                 chunk_bytes: int = 1 << 16, start_at_end: bool = True,
                 resume: Position | None = None) -> None:
        self.path = Path(path)
        self.max_lag_bytes = max_lag_bytes
        self.chunk_bytes = chunk_bytes
        self.counters = TailCounters()
        self.last_lines = 0  # lines in the block the last read() returned
        self._cur: _File | None = None
        self._draining: list[_File] = []
        self._first_open = True
        # Calico starts at the end of an existing file; a file that appears later is all new.
        self._start_at_end = start_at_end and self.path.exists()
        self._resume = resume
        self._follow_path()  # "the end" is the end at start-up, not at the first read

    # --- public -------------------------------------------------------------------------

    def read(self) -> bytes:
        """The next block of complete lines, or b"" when there is nothing new."""
        self._follow_path()
        while self._draining:
            f = self._draining[0]
            block = self._read_from(f, lag_check=False)
            if block:
                return block
            if len(self._draining) > 1 or self._current_has_data():
                self._close(self._draining.pop(0), finished=True)
            else:
                return b""
        cur = self._cur
        if cur is None:
            return b""
        return self._read_from(cur, lag_check=True)

    def position(self) -> Position | None:
        """The oldest unfinished file and offset: resuming there loses and repeats nothing."""
        if self._draining:
            return self._draining[0].position()
        return self._cur.position() if self._cur else None

    def current_size(self) -> int:
        """Size of the file at `path` as we have it open (0 when none)."""
        if self._cur is None:
            return 0
        try:
            return os.fstat(self._cur.fd).st_size
        except OSError:
            return 0

    def reading_path(self) -> bool:
        """True when `path` names the file being read (not rotated away, no newer file)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return self._cur is not None and self._cur.same(st) and not self._draining

    def close(self) -> None:
        for f in self._draining:
            self._close(f, finished=False)
        self._draining.clear()
        if self._cur:
            self._close(self._cur, finished=False)
            self._cur = None

    # --- internals ----------------------------------------------------------------------

    def _current_has_data(self) -> bool:
        self._follow_path()
        return self._cur is not None and self.current_size() > 0

    def _follow_path(self) -> None:
        """Open the file at `path`, or notice that it now names another file (rotation)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # not there (yet): wait; keep reading the open file if any
        cur = self._cur
        if cur is not None and cur.same(st):
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
        except FileNotFoundError:
            return
        new = _File(fd, st, 0)
        if cur is not None:
            self.counters.rotations += 1
            log.info("%s was rotated: finishing the old file, then reading the new one", self.path)
            self._draining.append(cur)
        elif self._first_open:
            self._place_first(new, st)
        self._first_open = False
        self._cur = new

    def _place_first(self, new: _File, st: os.stat_result) -> None:
        r = self._resume
        if r is not None and new.dev == r.dev and new.ino == r.ino and r.offset <= st.st_size:
            new.offset = r.offset
            return
        if r is not None:
            rotated = Path(str(self.path) + ROTATED_SUFFIX)
            try:
                old_st = os.stat(rotated)
            except FileNotFoundError:
                old_st = None
            if old_st and (old_st.st_dev, old_st.st_ino) == (r.dev, r.ino):
                fd = os.open(rotated, os.O_RDONLY | os.O_CLOEXEC)
                old = _File(fd, os.fstat(fd), min(r.offset, old_st.st_size))
                self._draining.append(old)
                log.info("resuming in %s at offset %d", rotated, old.offset)
            return  # the current file is newer than the saved position: read it all
        if self._start_at_end and st.st_size > 0:
            self._skip_to_end(new, st.st_size, count=False)

    def _skip_to_end(self, f: _File, size: int, *, count: bool) -> None:
        if count:
            skipped = size - f.offset + len(f.partial)
            c = self.counters
            c.bytes_skipped += skipped
            avg = c.bytes_read // c.lines_read if c.lines_read else DEFAULT_LINE_BYTES
            c.lines_skipped += max(skipped // max(avg, 1), 1)
            c.lag_skips += 1
            log.warning("%s: %d bytes behind (max %d): skipped to the end (about %d lines)",
                        self.path, skipped, self.max_lag_bytes, skipped // max(avg, 1))
        f.offset = size
        f.partial = b""
        f.resync = size > 0 and os.pread(f.fd, 1, size - 1) != b"\n"

    def _read_from(self, f: _File, *, lag_check: bool) -> bytes:
        try:
            size = os.fstat(f.fd).st_size
        except OSError:
            return b""
        if size < f.offset:
            self.counters.truncations += 1
            log.info("%s was truncated: reading from the start", self.path)
            f.offset = 0
            f.partial = b""
            f.resync = False
        if lag_check and self.max_lag_bytes > 0 and size - f.offset > self.max_lag_bytes:
            self._skip_to_end(f, size, count=True)
        while True:  # until a complete line, or nothing left to read
            want = min(size - f.offset, self.chunk_bytes)
            if want <= 0:
                return b""
            block = self._chunk(f, want)
            if block:
                return block

    def _chunk(self, f: _File, want: int) -> bytes:
        data = os.pread(f.fd, want, f.offset)
        if not data:
            return b""
        f.offset += len(data)
        if f.partial:
            data = f.partial + data
            f.partial = b""
        if f.resync:
            nl = data.find(b"\n")
            if nl < 0:
                self.counters.bytes_skipped += len(data)
                return b""
            self.counters.bytes_skipped += nl + 1
            data = data[nl + 1:]
            f.resync = False
        cut = data.rfind(b"\n")
        if cut < 0:
            self._keep_partial(f, data)
            return b""
        if cut + 1 < len(data):
            self._keep_partial(f, data[cut + 1:])
            data = data[:cut + 1]
        self.last_lines = data.count(b"\n")
        self.counters.bytes_read += len(data)
        self.counters.lines_read += self.last_lines
        return data

    def _keep_partial(self, f: _File, tail: bytes) -> None:
        if len(tail) > MAX_LINE_BYTES:
            self.counters.partial_dropped += 1
            self.counters.bytes_skipped += len(tail)
            f.resync = True
            return
        f.partial = tail

    def _close(self, f: _File, *, finished: bool) -> None:
        if finished and f.partial:
            self.counters.partial_dropped += 1
            self.counters.bytes_skipped += len(f.partial)
        os.close(f.fd)


def rotate_file(path: str | Path) -> Path:
    """Rename `path` to `path.1` (replacing an older `.1`); returns the new name.

    Envoy keeps writing to the renamed file until it reopens its log (admin `POST /reopen_logs`);
    `Tail` reads the renamed file to its end before moving on.
    """
    src = Path(path)
    dst = Path(str(src) + ROTATED_SUFFIX)
    os.replace(src, dst)
    return dst
