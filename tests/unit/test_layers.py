"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they have teeth: a copy
of the tree with one deliberately wrong import breaks exactly the contract it should (layers,
cycles, the "only X imports Y" gateways). Replaces the old ast walk over server/ only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: pip install the dev extra (import-linter)"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)


def _contracts() -> list[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [str(c["name"]) for c in cfg["tool"]["importlinter"]["contracts"]]


def _broken(out: str) -> set[str]:
    """Names of the contracts the report calls BROKEN (the report wraps long names)."""
    text = " ".join(out.split())
    verdicts = {name: (f"{name} BROKEN" in text, f"{name} KEPT" in text) for name in _contracts()}
    assert all(broken != kept for broken, kept in verdicts.values()), (verdicts, out)
    return {name for name, (broken, _) in verdicts.items() if broken}


def test_the_tree_keeps_every_contract() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _broken(res.stdout) == set() and f"{len(_contracts())} kept, 0 broken" in res.stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src" / "l7scope", root / "src" / "l7scope",
                    ignore=shutil.ignore_patterns("__pycache__", "ui", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(("module", "line", "contracts"), [
    # a contract module reaching up into the server: the layers (and, as the server imports the
    # contracts, a package cycle)
    ("contracts/record.py", "from l7scope.server import query", ("Layers", "No import cycles")),
    # two processes on one floor importing each other: independence inside the layers
    ("collector/tail.py", "from l7scope.node import shipper", ("Layers",)),
    # two modules of one package importing each other
    ("demo/session.py", "import l7scope.demo.runner", ("No import cycles",)),
    # a library outside its gateway
    ("node/agent.py", "import kubernetes", ("Only kube/client.py imports kubernetes",)),
    ("observe/client.py", "import starlette", ("Only server/ imports starlette",)),
    ("server/query.py", "import duckdb", ("Only server/store/duckdb.py imports duckdb",)),
])
def test_a_wrong_import_breaks_its_contract(tree: Path, module: str, line: str,
                                            contracts: tuple[str, ...]) -> None:
    path = tree / "src" / "l7scope" / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # deliberately wrong\n")
        res = _lint(tree)
    finally:
        path.write_text(original)
    assert res.returncode == 1, res.stdout + res.stderr
    broken = _broken(res.stdout)
    assert sorted(next(c for c in contracts if b.startswith(c)) for b in broken) == sorted(contracts), broken
