"""Informal import-linter rules for l7scope.server: each heavy dependency stays in one module."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "src" / "l7scope" / "server"
ALLOWED = {
    "duckdb": {"store/duckdb.py"},
    "clickhouse_driver": {"store/clickhouse.py"},
    # api.py is the HTTP shell; vendor.py (the UI's /vendor route), access.py (its middleware)
    # and login.py (the login routes) are mounted by it.
    "starlette": {"api.py", "metrics.py", "vendor.py", "access.py", "login.py"},
    "uvicorn": {"cli.py"},
}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_heavy_imports_stay_in_their_module() -> None:
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        rel = path.relative_to(SERVER).as_posix()
        for lib in _imports(path) & set(ALLOWED):
            assert rel in ALLOWED[lib], f"{rel} imports {lib}; only {sorted(ALLOWED[lib])} may"
