"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from l7scope.server.store.duckdb import DuckDBStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    """An empty DuckDB store of the server's (closed afterwards)."""
    s = DuckDBStore(tmp_path / "l7.duckdb")
    yield s
    s.close()
