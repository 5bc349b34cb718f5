"""The lock files (requirements/*.lock, made by scripts/lock.sh with pip-compile) agree with
pyproject.toml: every pin of the extras a lock covers is in it at the same version, every entry
has hashes (pip's --require-hashes installs nothing else), and the project itself is not in
it (it is installed by path after the lock)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCKS = {"demo": ("demo",), "all": ("all",), "test": ("all", "dev")}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(extras: tuple[str, ...]) -> dict[str, str]:
    """name -> version of the base and of the extras, following `l7scope[...]` references."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    out: dict[str, str] = {}
    todo, seen = list(extras), set()
    reqs = list(project["dependencies"])
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in optional[extra]:
            m = re.fullmatch(r"l7scope\[([a-z,]+)\]", r)
            if m:
                todo.extend(m.group(1).split(","))
            else:
                reqs.append(r)
    for r in reqs:
        name, _, version = r.partition("==")
        out[canon(name)] = version
    return out


def entries(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock file."""
    out: dict[str, tuple[str, int]] = {}
    current = None
    for line in lock.read_text().splitlines():
        m = ENTRY.match(line)
        if m:
            current = canon(m.group(1))
            out[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, n = out[current]
            out[current] = (version, n + 1)
    return out


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_has_every_pin_with_hashes(name: str) -> None:
    lock = REPO / "requirements" / f"{name}.lock"
    got = entries(lock)
    want = pins(LOCKS[name])
    wrong = {n: (v, got.get(n, ("missing", 0))[0]) for n, v in want.items()
             if got.get(n, ("", 0))[0] != v}
    assert not wrong, f"{lock.name} is stale (pyproject pin, lock): {wrong}; run scripts/lock.sh"
    assert all(n >= 1 for _, n in got.values()), [k for k, (_, n) in got.items() if n == 0]
    assert "l7scope" not in got and "file://" not in lock.read_text()


def test_locks_nest_and_the_base_lock_is_light() -> None:
    demo, every, test = (set(entries(REPO / "requirements" / f"{n}.lock")) for n in ("demo", "all", "test"))
    assert demo <= every <= test
    assert {"kopf", "cryptography"} <= every - demo  # the operator is not the demo's
    assert {"pytest", "mypy"} <= test - every
