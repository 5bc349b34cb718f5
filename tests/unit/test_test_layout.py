"""The test tree itself: pytest imports test files by basename (rootdir-relative, no packages),
so two files with the same name in different folders break collection of the whole suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_names_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert len(names) > 50
    assert [n for n, k in names.items() if k > 1] == []
