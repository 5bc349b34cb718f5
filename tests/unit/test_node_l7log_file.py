"""l7.log: appends NDJSON, rotates by size keeping N backups, survives an unwritable directory."""

from __future__ import annotations

from pathlib import Path

from l7scope.node.l7log_file import L7LogFile


def test_rotation_keeps_n_backups(tmp_path: Path) -> None:
    f = L7LogFile(tmp_path, max_files=2, max_size_mb=1)
    line = b"x" * (300 * 1024) + b"\n"
    for _ in range(12):
        assert f.write(line, 1)
    f.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["l7.log", "l7.log.1", "l7.log.2"]
    assert all(p.stat().st_size <= 1024 * 1024 for p in tmp_path.iterdir())
    assert f.lines_written == 12 and f.rotations >= 3
    assert (tmp_path / "l7.log").stat().st_mode & 0o777 == 0o644


def test_appends_across_reopen(tmp_path: Path) -> None:
    f = L7LogFile(tmp_path)
    f.write(b'{"a":1}\n', 1)
    f.close()
    f = L7LogFile(tmp_path)
    f.write(b'{"a":2}\n', 1)
    f.close()
    assert (tmp_path / "l7.log").read_text().splitlines() == ['{"a":1}', '{"a":2}']


def test_write_error_is_counted(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    f = L7LogFile(tmp_path / "file" / "sub")  # parent is a file: cannot create
    assert not f.write(b"{}\n", 1)
    assert f.write_errors == 1
