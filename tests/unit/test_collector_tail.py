"""Tail: start at end, partial lines, rotation, truncation, lag skip, resume (real tmp files)."""

from __future__ import annotations

import os
from pathlib import Path

from l7scope.collector.tail import Position, Tail, rotate_file


def w(p: Path, data: bytes) -> None:
    with open(p, "ab") as f:
        f.write(data)


def drain(t: Tail) -> bytes:
    out = b""
    while block := t.read():
        out += block
    return out


def test_starts_at_end_and_keeps_partial_lines(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    w(p, b"old1\nold2\n")
    t = Tail(p)
    assert t.read() == b""
    w(p, b"new1\nne")
    assert drain(t) == b"new1\n"
    w(p, b"w2\n")
    assert drain(t) == b"new2\n"
    assert t.counters.lines_read == 2 and t.counters.bytes_read == 10


def test_start_mid_line_skips_to_the_next_line(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    w(p, b"old\nhalf-written")
    t = Tail(p)
    w(p, b" rest\nnext\n")
    assert drain(t) == b"next\n"


def test_waits_for_the_file_and_reads_it_from_the_start(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    t = Tail(p)
    assert t.read() == b"" and t.position() is None
    w(p, b"a\nb\n")
    assert drain(t) == b"a\nb\n"


def test_rotation_finishes_the_old_file_first(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p)
    w(p, b"1\n2\n")
    assert drain(t) == b"1\n2\n"
    rotated = rotate_file(p)
    w(rotated, b"3\n4")  # the writer has not reopened yet
    w(p, b"5\n")  # the new file appears with data
    w(rotated, b"\n")
    got = drain(t)
    assert got == b"3\n4\n5\n"
    assert t.counters.rotations == 1
    w(p, b"6\n")
    assert drain(t) == b"6\n"


def test_old_file_stays_open_until_the_new_one_has_data(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p)
    rotated = rotate_file(p)
    p.touch()  # reopened, but empty
    assert t.read() == b""
    w(rotated, b"late\n")  # still written to the old inode
    assert drain(t) == b"late\n"
    w(p, b"new\n")
    assert drain(t) == b"new\n"


def test_truncation_reads_from_the_start(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p)
    w(p, b"aaaa\nbbbb\n")
    assert drain(t) == b"aaaa\nbbbb\n"
    os.truncate(p, 0)
    w(p, b"c\n")
    assert drain(t) == b"c\n"
    assert t.counters.truncations == 1


def test_lag_skip_counts_bytes_and_estimates_lines(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p, max_lag_bytes=100)
    w(p, b"x" * 9 + b"\n")
    assert drain(t) == b"x" * 9 + b"\n"
    w(p, (b"y" * 9 + b"\n") * 50)  # 500 bytes behind > 100
    assert t.read() == b""
    assert t.counters.bytes_skipped == 500 and t.counters.lines_skipped == 50
    assert t.counters.lag_skips == 1
    w(p, b"z\n")
    assert drain(t) == b"z\n"


def test_lag_skip_mid_line_resyncs(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p, max_lag_bytes=10)
    w(p, b"a" * 50 + b"\n" + b"partial")
    assert t.read() == b""
    w(p, b"-end\nok\n")
    assert drain(t) == b"ok\n"
    assert t.counters.bytes_skipped == 51 + 7 + 5


def test_large_backlog_is_read_in_chunks_without_skipping(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p, max_lag_bytes=0, chunk_bytes=4096)
    data = b"".join(b"line %06d\n" % i for i in range(20_000))
    w(p, data)
    blocks = []
    while block := t.read():
        assert len(block) <= 4096 + 100
        blocks.append(block)
    assert b"".join(blocks) == data and len(blocks) > 40
    assert t.counters.lines_read == 20_000


def test_resume_from_position_and_from_rotated_file(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    w(p, b"1\n2\n")
    t = Tail(p)
    w(p, b"3\n")
    assert drain(t) == b"3\n"
    pos = t.position()
    assert isinstance(pos, Position) and pos.offset == 6
    t.close()
    w(p, b"4\n")  # written while the collector was down
    t2 = Tail(p, resume=pos)
    assert drain(t2) == b"4\n"
    pos2 = t2.position()
    t2.close()
    w(p, b"5\n")
    rotate_file(p)  # rotated while down
    w(p, b"6\n")
    t3 = Tail(p, resume=pos2)
    assert drain(t3) == b"5\n6\n"
    t3.close()


def test_resume_position_of_an_unknown_file_reads_the_current_file(tmp_path: Path) -> None:
    p = tmp_path / "envoy.log"
    w(p, b"a\nb\n")
    t = Tail(p, resume=Position(dev=1, ino=1, offset=999))
    assert drain(t) == b"a\nb\n"


def test_overlong_line_is_dropped_and_counted(tmp_path: Path) -> None:
    from l7scope.collector import tail as tail_mod

    p = tmp_path / "envoy.log"
    p.touch()
    t = Tail(p, max_lag_bytes=0, chunk_bytes=1 << 16)
    w(p, b"q" * (tail_mod.MAX_LINE_BYTES + 10))
    while t.read():
        pass
    w(p, b"rest of it\nfine\n")
    assert drain(t) == b"fine\n"
    assert t.counters.partial_dropped == 1
