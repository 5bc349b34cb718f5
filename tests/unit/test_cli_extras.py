"""The base package's commands run without any extra: `l7scope` is started with every heavy
module blocked (an import hook raising ModuleNotFoundError, as if the extra were not
installed). `observe`, `top`, `status`, `export`, `dashboard` work; a command whose extra is
missing fails with exit 2 and names the extra, never with a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

# the top-level modules of every extra's distributions (pyproject.toml)
HEAVY = ("kubernetes", "urllib3", "websocket", "yaml", "starlette", "uvicorn", "duckdb", "pyarrow",
         "clickhouse_driver", "chdb", "prometheus_client", "grpc", "google", "envoy", "xds",
         "udpa", "validate", "opentelemetry", "kopf", "cryptography")

RUN = f"""
import importlib.abc, sys
BLOCK = {HEAVY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Block())
for m in list(sys.modules):
    if m.split(".")[0] in BLOCK:
        del sys.modules[m]
from l7scope.cli import main
sys.argv = ["l7scope", *sys.argv[1:]]
try:
    main()
finally:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
    assert not leaked, leaked
"""


def l7scope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})


@pytest.mark.parametrize("command", ["observe", "top", "status", "export", "dashboard"])
def test_base_commands_need_no_extra(command: str) -> None:
    r = l7scope(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: l7scope " + command in r.stdout and "Traceback" not in r.stderr


def test_root_help_lists_every_command() -> None:
    r = l7scope("--help")
    assert r.returncode == 0, r.stderr
    for name in ("observe", "top", "status", "dashboard", "server", "node", "operator", "demo"):
        assert f"  {name} " in r.stdout


def test_observe_runs_without_extras() -> None:
    r = l7scope("observe", "--server", "http://127.0.0.1:9", "--last", "1")
    assert r.returncode == 1 and "cannot reach the l7scope server at http://127.0.0.1:9" in r.stderr, \
        r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("args", "extra"), [
    (["server"], "server"),                       # its module imports starlette
    (["node", "--help"], "node"),                 # shown as not installed
    (["collector"], "node"),
    (["operator", "--namespace", "x"], "operator"),  # imports kopf when it runs
    (["demo", "--duration", "1"], "demo"),
])
def test_a_missing_extra_is_named_with_exit_2(args: list[str], extra: str) -> None:
    r = l7scope(*args)
    if args[-1] == "--help":
        assert r.returncode == 0 and f"pip install 'l7scope[{extra}]'" in r.stdout, r.stdout
        return
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"pip install 'l7scope[{extra}]'" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args", [
    ["dashboard", "--no-browser"],
    ["observe", "-P"],
    ["top", "-P", "--once"],
    ["status", "--context", "prod"],
    ["status", "-P"],
    ["observe", "--kube-token", "--server", "https://127.0.0.1:9"],
])
def test_cluster_paths_name_the_kube_extra(args: list[str]) -> None:
    r = l7scope(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "pip install 'l7scope[kube]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
